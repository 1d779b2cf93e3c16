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


def test_preview_counts_the_answers_the_cache_holds_and_prices_only_the_rest(tmp_path, capsys):
    """After a template edit, preview says how many prompts the edit re-asks and prices only those;
    evaluate's eval.source requests likewise (the same sample evaluate reads)."""
    from pipeline.cli import main
    from pipeline.prompts import PromptRenderer
    from pipeline.stages.preview import estimate_evaluate, estimate_prompt_tokens, estimate_run

    inputs = [{"text": f"item {i}", "kind": "a" if i % 3 == 0 else "b"} for i in range(12)]
    user = "{% if kind == 'a' %}Rate this A: {{ text }}{% else %}Rate this B: {{ text }}{% endif %}"
    evals = [{"text": f"held out {i}", "kind": "b", "gold": "x"} for i in range(6)]
    with FakeServer() as srv:
        folder = make_task(tmp_path, teacher={"base_url": srv.url, "params": {"max_tokens": 10}}, inputs=inputs,
                           user=user, extra={"eval": {"source": {"path": "eval.jsonl"}, "gold_field": "gold", "limit": 4}},
                           files={"eval.jsonl": "".join(json.dumps(e) + "\n" for e in evals)})
        task = load_task(folder)
        fresh, _ = estimate_run(task, PromptRenderer.for_task(task))
        assert fresh.cached == 0 and fresh.requests == 12 and not (TaskPaths("faketask").cache_db).exists()
        run_generate(task, quiet=True)
        from pipeline.evaluation.eval_inputs import read_eval_source

        sample, _, _ = read_eval_source(task, 4)
        answer_inputs(task, sample[:3])  # what evaluate asks goes through the same cache
        (folder / "user.j2").write_text(user.replace("Rate this A:", "Score this A:"))
        task = load_task(folder)
        renderer = PromptRenderer.for_task(task)
        est, rendered = estimate_run(task, renderer)
        ev = estimate_evaluate(task, renderer)
        assert main(["preview", str(folder), "-n", "0"]) == 0
        out = " ".join(capsys.readouterr().out.split())
        sent = srv.stats()["n_received"]
    changed = [m for m, x in zip(rendered, inputs) if x["kind"] == "a"]
    assert (est.requests, est.cached) == (12, 8)
    assert est.prompt_tokens == sum(estimate_prompt_tokens(m) for m in changed) and est.completion_tokens == 4 * 10
    from pipeline.pricing import price_for

    assert est.cost_usd == pytest.approx(price_for("openai", "gpt-4o-mini").cost(est.prompt_tokens, 40))
    assert 0 < est.cost_usd < fresh.cost_usd / 2  # a third of the prompts re-asked
    assert (ev.requests, ev.cached, ev.completion_tokens) == (4, 3, 10)
    assert "requests: 12 (8 answered already, served by the cache; 4 to ask)" in out
    assert "4 more teacher requests (3 answered already, served by the cache; 1 to ask)" in out
    assert sent == 12 + 3  # preview sent nothing


