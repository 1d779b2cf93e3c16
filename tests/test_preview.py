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


def test_preview_shows_n_rendered_inputs(task_folder, capsys):
    assert main(["preview", str(task_folder), "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert "input 1" in out and "input 2" not in out and "abcd" in out
    assert "requests: 2" in out
