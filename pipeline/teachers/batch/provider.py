"""What the two batch adapters (``openai_api.py``, ``anthropic_api.py``) share: their settings,
what they hand back to ``run.py`` (``Polled``, ``ItemResult``), and the careful parts of talking
to a batch API (a create that is never retried blind, results read line by line, SDK errors as one
line). Reads and writes nothing itself.
"""
from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pipeline.errors import TeacherError


class BatchAPIBase:
    """Settings both adapters read from the teacher config. A subclass sets ``provider`` and
    ``key_env`` and builds its SDK client from ``key``, ``base_url``, ``timeout_s``, ``max_retries``."""

    provider: str
    key_env: str

    def __init__(self, cfg: Any, sdk: Any, max_requests: int, max_bytes: int):
        from pipeline.teachers.openai_backend import api_key_for

        self._errors = (sdk.APIError,)
        self.key = api_key_for(cfg, self.key_env)
        # Batches are not spread over replicas: a list of base URLs sends them to the first.
        self.base_url = cfg.base_url[0] if isinstance(cfg.base_url, list) else cfg.base_url
        self.endpoint = self.base_url or "default"
        self.model = cfg.model
        self.max_requests, self.max_bytes = max_requests, max_bytes
        self.timeout_s, self.max_retries = cfg.timeout_s, cfg.max_retries


# -- what a provider adapter hands back ----------------------------------------------------------
@dataclass
class Polled:
    """A batch's state at one poll."""

    ended: bool
    status: str  # the provider's own word: in_progress, completed, expired, ended, ...
    done: int = 0
    total: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    latency_s: float = 0.0  # creation to end: the turnaround every answer in the batch shares
    fatal: str | None = None  # the whole batch was refused (e.g. failed validation)


@dataclass
class ItemResult:
    """One request's fate: ``ok`` (with its response), ``retry`` (a 5xx, a malformed line),
    ``expired`` (the window closed first), or ``failed`` (a 4xx or a cancel: not resubmitted)."""

    custom_id: str
    outcome: str
    response: Any = None  # TeacherResponse when ok
    reason: str | None = None


# Answers that a retry may fix. To a create call they also prove nothing was created.
RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504, 529}
UPLOAD_TIMEOUT_S = 600.0  # a batch body runs to 200-256 MB: far longer than one chat request


async def create_batch_once(create: Callable[[], Awaitable[Any]], sdk_errors: tuple, where: str,
                            max_retries: int) -> Any:
    """Call a batch-creating POST whose client has SDK retries off. Neither SDK sends an
    idempotency key, so its retry of a timed-out create could start a second, paid batch; here only
    answers that prove nothing was created (429, 5xx) are retried, with tenacity's backoff. A
    timeout is raised as is: the job stays ``submitting`` and the next run looks for it."""
    from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

    retrying = AsyncRetrying(
        retry=retry_if_exception(lambda exc: getattr(exc, "status_code", None) in RETRYABLE_STATUS),
        stop=stop_after_attempt(max_retries + 1), wait=wait_exponential_jitter(multiplier=0.5, max=60), reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                return await create()
    except sdk_errors as exc:
        raise sdk_error(exc, where) from None


def parse_line(line: str) -> dict | None:
    """One line of a results file, or None when it is blank or unreadable: its item then counts as
    missing from the results and is resubmitted, while every other line is still read."""
    try:
        row = json.loads(line) if line.strip() else None
    except json.JSONDecodeError:
        return None
    return row if isinstance(row, dict) and isinstance(row.get("custom_id"), str) else None


async def stream_results(stream: Any, item_result: Callable[[dict, float], ItemResult], latency_s: float,
                         sdk_errors: tuple, where: str) -> AsyncIterator[ItemResult]:
    """Read a results file as it streams (``stream``: the SDK's ``with_streaming_response`` call, not
    yet entered), so each answer is cached the moment its line arrives."""
    try:
        async with stream as resp:
            async for line in resp.iter_lines():
                row = parse_line(line)
                if row is not None:
                    yield item_result(row, latency_s)
    except sdk_errors as exc:
        raise sdk_error(exc, where) from None


def sdk_error(exc: Exception, where: str) -> TeacherError:
    """One line for an SDK exception. The SDK has already retried 429/5xx/connection errors
    (``max_retries``); what still fails stops the run, and the saved jobs resume on the next one."""
    status = getattr(exc, "status_code", None)
    err = _sdk_error(exc, status, where)
    # An HTTP answer means the provider decided; without one (timeout, reset) a submit may have landed.
    err.provider_answered = status is not None
    err.status = status
    return err


def _sdk_error(exc: Exception, status: int | None, where: str) -> TeacherError:
    from pipeline.teachers.base import classify_status

    if status is not None:
        headers = {k.lower(): v for k, v in getattr(getattr(exc, "response", None), "headers", {}).items()}
        err = classify_status(status, str(getattr(exc, "message", exc)), headers, where)
        if isinstance(err, TeacherError):
            return err
        return TeacherError(f"{where}: HTTP {status} after retries; submitted batches are saved, re-run to resume")
    return TeacherError(
        f"{where}: {type(exc).__name__} ({str(exc)[:120]}); submitted batches are saved, re-run to resume polling"
    )
