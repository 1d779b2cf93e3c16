"""generate -> curate: the Records the generate stage writes (real OpenAI SDK, fake server on a real
socket) become a dataset whose soft labels come from the wire protocol's top_logprobs."""
from __future__ import annotations

import pytest

from pipeline.config import load_task
from pipeline.paths import TaskPaths
from pipeline.records import TrainRow, read_jsonl
from pipeline.stages.curate import run_curate
from pipeline.stages.generate import run_generate
from tests.fakes.server import FakeServer
from tests.fakes.tasks import FAKE_OPENAI_KEY, make_task

REVIEWS = [f"a {adj} film about {topic}" for adj in ("warm", "tedious", "clever", "loud")
           for topic in ("family", "war", "space", "cooking", "music")]


def test_generated_label_answers_curate_into_logprob_soft_labels(tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_OPENAI_KEY)
    inputs = [{"text": t} for t in REVIEWS] + [{"text": REVIEWS[0].upper()}]  # one planted duplicate
    with FakeServer() as srv:
        folder = make_task(
            tmp_path, inputs=inputs, files={"system.j2": "Answer positive or negative."},
            teacher={"base_url": srv.url, "top_logprobs": 5, "params": {"temperature": 0.0, "max_tokens": 1}},
            extra={"output": {"kind": "label", "labels": ["positive", "negative"]},
                   "filters": {"drop_truncated": False}, "split": {"eval_fraction": 0.2}},
        )
        run_generate(load_task(folder), quiet=True)
    manifest = run_curate(load_task(folder), quiet=True)

    assert manifest["counts"]["read"] == 21
    assert manifest["counts"]["rejected"] == {"exact_duplicate": 1}
    assert manifest["soft_label_kinds"] == {"logprobs": 20}
    assert manifest["teacher_spend"]["cost_usd"] > 0
    version = TaskPaths("faketask").version_dir()
    rows = list(read_jsonl(version / "train.jsonl", TrainRow)) + list(read_jsonl(version / "eval.jsonl", TrainRow))
    assert len(rows) == 20 and manifest["counts"]["eval"] == 4
    for row in rows:
        assert row.completion[0].content == row.label
        assert sum(row.soft_label.values()) == pytest.approx(1.0)
        assert max(row.soft_label, key=row.soft_label.get) == row.label
        assert row.token_logprobs and row.token_logprobs[0].top
