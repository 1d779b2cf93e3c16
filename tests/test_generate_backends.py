"""The generate stage end to end on each hosted-API backend, through the real SDKs and a real
socket: Anthropic Messages, OpenAI replicas, vLLM-style token ids, teacher-written inputs."""
from __future__ import annotations

import json

import pytest

from pipeline.config import load_task
from pipeline.errors import ConfigError
from pipeline.paths import TaskPaths
from pipeline.records import Record, read_jsonl
from pipeline.stages.generate import run_generate
from tests.fakes.server import FakeServer, token_id
from tests.fakes.tasks import FAKE_ANTHROPIC_KEY, FAKE_OPENAI_KEY, make_task, texts


@pytest.fixture(autouse=True)
def _keys(monkeypatch, data_root):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_OPENAI_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_ANTHROPIC_KEY)


def _records() -> list[Record]:
    return list(read_jsonl(TaskPaths("faketask").generated_jsonl, Record))


def test_openai_records_carry_top_logprobs_usage_cost_and_the_params_sent(tmp_path):
    with FakeServer() as srv:
        folder = make_task(tmp_path, teacher={"base_url": srv.url, "top_logprobs": 5,
                                              "params": {"temperature": 0.0, "max_tokens": 3}}, inputs=texts(3))
        manifest = run_generate(load_task(folder), quiet=True)
    rec = _records()[0]
    assert rec.finish_reason == "length" and len(rec.logprobs) == 3
    assert len(rec.logprobs[0].top) == 5 and rec.logprobs[0].top[0].token == rec.logprobs[0].token
    assert rec.logprobs[0].bytes == list(rec.logprobs[0].token.encode())
    assert rec.teacher.params == {"temperature": 0.0, "max_tokens": 3} and rec.teacher.top_logprobs == 5
    assert rec.usage.completion_tokens == 3 and rec.cost_usd > 0 and rec.id == rec.request_hash[:16]
    for key in ("stage", "task", "created_at", "config", "inputs", "params", "counts", "timings",
                "template_hashes", "tokens", "cost_usd", "retries", "rate_limited_429", "teacher"):
        assert key in manifest
    assert manifest["stage"] == "generate" and manifest["counts"]["records"] == 3
    assert any(p.endswith("inputs.jsonl") for p in manifest["inputs"])
    on_disk = json.loads((TaskPaths("faketask").generated_dir / "manifest.json").read_text())
    assert on_disk == manifest


def test_vllm_token_id_form_is_parsed_into_ids_and_text(tmp_path):
    with FakeServer() as srv:
        folder = make_task(tmp_path, teacher={"base_url": srv.url, "top_logprobs": 2,
                                              "params": {"max_tokens": 4, "return_tokens_as_token_ids": True}},
                           inputs=texts(1))
        run_generate(load_task(folder), quiet=True)
    pos = _records()[0].logprobs[0]
    assert not pos.token.startswith("token_id:")
    assert pos.id == token_id(pos.token)
    assert pos.top[1].id == token_id(pos.top[1].token)


def test_a_list_of_base_urls_spreads_requests_across_replicas(tmp_path):
    with FakeServer() as a, FakeServer() as b:
        folder = make_task(tmp_path, teacher={"base_url": [a.url, b.url]}, inputs=texts(20))
        run_generate(load_task(folder), quiet=True)
        served = a.stats()["n_served"], b.stats()["n_served"]
    assert sum(served) == 20 and min(served) >= 8


def test_anthropic_messages_answer_with_the_system_prompt_and_mapped_stop_reasons(tmp_path):
    with FakeServer() as srv:
        folder = make_task(tmp_path, teacher={"backend": "anthropic", "model": "claude-haiku-4-5",
                                              "base_url": srv.base, "params": {"max_tokens": 2}},
                           inputs=texts(4), files={"system.j2": "Answer positive or negative."})
        manifest = run_generate(load_task(folder), quiet=True)
        assert srv.stats()["n_served"] == 4
    records = _records()
    assert {r.completion for r in records} <= {"positive", "negative"}  # the system prompt reached it
    assert all(r.finish_reason == "stop" and r.logprobs is None for r in records)
    assert manifest["cost_usd"] > 0


def test_anthropic_without_max_tokens_is_a_config_error(tmp_path):
    folder = make_task(tmp_path, teacher={"backend": "anthropic", "model": "claude-haiku-4-5",
                                          "base_url": "http://127.0.0.1:9", "params": {"temperature": 0}},
                       inputs=texts(1))
    with pytest.raises(ConfigError, match="max_tokens"):
        run_generate(load_task(folder), quiet=True)


