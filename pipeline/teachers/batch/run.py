"""One batch run (``run_batch``): submit, poll, collect, resubmit what may yet succeed.

Reads the requests the generate stage hands over and ``data/<task>/cache.sqlite``; writes every
answer into that cache (``batch=1``, so it is priced at the provider's batch discount) and the
state of each submitted batch into the same file (``jobs.py``). The provider specifics live in
``openai_api.py`` (Files + Batches) and ``anthropic_api.py`` (Message Batches), on the shared
ground of ``provider.py``.

The life of a run:
1. Jobs left ``submitting`` by a killed run are looked up at the provider and adopted, or dropped
   when the provider never created them.
2. Requests already answered, or waiting in a live batch, are not submitted; the rest go out in
   batches split at the provider's limits.
3. Every live batch (this run's, or a killed run's) is polled until it ends; its answers are
   cached as they are read; its failed (5xx) and expired items, and only those, go out again in a
   new batch, for at most ``max_rounds`` submissions in all. 4xx and canceled items are reported,
   not resubmitted.
"""
from __future__ import annotations

import asyncio
import sys
from collections import Counter

from pipeline.config.teacher import TeacherConfig
from pipeline.errors import ConfigError, DistillError, TeacherError
from pipeline.teachers.base import TeacherRequest, request_payload
from pipeline.teachers.batch.jobs import BatchJob, BatchJobStore, split_by_limits
from pipeline.teachers.batch.provider import Polled
from pipeline.teachers.cache import AnswerCache

MAX_ROUNDS = 4  # the first submission plus up to three resubmissions of failed or expired items
FIRST_POLL_S, MAX_POLL_S = 5.0, 60.0  # polling backs off from 5 s to 1 min: batches take minutes to hours
_FLUSH_EVERY = 500  # item states are bookkeeping (the cache is the truth): write them in chunks


def make_batch_api(cfg: TeacherConfig, limits: tuple[int, int] | None = None):
    """The provider adapter for ``cfg.backend``; ``limits`` = (max requests, max bytes) per batch,
    for tests (the defaults are the providers' own limits)."""
    kwargs = {} if limits is None else {"max_requests": limits[0], "max_bytes": limits[1]}
    if cfg.backend == "openai":
        from pipeline.teachers.batch.openai_api import OpenAIBatchAPI

        return OpenAIBatchAPI(cfg, **kwargs)
    if cfg.backend == "anthropic":
        from pipeline.teachers.batch.anthropic_api import AnthropicBatchAPI

        return AnthropicBatchAPI(cfg, **kwargs)
    raise ConfigError(
        f"--batch: teacher.backend '{cfg.backend}' has no batch API (only openai and anthropic do); "
        "drop --batch, local backends batch on their own"
    )


async def run_batch(cfg: TeacherConfig, requests: list[TeacherRequest], cache: AnswerCache, *,
                    quiet: bool = False, poll_interval_s: float | None = None,
                    max_rounds: int = MAX_ROUNDS, limits: tuple[int, int] | None = None,
                    payloads: dict[str, dict] | None = None, wait: bool = True) -> dict:
    """Answer ``requests`` through the provider's batch API, caching each answer.

    ``payloads`` maps request hashes to the canonical payloads to store with the answers (as
    ``make_request`` returns them); a request missing from it gets ``request_payload`` of its fields.
    ``wait=False`` submits, polls every open batch once, collects those that have ended, and returns
    (for cron: each run moves things along; requests still in a batch count as ``pending``).

    Returns counts: ``submitted`` (requests in first submissions), ``resubmitted``, ``completed``
    (answers cached), ``expired`` (items that came back expired), ``failed`` (requests of this run
    left without an answer), ``batches`` (created by this run), ``resumed_batches``,
    ``already_cached``, ``pending`` (still in a live batch: only with ``wait=False``), and
    ``failed_requests`` ({request hash: reason})."""
    api = make_batch_api(cfg, limits)
    store = BatchJobStore(cache.path)
    try:
        run = _BatchRun(cfg, api, store, cache, quiet, poll_interval_s, max_rounds, payloads or {}, wait)
        return await run.run(requests)
    finally:
        store.close()
        await api.aclose()


