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
from pipeline.teachers.limits import MARGIN, AdaptiveLimiter
from pipeline.teachers.pacer import MirrorBucket
from pipeline.teachers.rate_headers import Reading, parse_reset, read_rate_headers


@pytest.mark.parametrize("value,seconds", [("1s", 1), ("6m0s", 360), ("20ms", 0.02), ("1h2m3s", 3723),
                                           ("0.5", 0.5), ("2m30.5s", 150.5), ("1.5s", 1.5), ("120ms", 0.12),
                                           ("500us", 0.0005), (None, None), ("soon", None), ("1x", None)])
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


def test_openai_headers_give_requests_and_tokens_per_minute_with_remaining_and_reset():
    got = read_rate_headers({"x-ratelimit-limit-requests": "6000", "x-ratelimit-remaining-requests": "5940",
                             "x-ratelimit-reset-requests": "10ms", "x-ratelimit-limit-tokens": "200000",
                             "x-ratelimit-remaining-tokens": "150000", "x-ratelimit-reset-tokens": "1.5s"})
    assert got == {"requests": Reading(6000, 5940, pytest.approx(0.01)),
                   "tokens": Reading(200000, 150000, pytest.approx(1.5))}


def test_anthropic_headers_give_separate_input_and_output_token_buckets():
    full_at = (datetime.now(UTC) + timedelta(seconds=2)).isoformat(timespec="seconds").replace("+00:00", "Z")
    got = read_rate_headers({
        "anthropic-ratelimit-requests-limit": "120", "anthropic-ratelimit-requests-remaining": "3",
        "anthropic-ratelimit-requests-reset": full_at,
        "anthropic-ratelimit-input-tokens-limit": "40000", "anthropic-ratelimit-input-tokens-remaining": "39000",
        "anthropic-ratelimit-output-tokens-limit": "8000", "anthropic-ratelimit-output-tokens-remaining": "7000",
    })
    assert set(got) == {"requests", "input_tokens", "output_tokens"}
    assert got["requests"].per_minute == 120 and got["requests"].remaining == 3
    assert got["requests"].reset_s == pytest.approx(2, abs=1.1)
    assert got["output_tokens"] == Reading(8000, 7000, None)
    assert read_rate_headers({"x-ratelimit-limit-requests": "lots"}) == {} and read_rate_headers(None) == {}


def _simulate(mirror: MirrorBucket, *, rate: float, capacity: float, seconds: float, lag_every: int = 0,
              observe: bool = True, others: float = 0.0) -> tuple[int, float]:
    """Send whenever the mirror allows, against a provider bucket of ``rate``/s holding ``capacity``
    (from which other clients take ``others``/s); the provider reports its level (per minute) 0.2 s
    later. Returns (requests sent, lowest provider level)."""
    level, lowest, sent, t, step = capacity, capacity, 0, 0.0, 0.001
    reports: list[tuple[float, float]] = []
    while t < seconds:
        t += step
        level = min(capacity, level + step * rate) - step * others
        if lag_every and int(t * 1000) % lag_every == 0:
            t += 0.05  # a stalled event loop: nothing sent for 50 ms, then it catches up
            level = min(capacity, level + 0.05 * rate)
        while mirror.wait_s(1, t) == 0:
            mirror.spend(1, t)
            level -= 1
            sent += 1
            lowest = min(lowest, level)
            reports.append((t, t + 0.2, level / capacity * rate * 60))
        while observe and reports and reports[0][1] <= t:
            sent_at, _, remaining = reports.pop(0)
            mirror.observe(remaining, t, sent_at)
    return sent, lowest


def test_the_mirror_paces_just_under_the_provider_and_keeps_its_bucket_in_reserve():
    # OpenAI at 6,000 RPM: 100/s, a burst of 100. Over 20 simulated seconds with event-loop stalls.
    mirror = MirrorBucket(6000, margin=MARGIN, headroom=0.8, now=0.0)
    sent, lowest = _simulate(mirror, rate=100, capacity=100, seconds=20, lag_every=700)
    assert sent >= 0.98 * 100 * 20  # the limit's worth, less the margin
    assert lowest >= 15  # never below most of the 20-request reserve: jitter can't reach a 429


def test_a_mirror_that_believes_too_much_is_corrected_by_the_providers_remaining():
    # Another client on the same key takes half of a 6,000 RPM limit.
    mirror = MirrorBucket(6000, margin=MARGIN, headroom=0.8, now=0.0)
    sent, lowest = _simulate(mirror, rate=100, capacity=100, seconds=10, others=50)
    assert lowest > -5 and sent >= 0.9 * 50 * 10  # it slows to the half that is left
    _, blind = _simulate(MirrorBucket(6000, margin=MARGIN, headroom=0.8, now=0.0), rate=100, capacity=100,
                         seconds=10, observe=False, others=50)
    assert blind < -100  # without the feedback it would draw 429s all along


