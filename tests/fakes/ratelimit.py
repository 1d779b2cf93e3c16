"""Rate limiters for the fake API server, modelled on what the providers document.

``ProviderLimiter(style="openai")`` behaves like OpenAI's limiter
(https://platform.openai.com/docs/guides/rate-limits):

- a **request bucket** refilled continuously at LIMIT/60 per second that holds one second's worth
  (OpenAI quantises limits: 6,000 RPM is 100 per second with a burst of 100);
- a **tokens bucket** of the same shape, charged prompt tokens + ``max_tokens`` at admission;
- ``x-ratelimit-limit-*`` per minute, ``x-ratelimit-remaining-*`` on the per-minute scale
  (limit x level / capacity) and ``x-ratelimit-reset-*`` as a Go duration until the bucket is full
  (``120ms``, ``1.5s``, ``6m0s``), on every answer, whatever its status;
- a 429 carries ``Retry-After`` in whole seconds (at least 1), and ``retry-after-ms`` when the
  wait is exact; ``retry_after_ms_prob`` / ``retry_after_prob`` drop either header at random.

``style="anthropic"`` (https://docs.anthropic.com/en/api/rate-limits) has the same buckets with
``anthropic-ratelimit-{requests,input-tokens,output-tokens}-{limit,remaining,reset}`` headers
(reset as an RFC 3339 time), ``retry-after`` only, and separate input and output token limits:
input tokens are charged at admission, output tokens as ``max_tokens`` at admission with the
unused part given back when the answer is done.
"""
from __future__ import annotations

import math
import random
import time
from datetime import UTC, datetime, timedelta


class Bucket:
    """A token bucket refilled at ``per_minute / 60`` per second, holding ``capacity_s`` seconds' worth."""

    def __init__(self, per_minute: float, capacity_s: float = 1.0):
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.capacity = self.rate * capacity_s
        self.level = self.capacity
        self._at = time.monotonic()

    def refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self._at) * self.rate)
        self._at = now

    def wait_s(self, cost: float) -> float:
        """0 when ``cost`` fits now, else the seconds until it will."""
        self.refill()
        return 0.0 if self.level >= cost else (cost - self.level) / self.rate

    def remaining_per_minute(self) -> int:
        self.refill()
        return max(0, int(self.per_minute * self.level / self.capacity))

    def reset_s(self) -> float:
        self.refill()
        return max(0.0, (self.capacity - self.level) / self.rate)


def go_duration(seconds: float) -> str:
    """A Go ``time.Duration`` string as OpenAI sends it: ``120ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, int(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    return f"{int(seconds // 60)}m{round(seconds % 60, 3):g}s"


class ProviderLimiter:
    """The server side of a provider's limits. ``admit`` before answering, ``headers`` on every
    response, ``done`` after an answer (Anthropic gives unused output tokens back)."""

    def __init__(self, style: str = "openai", *, rpm: float | None = None, tpm: float | None = None,
                 itpm: float | None = None, otpm: float | None = None, retry_after_ms_prob: float = 1.0,
                 retry_after_prob: float = 1.0, seed: int = 0):
        if style not in ("openai", "anthropic"):
            raise ValueError(f"unknown limiter style {style!r}")
        self.style = style
        self.buckets: dict[str, Bucket] = {}
        for name, per_minute in (("requests", rpm), ("tokens", tpm), ("input-tokens", itpm), ("output-tokens", otpm)):
            if per_minute:
                self.buckets[name] = Bucket(per_minute)
        self.retry_after_ms_prob, self.retry_after_prob = retry_after_ms_prob, retry_after_prob
        self.rng = random.Random(seed)
        self.charged = {name: 0.0 for name in self.buckets}  # what admitted requests were charged

    def _costs(self, prompt_tokens: int, max_tokens: int) -> dict[str, float]:
        costs = {"requests": 1.0, "tokens": prompt_tokens + max_tokens, "input-tokens": prompt_tokens,
                 "output-tokens": max_tokens}
        return {name: costs[name] for name in self.buckets}

    def admit(self, prompt_tokens: int, max_tokens: int) -> float | None:
        """Charge the request and return None, or return the seconds until it would fit (nothing charged)."""
        costs = self._costs(prompt_tokens, max_tokens)
        wait = max((self.buckets[n].wait_s(c) for n, c in costs.items()), default=0.0)
        if wait > 0:
            return wait
        for name, cost in costs.items():
            self.buckets[name].level -= cost
            self.charged[name] += cost
        return None

    def done(self, max_tokens: int, output_tokens: int) -> None:
        bucket = self.buckets.get("output-tokens")
        if bucket is not None:
            bucket.refill()
            bucket.level = min(bucket.capacity, bucket.level + max(0, max_tokens - output_tokens))
            self.charged["output-tokens"] -= max(0, max_tokens - output_tokens)

    def headers(self) -> dict[str, str]:
        out = {}
        for name, b in self.buckets.items():
            if self.style == "openai":
                out[f"x-ratelimit-limit-{name}"] = str(int(b.per_minute))
                out[f"x-ratelimit-remaining-{name}"] = str(b.remaining_per_minute())
                out[f"x-ratelimit-reset-{name}"] = go_duration(b.reset_s())
            else:
                full_at = datetime.now(UTC) + timedelta(seconds=b.reset_s())
                out[f"anthropic-ratelimit-{name}-limit"] = str(int(b.per_minute))
                out[f"anthropic-ratelimit-{name}-remaining"] = str(b.remaining_per_minute())
                out[f"anthropic-ratelimit-{name}-reset"] = full_at.isoformat(timespec="seconds").replace("+00:00", "Z")
        return out

    def rejection_headers(self, wait_s: float) -> dict[str, str]:
        """A 429's headers: the limits, then Retry-After whole seconds (>= 1) and the exact ms, each maybe absent."""
        out = self.headers()
        if self.rng.random() < self.retry_after_prob:
            out["retry-after"] = str(max(1, math.ceil(wait_s)))
        if self.style == "openai" and self.rng.random() < self.retry_after_ms_prob:
            out["retry-after-ms"] = str(max(1, math.ceil(wait_s * 1000)))
        return out
