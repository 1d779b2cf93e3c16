"""OpenAI Files + Batches for ``distill generate --batch``, through the official ``openai`` SDK.

One batch = one uploaded JSONL file (purpose "batch") of POST /v1/chat/completions lines, each with
``custom_id`` = the request hash. The batch carries ``metadata.distill_local_id`` so a run killed
between ``batches.create`` and our SQLite commit finds its batch again (``find``) instead of paying
for it twice. Results are read line by line from the output and error files, so each answer is
cached the moment it is read.
"""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from pipeline.config.teacher import TeacherConfig
from pipeline.teachers.base import RetryableError, TeacherRequest
from pipeline.teachers.batch.jobs import BatchJob
from pipeline.teachers.batch.provider import (
    RETRYABLE_STATUS,
    UPLOAD_TIMEOUT_S,
    BatchAPIBase,
    ItemResult,
    Polled,
    create_batch_once,
    sdk_error,
    stream_results,
)
from pipeline.teachers.openai_backend import response_from_body

# The Batch API's input file limits (platform.openai.com/docs/guides/batch).
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
ENDPOINT = "/v1/chat/completions"
# Statuses after which a batch changes no more.
_ENDED = {"completed", "expired", "cancelled", "failed"}


def chat_body(model: str, req: TeacherRequest) -> dict[str, Any]:
    """The POST /v1/chat/completions body for ``req``: what the online backend would send."""
    body: dict[str, Any] = {"model": model, "messages": [m.model_dump() for m in req.messages], **req.params}
    if req.top_logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = req.top_logprobs
    return body


def item_result(line: dict, latency_s: float) -> ItemResult:
    """One line of an output or error file -> its outcome."""
    cid = line["custom_id"]
    error, response = line.get("error"), line.get("response")
    if error:
        code = error.get("code") or ""
        if code == "batch_expired":
            return ItemResult(cid, "expired", reason="batch window expired")
        if code == "batch_cancelled":
            return ItemResult(cid, "failed", reason="batch cancelled")
        return ItemResult(cid, "retry", reason=f"{code}: {error.get('message', '')}"[:200])
    status = (response or {}).get("status_code")
    if status == 200:
        try:
            return ItemResult(cid, "ok", response=response_from_body(response.get("body"), latency_s, {}, True))
        except RetryableError as exc:  # a malformed completion: paid for, but unusable; ask again
            return ItemResult(cid, "retry", reason=str(exc)[:200])
    message = (((response or {}).get("body") or {}).get("error") or {}).get("message", "")
    outcome = "retry" if status in RETRYABLE_STATUS else "failed"  # any other is the request's own fault
    return ItemResult(cid, outcome, reason=f"HTTP {status}: {message}"[:200])


class OpenAIBatchAPI(BatchAPIBase):
    provider, key_env = "openai", "OPENAI_API_KEY"

    def __init__(self, cfg: TeacherConfig, *, max_requests: int = MAX_REQUESTS, max_bytes: int = MAX_BYTES):
        import openai

        super().__init__(cfg, openai, max_requests, max_bytes)
        self.client = openai.AsyncOpenAI(api_key=self.key, base_url=self.base_url, max_retries=self.max_retries,
                                         timeout=self.timeout_s)

    def entry(self, req: TeacherRequest) -> dict:
        return {"custom_id": req.request_hash, "method": "POST", "url": ENDPOINT, "body": chat_body(self.model, req)}

    @staticmethod
    def entry_bytes(entry: dict) -> bytes:
        return (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")

    async def submit(self, entries: list[dict], job: BatchJob) -> dict[str, str]:
        data = b"".join(self.entry_bytes(e) for e in entries)
        try:  # a repeated upload costs nothing: the SDK may retry it
            upload = await self.client.files.create(file=(f"distill-{job.local_id}.jsonl", data), purpose="batch",
                                                    timeout=max(self.timeout_s, UPLOAD_TIMEOUT_S))
        except self._errors as exc:
            raise sdk_error(exc, "openai batch upload") from None
        batch = await create_batch_once(
            lambda: self.client.with_options(max_retries=0).batches.create(
                input_file_id=upload.id, endpoint=ENDPOINT, completion_window="24h",
                metadata={"distill_local_id": job.local_id}),
            self._errors, "openai batch submit", self.max_retries)
        return {"batch_id": batch.id, "input_file_id": upload.id}

    async def find(self, job: BatchJob, claimed: set[str] = frozenset()) -> str | None:
        """The batch created for ``job`` before a crash kept us from recording it, if any."""
        try:
            async for batch in self.client.batches.list(limit=100):
                if (batch.metadata or {}).get("distill_local_id") == job.local_id:
                    return batch.id
                if batch.created_at < job.created_at - 300:  # newest first: older ones cannot be ours
                    return None
        except self._errors as exc:
            raise sdk_error(exc, "openai batch list") from None
        return None

    async def poll(self, job: BatchJob) -> Polled:
        try:
            b = await self.client.batches.retrieve(job.batch_id)
        except self._errors as exc:
            raise sdk_error(exc, f"openai batch {job.batch_id}") from None
        counts = b.request_counts
        end = b.completed_at or b.expired_at or b.cancelled_at or b.failed_at
        fatal = None
        if b.status == "failed":
            errs = (b.errors.data if b.errors and b.errors.data else [])
            fatal = "; ".join(f"{e.code}: {e.message}" for e in errs[:3]) or "failed validation"
        return Polled(
            ended=b.status in _ENDED, status=b.status,
            done=(counts.completed + counts.failed) if counts else 0, total=counts.total if counts else 0,
            output_file_id=b.output_file_id, error_file_id=b.error_file_id,
            latency_s=float(end - b.created_at) if end else 0.0, fatal=fatal,
        )

    async def results(self, job: BatchJob, polled: Polled) -> AsyncIterator[ItemResult]:
        for file_id in (polled.output_file_id, polled.error_file_id):
            if not file_id:
                continue
            stream = self.client.files.with_streaming_response.content(file_id)
            async for res in stream_results(stream, item_result, polled.latency_s, self._errors,
                                            f"openai file {file_id}"):
                yield res

    async def aclose(self) -> None:
        await self.client.close()