class _BatchRun:
    def __init__(self, cfg, api, store: BatchJobStore, cache: AnswerCache, quiet: bool,
                 poll_interval_s: float | None, max_rounds: int, payloads: dict[str, dict], wait: bool):
        self.cfg, self.api, self.store, self.cache = cfg, api, store, cache
        self.quiet, self.poll_interval_s, self.max_rounds = quiet, poll_interval_s, max(1, max_rounds)
        self.payloads, self.wait = payloads, wait
        self.pending: set[str] = set()
        self.counts: Counter = Counter()
        self.wanted: set[str] = set()
        self.failures: dict[str, str] = {}
        self.fatal: list[str] = []

    def say(self, line: str) -> None:
        if not self.quiet:
            print(f"batch: {line}", file=sys.stderr, flush=True)

    async def run(self, requests: list[TeacherRequest]) -> dict:
        by_hash = {r.request_hash: r for r in requests}
        self.wanted = set(by_hash)
        await self.recover_interrupted_submits()
        held = self.store.hashes_in_open_jobs(self.api.provider, self.api.endpoint)
        cached = {h for h in by_hash if h in self.cache}
        todo = [r for h, r in by_hash.items() if h not in cached and h not in held]
        resumed = self.store.open_jobs(self.api.provider, self.api.endpoint)
        self.counts.update(already_cached=len(cached), resumed_batches=len(resumed))
        if resumed:
            self.say(f"resuming {len(resumed)} batch(es) submitted earlier; polling, not resubmitting")
        new_jobs = await self.submit(todo, round_=0)
        await asyncio.gather(*(self.drive(job) for job in resumed + new_jobs))
        for h in self.wanted:
            if h not in self.failures and h not in self.cache and h not in self.pending:
                self.failures[h] = "no answer"
        summary = {key: self.counts[key] for key in (
            "submitted", "resubmitted", "completed", "failed", "expired", "batches", "resumed_batches",
            "already_cached")}
        summary["failed"] = len(self.failures)
        summary["pending"] = len(self.pending & self.wanted)
        summary["failed_requests"] = dict(self.failures)
        self.say(", ".join(f"{k} {v}" for k, v in summary.items() if k != "failed_requests"))
        if self.fatal:
            raise TeacherError(f"{self.api.provider} batch refused: {self.fatal[0]}; answers received so far are "
                               "cached; fix the cause and re-run")
        return summary

    async def recover_interrupted_submits(self) -> None:
        """A job still ``submitting`` was cut off between asking the provider and recording its answer."""
        for elsewhere in self.store.open_elsewhere(self.api.provider, self.api.endpoint):
            self.say(f"batches sent to {elsewhere} are still open; set teacher.base_url back to collect them")
        for job in self.store.open_jobs(self.api.provider, self.api.endpoint):
            if job.status != "submitting":
                continue
            batch_id = await self.api.find(job, self.store.claimed_batch_ids(self.api.provider))
            if batch_id is None:
                self.store.drop_job(job)  # never created: its requests are simply submitted again
            else:
                self.store.update_job(job, batch_id=batch_id, status="live")
                self.say(f"found batch {batch_id} submitted just before the last run stopped")

    async def submit(self, reqs: list[TeacherRequest], round_: int) -> list[BatchJob]:
        if not reqs:
            return []
        entries = [self.api.entry(r) for r in reqs]
        sizes = [len(self.api.entry_bytes(e)) for e in entries]
        jobs = []
        for part in split_by_limits(sizes, self.api.max_requests, self.api.max_bytes, where=f"{self.api.provider} batch"):
            items = [(r.request_hash, self.payload(r)) for r in reqs[part]]
            job = self.store.begin_job(self.api.provider, self.api.endpoint, self.cfg.model, round_, items)
            try:
                ids = await self.api.submit(entries[part], job)
            except DistillError as err:
                if getattr(err, "provider_answered", True):
                    self.store.drop_job(job)  # refused: nothing was created, nothing to look for
                raise
            self.store.update_job(job, status="live", **ids)
            self.counts.update(batches=1, **{"submitted" if round_ == 0 else "resubmitted": len(items)})
            self.say(f"submitted {job.batch_id} ({len(items)} requests, round {round_})")
            jobs.append(job)
        return jobs

    def payload(self, req: TeacherRequest) -> dict:
        return self.payloads.get(req.request_hash) or request_payload(
            self.cfg.backend, self.cfg.model, req.params, req.top_logprobs, req.messages)

    async def drive(self, job: BatchJob) -> None:
        """Poll ``job`` to its end, cache its answers, resubmit what may yet succeed, and follow that."""
        polled = await self.poll_until_ended(job)
        if polled is None:  # not waiting, and not ended yet: a later run collects it
            self.pending.update(self.store.items(job, "pending"))
            return
        if polled.fatal is not None:  # refused as a whole (e.g. failed validation): resubmitting would not help
            self.store.update_job(job, status="failed", provider_status=polled.status, detail=polled.fatal)
            self.fatal.append(f"{job.batch_id}: {polled.fatal}")
            for h in self.store.items(job):
                if h in self.wanted:
                    self.failures[h] = f"batch {job.batch_id} failed: {polled.fatal}"[:200]
            return
        retry = await self.collect(job, polled)
        if not retry:
            return
        if job.round + 1 >= self.max_rounds:
            for h, reason in retry.items():
                self.failures[h] = f"gave up after {self.max_rounds} submissions: {reason}"[:200]
            return
        reqs = [TeacherRequest(messages=p["messages"], params=p["params"], top_logprobs=p["top_logprobs"],
                               request_hash=h) for h, p in self.store.items(job).items() if h in retry]
        new_jobs = await self.submit(reqs, job.round + 1)
        await asyncio.gather(*(self.drive(j) for j in new_jobs))

    async def poll_until_ended(self, job: BatchJob) -> Polled | None:
        interval = self.poll_interval_s or FIRST_POLL_S
        while True:
            try:
                polled = await self.api.poll(job)
            except TeacherError as err:
                if getattr(err, "status", None) != 404:
                    raise
                # Deleted or archived at the provider: nothing more will come from it.
                return Polled(ended=True, status="not_found", fatal="the provider no longer knows this batch (404)")
            if polled.status != job.provider_status:
                self.store.update_job(job, provider_status=polled.status)
                self.say(f"{job.batch_id}: {polled.status} ({polled.done}/{polled.total})")
            if polled.ended:
                return polled
            if not self.wait:
                return None
            await asyncio.sleep(interval)
            if self.poll_interval_s is None:
                interval = min(interval * 1.5, MAX_POLL_S)

    async def collect(self, job: BatchJob, polled: Polled) -> dict[str, str]:
        """Cache the job's answers as they are read; return {hash: reason} of the items worth resubmitting."""
        payloads = self.store.items(job)
        seen: set[str] = set()
        marks: dict[str, list[tuple[str, str | None]]] = {"done": [], "retry": [], "failed": []}
        retry: dict[str, str] = {}
        async for res in self.api.results(job, polled):
            h = res.custom_id
            if h not in payloads or h in seen:
                continue
            seen.add(h)
            if res.outcome == "ok":
                self.cache.put(h, payloads[h], res.response, batch=True)
                self.counts["completed"] += 1
                marks["done"].append((h, None))
            elif res.outcome in ("retry", "expired"):
                self.counts["expired"] += res.outcome == "expired"
                marks["retry"].append((h, res.reason))
                retry[h] = res.reason or res.outcome
            else:
                marks["failed"].append((h, res.reason))
                if h in self.wanted:
                    self.failures[h] = res.reason or "failed"
            if len(seen) % _FLUSH_EVERY == 0:
                self.flush_marks(job, marks)
        cancelled = polled.status in ("cancelled", "canceled")
        for h in payloads.keys() - seen:  # no result: never run (cancelled), lost, or its line was unreadable
            if cancelled:  # someone stopped this batch on purpose: don't start it again behind their back
                marks["failed"].append((h, "batch cancelled"))
                if h in self.wanted:
                    self.failures[h] = "batch cancelled"
            else:
                marks["retry"].append((h, "missing from the results"))
                retry[h] = "missing from the results"
        self.flush_marks(job, marks)
        self.store.update_job(job, status="ended", provider_status=polled.status,
                              output_file_id=polled.output_file_id, error_file_id=polled.error_file_id)
        # Only this run's requests go out again: an earlier run's leftovers are its own business.
        return {h: r for h, r in retry.items() if h in self.wanted and h not in self.cache}

    def flush_marks(self, job: BatchJob, marks: dict[str, list]) -> None:
        for state, rows in marks.items():
            self.store.mark_items(job, state, rows)
            rows.clear()
