"""A fake OpenAI + Anthropic HTTP server (aiohttp, 127.0.0.1, random port) for tests and benches.

It speaks the real wire protocols — OpenAI ``POST /v1/chat/completions`` (usage, logprobs with
top_logprobs, vLLM's ``return_tokens_as_token_ids``, ``x-ratelimit-*`` headers) and Anthropic
``POST /v1/messages`` (``anthropic-ratelimit-*`` headers) — so the real SDKs talk to it unchanged.

Faults: a list applied to the first attempts of every distinct request body
(``per_request_faults=["429", "500"]``: each request fails twice, then succeeds), random faults
with a seeded RNG (``random_faults={"503": 0.1}``), and a server-enforced token-bucket rate limit
(``rate_limit_rps=100, burst=100``) answering 429 past it. Fault kinds: 429, 500, 503, 400, 401,
hang (never answers within ``hang_s``), truncated (a 200 whose JSON is cut), malformed (a 200
with a non-JSON body).

It counts requests per body hash: ``received`` (every attempt) and ``served`` (well-formed 200s,
i.e. answers that would be paid for), so a test can assert nothing was paid twice.

Use it in-process (``with FakeServer(...) as srv: srv.url``, a background thread) or as a
subprocess (``python -m tests.fakes.server --latency 0.2 --rate 100``, which prints ``PORT n``),
and read counts from ``GET /_fake/stats`` either way. ``extra_routes`` is a list of
``fn(app, state)`` hooks that add more endpoints (e.g. tests/fakes/batch_routes.py).
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Self

from aiohttp import web

from tests.fakes.ratelimit import ProviderLimiter, go_duration

FAULT_KINDS = ("429", "500", "503", "400", "401", "hang", "truncated", "malformed")


def body_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def default_reply(body: dict[str, Any]) -> str:
    """A deterministic answer: a label for prompts that list positive/negative, else a short sentence."""
    msgs = body.get("messages") or []
    last = msgs[-1]["content"] if msgs else ""
    if isinstance(last, list):
        last = " ".join(part.get("text", "") for part in last if isinstance(part, dict))
    h = int(hashlib.sha256(str(last).encode()).hexdigest(), 16)
    text = json.dumps(body.get("system", "")) + " ".join(str(m.get("content")) for m in msgs)
    if "positive" in text and "negative" in text:
        return "positive" if h % 2 else "negative"
    return f"Answer {h % 10_000} to the request."


def tokenize(text: str) -> list[str]:
    """Word-ish tokens that join back into the text (what a BPE would roughly give)."""
    return re.findall(r"\s*\S+", text) or [text]


def token_id(token: str) -> int:
    return int(hashlib.md5(token.encode()).hexdigest(), 16) % 50_000


@dataclass
class ServerState:
    latency_s: float = 0.0
    per_request_faults: list[str] = field(default_factory=list)
    random_faults: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    rate_limit_rps: float | None = None
    burst: float | None = None
    tokens_per_minute: float | None = None  # a token bucket of one second's worth, like the request one
    send_rate_headers: bool = True
    retry_after_s: int = 1          # the whole-seconds Retry-After on an injected 429
    retry_after_ms_prob: float = 1.0  # chance a 429 also carries retry-after-ms (precise)
    hang_s: float = 30.0
    latency_jitter: float = 0.0     # each answer takes latency_s x uniform(1 - j, 1 + j)
    # A limiter modelled on a provider's documented behaviour (tests/fakes/ratelimit.py); when set,
    # it replaces rate_limit_rps / tokens_per_minute and its headers go on every response.
    limiter: ProviderLimiter | None = None
    reply: Callable[[dict[str, Any]], str] = default_reply
    # counters
    received: Counter = field(default_factory=Counter)
    served: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    served_times: list[float] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # for extra_routes' own state

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.tokens = float(self.burst or self.rate_limit_rps or 0)
        self.last_refill = time.monotonic()
        self.tpm_tokens = (self.tokens_per_minute or 0) / 60.0
        self.tpm_refill = time.monotonic()

    def reset(self) -> None:
        self.received.clear()
        self.served.clear()
        self.statuses.clear()
        self.served_times.clear()
        self.max_in_flight = 0

    def stats(self) -> dict[str, Any]:
        return {
            "received": dict(self.received),
            "served": dict(self.served),
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "n_received": sum(self.received.values()),
            "n_served": sum(self.served.values()),
            "n_429": self.statuses.get(429, 0),
            "duplicates": sum(c - 1 for c in self.served.values() if c > 1),
            "max_in_flight": self.max_in_flight,
            "first_served": min(self.served_times) if self.served_times else None,
            "last_served": max(self.served_times) if self.served_times else None,
            "charged": dict(self.limiter.charged) if self.limiter is not None else None,
        }

    # -- the server-enforced token bucket ---------------------------------------------------
    def take_token(self) -> float | None:
        """None when the request may pass; else seconds until a token is free."""
        if not self.rate_limit_rps:
            return None
        cap = float(self.burst or self.rate_limit_rps)
        now = time.monotonic()
        self.tokens = min(cap, self.tokens + (now - self.last_refill) * self.rate_limit_rps)
        self.last_refill = now
        if self.tokens >= 1:
            self.tokens -= 1
            return None
        return (1 - self.tokens) / self.rate_limit_rps

    def take_tpm(self, cost: int) -> float | None:
        """Like take_token, for a tokens-per-minute limit; ``cost`` = prompt + completion tokens."""
        if not self.tokens_per_minute:
            return None
        rate = self.tokens_per_minute / 60.0
        now = time.monotonic()
        self.tpm_tokens = min(rate, self.tpm_tokens + (now - self.tpm_refill) * rate)
        self.tpm_refill = now
        if self.tpm_tokens >= cost:
            self.tpm_tokens -= cost
            return None
        return (cost - self.tpm_tokens) / rate

    def pick_fault(self, h: str) -> str | None:
        attempt = self.received[h]  # 1-based: already counted
        if attempt <= len(self.per_request_faults):
            return self.per_request_faults[attempt - 1]
        for kind, p in self.random_faults.items():
            if self.rng.random() < p:
                return kind
        return None


def _rate_headers(state: ServerState, flavour: str) -> dict[str, str]:
    if not state.send_rate_headers:
        return {}
    headers = {}
    if state.tokens_per_minute:
        rate = state.tokens_per_minute / 60.0
        prefix = "x-ratelimit-" if flavour == "openai" else "anthropic-ratelimit-tokens-"
        names = ("limit-tokens", "remaining-tokens", "reset-tokens") if flavour == "openai" else ("limit", "remaining", "reset")
        headers[prefix + names[0]] = str(int(state.tokens_per_minute))
        headers[prefix + names[1]] = str(max(0, int(state.tpm_tokens)))
        headers[prefix + names[2]] = go_duration((rate - state.tpm_tokens) / rate)
    if not state.rate_limit_rps:
        return headers
    cap = float(state.burst or state.rate_limit_rps)
    remaining = max(0, int(state.tokens))
    reset_s = (cap - state.tokens) / state.rate_limit_rps
    if flavour == "openai":
        return {
            **headers,
            "x-ratelimit-limit-requests": str(int(state.rate_limit_rps * 60)),
            "x-ratelimit-remaining-requests": str(remaining),
            "x-ratelimit-reset-requests": go_duration(reset_s),
        }
    reset_at = datetime.now(UTC) + timedelta(seconds=reset_s)
    return {
        **headers,
        "anthropic-ratelimit-requests-limit": str(int(state.rate_limit_rps * 60)),
        "anthropic-ratelimit-requests-remaining": str(remaining),
        "anthropic-ratelimit-requests-reset": reset_at.isoformat().replace("+00:00", "Z"),
    }


def _error(flavour: str, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    if flavour == "openai":
        body = {"error": {"message": message, "type": kind, "param": None, "code": kind}}
    else:
        body = {"type": "error", "error": {"type": kind, "message": message}}
    return web.json_response(body, status=status, headers=headers or {})


async def _fault_response(state: ServerState, flavour: str, fault: str, good_body: Callable[[], dict]) -> web.Response:
    if fault == "429":
        headers = {"retry-after": str(state.retry_after_s), **_rate_headers(state, flavour)}
        if state.rng.random() < state.retry_after_ms_prob:
            headers["retry-after-ms"] = str(int(state.retry_after_s * 1000 if state.retry_after_s < 1 else 50))
        return _error(flavour, 429, "rate_limit_error" if flavour == "anthropic" else "rate_limit_exceeded",
                      "Rate limit reached (injected)", headers)
    if fault in ("500", "503"):
        kind = "overloaded_error" if flavour == "anthropic" and fault == "503" else "server_error"
        return _error(flavour, int(fault), kind, "The server had an error (injected)")
    if fault == "400":
        return _error(flavour, 400, "invalid_request_error", "Invalid request (injected)")
    if fault == "401":
        return _error(flavour, 401, "authentication_error" if flavour == "anthropic" else "invalid_api_key",
                      "Incorrect API key provided (injected)")
    if fault == "hang":
        await asyncio.sleep(state.hang_s)
        return _error(flavour, 504, "timeout", "hung (injected)")
    text = json.dumps(good_body())
    if fault == "truncated":
        return web.Response(text=text[: len(text) // 2], content_type="application/json")
    return web.Response(text="<html>502 Bad Gateway</html>", content_type="application/json")


def _openai_body(state: ServerState, body: dict[str, Any]) -> dict[str, Any]:
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 10_000
    tokens = tokenize(state.reply(body))
    finish = "stop"
    if len(tokens) > max_tokens:
        tokens, finish = tokens[:max_tokens], "length"
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": "".join(tokens)},
                              "finish_reason": finish, "logprobs": None}
    if body.get("logprobs"):
        k = int(body.get("top_logprobs") or 0)
        as_ids = bool(body.get("return_tokens_as_token_ids"))

        def entry(tok: str, lp: float) -> dict[str, Any]:
            name = f"token_id:{token_id(tok)}" if as_ids else tok
            return {"token": name, "logprob": lp, "bytes": list(tok.encode())}

        content = []
        for tok in tokens:
            top = [entry(tok, -0.05)] + [entry(f"{tok}~{j}", -3.0 - j) for j in range(1, k)]
            content.append({**entry(tok, -0.05), "top_logprobs": top[:k]})
        choice["logprobs"] = {"content": content, "refusal": None}
    prompt_tokens = sum(len(tokenize(str(m.get("content", "")))) for m in body.get("messages", []))
    return {
        "id": f"chatcmpl-{body_hash(body)[:12]}", "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model", "fake"), "choices": [choice], "system_fingerprint": "fp_fake",
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(tokens),
                  "total_tokens": prompt_tokens + len(tokens)},
    }


def _anthropic_body(state: ServerState, body: dict[str, Any]) -> dict[str, Any]:
    tokens = tokenize(state.reply(body))
    stop = "end_turn"
    if len(tokens) > int(body.get("max_tokens", 10_000)):
        tokens, stop = tokens[: int(body["max_tokens"])], "max_tokens"
    prompt_tokens = sum(len(tokenize(str(m.get("content", "")))) for m in body.get("messages", []))
    return {
        "id": f"msg_{body_hash(body)[:12]}", "type": "message", "role": "assistant",
        "model": body.get("model", "fake"), "content": [{"type": "text", "text": "".join(tokens)}],
        "stop_reason": stop, "stop_sequence": None,
        "usage": {"input_tokens": prompt_tokens, "output_tokens": len(tokens)},
    }


def _prompt_tokens(body: dict[str, Any]) -> int:
    return sum(len(tokenize(str(m.get("content", "")))) for m in body.get("messages", []))


def _max_tokens(body: dict[str, Any]) -> int:
    return int(body.get("max_completion_tokens") or body.get("max_tokens") or 0)


def _handler(state: ServerState, flavour: str):
    make_body = _openai_body if flavour == "openai" else _anthropic_body

    async def handle(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _error(flavour, 400, "invalid_request_error", "body is not JSON")
        h = body_hash(body)
        state.received[h] += 1
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            resp = await _answer(state, flavour, make_body, body, h)
            if state.limiter is not None:  # the provider's headers go on every answer, whatever its status
                for k, v in state.limiter.headers().items():
                    resp.headers.setdefault(k, v)
            return resp
        finally:
            state.in_flight -= 1

    return handle


async def _answer(state: ServerState, flavour: str, make_body, body: dict[str, Any], h: str) -> web.Response:
    if state.limiter is not None:
        wait = state.limiter.admit(_prompt_tokens(body), _max_tokens(body))
        if wait is not None:
            state.statuses[429] += 1
            return _error(flavour, 429, "rate_limit_error" if flavour == "anthropic" else "rate_limit_exceeded",
                          "Rate limit reached", state.limiter.rejection_headers(wait))
    wait = state.take_token()
    if wait is None and state.tokens_per_minute:
        good = make_body(state, body)
        usage = good["usage"]
        wait = state.take_tpm(usage.get("total_tokens") or usage.get("input_tokens", 0) + usage.get("output_tokens", 0))
    if wait is not None:  # past the server-enforced limit: whole seconds, ms sometimes absent
        headers = {"retry-after": str(max(1, math.ceil(wait))), **_rate_headers(state, flavour)}
        if state.rng.random() < state.retry_after_ms_prob:
            headers["retry-after-ms"] = str(max(1, int(wait * 1000)))
        state.statuses[429] += 1
        return _error(flavour, 429, "rate_limit_exceeded", "Rate limit reached for requests", headers)
    fault = state.pick_fault(h)
    if fault is not None:
        resp = await _fault_response(state, flavour, fault, lambda: make_body(state, body))
        state.statuses[fault if fault in ("truncated", "malformed", "hang") else int(fault)] += 1
        return resp
    if state.latency_s:
        jitter = state.latency_jitter
        await asyncio.sleep(state.latency_s * (state.rng.uniform(1 - jitter, 1 + jitter) if jitter else 1.0))
    state.served[h] += 1
    state.served_times.append(time.time())
    state.statuses[200] += 1
    answer = make_body(state, body)
    if state.limiter is not None:
        usage = answer["usage"]
        state.limiter.done(_max_tokens(body), usage.get("completion_tokens", usage.get("output_tokens", 0)))
    return web.json_response(answer, headers=_rate_headers(state, flavour))


def build_app(state: ServerState, extra_routes: list[Callable] = ()) -> web.Application:
    app = web.Application(client_max_size=512 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", _handler(state, "openai"))
    app.router.add_post("/v1/messages", _handler(state, "anthropic"))

    async def stats(_request: web.Request) -> web.Response:
        return web.json_response(state.stats())

    async def configure(request: web.Request) -> web.Response:
        for key, value in (await request.json()).items():
            if not hasattr(state, key) or key in ("received", "served", "statuses"):
                return web.json_response({"error": f"unknown setting {key}"}, status=400)
            setattr(state, key, value)
        if "seed" in await request.json():
            state.rng = random.Random(state.seed)
        return web.json_response({"ok": True})

    async def reset(_request: web.Request) -> web.Response:
        state.reset()
        return web.json_response({"ok": True})

    app.router.add_get("/_fake/stats", stats)
    app.router.add_post("/_fake/config", configure)
    app.router.add_post("/_fake/reset", reset)
    for add in extra_routes:
        add(app, state)
    return app


class FakeServer:
    """``with FakeServer(latency_s=0.05) as srv:`` — serves on ``srv.url`` (``.../v1``) in a thread."""

    def __init__(self, *, extra_routes: list[Callable] = (), **settings: Any):
        self.state = ServerState(**settings)
        self.extra_routes = list(extra_routes)
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI-style base URL (what ``base_url`` takes)."""
        return self.base + "/v1"

    def start(self) -> FakeServer:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            runner = web.AppRunner(build_app(self.state, self.extra_routes), access_log=None)
            self._loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
            self._loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]
            self._runner = runner
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="fake-api-server")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake server did not start")
        return self

    def configure(self, **settings: Any) -> None:
        """Change settings while serving (applied on the server's loop before this returns)."""
        async def apply() -> None:
            for k, v in settings.items():
                setattr(self.state, k, v)

        asyncio.run_coroutine_threadsafe(apply(), self._loop).result(5)

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters, taken on the server's own loop (they change while it serves)."""
        async def snapshot() -> dict[str, Any]:
            return self.state.stats()

        return asyncio.run_coroutine_threadsafe(snapshot(), self._loop).result(5)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description="Fake OpenAI/Anthropic server (prints 'PORT n' when ready).")
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--rate", type=float, default=None, help="server-enforced requests/second")
    ap.add_argument("--burst", type=float, default=None)
    ap.add_argument("--retry-after-ms-prob", type=float, default=1.0)
    ap.add_argument("--no-rate-headers", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jitter", type=float, default=0.0, help="latency x uniform(1 - j, 1 + j)")
    ap.add_argument("--limiter", choices=["openai", "anthropic"], default=None,
                    help="a provider-style limiter (tests/fakes/ratelimit.py) instead of --rate")
    ap.add_argument("--rpm", type=float, default=None)
    ap.add_argument("--tpm", type=float, default=None)
    ap.add_argument("--itpm", type=float, default=None)
    ap.add_argument("--otpm", type=float, default=None)
    ap.add_argument("--retry-after-prob", type=float, default=1.0)
    args = ap.parse_args()
    limiter = None
    if args.limiter:
        limiter = ProviderLimiter(args.limiter, rpm=args.rpm, tpm=args.tpm, itpm=args.itpm, otpm=args.otpm,
                                  retry_after_ms_prob=args.retry_after_ms_prob,
                                  retry_after_prob=args.retry_after_prob, seed=args.seed)
    state = ServerState(latency_s=args.latency, rate_limit_rps=args.rate, burst=args.burst, seed=args.seed,
                        retry_after_ms_prob=args.retry_after_ms_prob, send_rate_headers=not args.no_rate_headers,
                        latency_jitter=args.jitter, limiter=limiter)

    async def serve() -> None:
        runner = web.AppRunner(build_app(state), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=2048)
        await site.start()
        print(f"PORT {site._server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Event().wait()

    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve())


if __name__ == "__main__":
    main()
