"""`distill preview`: the estimate on a hand-computed case, and unknown prices shown as unknown."""
from __future__ import annotations

import pytest
import yaml

from pipeline.cli import main
from pipeline.config import load_task
from pipeline.pricing import _load
from pipeline.prompts import PromptRenderer
from pipeline.stages.preview import estimate_run


@pytest.fixture
def task_folder(tmp_path, monkeypatch):
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "task.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "t",
                "teacher": {"backend": "openai", "model": "my-model", "params": {"max_tokens": 10}},
                "inputs": {"source": {"path": "inputs.jsonl"}},
                "output": {"kind": "text"},
            }
        )
    )
    (folder / "system.j2").write_text("12345678")  # 8 chars -> 2 tokens
    (folder / "user.j2").write_text("{{ text }}")
    (folder / "inputs.jsonl").write_text('{"text": "abcd"}\n{"text": "abcdefghi"}\n')  # 1 and 3 tokens
    prices = tmp_path / "prices.yaml"
    prices.write_text("models:\n  my-model: {input: 1000000, output: 2000000}\n")  # $1 / $2 per token
    monkeypatch.setenv("DISTILL_PRICES", str(prices))
    _load.cache_clear()
    yield folder
    _load.cache_clear()


def test_estimate_matches_hand_computation(task_folder):
    task = load_task(task_folder)
    est, rendered = estimate_run(task, PromptRenderer.for_task(task))
    # input 1: system (3+2) + user (3+1) + 3 priming = 12; input 2: (3+2) + (3+3) + 3 = 14
    assert est.requests == 2
    assert est.prompt_tokens == 26
    assert est.completion_tokens == 20
    assert est.cost_usd == pytest.approx(26 * 1.0 + 20 * 2.0)
    assert len(rendered) == 2


def test_unknown_model_cost_is_unknown_not_zero(task_folder, monkeypatch, capsys):
    monkeypatch.delenv("DISTILL_PRICES")
    _load.cache_clear()
    assert main(["preview", str(task_folder), "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert "estimated cost: unknown" in out
    assert "$0.0000" not in out


def test_the_batch_apis_discount_is_priced_beside_the_cost(task_folder, tmp_path, capsys):
    assert main(["preview", str(task_folder), "-n", "0"]) == 0
    assert "--batch" not in capsys.readouterr().out  # the test price file gives no discount
    (tmp_path / "prices.yaml").write_text("models:\n  my-model: {input: 1000000, output: 2000000, batch_discount: 0.5}\n")
    _load.cache_clear()
    assert main(["preview", str(task_folder), "-n", "0"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "estimated cost: $66.0000 (with `distill generate t --batch`: $33.0000, answered within 24 h)" in out


def test_preview_shows_n_rendered_inputs(task_folder, capsys):
    assert main(["preview", str(task_folder), "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert "input 1" in out and "input 2" not in out and "abcd" in out
    assert "requests: 2" in out


def _edit(folder, **sections):
    cfg = yaml.safe_load((folder / "task.yaml").read_text())
    cfg.update(sections)
    (folder / "task.yaml").write_text(yaml.safe_dump(cfg))


def test_a_local_teacher_priced_by_the_hour_is_not_shown_as_free(task_folder, capsys):
    _edit(task_folder, teacher={"backend": "hf", "model": "smollm2-135m-instruct", "params": {"max_tokens": 10}},
          eval={"teacher_price_per_hour": 0.1})
    assert main(["preview", str(task_folder), "-n", "0"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "$0.0000" not in out
    assert "estimated cost: no per-token price (hf runs on your machine); its machine time at $0.1/h" in out


def test_evaluate_teacher_calls_on_eval_source_are_counted(task_folder, capsys):
    (task_folder / "eval.jsonl").write_text('{"text": "abcd", "gold": "x"}\n' * 3)
    _edit(task_folder, eval={"source": {"path": "eval.jsonl"}, "gold_field": "gold", "limit": 2})
    assert main(["preview", str(task_folder), "-n", "0"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    # each: system (3+2) + user (3+1) + 3 priming = 12 prompt tokens, 10 completion; $1 / $2 per token
    assert ("evaluate (eval.source, eval.limit 2): 2 more teacher requests, ~24 prompt + 20 completion tokens, "
            "estimated cost: $64.0000") in out
