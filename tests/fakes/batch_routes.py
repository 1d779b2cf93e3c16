"""Fake OpenAI Files + Batches and Anthropic Message Batches, on the real wire protocol.

The routes speak what the official SDKs speak (multipart upload, JSONL files, the batch objects and
their status lifecycles, the Anthropic ``results_url`` JSONL), so ``run_batch`` is tested through
the real ``openai`` / ``anthropic`` clients over a real socket. What a test controls:

    polls_to_complete   how many GET /batches/{id} answer "in progress" before the batch ends
    outcome(cid, n)     per item and per submission n (1, 2, ...): "ok", "error" (a 500 / api_error:
                        worth a retry), "invalid" (a 400 / invalid_request_error: not worth one),
                        "expired" (the batch ran out of time before this item), "canceled"
                        (someone cancelled the batch first: OpenAI leaves it out of both files),
                        "malformed" (a success whose answer has no choices / content), or
                        "truncated" (the item's line in the results is cut off mid-JSON)
    max_requests/bytes  the provider's per-batch limits (defaults: the real ones)
    api_key             when set, other keys get a 401 in the provider's error shape
    poll_faults         the next N batch GETs answer 503 (an outage while polling)
    create_faults       the next N batch creates answer 503 (and create nothing)
    create_delay_s      a create registers the batch, then waits this long before answering
                        (a client timeout then leaves a batch the client never heard of)

and what it counts: ``submissions[custom_id]`` (times an item was sent in any batch), ``calls``
(per route), so a test can assert that nothing was submitted twice.

Add them to the shared fake server with ``FakeServer(extra_routes=[fake.hook])`` (then set
``fake.base_url = srv.base``), or to any aiohttp app with ``install(app, fake)``.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

OPENAI_MAX_REQUESTS, OPENAI_MAX_BYTES = 50_000, 200 * 1024 * 1024
ANTHROPIC_MAX_REQUESTS, ANTHROPIC_MAX_BYTES = 100_000, 256 * 1024 * 1024


def fake_answer(messages: list[dict]) -> str:
    """The deterministic answer the fake gives: tests recompute it to check what the cache holds."""
    last = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    content = last if isinstance(last, str) else json.dumps(last)
    return "answer to " + " ".join(content.split()[:4])


def _tokens(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def _count_words(messages: list[dict]) -> int:
    return sum(len(str(m.get("content", "")).split()) for m in messages)


def chat_completion(body: dict, model_suffix: str = "") -> dict:
    """A /v1/chat/completions response body for ``body``, with logprobs when asked."""
    text = fake_answer(body.get("messages", []))
    toks = _tokens(text)
    logprobs = None
    if body.get("logprobs"):
        k = int(body.get("top_logprobs") or 0)
        content = []
        for i, tok in enumerate(toks):
            top = [{"token": tok, "logprob": -0.05, "bytes": list(tok.encode())}]
            top += [{"token": f" alt{j}", "logprob": -3.0 - j, "bytes": list(f" alt{j}".encode())} for j in range(k - 1)]
            content.append({"token": tok, "logprob": -0.05, "bytes": list(tok.encode()), "top_logprobs": top[:k]})
        logprobs = {"content": content, "refusal": None}
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex[:12],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "gpt-4o-mini") + model_suffix,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                     "logprobs": logprobs, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": _count_words(body.get("messages", [])), "completion_tokens": len(toks),
                  "total_tokens": _count_words(body.get("messages", [])) + len(toks)},
    }


def anthropic_message(params: dict) -> dict:
    text = fake_answer(params.get("messages", []))
    return {
        "id": "msg_" + uuid.uuid4().hex[:20], "type": "message", "role": "assistant",
        "model": params.get("model", "claude-haiku-4-5"),
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": _count_words(params.get("messages", [])), "output_tokens": len(_tokens(text))},
    }


def jsonl(rows: list[dict]) -> bytes:
    """A results file; a row marked ``_cut`` is written cut off halfway (a damaged line)."""
    lines = []
    for row in rows:
        text = json.dumps({k: v for k, v in row.items() if k != "_cut"})
        lines.append(text[: len(text) // 2] if row.get("_cut") else text)
    return "".join(line + "\n" for line in lines).encode()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class BatchFake:
    polls_to_complete: int = 1
    outcome: Callable[[str, int], str] = lambda custom_id, attempt: "ok"
    openai_max_requests: int = OPENAI_MAX_REQUESTS
    openai_max_bytes: int = OPENAI_MAX_BYTES
    anthropic_max_requests: int = ANTHROPIC_MAX_REQUESTS
    anthropic_max_bytes: int = ANTHROPIC_MAX_BYTES
    api_key: str | None = None
    poll_faults: int = 0
    create_faults: int = 0
    create_delay_s: float = 0.0
    base_url: str = ""  # set when served: Anthropic's results_url is absolute
    files: dict[str, bytes] = field(default_factory=dict)
    openai_batches: dict[str, dict] = field(default_factory=dict)
    anthropic_batches: dict[str, dict] = field(default_factory=dict)
    submissions: Counter = field(default_factory=Counter)
    calls: Counter = field(default_factory=Counter)
    _private: dict[str, Any] = field(default_factory=dict)  # batch id -> (items, polls seen, results)

    def hook(self, app: web.Application, state: Any = None) -> None:
        """The ``extra_routes`` hook for the shared fake server."""
        install(app, self)

    def duplicates(self) -> dict[str, int]:
        return {cid: n for cid, n in self.submissions.items() if n > 1}


def _openai_error(status: int, message: str, code: str | None = None) -> web.Response:
    kind = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error"}.get(status, "server_error")
    return web.json_response({"error": {"message": message, "type": kind, "param": None, "code": code}}, status=status)


def _anthropic_error(status: int, message: str) -> web.Response:
    kind = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error"}.get(status, "api_error")
    return web.json_response({"type": "error", "error": {"type": kind, "message": message}}, status=status)


def install(app: web.Application, fake: BatchFake) -> None:
    """Add the batch routes to ``app``."""

    def openai_auth(request: web.Request) -> web.Response | None:
        got = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if fake.api_key is not None and got != fake.api_key:
            return _openai_error(401, f"Incorrect API key provided: {got}.", "invalid_api_key")
        return None

    def anthropic_auth(request: web.Request) -> web.Response | None:
        if fake.api_key is not None and request.headers.get("x-api-key") != fake.api_key:
            return _anthropic_error(401, "invalid x-api-key")
        return None

    def register(batch_id: str, lines: list[dict]) -> None:
        """Count each item's submission; remember which submission of it this batch is."""
        attempts = {}
        for line in lines:
            fake.submissions[line["custom_id"]] += 1
            attempts[line["custom_id"]] = fake.submissions[line["custom_id"]]
        fake._private[batch_id] = {"lines": lines, "attempts": attempts, "polls": 0}

    # ---------------------------------------------------------------- OpenAI Files
    async def upload_file(request: web.Request) -> web.Response:
        fake.calls["files.create"] += 1
        if (denied := openai_auth(request)) is not None:
            return denied
        form = await request.post()
        upload, purpose = form.get("file"), form.get("purpose")
        if upload is None or not hasattr(upload, "file") or purpose != "batch":
            return _openai_error(400, "expected multipart 'file' and purpose=batch")
        data = upload.file.read()
        file_id = "file-" + uuid.uuid4().hex[:24]
        fake.files[file_id] = data
        return web.json_response({"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                                  "filename": upload.filename or "batch.jsonl", "purpose": "batch", "status": "processed"})

    async def file_content(request: web.Request) -> web.Response:
        fake.calls["files.content"] += 1
        if (denied := openai_auth(request)) is not None:
            return denied
        data = fake.files.get(request.match_info["file_id"])
        if data is None:
            return _openai_error(404, "No such File object")
        return web.Response(body=data, content_type="application/octet-stream")

    # ---------------------------------------------------------------- OpenAI Batches
    async def create_openai_batch(request: web.Request) -> web.Response:
        fake.calls["batches.create"] += 1
        if (denied := openai_auth(request)) is not None:
            return denied
        if fake.create_faults > 0:
            fake.create_faults -= 1
            return _openai_error(503, "The server is overloaded")
        body = await request.json()
        data = fake.files.get(body.get("input_file_id", ""))
        if data is None:
            return _openai_error(400, "input_file_id not found")
        if body.get("completion_window") != "24h":
            return _openai_error(400, "completion_window must be 24h")
        now = time.time()
        batch = {"id": "batch_" + uuid.uuid4().hex[:24], "object": "batch", "endpoint": body.get("endpoint"),
                 "errors": None, "input_file_id": body["input_file_id"], "completion_window": "24h",
                 "status": "validating", "output_file_id": None, "error_file_id": None, "created_at": int(now),
                 "expires_at": int(now + 86400), "metadata": body.get("metadata"),
                 "request_counts": {"total": 0, "completed": 0, "failed": 0}}
        lines = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
        problem = None
        ids = [line.get("custom_id") for line in lines]
        if len(lines) > fake.openai_max_requests or len(data) > fake.openai_max_bytes:
            problem = ("too_many_requests", f"batch input exceeds {fake.openai_max_requests} requests or {fake.openai_max_bytes} bytes")
        elif len(set(ids)) != len(ids):
            problem = ("duplicate_custom_id", "The custom_id for each request must be unique")
        elif any(line.get("url") != body.get("endpoint") or line.get("method") != "POST" for line in lines):
            problem = ("invalid_url", "every line's url must equal the batch endpoint, method POST")
        if problem:
            batch.update(status="failed", failed_at=int(now),
                         errors={"object": "list", "data": [{"code": problem[0], "message": problem[1], "line": None}]})
        else:
            batch["request_counts"]["total"] = len(lines)
            register(batch["id"], lines)
        fake.openai_batches[batch["id"]] = batch
        await asyncio.sleep(fake.create_delay_s)
        return web.json_response(batch)

    def finish_openai(batch: dict) -> None:
        priv = fake._private[batch["id"]]
        out, err, expired, cancelled = [], [], False, False
        for line in priv["lines"]:
            cid = line["custom_id"]
            result = fake.outcome(cid, priv["attempts"][cid])
            rid = "batch_req_" + uuid.uuid4().hex[:16]
            if result in ("ok", "malformed", "truncated"):
                body = chat_completion(line["body"])
                if result == "malformed":
                    body.pop("choices")
                out.append({"id": rid, "custom_id": cid, "error": None, "_cut": result == "truncated",
                            "response": {"status_code": 200, "request_id": "req_" + rid, "body": body}})
            elif result == "canceled":
                cancelled = True
            elif result == "expired":
                expired = True
                err.append({"id": rid, "custom_id": cid, "response": None, "error": {
                    "code": "batch_expired", "message": "This request could not be executed before the completion window expired."}})
            else:
                status = 400 if result == "invalid" else 500
                err.append({"id": rid, "custom_id": cid, "error": None, "response": {
                    "status_code": status, "request_id": "req_" + rid,
                    "body": {"error": {"message": "fake " + result, "type": "invalid_request_error" if status == 400 else "server_error",
                                       "param": None, "code": None}}}})
        for kind, rows in (("output_file_id", out), ("error_file_id", err)):
            if rows:
                file_id = "file-" + uuid.uuid4().hex[:24]
                fake.files[file_id] = jsonl(rows)
                batch[kind] = file_id
        now = int(time.time())
        status = "cancelled" if cancelled else "expired" if expired else "completed"
        batch.update(status=status, request_counts={"total": len(priv["lines"]), "completed": len(out), "failed": len(err)})
        batch[{"cancelled": "cancelled_at", "expired": "expired_at"}.get(status, "completed_at")] = now

    async def get_openai_batch(request: web.Request) -> web.Response:
        fake.calls["batches.retrieve"] += 1
        if (denied := openai_auth(request)) is not None:
            return denied
        if fake.poll_faults > 0:
            fake.poll_faults -= 1
            return _openai_error(503, "The server is overloaded")
        batch = fake.openai_batches.get(request.match_info["batch_id"])
        if batch is None:
            return _openai_error(404, "No such Batch object")
        priv = fake._private.get(batch["id"])
        if priv is not None and batch["status"] in ("validating", "in_progress"):
            priv["polls"] += 1
            batch["status"] = "in_progress"
            if priv["polls"] >= fake.polls_to_complete:
                finish_openai(batch)
        return web.json_response(batch)

    async def list_openai_batches(request: web.Request) -> web.Response:
        fake.calls["batches.list"] += 1
        if (denied := openai_auth(request)) is not None:
            return denied
        data = sorted(fake.openai_batches.values(), key=lambda b: b["created_at"], reverse=True)
        return web.json_response({"object": "list", "data": data, "has_more": False,
                                  "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None})

    # ---------------------------------------------------------------- Anthropic Message Batches
    async def create_anthropic_batch(request: web.Request) -> web.Response:
        fake.calls["messages.batches.create"] += 1
        if (denied := anthropic_auth(request)) is not None:
            return denied
        if fake.create_faults > 0:
            fake.create_faults -= 1
            return _anthropic_error(529, "Overloaded")
        raw = await request.read()
        reqs = json.loads(raw).get("requests", [])
        ids = [r.get("custom_id") for r in reqs]
        if len(reqs) > fake.anthropic_max_requests or len(raw) > fake.anthropic_max_bytes:
            return _anthropic_error(413, "request_too_large: batch exceeds the request count or size limit")
        if len(set(ids)) != len(ids) or not all(isinstance(i, str) and 0 < len(i) <= 64 for i in ids):
            return _anthropic_error(400, "custom_id values must be unique strings of 1-64 characters")
        if any("max_tokens" not in r.get("params", {}) for r in reqs):
            return _anthropic_error(400, "requests.params.max_tokens: Field required")
        now = time.time()
        batch = {"id": "msgbatch_" + uuid.uuid4().hex[:24], "type": "message_batch", "processing_status": "in_progress",
                 "request_counts": {"processing": len(reqs), "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0},
                 "ended_at": None, "created_at": _iso(now), "expires_at": _iso(now + 86400), "archived_at": None,
                 "cancel_initiated_at": None, "results_url": None}
        register(batch["id"], reqs)
        fake.anthropic_batches[batch["id"]] = batch
        await asyncio.sleep(fake.create_delay_s)
        return web.json_response(batch)

    def finish_anthropic(batch: dict) -> None:
        priv = fake._private[batch["id"]]
        rows, counts = [], Counter()
        for req in priv["lines"]:
            cid = req["custom_id"]
            result = fake.outcome(cid, priv["attempts"][cid])
            if result in ("ok", "malformed", "truncated"):
                message = anthropic_message(req["params"])
                if result == "malformed":
                    message.pop("content")
                rows.append({"custom_id": cid, "_cut": result == "truncated",
                             "result": {"type": "succeeded", "message": message}})
                counts["succeeded"] += 1
            elif result in ("expired", "canceled"):
                rows.append({"custom_id": cid, "result": {"type": result}})
                counts[result] += 1
            else:
                kind = "invalid_request_error" if result == "invalid" else "api_error"
                rows.append({"custom_id": cid, "result": {"type": "errored", "error": {
                    "type": "error", "error": {"type": kind, "message": "fake " + result}}}})
                counts["errored"] += 1
        priv["results"] = jsonl(rows)
        batch.update(processing_status="ended", ended_at=_iso(time.time()),
                     results_url=f"{fake.base_url}/v1/messages/batches/{batch['id']}/results",
                     request_counts={k: counts[k] for k in ("processing", "succeeded", "errored", "canceled", "expired")})

    async def get_anthropic_batch(request: web.Request) -> web.Response:
        fake.calls["messages.batches.retrieve"] += 1
        if (denied := anthropic_auth(request)) is not None:
            return denied
        if fake.poll_faults > 0:
            fake.poll_faults -= 1
            return _anthropic_error(529, "Overloaded")
        batch = fake.anthropic_batches.get(request.match_info["batch_id"])
        if batch is None:
            return _anthropic_error(404, "batch not found")
        priv = fake._private[batch["id"]]
        if batch["processing_status"] == "in_progress":
            priv["polls"] += 1
            if priv["polls"] >= fake.polls_to_complete:
                finish_anthropic(batch)
        return web.json_response(batch)

    async def anthropic_results(request: web.Request) -> web.Response:
        fake.calls["messages.batches.results"] += 1
        if (denied := anthropic_auth(request)) is not None:
            return denied
        priv = fake._private.get(request.match_info["batch_id"])
        if priv is None or "results" not in priv:
            return _anthropic_error(404, "results not available yet")
        return web.Response(body=priv["results"], content_type="application/binary")

    async def list_anthropic_batches(request: web.Request) -> web.Response:
        fake.calls["messages.batches.list"] += 1
        if (denied := anthropic_auth(request)) is not None:
            return denied
        data = sorted(fake.anthropic_batches.values(), key=lambda b: b["created_at"], reverse=True)
        return web.json_response({"data": data, "has_more": False,
                                  "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None})

    app.router.add_post("/v1/files", upload_file)
    app.router.add_get("/v1/files/{file_id}/content", file_content)
    app.router.add_post("/v1/batches", create_openai_batch)
    app.router.add_get("/v1/batches", list_openai_batches)
    app.router.add_get("/v1/batches/{batch_id}", get_openai_batch)
    app.router.add_post("/v1/messages/batches", create_anthropic_batch)
    app.router.add_get("/v1/messages/batches", list_anthropic_batches)
    app.router.add_get("/v1/messages/batches/{batch_id}", get_anthropic_batch)
    app.router.add_get("/v1/messages/batches/{batch_id}/results", anthropic_results)
