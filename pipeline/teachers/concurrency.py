"""``AdaptiveConcurrency``: how many requests may be on the wire at once, learnt rather than fixed.

Why: with no rate limit the number of requests in flight is what bounds throughput (requests/s =
in flight / latency), and the right number depends on the server and on our own CPU. So the limit
moves like a congestion window, in the spirit of TCP Vegas and Netflix's concurrency-limits:

- every window of completions (half the limit, at least 8) the mean latency is compared with the
  lowest window mean seen (the server's unloaded latency);
- while the window was full (the limit really bound) and latency stayed flat (under ``FLAT`` x the
  lowest), the limit grows by ``GROW``;
- latency past ``SLOW`` x the lowest (the server, or our own event loop, is queueing) shrinks it
  by ``EASE``; a 429 or a timeout in the window shrinks it by ``BACK_OFF``.

It is bounded by ``teacher.concurrency`` (open connections). Waiters are served first come, first
served, and each release wakes one waiter, not all of them.
"""
from __future__ import annotations

import asyncio
from collections import deque

START = 128      # the first limit (the old fixed default), capped by the maximum
GROW = 1.25
EASE = 0.9
BACK_OFF = 0.7
FLAT = 1.3
SLOW = 2.0


class AdaptiveConcurrency:
    """``await acquire()`` before a request goes on the wire; ``release(latency_s, congested)`` after."""

    def __init__(self, maximum: int, start: int = START):
        self.maximum = maximum
        self.limit = float(max(1, min(start, maximum)))
        self.in_flight = 0
        self.peak = 0
        self.lowest_latency: float | None = None
        self._waiters: deque[asyncio.Future] = deque()
        self._latencies: list[float] = []
        self._full = False       # the limit bound at some point in this window
        self._congested = False  # a 429 or a timeout in this window

    async def acquire(self) -> None:
        if self.in_flight < int(self.limit) and not self._waiters:
            self._take()
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut  # the releaser counted us in before waking us
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # woken and cancelled at once: hand the slot on
            raise

    def _take(self) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        if self.in_flight >= int(self.limit):
            self._full = True

    def _wake(self) -> None:
        while self._waiters and self.in_flight < int(self.limit):
            fut = self._waiters.popleft()
            if not fut.done():
                self._take()
                fut.set_result(None)

    def release(self, latency_s: float | None = None, congested: bool = False) -> None:
        self.in_flight -= 1
        self._congested |= congested
        if latency_s is not None:
            self._latencies.append(latency_s)
        if len(self._latencies) >= max(8, self.limit / 2) or (congested and self._latencies):
            self._adjust()
        self._wake()

    def _adjust(self) -> None:
        mean = sum(self._latencies) / len(self._latencies)
        if self.lowest_latency is None or mean < self.lowest_latency:
            self.lowest_latency = mean
        if self._congested:
            self.limit = max(1.0, self.limit * BACK_OFF)
        elif mean > SLOW * self.lowest_latency:
            self.limit = max(1.0, self.limit * EASE)
        elif self._full and mean <= FLAT * self.lowest_latency:
            self.limit = min(float(self.maximum), self.limit * GROW)
        self._latencies.clear()
        self._full = False  # the next window grows only if a new request finds the limit full
        self._congested = False
