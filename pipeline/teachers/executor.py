"""The execution layer, written once around every backend: cache, budget, concurrency, adaptive
rate limits, retries and timeouts.

Reads and writes the answer cache only. Each answer is committed to the cache the moment it
arrives, so a crash loses at most the requests in flight and a re-run sends only the rest.

- 429, 5xx, timeouts, connection errors and malformed bodies are retried (tenacity: exponential
  backoff with full jitter, or the server's ``Retry-After``; retrying.py); 429s do not use up
  ``max_retries`` (a storm is waited out, up to ``retrying.MAX_RATE_LIMITED_ATTEMPTS``).
- A ``TeacherError`` (400/401/403/404) stops everything at once.
- In-process backends with ``complete_batch`` get groups of ``batch_size`` requests instead.
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.config.teacher import TeacherConfig
from pipeline.errors import DistillError
from pipeline.teachers.base import RetryableError, Teacher, TeacherRequest, TeacherResponse
from pipeline.teachers.budget import Budget, completion_cap, estimate_prompt_tokens, has_completion_cap
from pipeline.teachers.cache import AnswerCache
from pipeline.teachers.concurrency import AdaptiveConcurrency
from pipeline.teachers.limits import AdaptiveLimiter
from pipeline.teachers.replicas import ReplicaRouter
from pipeline.teachers.retrying import with_retries


class RetriesExhausted(DistillError):
    """Some prompts still failed after every retry; the rest are saved and a re-run retries these."""

    exit_code = 5


@dataclass
class RequestToAnswer:
    """One request to answer, with its canonical payload (stored next to the answer)."""

    req: TeacherRequest
    payload: dict[str, Any]

    @property
    def estimated_tokens(self) -> tuple[int, int]:
        chars = sum(len(m.content) for m in self.req.messages)
        return estimate_prompt_tokens(chars), completion_cap(self.req.params)


@dataclass
class ExecutionStats:
    requests_sent: int = 0       # HTTP attempts / batch items actually sent
    new_answers: int = 0
    cached: int = 0
    retries: int = 0
    rate_limited: int = 0        # 429s received
    errors: Counter = field(default_factory=Counter)  # retryable failures by kind
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0
    wall_s: float = 0.0
    failed: dict[str, str] = field(default_factory=dict)  # request hash -> last error
    budget_stopped: str | None = None
    learned_rps: float | None = None
    peak_in_flight: int = 0  # the most requests on the wire at once (the concurrency reached)
    replicas: list[dict] | None = None  # per replica: answered, failures by kind, latency, pace

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests_sent": self.requests_sent, "new_answers": self.new_answers, "cached": self.cached,
            "retries": self.retries, "rate_limited_429": self.rate_limited, "errors": dict(self.errors),
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "cost_usd": self.cost_usd, "wall_s": round(self.wall_s, 3), "failed": len(self.failed),
            "budget_stopped": self.budget_stopped, "learned_rps": self.learned_rps,
            "peak_in_flight": self.peak_in_flight,
            **({"replicas": self.replicas} if self.replicas else {}),
        }


OnAnswer = Callable[[TeacherResponse, float | None], None]


class Executor:
    """Answers jobs through one teacher. ``await run(jobs)`` returns ExecutionStats."""

    def __init__(self, teacher: Teacher, cfg: TeacherConfig, cache: AnswerCache, budget: Budget,
                 *, on_answer: OnAnswer | None = None):
        self.teacher, self.cfg, self.cache, self.budget = teacher, cfg, cache, budget
        self.on_answer = on_answer or (lambda resp, cost: None)
        self.stats = ExecutionStats(cost_usd=0.0 if budget.price else None)
        # One pacer and health record per replica (a base_url list); one replica is a router of one.
        self._replicated = len(getattr(teacher, "replicas", ())) > 1
        self.router = ReplicaRouter(len(teacher.replicas) if self._replicated else 1,
                                    lambda: AdaptiveLimiter(cfg.requests_per_minute, cfg.tokens_per_minute))
        self._semaphore = asyncio.Semaphore(cfg.concurrency)
        # How many requests are on the wire: grows while latency stays flat (concurrency.py).
        self.on_the_wire = AdaptiveConcurrency(cfg.concurrency)
        # Answers received by this run, by request hash (also in the cache): the stage builds its
        # records from these instead of reading them back.
        self.fresh: dict[str, TeacherResponse] = {}
        self._prompt_seen = self._prompt_estimated = 0  # provider-counted vs our estimated prompt tokens

    def pending(self, jobs: list[RequestToAnswer]) -> list[RequestToAnswer]:
        """Jobs with no cached answer, each request once."""
        unique = list({j.req.request_hash: j for j in jobs}.values())
        cached = self.cache.present(j.req.request_hash for j in unique)
        self.stats.cached = len(cached)
        return [j for j in unique if j.req.request_hash not in cached]

    async def run(self, jobs: list[RequestToAnswer]) -> ExecutionStats:
        start = time.perf_counter()
        todo = self.pending(jobs)
        try:
            if hasattr(self.teacher, "complete_batch"):
                await self._run_batched(todo)
            else:
                await self._run_concurrent(todo)
        finally:
            self.stats.wall_s = time.perf_counter() - start
            self.stats.budget_stopped = self.budget.stopped
            self.stats.rate_limited = self.router.rate_limited
            self.stats.learned_rps = round(self.router.rps, 3) if self.router.rps else None
            self.stats.peak_in_flight = self.on_the_wire.peak
            if self._replicated:
                self.stats.replicas = self.router.summary()
        return self.stats

    # -- one request at a time, many in flight -----------------------------------------------
    async def _run_concurrent(self, todo: list[RequestToAnswer]) -> None:
        it = iter(todo)
        # Twice as many workers as slots, so requests sleeping before a retry don't idle the slots.
        n_workers = min(len(todo), 2 * self.cfg.concurrency)
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(n_workers):
                    group.create_task(self._worker(it))
        except BaseExceptionGroup as eg:
            fatal = [e for e in eg.exceptions if isinstance(e, DistillError)]
            raise (fatal[0] if fatal else eg.exceptions[0]) from None

    async def _worker(self, it) -> None:
        for job in it:
            reserved = job.estimated_tokens
            if not self.budget.admit(*reserved):
                return
            try:
                resp = await self._with_retries(self._attempt, job)
            except RetryableError as exc:
                self.budget.settle(reserved, None)
                self.stats.failed[job.req.request_hash] = str(exc)
                continue
            except BaseException:
                self.budget.settle(reserved, None)
                raise
            self._store(job, resp, reserved)

    async def _attempt(self, job: RequestToAnswer) -> TeacherResponse:
        async with self._semaphore:
            replica = self.router.pick()
            limiter = replica.limiter
            outcome, latency, start = "other", None, None
            try:
                # Pace after taking a slot, so no request that passed the pacer before a 429 slowed
                # it is still queued for a slot, ready to go out at the old pace.
                await limiter.acquire(self._costs(job))
                await self.on_the_wire.acquire()
                try:
                    self.stats.requests_sent += 1
                    start = time.monotonic()
                    # The SDK has its own timeout; this one also covers backends that have none.
                    resp = await asyncio.wait_for(self._complete(job.req, replica.index), self.cfg.timeout_s * 1.5 + 5)
                    outcome, latency = "answered", time.monotonic() - start
                except TimeoutError:
                    outcome = "timeout"
                    raise
                except RetryableError as exc:
                    outcome = exc.kind
                    raise
                finally:
                    self.on_the_wire.release(latency, congested=outcome in ("rate_limit", "timeout"))
            except TimeoutError:
                outcome = "timeout"
                self.stats.errors["timeout"] += 1
                limiter.release_probe()
                raise RetryableError("timeout", f"no answer within {self.cfg.timeout_s}s") from None
            except RetryableError as exc:
                outcome = exc.kind
                self.stats.errors[exc.kind] += 1
                if exc.kind == "rate_limit":
                    limiter.on_rate_limited(exc.retry_after_s, exc.headers, sent_at=start)
                limiter.release_probe()
                raise
            # Any other error (401, 400...) stops the run: the probe is not released, so no other
            # request goes out before the cancellation reaches every worker.
            finally:
                if outcome == "answered":
                    self.router.answered(replica, latency)
                elif outcome in ("other", "rate_limit"):
                    self.router.finished_other(replica)
                else:
                    self.router.failed(replica, outcome)
        limiter.on_success(resp.headers, sent_at=start)
        return resp

    def _complete(self, req: TeacherRequest, replica: int):
        if self._replicated:
            return self.teacher.complete(req, replica=replica)
        return self.teacher.complete(req)

    def _costs(self, job: RequestToAnswer) -> dict[str, float]:
        """What the provider charges this request at admission, per bucket: one request, and the
        prompt's tokens plus ``max_tokens`` (OpenAI; Anthropic charges input and output tokens
        separately, output as ``max_tokens`` until the answer is done). The prompt estimate is
        scaled by the provider's own counts seen so far (usage.prompt_tokens), so the pace is not
        off by our characters-per-token guess. Without ``max_tokens``, 1.5x the mean completion."""
        prompt_est, cap = job.estimated_tokens
        prompt = prompt_est * (self._prompt_seen / self._prompt_estimated if self._prompt_estimated else 1.0)
        out = float(cap)
        if not has_completion_cap(job.req.params) and self.stats.new_answers:
            out = min(cap, 1.5 * self.stats.completion_tokens / self.stats.new_answers + 1)
        return {"requests": 1.0, "tokens": prompt + out, "input_tokens": prompt, "output_tokens": out}

    async def _with_retries(self, attempt: Callable, *args: Any):
        def count_retry() -> None:
            self.stats.retries += 1

        return await with_retries(attempt, *args, cfg=self.cfg, before_sleep=count_retry)

    def _store(self, job: RequestToAnswer, resp: TeacherResponse, reserved: tuple[int, int]) -> None:
        cost = self.budget.settle(reserved, (resp.usage.prompt_tokens, resp.usage.completion_tokens))
        self.cache.put(job.req.request_hash, job.payload, resp)
        self.fresh[job.req.request_hash] = resp
        self.stats.new_answers += 1
        self.stats.prompt_tokens += resp.usage.prompt_tokens
        if resp.usage.prompt_tokens:
            self._prompt_seen += resp.usage.prompt_tokens
            self._prompt_estimated += reserved[0]
        self.stats.completion_tokens += resp.usage.completion_tokens
        if self.stats.cost_usd is not None and cost is not None:
            self.stats.cost_usd += cost
        self.on_answer(resp, cost)

    # -- in-process backends: groups of batch_size ---------------------------------------------
    async def _run_batched(self, todo: list[RequestToAnswer]) -> None:
        size = self.cfg.batch_size
        # Prompts of similar length share a batch: a padded batch costs its longest prompt for every
        # row (real inputs run from 5 to 100+ words). Answers are cached by hash, so order is free.
        todo = sorted(todo, key=lambda j: sum(len(m.content) for m in j.req.messages))
        for i in range(0, len(todo), size):
            group = []
            for job in todo[i : i + size]:
                if not self.budget.admit(*job.estimated_tokens):
                    break
                group.append(job)
            if group:
                await self._answer_group(group)
            if self.budget.stopped:
                return

    async def _answer_group(self, group: list[RequestToAnswer]) -> None:
        async def attempt() -> list[TeacherResponse]:
            self.stats.requests_sent += len(group)
            try:
                out = await self.teacher.complete_batch([j.req for j in group])
            except RetryableError as exc:
                self.stats.errors[exc.kind] += 1
                raise
            if len(out) != len(group):
                self.stats.errors["malformed"] += 1
                raise RetryableError("malformed", f"complete_batch returned {len(out)} answers for {len(group)} prompts")
            return out

        try:
            answers = await self._with_retries(attempt)
        except RetryableError as exc:
            for job in group:
                self.budget.settle(job.estimated_tokens, None)
                self.stats.failed[job.req.request_hash] = str(exc)
            return
        except BaseException:
            for job in group:
                self.budget.settle(job.estimated_tokens, None)
            raise
        for job, resp in zip(group, answers):
            self._store(job, resp, job.estimated_tokens)
