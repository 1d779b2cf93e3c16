"""Batch APIs (``distill generate <task> --batch``): half the price, answers within 24 hours.

The room, read in this order:

    run.py            ``run_batch``: one run's life (recover, submit, poll, collect, resubmit)
    jobs.py           ``BatchJob`` and ``BatchJobStore``: the state of submitted batches in
                      ``data/<task>/cache.sqlite``, and ``split_by_limits``
    provider.py       what the two adapters share: settings, ``Polled``, ``ItemResult``, a create
                      that is never retried blind, SDK errors as one line
    openai_api.py     OpenAI Files + Batches
    anthropic_api.py  Anthropic Message Batches

``docs/batch.md`` describes the behaviour; ``tests/test_batch.py`` runs it against both SDKs.
"""
from pipeline.teachers.batch.run import MAX_ROUNDS, make_batch_api, run_batch

__all__ = ["MAX_ROUNDS", "make_batch_api", "run_batch"]
