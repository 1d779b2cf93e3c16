"""Cache and resume: a killed run loses at most its requests in flight and never pays twice for a
stored answer; a re-run sends only what is missing; editing a template re-asks only what changed."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.config import load_task
from pipeline.errors import LockedError
from pipeline.paths import TaskPaths
from pipeline.records import Message, Record, read_jsonl
from pipeline.stages.generate import answer_inputs, generate_lock, run_generate
from pipeline.teachers import make_teacher
from pipeline.teachers.base import TeacherRequest
from tests.fakes.server import FakeServer, body_hash
from tests.fakes.tasks import FAKE_OPENAI_KEY, make_task, texts

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _keys(monkeypatch, data_root):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_OPENAI_KEY)


def _stored_body_hashes(folder: Path) -> set[str]:
    """The wire body (as the fake server hashes it) of every answer in the task's cache."""
    cfg = load_task(folder).config.teacher
    teacher = make_teacher(cfg)
    db = sqlite3.connect(TaskPaths(load_task(folder).name).cache_db)
    out = set()
    for h, payload in db.execute("SELECT request_hash, request FROM answers"):
        p = json.loads(payload)
        req = TeacherRequest(messages=[Message(**m) for m in p["messages"]], params=p["params"],
                             top_logprobs=p["top_logprobs"], request_hash=h)
        out.add(body_hash(teacher.body(req)))
    db.close()
    return out


def test_resume_after_kill_sends_no_request_twice(tmp_path, data_root):
    n, concurrency = 80, 4
    with FakeServer(latency_s=0.05) as srv:
        folder = make_task(tmp_path, teacher={"base_url": srv.url, "concurrency": concurrency}, inputs=texts(n))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, "-m", "pipeline.cli", "generate", str(folder), "--quiet"]
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path)
        deadline = time.monotonic() + 60
        while srv.stats()["n_served"] < 20 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # mid-run, requests in flight
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        time.sleep(0.3)  # the server finishes (and counts as paid) what was in flight at the kill
        at_kill = srv.stats()
        stored = _stored_body_hashes(folder)
        assert 20 - concurrency <= len(stored) < n
        served_not_stored = at_kill["n_served"] - len(stored)
        assert 0 <= served_not_stored <= concurrency  # only the requests in flight were lost

        done = subprocess.run(cmd, env=env, cwd=tmp_path, timeout=120, check=False)
        assert done.returncode == 0
        after = srv.stats()
    assert all(after["served"][h] == 1 for h in stored)  # no stored answer was asked for again
    assert after["duplicates"] <= served_not_stored
    records = list(read_jsonl(TaskPaths("faketask").generated_jsonl, Record))
    assert [r.inputs["text"] for r in records] == [x["text"] for x in texts(n)]
    assert sum(r.cached for r in records) == len(stored)


def test_editing_one_template_branch_re_requests_only_the_prompts_it_changed(tmp_path):
    inputs = [{"text": f"item {i}", "kind": "a" if i % 3 == 0 else "b"} for i in range(12)]
    user = "{% if kind == 'a' %}Rate this A: {{ text }}{% else %}Rate this B: {{ text }}{% endif %}"
    with FakeServer() as srv:
        folder = make_task(tmp_path, teacher={"base_url": srv.url}, inputs=inputs, user=user)
        first = run_generate(load_task(folder), quiet=True)
        (folder / "user.j2").write_text(user.replace("Rate this A:", "Score this A:"))
        second = run_generate(load_task(folder), quiet=True)
        stats = srv.stats()
    assert first["counts"]["new"] == 12
    assert second["counts"] == {**second["counts"], "new": 4, "cached": 8, "requests_sent": 4}
    assert stats["n_served"] == 16 and stats["duplicates"] == 0
    assert first["template_hashes"]["user.j2"] != second["template_hashes"]["user.j2"]


def test_a_rerun_of_a_finished_task_sends_nothing_and_loads_no_teacher(tmp_path, monkeypatch):
    import pipeline.teachers

    with FakeServer() as srv:
        folder = make_task(tmp_path, teacher={"base_url": srv.url}, inputs=texts(10))
        run_generate(load_task(folder), quiet=True)
        monkeypatch.setattr(pipeline.teachers, "make_teacher", lambda cfg: pytest.fail("teacher loaded"))
        again = run_generate(load_task(folder), quiet=True)
        assert srv.stats()["n_received"] == 10
    assert again["counts"]["cached"] == 10 and again["counts"]["requests_sent"] == 0


def test_answer_inputs_returns_one_record_per_input_in_order_from_the_cache(tmp_path):
    with FakeServer() as srv:
        folder = make_task(tmp_path, teacher={"base_url": srv.url}, inputs=texts(4))
        task = load_task(folder)
        run_generate(task, quiet=True)
        new_inputs = [{"text": "fresh one"}, texts(4)[2], {"text": "fresh one"}]
        records = answer_inputs(task, new_inputs)
        assert srv.stats()["n_received"] == 5  # one new prompt, asked once
    assert [r.inputs for r in records] == new_inputs
    assert [r.cached for r in records] == [False, True, False]
    assert records[0].request_hash == records[2].request_hash


def test_a_second_generate_of_the_same_task_is_refused_while_one_runs(tmp_path):
    with FakeServer() as srv:
        folder = make_task(tmp_path, teacher={"base_url": srv.url}, inputs=texts(2))
        task = load_task(folder)
        with generate_lock(TaskPaths(task.name)), pytest.raises(LockedError, match="generate.lock"):
            run_generate(task, quiet=True)
        assert srv.stats()["n_received"] == 0