def test_remaining_is_read_on_the_per_minute_scale_or_in_bucket_units():
    per_minute = MirrorBucket(6000, margin=1.0, headroom=0.8, now=0.0)  # 100/s, a 100-request bucket
    per_minute.observe(3000, 0.0)  # half full: 50 requests; a reserve of 20, half of it for the unseen
    assert per_minute.level == pytest.approx(40)
    units = MirrorBucket(1200, margin=1.0, headroom=0.8, now=0.0)  # 20/s; this server reports units
    units.observe(10, 0.0)  # full: the most it reports is its size
    assert units.provider_capacity == 10 and units.capacity == pytest.approx(8) and units.level == pytest.approx(8)
    units.observe(5, 0.0)  # half full: 5 units, a reserve of 2, half of it for the unseen
    assert units.level == pytest.approx(4)


def test_a_report_that_waited_in_our_event_loop_is_brought_up_to_now():
    mirror = MirrorBucket(6000, margin=1.0, headroom=0.8, now=0.0)  # 100/s; holds 80, reserve 20
    mirror.spend(1, 0.0)
    mirror.observe(6000, 0.2, sent_at=0.0)  # the quickest answer: 0.2 s, the provider's latency
    mirror.spend(79, 0.2)  # a burst; the mirror is empty
    # The burst's first report ("20 left", measured at 0.4 s) is read at 0.9 s: our loop lagged
    # 0.5 s. The provider has refilled to 70 since and we sent nothing: 70 less half the reserve.
    mirror.observe(1200, 0.9, sent_at=0.2)
    assert mirror.level == pytest.approx(70 - 10)
    laggy = MirrorBucket(6000, margin=1.0, headroom=0.8, now=0.0)
    laggy.spend(80, 0.2)
    laggy.observe(1200, 0.9)  # read as current, the 0.5 s of refill would be thrown away
    assert laggy.level == pytest.approx(20 - 10)
    # What we sent after it was measured is taken off: 20 + 50 refilled - 30 sent - half the reserve.
    mirror.spend(30, 0.9)
    mirror.observe(1200, 0.9, sent_at=0.2)
    assert mirror.level == pytest.approx(20 + 50 - 30 - 10)


def test_a_request_larger_than_the_mirror_waits_for_a_full_mirror_then_goes_into_debt():
    mirror = MirrorBucket(60_000, margin=1.0, headroom=0.5, now=0.0)  # 1,000 tokens/s; mirror holds 500
    assert mirror.wait_s(2000, 0.0) == 0  # full: it may go
    mirror.spend(2000, 0.0)
    assert mirror.wait_s(100, 0.0) == pytest.approx(1.6)  # 1,500 of debt, then 100 more


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

    # 20/s x MARGIN; this server reports bucket units (1 left): the first goes at once, 20 more take ~1 s.
    elapsed = asyncio.run(go())
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
    assert lim.rps == pytest.approx(0.7 * 10 * MARGIN)  # one decrease to 70%, not five
    assert lim._paused_until - time.monotonic() == pytest.approx(0.4, abs=0.05)
    assert lim.rate_limited == 5


def test_budget_reservations_never_let_requests_in_flight_overshoot_a_cap():
    budget = Budget(BudgetConfig(max_cost_usd=1.0), Price(100_000.0, 100_000.0))  # $0.1 per token
    assert [budget.admit(2, 2) for _ in range(3)] == [True, True, False]  # 0.4 + 0.4 + 0.4 > 1.0
    assert budget.stopped == "max_cost_usd=1.0"
    assert budget.settle((2, 2), (1, 1)) == pytest.approx(0.2)
    budget.settle((2, 2), None)  # a failed request costs nothing
    assert budget.cost_usd == pytest.approx(0.2) and budget.requests == 1


def test_with_header_limits_a_429_eases_the_pace_and_an_exact_wait_pauses_everyone():
    lim = AdaptiveLimiter(probe=False)
    lim.on_success({"x-ratelimit-limit-requests": "6000", "x-ratelimit-remaining-requests": "6000"})
    assert lim.rps == pytest.approx(100 * MARGIN)
    lim.on_rate_limited(1.0, {"retry-after": "1"})  # whole seconds only: that request waits, not everyone
    assert lim.rps == pytest.approx(100 * MARGIN * 0.97) and lim._paused_until < time.monotonic()
    lim.on_rate_limited(0.25, {"retry-after": "1", "retry-after-ms": "250"})
    assert lim._paused_until - time.monotonic() == pytest.approx(0.25, abs=0.05)
    assert lim.rps == pytest.approx(100 * MARGIN * 0.97)  # one decrease per second


def test_each_request_is_charged_in_every_bucket_the_provider_states():
    async def go() -> dict[str, float]:
        lim = AdaptiveLimiter(probe=False)
        lim.on_success({"anthropic-ratelimit-requests-limit": "6000", "anthropic-ratelimit-requests-remaining": "6000",
                        "anthropic-ratelimit-input-tokens-limit": "60000",
                        "anthropic-ratelimit-input-tokens-remaining": "60000",
                        "anthropic-ratelimit-output-tokens-limit": "6000",
                        "anthropic-ratelimit-output-tokens-remaining": "6000"})
        before = {d: b.level for d, b in lim.buckets.items()}
        await lim.acquire({"requests": 1, "tokens": 30, "input_tokens": 10, "output_tokens": 20})
        return {d: before[d] - b.level for d, b in lim.buckets.items()}

    spent = asyncio.run(go())
    assert spent == {"requests": pytest.approx(1, abs=0.01), "input_tokens": pytest.approx(10, abs=0.1),
                     "output_tokens": pytest.approx(20, abs=0.1)}
