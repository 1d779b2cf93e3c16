"""Every shipped example runs validate, generate, curate, train and evaluate through the `distill`
command, as a user runs it. The task folders are copies of prompts/<task>/ with only what this
machine lacks swapped in: the API teachers are the local protocol server, the embedded teacher and
the students are tiny random models, the sentiment demo's Rotten Tomatoes file is four rows."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.paths import TaskPaths
from tests.curate_fixtures import edit_task_yaml
from tests.fakes.server import FakeServer
from tests.fakes.tasks import FAKE_OPENAI_KEY

ONE_STEP = ["--set", "max_steps=1", "--set", "per_device_train_batch_size=2", "--set", "save_strategy=no"]
# A tiny random student never stops on its own: cap its answers, and time one of them alone.
SHORT_EVAL = {"max_new_tokens": 16, "latency_samples": 1}


@pytest.fixture(autouse=True)
def _keys(monkeypatch, data_root):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_OPENAI_KEY)


def ticket_reply(body: dict) -> str:
    """A support-ticket extraction the way gpt-4o-mini answers it: JSON only."""
    ticket = body["messages"][-1]["content"]
    return json.dumps({"product": ticket.split()[2], "category": "defect", "priority": "high",
                       "order_id": "A-1043" if "order" in ticket else None})


def run_all_stages(folder: Path, capsys) -> dict:
    """validate, generate, curate, train, evaluate; each must exit 0 with no traceback."""
    for argv in (["validate", str(folder)], ["generate", str(folder), "--quiet"], ["curate", str(folder), "-q"],
                 ["train", str(folder), "-q", *ONE_STEP], ["evaluate", str(folder), "--quiet", "--limit", "4"]):
        rc = main(argv)
        out = capsys.readouterr()
        assert rc == 0, (argv[0], out.out, out.err)
        assert "Traceback" not in out.out + out.err
    models = TaskPaths(folder.name).models_dir
    return json.loads((models / (models / "latest").read_text().strip() / "report.json").read_text())


def test_summarize_runs_end_to_end_with_its_api_teacher_on_the_local_server(task_copy, tiny_model_dir, capsys):
    folder = task_copy("summarize")
    with FakeServer() as srv:
        cfg = yaml.safe_load((folder / "task.yaml").read_text())
        edit_task_yaml(folder, teacher={**cfg["teacher"], "base_url": srv.url},
                       student={**cfg["student"], "model": str(tiny_model_dir)}, eval=SHORT_EVAL)
        report = run_all_stages(folder, capsys)
        assert srv.stats()["n_served"] == 5  # one answer per article, none twice
    assert report["params"]["method"] == "sft" and report["counts"]["inputs"] >= 1


def test_ticket_extraction_runs_end_to_end_with_json_answers(task_copy, tiny_model_dir, capsys):
    folder = task_copy("ticket_extraction")
    with FakeServer(reply=ticket_reply) as srv:
        cfg = yaml.safe_load((folder / "task.yaml").read_text())
        edit_task_yaml(folder, teacher={**cfg["teacher"], "base_url": srv.url},
                       student={**cfg["student"], "model": str(tiny_model_dir)}, eval=SHORT_EVAL)
        report = run_all_stages(folder, capsys)
        assert srv.stats()["n_served"] == 6
    assert report["kind"] == "json" and report["counts"]["inputs"] >= 1


def test_sentiment_demo_runs_end_to_end_with_a_tiny_embedded_teacher(task_copy, tmp_path, capsys):
    from tests.tiny_models import build_tiny_model, make_words_likely

    teacher = make_words_likely(build_tiny_model(tmp_path / "teacher", layers=4, seed=1), ["positive", "negative"])
    folder = task_copy("sentiment")
    (folder / "rt.csv").write_text('text,category\n"a warm, funny film",fresh\n"dull and far too long",rotten\n'
                                   '"the best thriller this year",fresh\n"a tedious mess",rotten\n"who cares",none\n',
                                   encoding="utf-8")
    cfg = yaml.safe_load((folder / "task.yaml").read_text())
    no_split = {k: v for k, v in cfg["eval"]["source"].items() if k != "group_split"}
    edit_task_yaml(folder, teacher={**cfg["teacher"], "model": str(teacher)},
                   inputs={"source": {"path": "rt.csv", "fields": {"text": "text"}}},
                   student={**cfg["student"], "teacher_model": str(teacher), "layer_map": [0, 3]},
                   eval={**cfg["eval"], "source": {**no_split, "path": "rt.csv"}, **SHORT_EVAL})
    report = run_all_stages(folder, capsys)
    assert report["params"]["method"] == "kd" and report["counts"]["with_gold"] == 4
