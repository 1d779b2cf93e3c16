"""A ``base_url`` list: each replica is paced by its own limits, a slow or failing replica gets less
traffic, and a run survives one replica dying mid-run. Two real local servers, real SDK."""
from __future__ import annotations

import threading
import time

import pytest

from pipeline.config import load_task
from pipeline.stages.generate import run_generate
from tests.fakes.ratelimit import ProviderLimiter
from tests.fakes.server import FakeServer
from tests.fakes.tasks import FAKE_OPENAI_KEY, make_task, texts


@pytest.fixture(autouse=True)
def _keys(monkeypatch, data_root):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_OPENAI_KEY)


def _generate(tmp_path, urls: list[str], n: int, **teacher) -> dict:
    folder = make_task(tmp_path, teacher={"base_url": urls, "concurrency": 16, "max_retries": 3, **teacher},
                       inputs=texts(n))
    return run_generate(load_task(folder), quiet=True)


def test_each_replica_is_paced_by_its_own_limits(tmp_path):
    # Two replicas of 1,200 RPM each: one shared pacer would hold both to 20/s, learnt from either.
    with FakeServer(limiter=ProviderLimiter("openai", rpm=1200), latency_s=0.01) as a, \
            FakeServer(limiter=ProviderLimiter("openai", rpm=1200), latency_s=0.01) as b:
        manifest = _generate(tmp_path, [a.url, b.url], 80)
        sa, sb = a.stats(), b.stats()
    assert manifest["counts"]["records"] == 80 and sa["n_429"] + sb["n_429"] <= 2
    assert min(sa["n_served"], sb["n_served"]) >= 25
    assert manifest["passes"]["answering"]["learned_rps"] == pytest.approx(40, rel=0.05)


def test_a_slow_replica_gets_less_traffic(tmp_path):
    with FakeServer(latency_s=0.01) as fast, FakeServer(latency_s=0.2) as slow:
        _generate(tmp_path, [fast.url, slow.url], 80)
        served = fast.stats()["n_served"], slow.stats()["n_served"]
    assert sum(served) == 80 and served[0] >= 3 * served[1]


def test_a_failing_replica_is_taken_out_and_the_other_answers_everything(tmp_path):
    with FakeServer() as good, FakeServer(random_faults={"503": 1.0}) as bad:
        manifest = _generate(tmp_path, [good.url, bad.url], 60)
        assert good.stats()["n_served"] == 60
        assert bad.stats()["n_received"] <= 12  # out for a doubling backoff after each failure
    assert manifest["counts"]["records"] == 60 and manifest["counts"]["failed"] == 0


def test_the_run_survives_a_replica_dying_mid_run(tmp_path):
    a, b = FakeServer(latency_s=0.05).start(), FakeServer(latency_s=0.05).start()

    def kill_b_after_some_answers() -> None:
        for _ in range(500):  # bounded: at most 10 s
            if b.stats()["n_served"] >= 10:
                break
            time.sleep(0.02)
        b.stop()

    killer = threading.Thread(target=kill_b_after_some_answers)
    killer.start()
    try:
        manifest = _generate(tmp_path, [a.url, b.url], 80)
        killer.join(15)
        sa, sb = a.stats(), b.state.stats()
    finally:
        a.stop()
        b.stop()
    assert manifest["counts"]["records"] == 80 and manifest["counts"]["failed"] == 0
    assert sb["n_served"] >= 10 and sa["duplicates"] == 0 and sb["duplicates"] == 0
    # Answers b served but never delivered (in flight when it died) are the only ones asked twice.
    assert sa["n_served"] + sb["n_served"] <= 80 + 16
    dead = manifest["passes"]["answering"]["replicas"][1]
    assert sum(dead["failed"].values()) >= 1  # what its in-flight requests got (the SDK names it)
