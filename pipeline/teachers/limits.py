"""Adaptive request and token rate limits, learnt from the provider's own signals.

Why this shape: a client that fires N requests at once and retries each 429 on its own timer
retries in lockstep and loses prompts. Instead every request passes one shared pacer:

- **Learn the limit from headers.** ``x-ratelimit-limit-requests`` / ``-tokens`` (OpenAI: per
  minute) and ``anthropic-ratelimit-*-limit`` give the rate; requests are then spaced evenly at
  it (aiolimiter's leaky bucket), so the provider's bucket never runs dry.
- **Probe first.** Until the first answer arrives only one request is in flight, so a limit the
  config does not know is learnt before a burst can trip it.
- **429s.** With a ``retry-after-ms`` (precise) everyone pauses that long. Without header-learnt
  limits, everyone pauses for ``Retry-After`` and the rate drops to 70% of the throughput just
  measured (once per second at most: a burst of 429s is one congestion event), then climbs back
  10%/s while no 429 comes (AIMD). With header-learnt limits a 429 is jitter: only that request
  waits its ``Retry-After``, and the pace eases by 3%, climbing back 2%/s.
- ``remaining == 0`` in a success's headers pauses everyone until the reported reset.
"""
from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from datetime import datetime

from aiolimiter import AsyncLimiter

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?$")


def parse_reset(value: str | None) -> float | None:
    """Seconds until a limit resets: OpenAI's '1s', '6m0s', '20ms', a bare number, or an RFC 3339
    timestamp (Anthropic)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    m = _DURATION.match(value)
    if m and any(m.groups()):
        h, mi, s, ms = (float(g) if g else 0.0 for g in m.groups())
        return h * 3600 + mi * 60 + s + ms / 1000
    try:
        return max(0.0, datetime.fromisoformat(value).timestamp() - time.time())
    except ValueError:
        return None


def read_limits(headers: dict[str, str]) -> dict[str, float | None]:
    """Per-second request and token limits, remaining requests and seconds to reset, from either
    provider's headers (None where absent). Both providers state limits per minute."""
    def num(*names: str) -> float | None:
        for n in names:
            v = headers.get(n)
            if v is not None:
                try:
                    return float(v)
                except ValueError:
                    return None
        return None

    rpm = num("x-ratelimit-limit-requests", "anthropic-ratelimit-requests-limit")
    tpm = num("x-ratelimit-limit-tokens", "anthropic-ratelimit-tokens-limit", "anthropic-ratelimit-input-tokens-limit")
    reset = parse_reset(headers.get("x-ratelimit-reset-requests") or headers.get("anthropic-ratelimit-requests-reset"))
    return {
        "rps": rpm / 60.0 if rpm else None,
        "tps": tpm / 60.0 if tpm else None,
        "remaining": num("x-ratelimit-remaining-requests", "anthropic-ratelimit-requests-remaining"),
        "reset_s": reset,
    }


