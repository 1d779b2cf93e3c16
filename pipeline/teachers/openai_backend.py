"""OpenAI Chat Completions (and any OpenAI-compatible server, e.g. vLLM) through the official SDK.

Sends ``logprobs`` / ``top_logprobs`` when asked (OpenAI allows up to 20). A list of base URLs
is a set of replicas: the executor picks one per request, each with its own pacing and health
(replicas.py). Params are sent as-is, so a vLLM server's extras
(``top_k``, ``return_tokens_as_token_ids``...) pass through. The SDK's own retries are off: the
executor retries, once, for every backend.

Speed (bench/generate_throughput.py): the SDK runs on its aiohttp transport (``openai[aiohttp]``,
about 2x the default httpx2 pool's requests/s at 64 in flight), and the request goes through the
SDK's ``client.post`` with a ready JSON body, skipping the per-call TypedDict transform of
``create()`` (about 2 ms of CPU per request); the body is the documented Chat Completions body. vLLM's ``token_id:123`` tokens become
``id=123`` with the token text decoded from its bytes.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from typing import Any

from pipeline.config.teacher import TeacherConfig
from pipeline.errors import ConfigError
from pipeline.records import TokenLogprob, TokenPosition, Usage
from pipeline.teachers.base import RetryableError, TeacherRequest, TeacherResponse, classify_status

_TOKEN_ID_PREFIX = "token_id:"


def api_key_for(cfg: TeacherConfig, default_env: str) -> str:
    """The key from ``cfg.api_key_env`` (or the backend's usual variable). A local OpenAI-compatible
    server (a base_url is set) needs none, so a placeholder is sent."""
    env = cfg.api_key_env or default_env
    key = os.environ.get(env)
    if key:
        return key
    if cfg.base_url and default_env == "OPENAI_API_KEY":
        return "EMPTY"  # vLLM's server accepts any key unless started with --api-key
    raise ConfigError(f"teacher: the API key variable {env} is not set; export it or put it in .env")


def parse_token(token: str, raw_bytes: list[int] | None) -> tuple[str, int | None]:
    """(text, id) of a returned token; vLLM's ``token_id:123`` form carries the id and the bytes."""
    if token.startswith(_TOKEN_ID_PREFIX) and token[len(_TOKEN_ID_PREFIX):].isdigit():
        tid = int(token[len(_TOKEN_ID_PREFIX):])
        text = bytes(raw_bytes).decode("utf-8", errors="replace") if raw_bytes is not None else token
        return text, tid
    return token, None


def parse_logprobs(content: list[dict[str, Any]] | None, k: int | None = None) -> list[TokenPosition] | None:
    """The ``choices[0].logprobs.content`` list (as plain dicts) in our normalised form, each
    position's candidates sorted most likely first and cut to ``k``."""
    if content is None:
        return None
    out = []
    for pos in content:
        text, tid = parse_token(pos["token"], pos.get("bytes"))
        top = []
        for alt in pos.get("top_logprobs") or []:
            alt_text, alt_id = parse_token(alt["token"], alt.get("bytes"))
            top.append(TokenLogprob(token=alt_text, logprob=float(alt["logprob"]), id=alt_id, bytes=alt.get("bytes")))
        top.sort(key=lambda t: t.logprob, reverse=True)
        out.append(TokenPosition(token=text, logprob=float(pos["logprob"]), id=tid, bytes=pos.get("bytes"),
                                 top=top[:k] if k else top))
    return out


def response_from_body(body: Any, latency_s: float, headers: dict[str, str], requested_logprobs: bool | int | None,
                       ) -> TeacherResponse:
    """Normalise a chat.completion JSON body; a body of the wrong shape is retryable ('malformed')."""
    try:
        choice = body["choices"][0]
        text = choice["message"].get("content") or ""
        usage = body.get("usage") or {}
        lp = (choice.get("logprobs") or {}).get("content") if requested_logprobs else None
        return TeacherResponse(
            text=text,
            finish_reason=choice.get("finish_reason"),
            usage=Usage(prompt_tokens=usage.get("prompt_tokens") or 0,
                        completion_tokens=usage.get("completion_tokens") or 0),
            latency_s=latency_s,
            logprobs=parse_logprobs(lp, requested_logprobs if type(requested_logprobs) is int else None),
            model=body.get("model") or "",
            headers=headers,
        )
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        raise RetryableError("malformed", f"malformed chat.completion body ({type(exc).__name__}: {exc})",
                             headers=headers) from None


class OpenAITeacher:
    """``backend: openai`` — api.openai.com or any OpenAI-compatible ``base_url`` (one or a list)."""

    backend = "openai"

    def __init__(self, cfg: TeacherConfig):
        import httpx2
        from openai import AsyncOpenAI, DefaultAioHttpClient

        self.cfg = cfg
        self.model = cfg.model
        key = api_key_for(cfg, "OPENAI_API_KEY")
        urls = cfg.base_url if isinstance(cfg.base_url, list) else [cfg.base_url]
        # One keep-alive connection per concurrent request: the SDK's default pool keeps only 100.
        limits = httpx2.Limits(max_connections=cfg.concurrency + 8, max_keepalive_connections=cfg.concurrency + 8)
        self._clients = [
            AsyncOpenAI(api_key=key, base_url=url, max_retries=0, timeout=cfg.timeout_s,
                        http_client=DefaultAioHttpClient(limits=limits, timeout=cfg.timeout_s))
            for url in urls
        ]
        self.replicas = urls  # the executor routes among them (pipeline/teachers/replicas.py)
        self._next_client = itertools.cycle(self._clients)
        self._tokenizer: Any = False  # the served model's local tokenizer, looked up on first need

    def _fill_token_texts(self, resp: TeacherResponse) -> None:
        """vLLM's ``return_tokens_as_token_ids`` names top-k candidates ``token_id:N`` with the bytes
        of that string: recover each token's text and bytes from the model's local tokenizer."""
        from pipeline.teachers.token_text import fill_token_texts, local_tokenizer

        if self._tokenizer is False:
            self._tokenizer = local_tokenizer(self.model)
        if self._tokenizer is not None:
            fill_token_texts(resp.logprobs, self._tokenizer)

    def body(self, req: TeacherRequest) -> dict[str, Any]:
        """The Chat Completions request body."""
        body: dict[str, Any] = {"model": self.model, "messages": [m.model_dump() for m in req.messages], **req.params}
        if req.top_logprobs:
            body["logprobs"] = True
            # A vLLM server lists the sampled token first even when it is not among the top k (and
            # drops the k-th): ask a self-hosted server for one more, and keep the best k.
            extra = 1 if self.cfg.base_url and req.top_logprobs < 20 else 0
            body["top_logprobs"] = req.top_logprobs + extra
        return body

    async def complete(self, req: TeacherRequest, replica: int | None = None) -> TeacherResponse:
        """Answer ``req`` on the replica the executor chose (round robin when called without one)."""
        import openai

        client = next(self._next_client) if replica is None else self._clients[replica]
        start = time.perf_counter()
        import httpx2

        call = client.post("/chat/completions", body=self.body(req), cast_to=httpx2.Response)
        body, headers = await send_raw(call, openai, f"teacher {self.model} at {client.base_url}", self.cfg.timeout_s)
        resp = response_from_body(body, time.perf_counter() - start, headers, req.top_logprobs)
        if resp.logprobs and any(p.id is not None for p in resp.logprobs):
            await asyncio.to_thread(self._fill_token_texts, resp)
        return resp

    async def aclose(self) -> None:
        for client in self._clients:
            await client.close()


def _error_message(body: Any, fallback: str) -> str:
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    return fallback


async def send_raw(call, sdk, where: str, timeout_s: float) -> tuple[Any, dict[str, str]]:
    """Await an SDK call that returns the raw ``httpx2.Response``; return (JSON body, lower-cased
    headers). Shared by the openai and anthropic backends, whose SDKs raise the same exceptions."""
    try:
        raw = await call
    except sdk.APITimeoutError:
        raise RetryableError("timeout", f"{where}: timed out after {timeout_s}s") from None
    except sdk.APIConnectionError as exc:
        raise RetryableError("connection", f"{where}: connection error ({exc.__cause__ or exc})") from None
    except sdk.APIStatusError as exc:
        headers = {k.lower(): v for k, v in exc.response.headers.items()}
        raise classify_status(exc.status_code, _error_message(exc.body, exc.message), headers, where) from None
    headers = {k.lower(): v for k, v in raw.headers.items()}
    try:
        # Parse the JSON ourselves: a truncated or non-JSON 200 body must be retried, not crash.
        return json.loads(raw.content), headers
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RetryableError("malformed", f"{where}: the response body is not valid JSON", headers=headers) from None
