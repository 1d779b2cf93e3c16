"""The execution layer against a real HTTP server that misbehaves: every answer still arrives,
nothing is paid twice, limits are honoured, and configuration errors stop the run at once."""
from __future__ import annotations

import time

import pytest

from pipeline.cli import main as cli_main
from pipeline.config import load_task
from pipeline.errors import TeacherError
from pipeline.paths import TaskPaths
from pipeline.records import Record, read_jsonl
from pipeline.stages.generate import run_generate
from tests.fakes.server import FakeServer
from tests.fakes.tasks import FAKE_OPENAI_KEY, make_task, texts


@pytest.fixture(autouse=True)
def _keys(monkeypatch, data_root):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_OPENAI_KEY)


def _records(name: str = "faketask") -> list[Record]:
    return list(read_jsonl(TaskPaths(name).generated_jsonl, Record))


def test_every_answer_arrives_despite_429_5xx_truncated_and_malformed_bodies(tmp_path):
    # Each request fails five different ways before it succeeds; plus random faults on top.
    faults = ["429", "500", "503", "truncated", "malformed"]
    with FakeServer(per_request_faults=faults, random_faults={"500": 0.1, "malformed": 0.05},
                    retry_after_s=0, seed=3) as srv:
        folder = make_task(tmp_path, teacher={"base_url": srv.url, "concurrency": 8}, inputs=texts(24))
        manifest = run_generate(load_task(folder), quiet=True)
        stats = srv.stats()
    records = _records()
    assert [r.inputs["text"] for r in records] == [x["text"] for x in texts(24)]  # input order
    assert all(r.completion.startswith("Answer") for r in records)
    assert stats["n_served"] == 24 and stats["duplicates"] == 0
    assert manifest["counts"]["retries"] >= 24 * len(faults)
    assert manifest["counts"]["rate_limited_429"] >= 24
    errors = manifest["passes"]["answering"]["errors"]
    assert errors["malformed"] >= 48 and errors["server"] >= 48


def test_a_hung_request_times_out_and_is_retried(tmp_path):
    with FakeServer(per_request_faults=["hang"], hang_s=1.5) as srv:
        folder = make_task(tmp_path, teacher={"base_url": srv.url, "timeout_s": 0.3}, inputs=texts(4))
        manifest = run_generate(load_task(folder), quiet=True)
    assert manifest["counts"]["records"] == 4
    # Each hung request was abandoned at its timeout, not answered late (that would be a 504 'server').
    assert manifest["passes"]["answering"]["errors"] == {"timeout": 4}


def test_401_stops_at_once_with_one_line_and_the_key_redacted(tmp_path, capsys):
    with FakeServer(random_faults={"401": 1.0}) as srv:
        folder = make_task(tmp_path, teacher={"base_url": srv.url}, inputs=texts(50))
        code = cli_main(["generate", str(folder), "--quiet"])
        stats = srv.stats()
    err = capsys.readouterr().err.strip()
    assert code == TeacherError.exit_code
    assert err.count("\n") == 0 and err.startswith("error:") and "401" in err
    assert FAKE_OPENAI_KEY not in err and "FAKEKEY" not in err
    assert stats["n_received"] == 1  # no retry, and the first answer gates the rest


def test_400_is_not_retried(tmp_path):
    with FakeServer(random_faults={"400": 1.0}) as srv:
        folder = make_task(tmp_path, teacher={"base_url": srv.url}, inputs=texts(5))
        with pytest.raises(TeacherError, match="HTTP 400"):
            run_generate(load_task(folder), quiet=True)
        assert srv.stats()["n_received"] == 1


def test_the_server_rate_limit_is_learnt_from_headers_and_honoured(tmp_path):
    # 20 requests/s with a bucket of 5, not in the config: the pace is learnt from x-ratelimit-*.
    with FakeServer(rate_limit_rps=20, burst=5, latency_s=0.01) as srv:
        folder = make_task(tmp_path, teacher={"base_url": srv.url, "concurrency": 32}, inputs=texts(50))
        start = time.monotonic()
        manifest = run_generate(load_task(folder), quiet=True)
        elapsed = time.monotonic() - start
        stats = srv.stats()
    assert manifest["counts"]["records"] == 50
    assert stats["n_429"] <= 2 and stats["duplicates"] == 0  # a 5-deep bucket leaves little room for jitter
    assert elapsed >= (50 - 5) / 20 * 0.9  # it really waited for the limit
    assert manifest["passes"]["answering"]["learned_rps"] == pytest.approx(20, rel=0.1)


def test_a_429_storm_without_headers_is_waited_out_and_every_prompt_answered(tmp_path):
    # No x-ratelimit headers: only 429s (Retry-After whole seconds, ms sometimes absent) teach the pace.
    with FakeServer(rate_limit_rps=25, burst=5, send_rate_headers=False, retry_after_ms_prob=0.5, seed=1) as srv:
        folder = make_task(tmp_path, teacher={"base_url": srv.url, "concurrency": 16}, inputs=texts(60))
        manifest = run_generate(load_task(folder), quiet=True)
        stats = srv.stats()
    assert manifest["counts"]["records"] == 60 and manifest["counts"]["failed"] == 0
    assert stats["duplicates"] == 0
    assert 0 < stats["n_429"] < 20  # the storm calms down instead of retrying in lockstep


def test_exhausted_retries_keep_the_answers_that_arrived(tmp_path):
    with FakeServer() as srv:
        folder = make_task(tmp_path, teacher={"base_url": srv.url, "max_retries": 1}, inputs=texts(6))
        run_generate(load_task(folder), quiet=True)  # all 6 cached
        srv.configure(random_faults={"503": 1.0})
        more = make_task(tmp_path, teacher={"base_url": srv.url, "max_retries": 1}, inputs=texts(8))
        with pytest.raises(Exception, match="2 prompts still failed after 1 retries"):
            run_generate(load_task(more), quiet=True)
    assert len(_records()) == 6  # the cached ones are still written


def test_a_tokens_per_minute_limit_from_headers_paces_requests(tmp_path):
    # 60 requests of ~9 tokens (prompt 4 + answer 5) under 24,000 TPM = 400 tokens/s, a second of burst.
    with FakeServer(tokens_per_minute=24_000) as srv:
        folder = make_task(tmp_path, teacher={"base_url": srv.url, "params": {"max_tokens": 8}}, inputs=texts(60))
        start = time.monotonic()
        manifest = run_generate(load_task(folder), quiet=True)
        elapsed = time.monotonic() - start
        stats = srv.stats()
    assert manifest["counts"]["records"] == 60 and stats["n_429"] == 0
    used = manifest["tokens"]["prompt"] + manifest["tokens"]["completion"]
    assert elapsed >= 0.8 * (used - 400) / 400  # beyond the first second's worth, it waited


def test_a_fatal_error_mid_run_leaves_the_previous_output_and_keeps_answers_in_the_cache(tmp_path):
    with FakeServer() as srv:
        folder = make_task(tmp_path, teacher={"base_url": srv.url}, inputs=texts(5))
        run_generate(load_task(folder), quiet=True)
        srv.configure(per_request_faults=["400"])  # every new request is now rejected
        more = make_task(tmp_path, teacher={"base_url": srv.url}, inputs=texts(9))
        with pytest.raises(TeacherError):
            run_generate(load_task(more), quiet=True)
    assert len(_records()) == 5  # generated.jsonl was not rewritten with less