def test_after_a_trial_preview_prices_the_rest_as_the_trials_answers_went(tmp_path, capsys):
    """max_tokens bounds an answer; a --limit trial's answers give their real size: preview prices the
    requests still to ask at the trial's completion tokens per answer and its prompts' real token
    counts (against the 4-characters-a-token estimate)."""
    from pipeline.cli import main
    from pipeline.pricing import price_for
    from pipeline.prompts import PromptRenderer
    from pipeline.stages.preview import estimate_prompt_tokens, estimate_run

    with FakeServer() as srv:
        folder = make_task(tmp_path, teacher={"base_url": srv.url, "params": {"max_tokens": 200}}, inputs=texts(12))
        assert main(["generate", str(folder), "--limit", "4"]) == 0
        trial = " ".join(capsys.readouterr().err.split())
        task = load_task(folder)
        est, rendered = estimate_run(task, PromptRenderer.for_task(task))
        assert main(["preview", str(folder), "-n", "0"]) == 0
        out = " ".join(capsys.readouterr().out.split())
    records = list(read_jsonl(TaskPaths("faketask").generated_jsonl, Record))
    assert len(records) == 4 and est.cached == 4 and est.completion_tokens == 8 * 200  # the bound
    per_answer = sum(r.usage.completion_tokens for r in records) / 4
    assert 0 < per_answer < 200
    ratio = sum(r.usage.prompt_tokens for r in records) / sum(estimate_prompt_tokens(m) for m in rendered[:4])
    m = est.measured
    assert m["answers"] == 4 and m["completion_tokens"] == round(8 * per_answer)
    assert m["prompt_tokens"] == round(sum(estimate_prompt_tokens(x) for x in rendered[4:]) * ratio)
    assert m["cost_usd"] == pytest.approx(price_for("openai", "gpt-4o-mini").cost(m["prompt_tokens"], m["completion_tokens"]))
    assert m["cost_usd"] < est.cost_usd / 5
    assert f"as the 4 answers in the cache went (their real token counts): ~{m['prompt_tokens']:,} prompt" in out
    assert (f"cost: about ${m['cost_usd']:,.4f} for the 8 requests not answered yet, as these 4 answers went "
            f"(at most ${est.cost_usd:,.4f} by max_tokens)") in trial


def test_after_a_trial_preview_prices_written_inputs_as_the_trial_wrote_them(tmp_path, capsys):
    """Teacher-written inputs: the requests that write them and the answers to inputs not written yet
    were priced at max_tokens (the longest text the teacher may write) even after a trial had shown
    their real size. After ``--limit 3`` the price of the rest is that of the full run to within 5%."""
    import itertools
    import sqlite3

    from pipeline.cli import main
    from pipeline.prompts import PromptRenderer
    from pipeline.stages.preview import estimate_run

    written = itertools.count()

    def reply(body):  # a new review of 27-36 words each time (a teacher sampling at T=1); a short answer
        if body["messages"][-1]["content"].startswith("Write"):
            n = next(written)
            return f"Review {n}: " + " ".join(["word"] * (25 + n * 7 % 10))
        return f"Answer {int(body_hash(body)[:6], 16) % 97} to it."

    generate = {"template": "generate_input.j2", "field": "text", "count": 12, "seeds": {"genre": ["comedy", "drama"]},
                "params": {"temperature": 1.0, "max_tokens": 300}}
    with FakeServer(reply=reply) as srv:
        folder = make_task(tmp_path, teacher={"base_url": srv.url, "params": {"max_tokens": 200}},
                           extra={"inputs": {"generate": generate}},
                           files={"generate_input.j2": "Write a review of a {{ genre }}."})
        assert main(["generate", str(folder), "--limit", "3"]) == 0
        capsys.readouterr()
        task = load_task(folder)
        est, _ = estimate_run(task, PromptRenderer.for_task(task))
        db = TaskPaths("faketask").cache_db
        before = {h for (h,) in sqlite3.connect(db).execute("SELECT request_hash FROM answers")}
        assert main(["generate", str(folder), "--quiet"]) == 0
        rows = sqlite3.connect(db).execute("SELECT request_hash, response FROM answers").fetchall()
    new = [json.loads(r)["usage"] for h, r in rows if h not in before]
    assert len(new) == 2 * 9
    truth = {"prompt_tokens": sum(u["prompt_tokens"] for u in new),
             "completion_tokens": sum(u["completion_tokens"] for u in new)}
    m = est.measured
    assert m["answers"] == 2 * 3
    for key, sent in truth.items():
        assert m[key] == pytest.approx(sent, rel=0.05), (key, m[key], sent)
    assert est.completion_tokens > 5 * truth["completion_tokens"]  # the max_tokens bound, as before


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