def test_a_missing_api_key_is_a_one_line_config_error(tmp_path, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    folder = make_task(tmp_path, teacher={"backend": "anthropic", "model": "claude-haiku-4-5",
                                          "params": {"max_tokens": 5}}, inputs=texts(1))
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY is not set"):
        run_generate(load_task(folder), quiet=True)


def test_teacher_written_inputs_then_answers_both_through_the_same_layer(tmp_path):
    generate = {"template": "generate_input.j2", "field": "text", "count": 6,
                "seeds": {"genre": ["comedy", "drama"]}, "grid": {"opinion": ["loved", "hated"]},
                "params": {"temperature": 1.0, "max_tokens": 20}}
    with FakeServer(per_request_faults=["503"]) as srv:
        folder = make_task(tmp_path, teacher={"base_url": srv.url}, extra={"inputs": {"generate": generate}},
                           files={"generate_input.j2": "Write a review of a {{ genre }} by someone who {{ opinion }} it."})
        manifest = run_generate(load_task(folder), quiet=True)
        again = run_generate(load_task(folder), quiet=True)
        stats = srv.stats()
    written = [json.loads(line) for line in (TaskPaths("faketask").generated_dir / "inputs.jsonl").read_text().splitlines()]
    assert len(written) == 6 and {w["genre"] for w in written} == {"comedy", "drama"}
    assert "variant" not in written[0] and written[0]["text"].startswith("Answer")
    assert manifest["passes"]["writing inputs"]["requests"] == 6  # repeats of a combination are distinct
    assert manifest["counts"]["records"] == len({w["text"] for w in written})
    # 4 combinations, count 6: two combinations are asked twice (variant 1) on purpose, as fresh
    # samples; this server answers a repeated body identically, so those inputs coincide.
    assert stats["n_served"] == 6 + manifest["counts"]["records"] and stats["duplicates"] == 2
    assert again["counts"]["requests_sent"] == 0


def test_real_inputs_with_teacher_written_ones_mixed_in(tmp_path, capsys):
    """``inputs`` with both ``source`` and ``generate``: the real inputs first, then the written ones,
    answered and estimated together; a --limit trial takes the real ones first."""
    from pipeline.config.inputs import InputsConfig
    from pipeline.prompts import PromptRenderer
    from pipeline.stages.preview import estimate_run
    from pipeline.stages.preview import main as preview_main
    from pipeline.stages.validate import validate_task

    generate = {"template": "generate_input.j2", "field": "text", "count": 3, "seeds": {"genre": ["comedy", "drama", "horror"]},
                "params": {"temperature": 1.0, "max_tokens": 3}}  # every written input is cut: said, and kept
    with FakeServer() as srv:
        folder = make_task(tmp_path, teacher={"base_url": srv.url}, inputs=texts(4),
                           extra={"inputs": {"source": {"path": "inputs.jsonl"}, "generate": generate}},
                           files={"generate_input.j2": "Write a review of a {{ genre }}."})
        task = load_task(folder)
        est, _ = estimate_run(task, PromptRenderer.for_task(task))
        assert est.requests == 3 + 4 + 3  # three writing requests, then every answer
        report = validate_task(str(folder))
        assert not report.problems and {"inputs: 4", "teacher-written inputs: 3"} <= set(report.notes)
        preview_main(type("A", (), {"task": str(folder), "n": 2})())
        shown = capsys.readouterr().out
        assert "writes input 1" in shown and "input 2" in shown and "review number 1" in shown
        trial = run_generate(task, quiet=True, limit=5)
        assert trial["passes"]["writing inputs"]["requests"] == 1 and trial["counts"]["records"] == 5
        est, _ = estimate_run(task, PromptRenderer.for_task(task))  # the cache's answers, the written input's too
        assert (est.requests, est.cached) == (10, 1 + 5)
        run_generate(task, quiet=True, limit=3)
        assert srv.stats()["n_served"] == 1 + 5  # nothing new: the 3 are the first real ones, answered before
        manifest = run_generate(task, quiet=True)
        est, _ = estimate_run(task, PromptRenderer.for_task(task))
        assert (est.requests, est.cached, est.prompt_tokens, est.completion_tokens) == (10, 10, 0, 0)
        # a written input that came back empty is never answered: preview counts no request for it
        from pipeline.stages.generate import writing_requests
        from pipeline.teachers.base import TeacherResponse
        from pipeline.teachers.cache import AnswerCache

        _, jobs = writing_requests(task, PromptRenderer.for_task(task))
        with AnswerCache(TaskPaths("faketask").cache_db) as cache:
            cache.conn.execute("DELETE FROM answers WHERE request_hash=?", (jobs[2].req.request_hash,))
            cache.put(jobs[2].req.request_hash, jobs[2].payload, TeacherResponse(text="  ", model="m"))
        est, _ = estimate_run(task, PromptRenderer.for_task(task))
        assert (est.requests, est.cached) == (9, 9)
    answered = [json.loads(line) for line in (TaskPaths("faketask").generated_dir / "inputs.jsonl").read_text().splitlines()]
    assert [a["text"] for a in answered[:4]] == [t["text"] for t in texts(4)]
    assert [a.get("genre") for a in answered[4:]] == ["comedy", "drama", "horror"]
    assert manifest["counts"]["records"] == 7 and manifest["passes"]["writing inputs"]["requests"] == 3
    assert any("3 of 3 teacher-written inputs stopped at max_tokens=3" in w for w in manifest["warnings"])
    with pytest.raises(ValueError, match="set 'source' .*, 'generate' .*, or both"):
        InputsConfig.model_validate({})


def test_the_summary_line_reports_counts_tokens_cost_and_429s(tmp_path, capsys):
    with FakeServer() as srv:
        folder = make_task(tmp_path, teacher={"base_url": srv.url}, inputs=texts(3))
        run_generate(load_task(folder), quiet=False)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("generate faketask: done: 3 records (3 new, 0 cached)")
    assert "tokens" in last and "$" in last and "429s" in last


def test_quiet_mode_prints_nothing(tmp_path, capsys):
    with FakeServer() as srv:
        folder = make_task(tmp_path, teacher={"base_url": srv.url}, inputs=texts(3))
        run_generate(load_task(folder), quiet=True)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_anthropic_rate_limit_headers_are_learnt_too(tmp_path):
    with FakeServer(rate_limit_rps=20, burst=4) as srv:
        folder = make_task(tmp_path, teacher={"backend": "anthropic", "model": "claude-haiku-4-5",
                                              "base_url": srv.base, "params": {"max_tokens": 5}}, inputs=texts(30))
        manifest = run_generate(load_task(folder), quiet=True)
        stats = srv.stats()
    assert manifest["counts"]["records"] == 30 and stats["n_429"] <= 2  # a 4-deep bucket leaves little room for jitter
    assert manifest["passes"]["answering"]["learned_rps"] == pytest.approx(20, rel=0.1)


def test_limit_answers_only_the_first_n_inputs(tmp_path, capsys):
    from pipeline.cli import main as cli_main

    with FakeServer() as srv:
        folder = make_task(tmp_path, teacher={"base_url": srv.url}, inputs=texts(10))
        assert cli_main(["generate", str(folder), "--limit", "3", "--quiet"]) == 0
        assert srv.stats()["n_served"] == 3
        assert cli_main(["generate", str(folder), "--limit", "0"]) == 2
    assert [r.inputs["text"] for r in _records()] == [x["text"] for x in texts(3)]
    assert "--limit 0" in capsys.readouterr().err


def test_a_limited_run_shows_its_answers_parsed_so_prose_is_seen_before_a_full_run(tmp_path, capsys):
    from pipeline.cli import main

    # a zero-shot prompt that does not list the labels: the fake teacher answers prose
    with FakeServer() as srv:
        folder = make_task(tmp_path, teacher={"base_url": srv.url}, inputs=texts(6),
                           extra={"output": {"kind": "label", "labels": ["positive", "negative"]}})
        assert main(["generate", str(folder), "--limit", "4"]) == 0
    err = capsys.readouterr().err
    assert "answers (the first 4 of 4, parsed as output.kind label):" in err
    assert "'Answer " in err and "-> NOT PARSED (label_unknown" in err
    assert "0 of 4 answers parse as label; fix the prompt" in err


def test_blank_inputs_are_never_sent_and_validate_names_them(tmp_path):
    from pipeline.stages.validate import validate_task

    inputs = texts(4) + [{"text": ""}, {"text": "   "}, {"text": None}]
    with FakeServer() as srv:
        folder = make_task(tmp_path, teacher={"base_url": srv.url}, inputs=inputs)
        manifest = run_generate(load_task(folder), quiet=True)
        assert srv.stats()["n_served"] == 4
    assert manifest["counts"]["records"] == 4
    assert any("3 of 7 inputs have no text in 'text'" in w for w in manifest["warnings"])
    assert any("3 of 7 inputs have no text in 'text'" in w for w in validate_task(folder).warnings)


def test_evaluate_reads_eval_source_without_its_blank_inputs(tmp_path):
    from pipeline.evaluation.eval_inputs import read_eval_source

    folder = make_task(tmp_path, teacher={}, inputs=texts(2),
                       extra={"eval": {"source": {"path": "eval.jsonl"}, "gold_field": "gold"}},
                       files={"eval.jsonl": '{"text": "a film", "gold": "x"}\n{"text": "", "gold": "y"}\n'})
    rows, golds, _ = read_eval_source(load_task(folder), None)
    assert rows == [{"text": "a film"}] and golds == ["x"]
