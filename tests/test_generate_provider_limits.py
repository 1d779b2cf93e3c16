"""The generate stage against limiters modelled on the providers' documented behaviour
(tests/fakes/ratelimit.py): buckets of one second's worth, remaining on the per-minute scale, tokens
charged at admission, Anthropic's separate input and output limits. None of the limits is in the
config; each run must learn them and stay under them."""
from __future__ import annotations

import time

import pytest

from pipeline.config import load_task
from pipeline.stages.generate import run_generate
from tests.fakes.ratelimit import ProviderLimiter
from tests.fakes.server import FakeServer
from tests.fakes.tasks import FAKE_ANTHROPIC_KEY, FAKE_OPENAI_KEY, make_task, texts


@pytest.fixture(autouse=True)
def _keys(monkeypatch, data_root):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_OPENAI_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_ANTHROPIC_KEY)


def _run(srv: FakeServer, tmp_path, n: int, **teacher) -> tuple[dict, dict, float]:
    folder = make_task(tmp_path, teacher={"base_url": srv.url, "concurrency": 32, **teacher}, inputs=texts(n))
    start = time.monotonic()
    manifest = run_generate(load_task(folder), quiet=True)
    return manifest, srv.stats(), time.monotonic() - start


def test_an_openai_style_request_bucket_is_learnt_and_never_drained(tmp_path):
    # 1,200 RPM: 20/s with a burst of 20; 429s would carry only whole-second Retry-After.
    limiter = ProviderLimiter("openai", rpm=1200, retry_after_ms_prob=0.0)
    with FakeServer(limiter=limiter, latency_s=0.01) as srv:
        manifest, stats, elapsed = _run(srv, tmp_path, 60)
    assert manifest["counts"]["records"] == 60 and stats["duplicates"] == 0
    # A stalled test server (shared CPUs) can clump arrivals past the reserve now and then; the old
    # pacer, bursting a fresh allowance after each 429, drew dozens.
    assert stats["n_429"] <= 2
    assert elapsed >= 0.9 * (60 - 20) / 20  # it really waited for the limit
    assert manifest["passes"]["answering"]["learned_rps"] == pytest.approx(20, rel=0.05)


def test_an_openai_style_tokens_bucket_charges_prompt_plus_max_tokens_at_admission(tmp_path):
    # 24,000 TPM = 400 tokens/s; each request is charged ~4 prompt tokens + max_tokens 20.
    limiter = ProviderLimiter("openai", tpm=24_000)
    with FakeServer(limiter=limiter, latency_s=0.01) as srv:
        manifest, stats, elapsed = _run(srv, tmp_path, 40, params={"max_tokens": 20})
    assert manifest["counts"]["records"] == 40 and stats["n_429"] <= 2
    charged = stats["charged"]["tokens"]
    assert charged == pytest.approx(40 * 24, rel=0.2)
    assert elapsed >= 0.9 * (charged - 400) / 400  # beyond the first second's worth, it waited


def test_anthropic_style_output_token_limit_paces_by_max_tokens(tmp_path):
    # 3,000 output tokens/minute = 50/s; max_tokens 5 -> 10 requests/s, the tightest of the three.
    limiter = ProviderLimiter("anthropic", rpm=6000, itpm=600_000, otpm=3000)
    with FakeServer(limiter=limiter, latency_s=0.01) as srv:
        folder = make_task(tmp_path, teacher={"backend": "anthropic", "model": "claude-haiku-4-5", "base_url": srv.base,
                                              "params": {"max_tokens": 5}}, inputs=texts(30))
        start = time.monotonic()
        manifest = run_generate(load_task(folder), quiet=True)
        elapsed = time.monotonic() - start
        stats = srv.stats()
    assert manifest["counts"]["records"] == 30 and stats["n_429"] <= 2 and stats["duplicates"] == 0
    assert elapsed >= 0.9 * (30 * 5 - 50) / 50
    assert manifest["passes"]["answering"]["learned_rps"] == pytest.approx(100, rel=0.05)  # requests: 6,000 RPM
