"""The one teacher protocol every backend speaks, and the request/response it exchanges.

A backend only turns a ``TeacherRequest`` into a ``TeacherResponse`` (or raises). Concurrency,
rate limits, retries, the cache and the budget wrap it once, in ``executor.py``; so a backend
reports a failure by raising one of two kinds of error:

- ``RetryableError`` (429, 5xx, timeout, connection reset, malformed body): the executor backs
  off and tries again, honouring ``retry_after_s`` and learning limits from ``headers``;
- ``pipeline.errors.TeacherError`` (400, 401, 403, 404, a config mistake): the run stops at once.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from pipeline.records import Message, TokenPosition, Usage, request_hash


class TeacherRequest(BaseModel):
    """One prompt to answer. ``request_hash`` keys the cache: the same request is never paid twice."""

    model_config = ConfigDict(extra="forbid")
    messages: list[Message]
    params: dict[str, Any] = Field(default_factory=dict, description="Sampling parameters, sent as-is.")
    top_logprobs: int | None = None
    labels: list[str] | None = Field(
        None, description="Label tasks with a scoring backend: score these labels instead of generating.")
    request_hash: str


class TeacherResponse(BaseModel):
    """One answer, normalised across backends."""

    model_config = ConfigDict(extra="forbid")
    text: str
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    latency_s: float = 0.0
    logprobs: list[TokenPosition] | None = None
    label_logprobs: dict[str, float] | None = None  # a scored label request: log P(label) for each label
    model: str
    # Rate-limit response headers (lower-cased) for the executor to learn limits from; never stored.
    headers: dict[str, str] | None = Field(None, exclude=True)


@runtime_checkable
class Teacher(Protocol):
    """What the executor needs from a backend. In-process backends (hf, vllm) may also define
    ``async def complete_batch(reqs: list[TeacherRequest]) -> list[TeacherResponse]``."""

    backend: str
    model: str

    async def complete(self, req: TeacherRequest) -> TeacherResponse: ...

    async def aclose(self) -> None: ...


class RetryableError(Exception):
    """A failure a retry may fix. ``kind`` is one of: rate_limit, server, timeout, connection, malformed."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.retry_after_s = retry_after_s
        self.headers = headers or {}


def request_payload(backend: str, model: str, params: dict[str, Any], top_logprobs: int | None,
                    messages: list[Message], variant: int = 0, labels: list[str] | None = None) -> dict[str, Any]:
    """The canonical request: what decides the answer, hence what the cache key hashes.
    The base URL and the API key are deliberately left out: replicas of one model answer alike.
    ``variant`` > 0 marks a deliberate repeat of the same prompt (teacher-written inputs sample
    one prompt several times), so each repeat has its own cache entry."""
    payload = {
        "backend": backend,
        "model": model,
        "params": params,
        "top_logprobs": top_logprobs,
        "messages": [m.model_dump() for m in messages],
    }
    if variant:
        payload["variant"] = variant
    if labels:
        payload["labels"] = list(labels)
    return payload


def make_request(backend: str, model: str, messages: list[Message], params: dict[str, Any],
                 top_logprobs: int | None = None, variant: int = 0,
                 labels: list[str] | None = None) -> tuple[TeacherRequest, dict[str, Any]]:
    """A request plus its canonical payload (stored next to the answer in the cache)."""
    payload = request_payload(backend, model, params, top_logprobs, messages, variant, labels)
    # The messages are validated Message models already: constructing skips a second validation
    # (a run builds every request before the first goes out, so this is start-up time).
    req = TeacherRequest.model_construct(messages=list(messages), params=dict(params), top_logprobs=top_logprobs,
                                         labels=labels, request_hash=request_hash(payload))
    return req, payload


def parse_retry_after(headers: dict[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` (OpenAI, precise) or ``Retry-After`` (whole seconds,
    or an HTTP date per RFC 9110)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        import time
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def classify_status(status: int, message: str, headers: dict[str, str], where: str) -> Exception:
    """Map an HTTP error status to the error the executor acts on."""
    from pipeline.errors import TeacherError

    if status == 429:
        return RetryableError("rate_limit", f"{where}: 429 rate limited", status=status,
                              retry_after_s=parse_retry_after(headers), headers=headers)
    if status >= 500 or status in (408, 409):
        return RetryableError("server", f"{where}: HTTP {status}", status=status,
                              retry_after_s=parse_retry_after(headers), headers=headers)
    hint = {
        400: "the request was rejected; check teacher.params and teacher.model",
        401: "the API key was refused; check the key in the environment or .env",
        403: "the key may not use this model; check teacher.model and the key's permissions",
        404: "no such model or endpoint; check teacher.model and teacher.base_url",
        413: "the request is too large; shorten the prompt or max_tokens",
        422: "the request was rejected; check teacher.params",
    }.get(status, "not retried; check the teacher config")
    return TeacherError(f"{where}: HTTP {status} {message[:200]} — {hint}")
