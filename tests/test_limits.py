"""The small pure parts of the execution layer: header parsing, pacing, AIMD, budget admission."""
from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.config.teacher import BudgetConfig
from pipeline.errors import TeacherError
from pipeline.pricing import Price
from pipeline.teachers.base import RetryableError, classify_status, parse_retry_after
from pipeline.teachers.budget import Budget
from pipeline.teachers.limits import AdaptiveLimiter, parse_reset, read_limits


@pytest.mark.parametrize("value,seconds", [("1s", 1), ("6m0s", 360), ("20ms", 0.02), ("1h2m3s", 3723),
                                           ("0.5", 0.5), ("2m30.5s", 150.5), (None, None), ("soon", None)])
def test_reset_durations_in_openai_format(value, seconds):
    assert parse_reset(value) == (pytest.approx(seconds) if seconds is not None else None)


def test_reset_as_an_rfc3339_timestamp_from_anthropic():
    at = (datetime.now(UTC) + timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    assert parse_reset(at) == pytest.approx(30, abs=1)


def test_retry_after_ms_wins_over_whole_seconds_and_http_dates_work():
    assert parse_retry_after({"retry-after": "2", "retry-after-ms": "150"}) == pytest.approx(0.15)
    assert parse_retry_after({"retry-after": "3"}) == 3
    date = (datetime.now(UTC) + timedelta(seconds=20)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert parse_retry_after({"retry-after": date}) == pytest.approx(20, abs=1.5)
    assert parse_retry_after({}) is None


def test_limits_are_read_from_either_providers_headers():
    openai = read_limits({"x-ratelimit-limit-requests": "6000", "x-ratelimit-remaining-requests": "42",
                          "x-ratelimit-reset-requests": "20ms", "x-ratelimit-limit-tokens": "600000"})
    assert openai == {"rps": 100.0, "tps": 10000.0, "remaining": 42.0, "reset_s": pytest.approx(0.02)}
    anthropic = read_limits({"anthropic-ratelimit-requests-limit": "120", "anthropic-ratelimit-requests-remaining": "3"})
    assert anthropic["rps"] == 2.0 and anthropic["remaining"] == 3.0


def test_status_codes_split_into_retryable_and_fatal_with_a_hint():
    assert isinstance(classify_status(429, "slow down", {"retry-after": "1"}, "t"), RetryableError)
    assert classify_status(503, "", {}, "t").kind == "server"
    err = classify_status(401, "Incorrect API key sk-abcdefghijklmnop", {}, "teacher x")
    assert isinstance(err, TeacherError) and "sk-abcdefghijklmnop" not in str(err) and "API key" in str(err)
    assert "teacher.model" in str(classify_status(404, "no model", {}, "t"))


def test_the_limiter_paces_evenly_at_the_rate_learnt_from_headers():
    async def go() -> float:
        lim = AdaptiveLimiter()
        await lim.acquire()  # the probe
        lim.on_success({"x-ratelimit-limit-requests": "1200", "x-ratelimit-remaining-requests": "1"})
        start = time.monotonic()
        for _ in range(21):
            await lim.acquire()
        return time.monotonic() - start

    elapsed = asyncio.run(go())  # 20/s after a burst of 2 (0.1 s worth): 19 more take ~0.95 s
    assert 0.8 <= elapsed <= 2.0


def test_only_the_probe_goes_out_until_the_first_answer():
    async def go() -> list[str]:
        lim, order = AdaptiveLimiter(), []

        async def req(name: str, delay: float) -> None:
            await lim.acquire()
            order.append(f"start {name}")
            await asyncio.sleep(delay)
            order.append(f"end {name}")
            lim.on_success({})

        await asyncio.gather(req("probe", 0.05), req("b", 0), req("c", 0))
        return order

    assert asyncio.run(go())[:2] == ["start probe", "end probe"]


def test_without_headers_a_burst_of_429s_is_one_decrease_and_pauses_everyone():
    lim = AdaptiveLimiter(rpm=600, probe=False)  # 10/s
    for _ in range(5):
        lim.on_rate_limited(0.4, {})
    assert lim.rps == pytest.approx(7.0)  # one decrease to 70%, not five
    assert lim._paused_until - time.monotonic() == pytest.approx(0.4, abs=0.05)
    assert lim.rate_limited == 5


def test_budget_reservations_never_let_requests_in_flight_overshoot_a_cap():
    budget = Budget(BudgetConfig(max_cost_usd=1.0), Price(100_000.0, 100_000.0))  # $0.1 per token
    assert [budget.admit(2, 2) for _ in range(3)] == [True, True, False]  # 0.4 + 0.4 + 0.4 > 1.0
    assert budget.stopped == "max_cost_usd=1.0"
    assert budget.settle((2, 2), (1, 1)) == pytest.approx(0.2)
    budget.settle((2, 2), None)  # a failed request costs nothing
    assert budget.cost_usd == pytest.approx(0.2) and budget.requests == 1
