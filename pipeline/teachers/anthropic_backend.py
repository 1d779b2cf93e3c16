"""Anthropic Messages API through the official SDK. It returns no logprobs (the config rejects
``top_logprobs`` for this backend). System messages go in the top-level ``system`` field; the stop
reasons are mapped to the OpenAI names the rest of the pipeline reads (``stop``, ``length``).
"""
from __future__ import annotations

import time
from typing import Any

from pipeline.config.teacher import TeacherConfig
from pipeline.errors import ConfigError
from pipeline.records import Usage
from pipeline.teachers.base import RetryableError, TeacherRequest, TeacherResponse
from pipeline.teachers.openai_backend import api_key_for, send_raw

_STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}


def response_from_body(body: Any, latency_s: float, headers: dict[str, str]) -> TeacherResponse:
    try:
        text = "".join(block.get("text", "") for block in body["content"] if block.get("type") == "text")
        usage = body.get("usage") or {}
        return TeacherResponse(
            text=text,
            finish_reason=_STOP_REASONS.get(body.get("stop_reason"), body.get("stop_reason")),
            usage=Usage(prompt_tokens=usage.get("input_tokens") or 0, completion_tokens=usage.get("output_tokens") or 0),
            latency_s=latency_s,
            logprobs=None,
            model=body.get("model") or "",
            headers=headers,
        )
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise RetryableError("malformed", f"malformed message body ({type(exc).__name__}: {exc})", headers=headers) from None


class AnthropicTeacher:
    """``backend: anthropic`` — Claude models through the Messages API."""

    backend = "anthropic"

    def __init__(self, cfg: TeacherConfig):
        import httpx2
        from anthropic import AsyncAnthropic, DefaultAioHttpClient

        if "max_tokens" not in cfg.params:
            raise ConfigError("teacher.params.max_tokens: the Anthropic Messages API requires it; set e.g. max_tokens: 256")
        if isinstance(cfg.base_url, list) and len(cfg.base_url) > 1:
            raise ConfigError("teacher.base_url: the anthropic backend takes one URL, not a list")
        self.cfg = cfg
        self.model = cfg.model
        base_url = cfg.base_url[0] if isinstance(cfg.base_url, list) else cfg.base_url
        limits = httpx2.Limits(max_connections=cfg.concurrency + 8, max_keepalive_connections=cfg.concurrency + 8)
        self._client = AsyncAnthropic(
            api_key=api_key_for(cfg, "ANTHROPIC_API_KEY"), base_url=base_url, max_retries=0, timeout=cfg.timeout_s,
            http_client=DefaultAioHttpClient(limits=limits, timeout=cfg.timeout_s),
        )

    def body(self, req: TeacherRequest) -> dict[str, Any]:
        """The Messages API request body."""
        system = "\n\n".join(m.content for m in req.messages if m.role == "system")
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in req.messages if m.role != "system"],
            **req.params,
        }
        if system:
            body["system"] = system
        return body

    async def complete(self, req: TeacherRequest) -> TeacherResponse:
        import anthropic
        import httpx2

        start = time.perf_counter()
        call = self._client.post("/v1/messages", body=self.body(req), cast_to=httpx2.Response)
        body, headers = await send_raw(call, anthropic,
                                       f"teacher {self.model} at {self._client.base_url}", self.cfg.timeout_s)
        return response_from_body(body, time.perf_counter() - start, headers)

    async def aclose(self) -> None:
        await self._client.close()
