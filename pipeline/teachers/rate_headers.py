"""The providers' rate-limit headers, read into one ``Reading`` per bucket.

OpenAI (platform.openai.com/docs/guides/rate-limits), on every answer whatever its status:
``x-ratelimit-limit-{requests,tokens}`` per minute; ``x-ratelimit-remaining-*`` on the per-minute
scale (limit x bucket level / capacity); ``x-ratelimit-reset-*`` a Go duration until the bucket is
full (``120ms``, ``1.5s``, ``6m0s``).

Anthropic (docs.anthropic.com/en/api/rate-limits):
``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}``,
the reset as an RFC 3339 time. Input and output tokens are limited separately.

A 429's wait is read by ``pipeline.teachers.base.parse_retry_after`` (``retry-after-ms``, else
``Retry-After``).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime

# The buckets a request is charged against, and what it costs in each (see limits.py).
DIMENSIONS = ("requests", "tokens", "input_tokens", "output_tokens")
_HEADER_NAMES = {
    "requests": ("x-ratelimit-{}-requests", "anthropic-ratelimit-requests-{}"),
    "tokens": ("x-ratelimit-{}-tokens", "anthropic-ratelimit-tokens-{}"),
    "input_tokens": ("anthropic-ratelimit-input-tokens-{}",),
    "output_tokens": ("anthropic-ratelimit-output-tokens-{}",),
}
_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")


@dataclass(frozen=True)
class Reading:
    """One bucket as the provider reports it: its limit per minute, what remains (on the scale the
    provider uses; None if not sent) and the seconds until it is full again (None if not sent)."""

    per_minute: float
    remaining: float | None = None
    reset_s: float | None = None


def parse_reset(value: str | None) -> float | None:
    """Seconds until a limit resets: a Go duration ('120ms', '1.5s', '6m0s', '1h2m3s'), a bare
    number of seconds, or an RFC 3339 time (Anthropic). None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _GO_PART.findall(value)
    if parts and "".join(n + u for n, u in parts) == value:
        return sum(float(n) * _GO_UNITS[u] for n, u in parts)
    try:
        return max(0.0, datetime.fromisoformat(value).timestamp() - time.time())
    except ValueError:
        return None


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def read_rate_headers(headers: dict[str, str] | None) -> dict[str, Reading]:
    """{dimension: Reading} for every bucket whose limit the (lower-cased) headers state."""
    out = {}
    for dim, patterns in _HEADER_NAMES.items():
        for pattern in patterns:
            limit = _number((headers or {}).get(pattern.format("limit")))
            if limit:
                out[dim] = Reading(limit, _number(headers.get(pattern.format("remaining"))),
                                   parse_reset(headers.get(pattern.format("reset"))))
                break
    return out