class AdaptiveLimiter:
    """Shared by every request of a run: ``await acquire(tokens)`` before sending, then report the
    outcome with ``on_success(headers)`` or ``on_rate_limited(retry_after_s, headers)``."""

    BURST_S = 0.1   # seconds' worth of requests that may go out back to back
    LOW_WATER = 0.1   # remaining below this share of the most seen: ease off...
    EASE = 0.95       # ...to this share of the stated rate, until it recovers

    def __init__(self, rpm: float | None = None, tpm: float | None = None, *, probe: bool = True):
        self.rps: float | None = rpm / 60.0 if rpm else None
        self.tps: float | None = tpm / 60.0 if tpm else None
        self.header_rps: float | None = None
        self.rate_limited = 0
        self._burst = max(1.0, self.rps * self.BURST_S) if self.rps else 1.0
        self._req_limiter = self._make(self.rps)
        self._tok_limiter: AsyncLimiter | None = None
        self._tok_capacity = 0.0
        self._max_remaining = 0.0
        self._paused_until = 0.0
        self._warm = asyncio.Event()
        self._probing = False
        if not probe:
            self._warm.set()
        self._successes: deque[float] = deque(maxlen=4096)
        self._last_increase = time.monotonic()
        self._last_decrease = 0.0

    def _make(self, rps: float | None) -> AsyncLimiter | None:
        return AsyncLimiter(self._burst, self._burst / rps) if rps else None

    def _set_rps(self, rps: float) -> None:
        # Rebuild the leaky bucket only on a real change: each rebuild forgets its level.
        if self.rps is None or abs(rps - self.rps) / self.rps > 0.01:
            self.rps = rps
            self._req_limiter = self._make(rps)

    async def _wait_pause(self) -> None:
        while (delay := self._paused_until - time.monotonic()) > 0:
            await asyncio.sleep(delay)

    async def acquire(self, tokens: float = 0.0) -> None:
        if not self._warm.is_set():
            if self._probing:
                await self._warm.wait()
            else:
                self._probing = True  # this request is the probe; the others wait for its answer
        while True:
            await self._wait_pause()
            limiter = self._req_limiter
            if limiter is not None:
                await limiter.acquire()
            if self.tps and tokens:
                if self._tok_limiter is None or tokens > self._tok_capacity:
                    # One second's worth of tokens, but never less than this request needs.
                    self._tok_capacity = max(self.tps, tokens)
                    self._tok_limiter = AsyncLimiter(self._tok_capacity, self._tok_capacity / self.tps)
                await self._tok_limiter.acquire(tokens)
            if time.monotonic() >= self._paused_until:
                return

    def release_probe(self) -> None:
        """The probe is done (any outcome): let everyone go."""
        self._warm.set()

    def _learn(self, headers: dict[str, str] | None) -> dict[str, float | None]:
        info = read_limits(headers or {})
        remaining = info["remaining"]
        if remaining is not None:
            self._max_remaining = max(self._max_remaining, remaining)
        if info["rps"]:
            first = self.header_rps is None
            self.header_rps = info["rps"]
            if first and remaining is not None:
                # The provider's bucket holds `remaining` now: spend up to half of it at once (at
                # most a second's worth), keeping the other half to absorb jitter.
                self._burst = max(1.0, info["rps"] * self.BURST_S, min(remaining / 2, info["rps"]))
                self.rps = None
            low = remaining is not None and remaining < self.LOW_WATER * self._max_remaining
            target = info["rps"] * (self.EASE if low else 1.0)
            # After a 429 the pace sits under the stated rate and climbs back slowly (on_success).
            if self.rps is None or self.rps > target or low or self.rps < 0.5 * target:
                self._set_rps(target)
        tps = info["tps"]
        if tps and (self.tps is None or abs(tps - self.tps) / self.tps > 0.01 or self._tok_limiter is None):
            self.tps = tps
            self._tok_limiter = None  # rebuilt at the next acquire, sized to the request
        return info

    def on_success(self, headers: dict[str, str] | None) -> None:
        now = time.monotonic()
        self._successes.append(now)
        info = self._learn(headers)
        if info["remaining"] == 0 and info["reset_s"]:
            # The bucket is empty right now: wait for one request's worth of refill, not the full reset.
            wait = 1.0 / self.header_rps if self.header_rps else info["reset_s"]
            self._paused_until = max(self._paused_until, now + min(wait, info["reset_s"]))
        if self.rps and now - self._last_increase >= 1.0:
            self._last_increase = now
            if self.header_rps:
                self._set_rps(min(self.rps * 1.02, self.header_rps))
            else:
                self._set_rps(self.rps * 1.10)
        self.release_probe()

    def measured_rps(self, window_s: float = 3.0) -> float:
        """Answers per second over the last ``window_s`` (at least 1 s, so a first burst of a few
        quick answers does not read as a high rate)."""
        now = time.monotonic()
        recent = [t for t in self._successes if now - t <= window_s]
        if not recent:
            return 0.0
        return len(recent) / max(1.0, min(window_s, now - recent[0]))

    def on_rate_limited(self, retry_after_s: float | None, headers: dict[str, str] | None) -> None:
        self.rate_limited += 1
        now = time.monotonic()
        decrease = now - self._last_decrease >= 1.0  # one congestion event, one decrease
        self._last_increase = now
        info = self._learn(headers)
        precise = bool(headers and headers.get("retry-after-ms"))
        if self.header_rps:
            if decrease:
                self._last_decrease = now
                self._set_rps(max(self.rps * 0.97, 0.5 * self.header_rps))
            if precise and retry_after_s:
                self._paused_until = max(self._paused_until, now + retry_after_s)
        else:
            if decrease:
                self._last_decrease = now
                measured = self.measured_rps()
                base = measured or self.rps
                if base:
                    self._set_rps(max(1.0, 0.7 * base))
            self._paused_until = max(self._paused_until, now + (retry_after_s if retry_after_s is not None else 1.0))
            if info["remaining"] == 0 and info["reset_s"]:
                self._paused_until = max(self._paused_until, now + info["reset_s"])
        self.release_probe()
