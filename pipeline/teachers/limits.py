"""Request and token pacing that stays below the provider's own limiter, learnt from its signals.

Why this shape: the providers limit with token buckets that refill at LIMIT/60 per second and hold
about a second's worth (pacer.py). A client that sends at the stated rate keeps that bucket empty,
so any jitter is a 429; one that bursts a fresh allowance after each slowdown empties it at once.
So every request of a run passes one shared pacer, in arrival order:

- **Learn the limits from headers** (rate_headers.py): requests, tokens, and Anthropic's separate
  input and output tokens. Each gets a ``MirrorBucket`` that refills at ``MARGIN`` of the
  provider's rate and holds ``HEADROOM`` of its bucket, so the provider's bucket always keeps the
  rest in reserve. Every answer's ``remaining`` (whatever its status) corrects the mirror.
- A request is charged what the provider charges at admission (the executor computes it): one
  request, and prompt + ``max_tokens`` tokens (input and output tokens for Anthropic).
- **Probe first.** Until the first answer arrives only one request is in flight, so a limit the
  config does not know is learnt before a burst can trip it.
- **429s with learnt limits** mean our picture of the provider was wrong: only that request waits
  its ``Retry-After`` (the executor does that), everyone pauses when the wait is exact
  (``retry-after-ms``), and the pace eases by 3% (once a second at most), recovering 1%/s.
- **No limit headers at all** (some servers): AIMD on 429s. Everyone pauses for ``Retry-After``,
  the pace drops to 70% of the answers/s just measured (once per second at most: a burst of 429s
  is one congestion event), then climbs back 10%/s while no 429 comes.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque

from pipeline.teachers.pacer import MirrorBucket
from pipeline.teachers.rate_headers import read_rate_headers

MARGIN = 0.99    # pace at this share of the provider's rate: the reserve refills at 1% of the limit per second
HEADROOM = 0.8   # the mirror holds this share of the provider's bucket; the rest (0.2 s worth) is the reserve
AIMD_BURST_S = 0.1  # without headers: seconds' worth of requests that may go out back to back


class AdaptiveLimiter:
    """Shared by every request of a run: ``await acquire(costs)`` before sending (costs per
    dimension: ``{"requests": 1, "tokens": ..., "input_tokens": ..., "output_tokens": ...}``), then
    report the outcome with ``on_success(headers)`` or ``on_rate_limited(retry_after_s, headers)``."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None, *, probe: bool = True):
        now = time.monotonic()
        self.margin = MARGIN
        self.buckets: dict[str, MirrorBucket] = {}  # header-learnt limits, or the config's until then
        if rpm:
            self.buckets["requests"] = self._bucket(rpm, now)
        if tpm:
            self.buckets["tokens"] = self._bucket(tpm, now)
        self.rate_limited = 0
        self.header_limits = False
        self._aimd: MirrorBucket | None = None  # requests pace learnt from 429s alone
        self._lock = asyncio.Lock()
        self._paused_until = 0.0
        self._warm = asyncio.Event()
        self._probing = False
        if not probe:
            self._warm.set()
        self._successes: deque[float] = deque(maxlen=4096)
        self._last_increase = now
        self._last_decrease = 0.0

    def _bucket(self, per_minute: float, now: float) -> MirrorBucket:
        return MirrorBucket(per_minute, margin=self.margin, headroom=HEADROOM, now=now)

    @property
    def rps(self) -> float | None:
        """Requests per second we pace at (None: unpaced)."""
        if self._aimd is not None:
            return self._aimd.rate
        return self.buckets["requests"].rate if "requests" in self.buckets else None

    def _active(self) -> dict[str, MirrorBucket]:
        if self._aimd is not None:
            return {**self.buckets, "requests": self._aimd}
        return self.buckets

    async def acquire(self, costs: dict[str, float] | None = None) -> None:
        if not self._warm.is_set():
            if self._probing:
                await self._warm.wait()
            else:
                self._probing = True  # this request is the probe; the others wait for its answer
        costs = costs or {"requests": 1.0}
        # One request decides at a time, in arrival order: the head sleeps, the rest queue behind it.
        async with self._lock:
            while True:
                now = time.monotonic()
                wait = self._paused_until - now
                if wait <= 0:
                    buckets = self._active()
                    wait = max((b.wait_s(costs.get(d, 0.0), now) for d, b in buckets.items()), default=0.0)
                    if wait <= 0:
                        for d, b in buckets.items():
                            b.spend(costs.get(d, 0.0), now)
                        return
                await asyncio.sleep(wait)

    def release_probe(self) -> None:
        """The probe is done (any outcome): let everyone go."""
        self._warm.set()

    def _learn(self, headers: dict[str, str] | None, now: float, sent_at: float | None) -> None:
        for dim, reading in read_rate_headers(headers).items():
            self.header_limits = True
            self._aimd = None  # the provider states its limits: no need to guess them from 429s
            bucket = self.buckets.get(dim)
            if bucket is None or abs(bucket.per_minute - reading.per_minute) > 0.01 * bucket.per_minute:
                # A new or changed limit: start a mirror (it starts full; `observe` below brings it
                # down to what the provider really holds).
                bucket = self.buckets[dim] = self._bucket(reading.per_minute, now)
            if reading.remaining is not None:
                bucket.observe(reading.remaining, now, sent_at)

    def _set_margin(self, margin: float, now: float) -> None:
        self.margin = margin
        for b in self.buckets.values():
            b.set_margin(margin, now)

    def on_success(self, headers: dict[str, str] | None, sent_at: float | None = None) -> None:
        """An answer arrived; ``sent_at`` (monotonic) dates its headers' report."""
        now = time.monotonic()
        self._successes.append(now)
        self._learn(headers, now, sent_at)
        if now - self._last_increase >= 1.0:
            self._last_increase = now
            if self.margin < MARGIN:
                self._set_margin(min(MARGIN, self.margin + 0.01), now)
            if self._aimd is not None:
                self._aimd.set_margin(self._aimd.margin * 1.10, now)
        self.release_probe()

    def measured_rps(self, window_s: float = 3.0) -> float:
        """Answers per second over the last ``window_s`` (at least 1 s, so a first burst of a few
        quick answers does not read as a high rate)."""
        now = time.monotonic()
        recent = [t for t in self._successes if now - t <= window_s]
        if not recent:
            return 0.0
        return len(recent) / max(1.0, min(window_s, now - recent[0]))

    def on_rate_limited(self, retry_after_s: float | None, headers: dict[str, str] | None,
                        sent_at: float | None = None) -> None:
        self.rate_limited += 1
        now = time.monotonic()
        decrease = now - self._last_decrease >= 1.0  # one congestion event, one decrease
        self._last_increase = now
        self._learn(headers, now, sent_at)
        precise = bool(headers and headers.get("retry-after-ms"))
        if self.header_limits:
            if decrease:
                self._last_decrease = now
                self._set_margin(max(0.5, self.margin * 0.97), now)
            if precise and retry_after_s:
                self._paused_until = max(self._paused_until, now + retry_after_s)
        else:
            if decrease:
                self._last_decrease = now
                base = self.measured_rps() or self.rps
                if base:
                    # The AIMD pace is a mirror of a 1 rpm bucket whose margin is the pace in req/s.
                    pace = max(1.0, 0.7 * base)
                    self._aimd = MirrorBucket(60.0, margin=pace, headroom=AIMD_BURST_S * pace, now=now)
                    self._aimd.level = 0.0
                    self.buckets.pop("requests", None)  # a configured rpm was only a starting point
            self._paused_until = max(self._paused_until, now + (retry_after_s if retry_after_s is not None else 1.0))
        self.release_probe()
