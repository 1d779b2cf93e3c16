"""Inputs that are also eval inputs are caught before the teacher is paid: curate's decontamination
would drop their answers, and the student would be scored on inputs it trained on. A new user who
copies the demo and drops its group_split (their file has no movie column) hits exactly this."""
from __future__ import annotations

import json

import pytest

from pipeline.errors import ConfigError
from tests.test_validate import base_config, run_validate, write_task

ROWS = [{"text": f"review number {i} says it is {'good' if i % 2 else 'bad'}", "label": "yes" if i % 2 else "no"}
        for i in range(20)]


def _files(inputs: list[dict], evals: list[dict]) -> dict[str, str]:
    return {"inputs.jsonl": "".join(json.dumps({"text": r["text"]}) + "\n" for r in inputs),
            "eval.jsonl": "".join(json.dumps(r) + "\n" for r in evals),
            "user.j2": "Text: {{ text }}\nAnswer {{ labels | join(' or ') }}."}


def _cfg(**extra) -> dict:
    return base_config(eval={"source": {"path": "eval.jsonl", "fields": {"text": "text", "gold": "label"}},
                             "gold_field": "gold"}, **extra)


def test_every_input_an_eval_input_is_an_error_naming_group_split(tmp_path, capsys):
    folder = write_task(tmp_path / "t", _cfg(), _files(ROWS, ROWS))
    rc, lines = run_validate(folder, capsys)
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert rc != 0 and len(errors) == 1, lines
    assert "inputs.source: 20 of 20 inputs are also eval inputs" in errors[0] and "group_split" in errors[0]


def test_some_shared_inputs_are_a_warning_with_the_count(tmp_path, capsys):
    # case and punctuation differ: compared as decontamination compares, by case-folded words
    evals = [{**r, "text": r["text"].upper() + "!"} for r in ROWS[:5]] + [{"text": "another film", "label": "no"}]
    folder = write_task(tmp_path / "t", _cfg(), _files(ROWS, evals))
    rc, lines = run_validate(folder, capsys)
    warned = [ln for ln in lines if "also eval inputs" in ln]
    assert rc == 0 and len(warned) == 1 and warned[0].startswith("warning:") and "5 of 20" in warned[0]


def test_separate_inputs_and_eval_inputs_say_nothing(tmp_path, capsys):
    folder = write_task(tmp_path / "t", _cfg(), _files(ROWS[:10], ROWS[10:]))
    rc, lines = run_validate(folder, capsys)
    assert rc == 0 and not [ln for ln in lines if "also eval inputs" in ln]


def test_decontamination_off_is_the_user_choosing_to_share_them(tmp_path, capsys):
    folder = write_task(tmp_path / "t", _cfg(decontam={"enabled": False}), _files(ROWS, ROWS))
    rc, lines = run_validate(folder, capsys)
    assert rc == 0 and not [ln for ln in lines if "also eval inputs" in ln]


def test_generate_refuses_before_asking_when_every_input_is_an_eval_input(tmp_path, data_root, tiny_model_dir):
    from pipeline.config.task import load_task
    from pipeline.paths import TaskPaths
    from pipeline.stages.generate import run_generate

    cfg = _cfg(teacher={"backend": "hf", "model": str(tiny_model_dir), "batch_size": 4})
    task = load_task(write_task(tmp_path / "t", cfg, _files(ROWS, ROWS)))
    with pytest.raises(ConfigError, match="20 of 20 inputs are also eval inputs"):
        run_generate(task, quiet=True)
    assert not TaskPaths(task.name).generated_jsonl.exists()  # nothing was asked


def test_generate_warns_and_answers_when_some_are_shared(tmp_path, data_root, tiny_model_dir, capsys):
    from pipeline.config.task import load_task
    from pipeline.stages.generate import run_generate

    cfg = _cfg(teacher={"backend": "hf", "model": str(tiny_model_dir), "batch_size": 4})
    task = load_task(write_task(tmp_path / "t", cfg, _files(ROWS[:8], ROWS[6:])))
    manifest = run_generate(task)
    warned = [ln for ln in capsys.readouterr().err.splitlines() if "also eval inputs" in ln]
    assert len(warned) == 1 and "2 of 8" in warned[0] and manifest["counts"]["records"] == 8
