"""Anthropic Message Batches for ``distill generate --batch``, through the official ``anthropic`` SDK.

One batch = one POST /v1/messages/batches of ``{custom_id, params}`` requests, ``custom_id`` = the
request hash (64 hex digits: exactly Anthropic's limit). Results stream from the batch's
``results_url`` as JSONL, each answer cached as it is read. Anthropic batches carry no metadata,
so a batch created just before a crash is found again (``find``) by its creation time and size.
"""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from pipeline.config.teacher import TeacherConfig
from pipeline.errors import ConfigError
from pipeline.teachers.anthropic_backend import response_from_body
from pipeline.teachers.base import RetryableError, TeacherRequest
from pipeline.teachers.batch.jobs import BatchJob
from pipeline.teachers.batch.provider import (
    UPLOAD_TIMEOUT_S,
    BatchAPIBase,
    ItemResult,
    Polled,
    create_batch_once,
    sdk_error,
    stream_results,
)

# The Message Batches limits (docs.anthropic.com/en/docs/build-with-claude/batch-processing).
MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024
# Error types a resubmission may fix; an invalid_request_error would only fail again.
_RETRYABLE_ERRORS = {"api_error", "overloaded_error", "rate_limit_error", "timeout_error"}


def message_params(model: str, req: TeacherRequest) -> dict[str, Any]:
    """The Messages API ``params`` for ``req``: system turns go to the top-level ``system`` field."""
    system = "\n\n".join(m.content for m in req.messages if m.role == "system")
    params: dict[str, Any] = {"model": model, **req.params,
                              "messages": [m.model_dump() for m in req.messages if m.role != "system"]}
    if system:
        params["system"] = system
    if "max_tokens" not in params:
        raise ConfigError("teacher.params.max_tokens: the Anthropic API requires it; add e.g. max_tokens: 256")
    return params


def item_result(row: dict, latency_s: float) -> ItemResult:
    """One line of the results JSONL (a dict: parsed here, not by the SDK, so one bad line costs
    only its own item) -> its outcome."""
    cid, result = row["custom_id"], row.get("result") or {}
    kind = result.get("type")
    if kind == "succeeded":
        try:
            return ItemResult(cid, "ok", response=response_from_body(result.get("message"), latency_s, {}))
        except RetryableError as exc:  # a malformed message: paid for, but unusable; ask again
            return ItemResult(cid, "retry", reason=str(exc)[:200])
    if kind == "expired":
        return ItemResult(cid, "expired", reason="batch expired before this request ran")
    if kind == "canceled":
        return ItemResult(cid, "failed", reason="batch canceled")
    err = ((result.get("error") or {}).get("error")) or {}
    outcome = "retry" if err.get("type") in _RETRYABLE_ERRORS or kind != "errored" else "failed"
    return ItemResult(cid, outcome, reason=f"{err.get('type') or kind}: {err.get('message', '')}"[:200])


class AnthropicBatchAPI(BatchAPIBase):
    provider, key_env = "anthropic", "ANTHROPIC_API_KEY"

    def __init__(self, cfg: TeacherConfig, *, max_requests: int = MAX_REQUESTS, max_bytes: int = MAX_BYTES):
        import anthropic

        # The limit is on the whole request body: leave room for the {"requests": [...]} around the entries.
        super().__init__(cfg, anthropic, max_requests, max_bytes - 64)
        self.client = anthropic.AsyncAnthropic(api_key=self.key, base_url=self.base_url,
                                               max_retries=self.max_retries, timeout=self.timeout_s)

    def entry(self, req: TeacherRequest) -> dict:
        return {"custom_id": req.request_hash, "params": message_params(self.model, req)}

    @staticmethod
    def entry_bytes(entry: dict) -> bytes:
        return (json.dumps(entry, ensure_ascii=False) + ",").encode("utf-8")  # one element of the JSON array

    async def submit(self, entries: list[dict], job: BatchJob) -> dict[str, str]:
        batch = await create_batch_once(
            lambda: self.client.with_options(max_retries=0).messages.batches.create(
                requests=entries, timeout=max(self.timeout_s, UPLOAD_TIMEOUT_S)),
            self._errors, "anthropic batch submit", self.max_retries)
        return {"batch_id": batch.id}

    async def find(self, job: BatchJob, claimed: set[str] = frozenset()) -> str | None:
        """A batch of ``job``'s size created around its submission that no job has claimed."""
        try:
            async for batch in self.client.messages.batches.list(limit=100):
                created = batch.created_at.timestamp()
                if created < job.created_at - 300:  # newest first: older ones cannot be ours
                    return None
                counts = batch.request_counts
                total = counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired
                if batch.id not in claimed and total == job.n_requests and created >= job.created_at - 60:
                    return batch.id
        except self._errors as exc:
            raise sdk_error(exc, "anthropic batch list") from None
        return None

    async def poll(self, job: BatchJob) -> Polled:
        try:
            b = await self.client.messages.batches.retrieve(job.batch_id)
        except self._errors as exc:
            raise sdk_error(exc, f"anthropic batch {job.batch_id}") from None
        c = b.request_counts
        total = c.processing + c.succeeded + c.errored + c.canceled + c.expired
        latency = (b.ended_at - b.created_at).total_seconds() if b.ended_at else 0.0
        return Polled(ended=b.processing_status == "ended", status=b.processing_status,
                      done=total - c.processing, total=total, latency_s=latency)

    async def results(self, job: BatchJob, polled: Polled) -> AsyncIterator[ItemResult]:
        stream = self.client.messages.batches.with_streaming_response.results(job.batch_id)
        async for res in stream_results(stream, item_result, polled.latency_s, self._errors,
                                        f"anthropic batch {job.batch_id} results"):
            yield res

    async def aclose(self) -> None:
        await self.client.close()
