"""Batch APIs (``generate --batch``) through the real openai / anthropic SDKs against the fake
batch server (tests/fakes/batch_routes.py), which speaks their wire protocol over a real socket."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from pipeline.config.teacher import TeacherConfig
from pipeline.errors import ConfigError, TeacherError
from pipeline.records import Message
from pipeline.teachers.base import make_request
from pipeline.teachers.batch import run_batch
from pipeline.teachers.batch.jobs import BatchJobStore, split_by_limits
from pipeline.teachers.cache import AnswerCache
from tests.fakes.batch_routes import BatchFake, fake_answer
from tests.fakes.server import FakeServer

KEY = "sk-" "test-batchkey-0123456789"
POLL = 0.05
PROVIDERS = ["openai", "anthropic"]


@pytest.fixture
def fake():
    return BatchFake()


@pytest.fixture
def url(fake):
    """The shared fake API server (chat completions, messages) with the batch routes added."""
    with FakeServer(extra_routes=[fake.hook]) as srv:
        fake.base_url = srv.base  # Anthropic's results_url is absolute
        yield srv.base


@pytest.fixture(autouse=True)
def keys(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)


def teacher(provider: str, url: str, **over) -> TeacherConfig:
    if provider == "openai":
        base = {"backend": "openai", "model": "gpt-4o-mini", "base_url": url + "/v1", "top_logprobs": 3}
    else:
        base = {"backend": "anthropic", "model": "claude-haiku-4-5", "base_url": url}
    return TeacherConfig(**{**base, "params": {"temperature": 0.0, "max_tokens": 16}, "max_retries": 0, **over})


def requests_for(cfg: TeacherConfig, n: int, start: int = 0):
    out = []
    for i in range(start, start + n):
        msgs = [Message(role="system", content="Classify."), Message(role="user", content=f"review number {i} is fine")]
        req, _ = make_request(cfg.backend, cfg.model, msgs, cfg.params, cfg.top_logprobs)
        out.append(req)
    return out


def batch(cfg, reqs, cache, **kw):
    return asyncio.run(run_batch(cfg, reqs, cache, quiet=True, poll_interval_s=POLL, **kw))


def stop_mid_poll(fake, cfg, reqs, path, **kw):
    """A run cut off once it polls (every batch is submitted before the first poll)."""
    def polls():
        return fake.calls["batches.retrieve"] + fake.calls["messages.batches.retrieve"]

    async def go():
        with AnswerCache(path) as cache:
            run = asyncio.ensure_future(run_batch(cfg, reqs, cache, quiet=True, poll_interval_s=POLL, **kw))
            start = polls()
            while polls() < start + 2 and not run.done():
                await asyncio.sleep(0.01)
            run.cancel()
            with pytest.raises(asyncio.CancelledError):
                await run

    asyncio.run(go())


# ---------------------------------------------------------------------------- splitting
def test_split_cuts_at_the_request_count_and_the_byte_size():
    assert split_by_limits([10] * 7, 3, 10_000) == [slice(0, 3), slice(3, 6), slice(6, 7)]
    assert split_by_limits([40, 40, 40, 10], 100, 90) == [slice(0, 2), slice(2, 4)]
    assert split_by_limits([], 3, 100) == []


def test_split_refuses_one_request_larger_than_a_batch_file():
    with pytest.raises(TeacherError, match="over the 100-byte batch file limit"):
        split_by_limits([50, 101], 10, 100)


def test_default_limits_are_the_providers_own():
    from pipeline.teachers.batch import anthropic_api, openai_api

    assert (openai_api.MAX_REQUESTS, openai_api.MAX_BYTES) == (50_000, 200 * 1024 * 1024)
    assert (anthropic_api.MAX_REQUESTS, anthropic_api.MAX_BYTES) == (100_000, 256 * 1024 * 1024)
    openai_parts = split_by_limits([300] * 120_000, openai_api.MAX_REQUESTS, openai_api.MAX_BYTES)
    assert [p.stop - p.start for p in openai_parts] == [50_000, 50_000, 20_000]
    anthropic_parts = split_by_limits([300] * 120_000, anthropic_api.MAX_REQUESTS, anthropic_api.MAX_BYTES)
    assert [p.stop - p.start for p in anthropic_parts] == [100_000, 20_000]
    big = split_by_limits([3 * 1024 * 1024] * 100, openai_api.MAX_REQUESTS, openai_api.MAX_BYTES)
    assert [p.stop - p.start for p in big] == [66, 34]  # 66 x 3 MB fit in 200 MB


# ---------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("provider", PROVIDERS)
def test_round_trip_caches_every_answer_split_at_the_request_limit(provider, fake, url, tmp_path):
    cfg = teacher(provider, url)
    fake.polls_to_complete = 3
    # The fake refuses a batch over 3 requests, as the real API refuses one over its limit.
    fake.openai_max_requests = fake.anthropic_max_requests = 3
    reqs = requests_for(cfg, 7)
    with AnswerCache(tmp_path / "cache.sqlite") as cache:
        counts = batch(cfg, reqs, cache, limits=(3, 10**9))
        assert counts["batches"] == 3 and counts["submitted"] == 7 and counts["completed"] == 7
        assert counts["failed"] == 0 and counts["failed_requests"] == {}
        for req in reqs:
            answer = cache.get(req.request_hash)
            assert answer.text == fake_answer([m.model_dump() for m in req.messages])
            assert cache.is_batch(req.request_hash)  # priced at the batch discount by generate
            assert answer.usage.completion_tokens > 0 and answer.finish_reason == "stop"
            if provider == "openai":
                assert len(answer.logprobs) == answer.usage.completion_tokens
                assert all(len(pos.top) == 3 for pos in answer.logprobs)
            else:
                assert answer.logprobs is None
    assert fake.duplicates() == {}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_batches_are_split_at_the_byte_limit(provider, fake, url, tmp_path):
    from pipeline.teachers.batch import make_batch_api

    cfg = teacher(provider, url)
    reqs = requests_for(cfg, 6)
    api = make_batch_api(cfg)
    entry_size = max(len(api.entry_bytes(api.entry(r))) for r in reqs)
    asyncio.run(api.aclose())
    limit = int(entry_size * 2.5) + 64  # room for two entries (and Anthropic's envelope), not three
    fake.openai_max_bytes = fake.anthropic_max_bytes = limit  # the provider would refuse a bigger batch
    with AnswerCache(tmp_path / "cache.sqlite") as cache:
        counts = batch(cfg, reqs, cache, limits=(1000, limit))
    assert counts["batches"] == 3 and counts["completed"] == 6 and counts["failed"] == 0
    api_batches = fake.openai_batches if provider == "openai" else fake.anthropic_batches
    assert len(api_batches) == 3


def test_openai_body_asks_for_logprobs_and_sends_params_as_is(fake, url, tmp_path):
    cfg = teacher("openai", url, params={"temperature": 0.3, "max_tokens": 9, "seed": 1})
    with AnswerCache(tmp_path / "cache.sqlite") as cache:
        batch(cfg, requests_for(cfg, 1), cache)
    line = next(iter(fake._private.values()))["lines"][0]
    assert line["method"] == "POST" and line["url"] == "/v1/chat/completions"
    assert line["body"] == {"model": "gpt-4o-mini", "messages": line["body"]["messages"], "temperature": 0.3,
                            "max_tokens": 9, "seed": 1, "logprobs": True, "top_logprobs": 3}
    batch_obj = next(iter(fake.openai_batches.values()))
    assert batch_obj["endpoint"] == "/v1/chat/completions" and batch_obj["completion_window"] == "24h"


def test_anthropic_params_put_the_system_turn_in_system(fake, url, tmp_path):
    cfg = teacher("anthropic", url)
    with AnswerCache(tmp_path / "cache.sqlite") as cache:
        batch(cfg, requests_for(cfg, 1), cache)
    params = next(iter(fake._private.values()))["lines"][0]["params"]
    assert params["system"] == "Classify." and [m["role"] for m in params["messages"]] == ["user"]


# ---------------------------------------------------------------------------- failures
@pytest.mark.parametrize("provider", PROVIDERS)
def test_only_failed_and_expired_items_are_resubmitted(provider, fake, url, tmp_path):
    cfg = teacher(provider, url)
    reqs = requests_for(cfg, 6)
    error_once, expire_once, invalid = (reqs[0].request_hash, reqs[1].request_hash, reqs[2].request_hash)

    def outcome(cid, attempt):
        if cid == invalid:
            return "invalid"  # a 400: resubmitting would fail again
        if attempt == 1 and cid in (error_once, expire_once):
            return "error" if cid == error_once else "expired"
        return "ok"

    fake.outcome = outcome
    with AnswerCache(tmp_path / "cache.sqlite") as cache:
        counts = batch(cfg, reqs, cache)
        assert error_once in cache and expire_once in cache and invalid not in cache
    assert fake.submissions[error_once] == 2 and fake.submissions[expire_once] == 2
    assert fake.submissions[invalid] == 1
    assert all(fake.submissions[r.request_hash] == 1 for r in reqs[3:])
    assert counts["resubmitted"] == 2 and counts["expired"] == 1 and counts["completed"] == 5
    assert list(counts["failed_requests"]) == [invalid] and counts["failed"] == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_cancelled_items_are_reported_not_resubmitted(provider, fake, url, tmp_path):
    cfg = teacher(provider, url)
    reqs = requests_for(cfg, 3)
    cancelled = reqs[0].request_hash
    fake.outcome = lambda cid, attempt: "canceled" if cid == cancelled else "ok"
    with AnswerCache(tmp_path / "cache.sqlite") as cache:
        counts = batch(cfg, reqs, cache)
    assert counts["failed_requests"] == {cancelled: "batch cancelled" if provider == "openai" else "batch canceled"}
    assert counts["completed"] == 2 and counts["resubmitted"] == 0 and fake.submissions[cancelled] == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_malformed_or_cut_result_line_costs_only_its_own_item(provider, fake, url, tmp_path):
    cfg = teacher(provider, url)
    reqs = requests_for(cfg, 4)
    bad = {reqs[0].request_hash: "malformed", reqs[1].request_hash: "truncated"}
    fake.outcome = lambda cid, attempt: bad.get(cid, "ok") if attempt == 1 else "ok"
    with AnswerCache(tmp_path / "cache.sqlite") as cache:
        counts = batch(cfg, reqs, cache)
        assert all(r.request_hash in cache for r in reqs)
    assert counts["resubmitted"] == 2 and counts["failed"] == 0
    assert {cid: n for cid, n in fake.submissions.items() if n > 1} == dict.fromkeys(bad, 2)


def test_resubmission_stops_after_max_rounds(fake, url, tmp_path):
    cfg = teacher("openai", url)
    reqs = requests_for(cfg, 2)
    always_bad = reqs[0].request_hash
    fake.outcome = lambda cid, attempt: "error" if cid == always_bad else "ok"
    with AnswerCache(tmp_path / "cache.sqlite") as cache:
        counts = batch(cfg, reqs, cache, max_rounds=3)
    assert fake.submissions[always_bad] == 3
    assert "gave up after 3 submissions" in counts["failed_requests"][always_bad]


def test_a_batch_refused_as_a_whole_stops_with_one_line(fake, url, tmp_path):
    cfg = teacher("openai", url)
    fake.openai_max_requests = 2  # our limit (default 50,000) is higher: the provider refuses the file
    with AnswerCache(tmp_path / "cache.sqlite") as cache, pytest.raises(TeacherError) as err:
        batch(cfg, requests_for(cfg, 3), cache)
    assert "too_many_requests" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_401_stops_at_once_with_the_key_redacted(provider, fake, url, tmp_path):
    fake.api_key = "sk-" "the-right-key-000000"
    cfg = teacher(provider, url)
    with AnswerCache(tmp_path / "cache.sqlite") as cache, pytest.raises(TeacherError) as err:
        batch(cfg, requests_for(cfg, 2), cache)
    message = str(err.value)
    assert "401" in message and KEY not in message and "\n" not in message
    store = BatchJobStore(tmp_path / "cache.sqlite")
    assert store.open_jobs(cfg.backend, cfg.base_url) == []  # refused: nothing left to look for
    store.close()


def test_anthropic_without_max_tokens_is_a_config_error(url, tmp_path):
    cfg = teacher("anthropic", url, params={"temperature": 0.0})
    with AnswerCache(tmp_path / "cache.sqlite") as cache, pytest.raises(ConfigError, match="max_tokens"):
        batch(cfg, requests_for(cfg, 1), cache)


def test_local_backends_have_no_batch_api(tmp_path):
    with AnswerCache(tmp_path / "cache.sqlite") as cache, pytest.raises(ConfigError, match="no batch API"):
        batch(TeacherConfig(backend="hf"), [], cache)


# ---------------------------------------------------------------------------- cache and resume
@pytest.mark.parametrize("provider", PROVIDERS)
def test_answered_requests_are_never_submitted(provider, fake, url, tmp_path):
    cfg = teacher(provider, url)
    reqs = requests_for(cfg, 5)
    with AnswerCache(tmp_path / "cache.sqlite") as cache:
        batch(cfg, reqs[:3], cache)
        counts = batch(cfg, reqs, cache)
        again = batch(cfg, reqs, cache)
    assert counts["submitted"] == 2 and counts["already_cached"] == 3
    assert again["submitted"] == 0 and again["batches"] == 0 and again["already_cached"] == 5
    assert fake.duplicates() == {}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_restart_mid_poll_resumes_polling_without_resubmitting(provider, fake, url, tmp_path, capsys):
    cfg = teacher(provider, url)
    reqs = requests_for(cfg, 5)
    fake.polls_to_complete = 10**6  # never ends while the first run watches
    stop_mid_poll(fake, cfg, reqs, tmp_path / "cache.sqlite", limits=(3, 10**9))
    creates = fake.calls["batches.create"] + fake.calls["messages.batches.create"]
    assert creates == 2
    fake.polls_to_complete = 0  # the provider finishes the batches
    with AnswerCache(tmp_path / "cache.sqlite") as cache:
        counts = asyncio.run(run_batch(cfg, reqs, cache, poll_interval_s=POLL, limits=(3, 10**9)))
        assert all(r.request_hash in cache for r in reqs)
    assert "resuming 2 batch(es) submitted earlier; polling, not resubmitting" in capsys.readouterr().err
    assert counts["submitted"] == 0 and counts["resumed_batches"] == 2 and counts["completed"] == 5
    assert fake.calls["batches.create"] + fake.calls["messages.batches.create"] == creates
    assert fake.duplicates() == {}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_crash_between_create_and_record_finds_the_batch_instead_of_paying_twice(provider, fake, url, tmp_path,
                                                                                 monkeypatch):
    cfg = teacher(provider, url)
    reqs = requests_for(cfg, 4)
    real_update = BatchJobStore.update_job

    def die_on_recording(self, job, **fields):
        if fields.get("status") == "live":
            raise KeyboardInterrupt  # the process dies after the provider created the batch
        return real_update(self, job, **fields)

    monkeypatch.setattr(BatchJobStore, "update_job", die_on_recording)
    with AnswerCache(tmp_path / "cache.sqlite") as cache, pytest.raises(KeyboardInterrupt):
        batch(cfg, reqs, cache)
    monkeypatch.setattr(BatchJobStore, "update_job", real_update)
    with AnswerCache(tmp_path / "cache.sqlite") as cache:
        counts = batch(cfg, reqs, cache)
        assert all(r.request_hash in cache for r in reqs)
    assert counts["submitted"] == 0 and counts["resumed_batches"] == 1
    assert fake.duplicates() == {}


def test_crash_while_collecting_resubmits_a_failed_item_once(fake, url, tmp_path, monkeypatch):
    cfg = teacher("openai", url)
    reqs = requests_for(cfg, 3)
    flaky = reqs[0].request_hash
    fake.outcome = lambda cid, attempt: "error" if cid == flaky and attempt == 1 else "ok"
    real_update = BatchJobStore.update_job

    def die_before_ended(self, job, **fields):
        if fields.get("status") == "ended":
            raise KeyboardInterrupt  # results read and marked, the job not yet closed
        return real_update(self, job, **fields)

    monkeypatch.setattr(BatchJobStore, "update_job", die_before_ended)
    with AnswerCache(tmp_path / "cache.sqlite") as cache, pytest.raises(KeyboardInterrupt):
        batch(cfg, reqs, cache)
    monkeypatch.setattr(BatchJobStore, "update_job", real_update)
    with AnswerCache(tmp_path / "cache.sqlite") as cache:
        counts = batch(cfg, reqs, cache)
        assert all(r.request_hash in cache for r in reqs)
    assert counts["submitted"] == 0 and counts["resubmitted"] == 1 and counts["resumed_batches"] == 1
    assert fake.submissions[flaky] == 2 and fake.duplicates() == {flaky: 2}


def test_kill_9_mid_poll_then_rerun_sends_nothing_twice(fake, url, tmp_path):
    cfg = teacher("openai", url)
    fake.polls_to_complete = 10**6
    script = textwrap.dedent(f"""
        import asyncio
        from pipeline.config.teacher import TeacherConfig
        from pipeline.teachers.batch import run_batch
        from pipeline.teachers.cache import AnswerCache
        from tests.test_batch import requests_for
        cfg = TeacherConfig.model_validate_json({cfg.model_dump_json()!r})
        asyncio.run(run_batch(cfg, requests_for(cfg, 4), AnswerCache({str(tmp_path / "cache.sqlite")!r}),
                              quiet=True, poll_interval_s={POLL}))
    """)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    deadline = time.time() + 90  # generous: the machine's cores are shared
    while fake.calls["batches.retrieve"] < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert fake.calls["batches.create"] == 1
    fake.polls_to_complete = 0
    with AnswerCache(tmp_path / "cache.sqlite") as cache:
        counts = batch(cfg, requests_for(cfg, 4), cache)
    assert counts["resumed_batches"] == 1 and counts["submitted"] == 0 and counts["completed"] == 4
    assert fake.calls["batches.create"] == 1 and fake.duplicates() == {}


def test_repeats_of_one_prompt_are_separate_items_stored_with_their_own_payload(fake, url, tmp_path):
    cfg = teacher("openai", url)
    msgs = [Message(role="user", content="write one product review")]
    pairs = [make_request(cfg.backend, cfg.model, msgs, cfg.params, cfg.top_logprobs, variant=v) for v in (0, 1, 2)]
    reqs, payloads = [r for r, _ in pairs], {r.request_hash: p for r, p in pairs}
    with AnswerCache(tmp_path / "cache.sqlite") as cache:
        counts = asyncio.run(run_batch(cfg, reqs, cache, quiet=True, poll_interval_s=POLL, payloads=payloads))
        stored = [json.loads(cache.execute("SELECT request FROM answers WHERE request_hash=?", [r.request_hash])[0][0])
                  for r in reqs]
    assert counts["completed"] == 3 and [p.get("variant", 0) for p in stored] == [0, 1, 2]


# ---------------------------------------------------------------------------- the stage
def test_distill_generate_batch_answers_every_input_at_the_batch_price(fake, url, data_root, tmp_path, task_copy):
    from pipeline.cli import main
    from pipeline.records import Record, read_jsonl

    task = task_copy("sentiment")
    (task / "inputs.jsonl").write_text("".join(json.dumps({"text": f"movie {i} was {'great' if i % 2 else 'dull'}"})
                                               + "\n" for i in range(6)))
    (task / "task.yaml").write_text(textwrap.dedent(f"""
        name: sentiment
        description: Label the sentiment of a short movie review as positive or negative.
        teacher:
          backend: openai
          model: gpt-4o-mini
          base_url: {url}/v1
          params: {{temperature: 0.0, max_tokens: 3}}
          top_logprobs: 2
          max_retries: 0
        inputs:
          source: {{path: inputs.jsonl}}
        output:
          kind: label
          labels: [positive, negative]
    """))
    first_line = {}

    def outcome(cid, attempt):  # the first item submitted expires once
        first_line.setdefault("cid", cid)
        return "expired" if attempt == 1 and cid == first_line["cid"] else "ok"

    fake.outcome = outcome
    assert main(["generate", str(task), "--batch", "--quiet"]) == 0
    records = list(read_jsonl(data_root / "data" / "sentiment" / "generated" / "generated.jsonl", Record))
    assert len(records) == 6 and all(r.completion.startswith("answer to") and r.logprobs for r in records)
    assert len(fake.openai_batches) == 2 and fake.submissions[first_line["cid"]] == 2 and len(fake.duplicates()) == 1
    manifest = json.loads((data_root / "data" / "sentiment" / "generated" / "manifest.json").read_text())
    assert manifest["params"]["batch"] is True
    # Priced at the batch discount (gpt-4o-mini: 0.15/0.60 per 1M tokens, batch_discount 0.5).
    r = records[0]
    assert r.cost_usd == pytest.approx((r.usage.prompt_tokens * 0.15 + r.usage.completion_tokens * 0.60) / 1e6 * 0.5)
    # A re-run answers from the cache and submits nothing.
    assert main(["generate", str(task), "--batch", "--quiet"]) == 0
    assert len(fake.openai_batches) == 2


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_outage_while_polling_stops_cleanly_and_the_rerun_resumes(provider, fake, url, tmp_path):
    cfg = teacher(provider, url)  # max_retries 0: the SDK gives up at once
    reqs = requests_for(cfg, 3)
    fake.poll_faults = 1
    with AnswerCache(tmp_path / "cache.sqlite") as cache, pytest.raises(TeacherError) as err:
        batch(cfg, reqs, cache)
    assert "re-run to resume" in str(err.value) and "\n" not in str(err.value)
    with AnswerCache(tmp_path / "cache.sqlite") as cache:
        counts = batch(cfg, reqs, cache)
    assert counts["resumed_batches"] == 1 and counts["submitted"] == 0 and counts["completed"] == 3
    assert fake.duplicates() == {}


def test_the_sdk_retries_a_poll_that_hits_a_503(fake, url, tmp_path):
    cfg = teacher("openai", url, max_retries=2)
    fake.poll_faults = 1
    with AnswerCache(tmp_path / "cache.sqlite") as cache:
        counts = batch(cfg, requests_for(cfg, 2), cache)
    assert counts["completed"] == 2 and fake.calls["batches.retrieve"] == 2


def test_a_batch_left_by_an_earlier_config_is_still_collected(fake, url, tmp_path):
    old = teacher("openai", url)
    old_reqs = requests_for(old, 2)
    fake.polls_to_complete = 10**6
    stop_mid_poll(fake, old, old_reqs, tmp_path / "cache.sqlite")
    fake.polls_to_complete = 0
    new = teacher("openai", url, model="gpt-4.1-mini")  # the user switched models meanwhile
    with AnswerCache(tmp_path / "cache.sqlite") as cache:
        counts = batch(new, requests_for(new, 1), cache)
        assert all(r.request_hash in cache for r in old_reqs)  # paid for: kept
    assert counts["resumed_batches"] == 1 and counts["submitted"] == 1 and counts["failed"] == 0


def test_a_batch_the_provider_no_longer_knows_is_reported_and_its_requests_go_out_next_run(fake, url, tmp_path):
    cfg = teacher("openai", url)
    reqs = requests_for(cfg, 2)
    fake.polls_to_complete = 10**6
    stop_mid_poll(fake, cfg, reqs, tmp_path / "cache.sqlite")
    fake.openai_batches.clear()  # deleted at the provider
    fake.polls_to_complete = 0
    with AnswerCache(tmp_path / "cache.sqlite") as cache, pytest.raises(TeacherError, match="404"):
        batch(cfg, reqs, cache)
    with AnswerCache(tmp_path / "cache.sqlite") as cache:
        counts = batch(cfg, reqs, cache)
    assert counts["submitted"] == 2 and counts["completed"] == 2 and counts["resumed_batches"] == 0


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_create_answered_with_503_is_retried_and_makes_one_batch(provider, fake, url, tmp_path):
    cfg = teacher(provider, url, max_retries=1)
    fake.create_faults = 1
    with AnswerCache(tmp_path / "cache.sqlite") as cache:
        counts = batch(cfg, requests_for(cfg, 2), cache)
    assert counts["batches"] == 1 and counts["completed"] == 2
    assert len(fake.openai_batches) + len(fake.anthropic_batches) == 1 and fake.duplicates() == {}


def test_a_create_that_times_out_is_found_by_the_next_run_not_sent_again(fake, url, tmp_path):
    cfg = teacher("openai", url, timeout_s=0.3, max_retries=3)
    reqs = requests_for(cfg, 2)
    fake.create_delay_s = 1.0  # the batch exists, but its id never reaches us
    with AnswerCache(tmp_path / "cache.sqlite") as cache, pytest.raises(TeacherError, match="re-run"):
        batch(cfg, reqs, cache)
    assert fake.calls["batches.create"] == 1  # a timed-out create is not retried blind
    fake.create_delay_s = 0.0
    with AnswerCache(tmp_path / "cache.sqlite") as cache:
        counts = batch(cfg.model_copy(update={"timeout_s": 60.0}), reqs, cache)
    assert counts["resumed_batches"] == 1 and counts["submitted"] == 0 and counts["completed"] == 2
    assert fake.calls["batches.create"] == 1 and fake.duplicates() == {}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_without_waiting_each_run_polls_once_and_the_third_collects(provider, fake, url, tmp_path):
    cfg = teacher(provider, url)
    reqs = requests_for(cfg, 3)
    fake.polls_to_complete = 3  # the batch ends at the third poll; each run polls once
    with AnswerCache(tmp_path / "cache.sqlite") as cache:
        first = batch(cfg, reqs, cache, wait=False)
        second = batch(cfg, reqs, cache, wait=False)
        assert not any(r.request_hash in cache for r in reqs)
        third = batch(cfg, reqs, cache, wait=False)
        assert all(r.request_hash in cache for r in reqs)
    assert (first["submitted"], first["pending"], first["failed"]) == (3, 3, 0)
    assert (second["submitted"], second["pending"], second["resumed_batches"]) == (0, 3, 1)
    assert (third["completed"], third["pending"], third["failed"]) == (3, 0, 0)
    assert fake.duplicates() == {}
