"""``MirrorBucket``: our copy of one of the provider's token buckets (requests, or tokens).

The providers' limiters are token buckets refilled continuously at LIMIT/60 per second that hold
about one second's worth (OpenAI quantises 6,000 RPM to 100/s with a burst of 100). The mirror
refills a little slower (``margin``, e.g. 98% of the provider's rate) and holds only ``headroom``
(half) of the provider's capacity. Spending from the mirror first keeps the provider's bucket at
least ``1 - headroom`` full at all times: it refills faster than the mirror and holds more, so
whatever the mirror lets through the provider's bucket has already covered. That reserve absorbs
jitter (a slow event loop, a clumped send); a 429 needs our estimate of the provider to be wrong.

``observe(remaining, sent_at)`` corrects the mirror from what the provider says it holds (allowing
for the report's age): the mirror is never above it less half the reserve, so a low token estimate, or another
client on the same key, slows us down instead of drawing 429s.

Pure and clock-driven (``now`` is passed in), so it is tested without sleeping.
"""
from __future__ import annotations

import bisect

# The provider's bucket holds this many seconds' worth (OpenAI: one; Anthropic: "short bursts").
PROVIDER_CAPACITY_S = 1.0
SPEND_LOG = 20_000  # sends remembered, to bring a report up to now (far more than are ever in flight)


class MirrorBucket:
    """One bucket of ``per_minute`` units. ``wait_s(cost, now)`` then ``spend(cost, now)``."""

    def __init__(self, per_minute: float, *, margin: float, headroom: float, now: float):
        self.per_minute = per_minute
        self.provider_rate = per_minute / 60.0
        self.margin, self.headroom = margin, headroom
        self.provider_capacity = self.provider_rate * PROVIDER_CAPACITY_S
        self.level = self.capacity
        self.max_remaining = 0.0  # the most the provider has reported: its scale, when it is not per minute
        self._at = now
        # What we spent and when (cumulative), to bring an old report up to now.
        self._spent_at: list[float] = []
        self._spent_cum: list[float] = []
        self._spent_total = self._spent_before = 0.0
        self._quickest = float("inf")  # the shortest send-to-report time seen: the provider's own latency

    @property
    def rate(self) -> float:
        """Units per second we allow ourselves."""
        return self.provider_rate * self.margin

    @property
    def capacity(self) -> float:
        """The most the mirror holds: ``headroom`` of the provider's bucket."""
        return self.headroom * self.provider_capacity

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + max(0.0, now - self._at) * self.rate)
        self._at = now

    def set_margin(self, margin: float, now: float) -> None:
        self._refill(now)  # what has accrued so far accrued at the old pace
        self.margin = margin

    def wait_s(self, cost: float, now: float) -> float:
        """Seconds until ``cost`` may be spent (0: now). A cost above the capacity waits for a full
        mirror and then goes into debt, so one large request is paced, never refused."""
        self._refill(now)
        need = min(cost, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def spend(self, cost: float, now: float) -> None:
        self._refill(now)
        self.level -= cost
        self._spent_total += cost
        self._spent_at.append(now)
        self._spent_cum.append(self._spent_total)
        if len(self._spent_at) > 2 * SPEND_LOG:  # keep the last SPEND_LOG sends (minutes of them)
            self._spent_before = self._spent_cum[-SPEND_LOG - 1]
            del self._spent_at[:-SPEND_LOG], self._spent_cum[:-SPEND_LOG]

    def _spent_since(self, t: float) -> float:
        i = bisect.bisect_right(self._spent_at, t)
        return self._spent_total - (self._spent_cum[i - 1] if i else self._spent_before)

    def observe(self, remaining: float, now: float, sent_at: float | None = None) -> None:
        """The provider reports ``remaining``: on the per-minute scale (OpenAI, Anthropic) or in
        bucket units (some servers). A value above what a one-second bucket can hold can only be
        per minute; below, the most ever seen is taken as the full bucket.

        When it was measured is not known: somewhere between the send (``sent_at``) and now, and
        the answer may then have waited in our event loop. Read as current, a report that waited
        throws away the refill since (pace lost whenever our loop lags); read as of ``sent_at``,
        it deducts what we sent during the request, which the provider had already counted. So
        it is taken as measured when the quickest answer so far would have been (the provider
        answers at the end of a request; anything longer was spent waiting on our side), then
        brought up to now: refilled since, less what we sent since."""
        self.max_remaining = max(self.max_remaining, remaining)
        if self.max_remaining > 1.01 * self.provider_rate * PROVIDER_CAPACITY_S:
            self.provider_capacity = self.provider_rate * PROVIDER_CAPACITY_S
            provider_level = remaining / self.per_minute * self.provider_capacity
        else:
            self.provider_capacity = max(self.max_remaining, 1e-9)
            provider_level = remaining
        if sent_at is not None:
            self._quickest = min(self._quickest, max(0.0, now - sent_at))
            measured_at = sent_at + self._quickest
            refilled = min(self.provider_capacity, provider_level + (now - measured_at) * self.provider_rate)
            provider_level = refilled - self._spent_since(measured_at)
        self._refill(now)
        reserve = self.provider_capacity - self.capacity
        # Half the reserve is allowed for what this projection cannot see (other clients, jitter);
        # debt below zero is kept: we wait until the provider has refilled.
        self.level = min(self.level, provider_level - reserve / 2)
