"""Spreading requests over replicas (a ``base_url`` list), each with its own pacing and health.

Why: replicas of a self-hosted model are separate servers, each with its own limits and its own
bad days. One shared limiter would pace all of them by the slowest, and round robin would keep
feeding a replica that is down. So each replica gets its own ``AdaptiveLimiter`` (its own probe,
limits and 429s), and every request goes to the replica with the least work per unit of speed:
``(assigned + 1) x latency``, where ``assigned`` counts requests waiting in its pacer or in flight
and ``latency`` is a moving average of its answers. A slow replica gets proportionally less
traffic, and one pacing harder than the others builds a queue and is picked less.

Health: a connection error, timeout or 5xx takes a replica out for a backoff that doubles with each
failure in a row (0.5 s up to 30 s); its first answer puts it back. When every replica is out, the
one due back soonest is tried, so a run survives a replica dying mid-run (its failed requests are
retried on the others) and picks it up again if it comes back.

One replica (the usual case) is a router of one: the same code, no choice.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.teachers.limits import AdaptiveLimiter

BACKOFF_S = (0.5, 30.0)  # first and longest time out after failures in a row
EWMA = 0.2               # weight of the newest latency in the moving average
UNHEALTHY = ("connection", "timeout", "server")


@dataclass
class Replica:
    index: int
    limiter: AdaptiveLimiter
    assigned: int = 0                # picked and not finished: queued in its pacer, or in flight
    latency_s: float | None = None   # moving average of answered requests
    failures: int = 0                # in a row
    out_until: float = 0.0
    answered: int = 0
    failed: dict[str, int] = field(default_factory=dict)

    def score(self, default_latency: float) -> float:
        return (self.assigned + 1) * (self.latency_s or default_latency)


class ReplicaRouter:
    """``pick()`` a replica for one attempt, then report ``answered(r, latency)`` or ``failed(r, kind)``."""

    def __init__(self, n: int, make_limiter: Callable[[], AdaptiveLimiter]):
        self.replicas = [Replica(i, make_limiter()) for i in range(max(1, n))]

    def pick(self) -> Replica:
        now = time.monotonic()
        up = [r for r in self.replicas if r.out_until <= now]
        if not up:  # all out: try the one due back first (a half-open try)
            choice = min(self.replicas, key=lambda r: r.out_until)
        else:
            known = [r.latency_s for r in up if r.latency_s is not None]
            default = min(known) if known else 1.0  # an untried replica counts as the fastest seen
            choice = min(up, key=lambda r: r.score(default))
        choice.assigned += 1
        return choice

    def answered(self, replica: Replica, latency_s: float) -> None:
        replica.assigned -= 1
        replica.answered += 1
        replica.failures, replica.out_until = 0, 0.0
        old = replica.latency_s
        replica.latency_s = latency_s if old is None else (1 - EWMA) * old + EWMA * latency_s

    def failed(self, replica: Replica, kind: str) -> None:
        replica.assigned -= 1
        replica.failed[kind] = replica.failed.get(kind, 0) + 1
        if kind in UNHEALTHY and len(self.replicas) > 1:
            replica.failures += 1
            backoff = min(BACKOFF_S[1], BACKOFF_S[0] * 2 ** (replica.failures - 1))
            replica.out_until = time.monotonic() + backoff

    def finished_other(self, replica: Replica) -> None:
        """An attempt ended some other way (a 429, a fatal error, cancellation)."""
        replica.assigned -= 1

    @property
    def rate_limited(self) -> int:
        return sum(r.limiter.rate_limited for r in self.replicas)

    @property
    def rps(self) -> float | None:
        """The pace of all replicas together (None while any is unpaced)."""
        rates = [r.limiter.rps for r in self.replicas]
        return None if any(x is None for x in rates) else sum(rates)

    def summary(self) -> list[dict]:
        return [{"answered": r.answered, "failed": dict(r.failed), "latency_s": round(r.latency_s or 0, 4),
                 "rps": round(r.limiter.rps, 3) if r.limiter.rps else None} for r in self.replicas]
