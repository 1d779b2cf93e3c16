"""Adaptive concurrency: the number of requests on the wire grows while latency stays flat and
backs off on 429s, timeouts and rising latency. Driven by hand, with made-up latencies: no clock."""
from __future__ import annotations

import asyncio

from pipeline.teachers.concurrency import BACK_OFF, GROW, AdaptiveConcurrency


def _round(gate: AdaptiveConcurrency, latency: float, congested: bool = False) -> None:
    """Fill every slot, then finish them all with ``latency``."""
    async def go() -> None:
        n = int(gate.limit)
        for _ in range(n):
            await gate.acquire()
        for i in range(n):
            gate.release(latency, congested=congested and i == 0)

    asyncio.run(go())


def test_the_limit_grows_while_latency_stays_flat_up_to_the_maximum():
    gate = AdaptiveConcurrency(maximum=512, start=16)
    for _ in range(20):
        _round(gate, 0.2)
    assert gate.limit == 512 and gate.peak == 512


def test_rising_latency_stops_the_growth_and_eases_the_limit():
    gate = AdaptiveConcurrency(maximum=512, start=64)
    _round(gate, 0.2)
    grown = gate.limit
    assert grown >= 64 * GROW
    for _ in range(3):
        _round(gate, 0.5)  # 2.5x the unloaded latency: something is queueing
    assert gate.limit < grown


def test_a_429_or_a_timeout_backs_off_at_once():
    gate = AdaptiveConcurrency(maximum=512, start=100)
    _round(gate, 0.2, congested=True)
    assert gate.limit <= 100 * BACK_OFF + 1


def test_a_limit_that_never_binds_does_not_grow():
    gate = AdaptiveConcurrency(maximum=512, start=64)

    async def go() -> None:
        for _ in range(40):  # one at a time: a paced run with a few requests in flight
            await gate.acquire()
            gate.release(0.2)

    asyncio.run(go())
    assert gate.limit == 64


def test_waiters_are_served_in_order_one_per_release():
    async def go() -> list[int]:
        gate, order = AdaptiveConcurrency(maximum=1, start=1), []
        await gate.acquire()

        async def waiter(i: int) -> None:
            await gate.acquire()
            order.append(i)

        tasks = [asyncio.create_task(waiter(i)) for i in range(3)]
        await asyncio.sleep(0)
        for _ in range(3):
            gate.release()
            await asyncio.sleep(0)
            assert gate.in_flight == 1
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(go()) == [0, 1, 2]
