"""`distill run`: the whole pipeline, incremental and safe under a scheduler. The teacher is the fake
OpenAI server (counted requests); the student is a tiny random model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.config import load_task
from pipeline.orchestration.lock import TaskLock
from pipeline.paths import TaskPaths
from pipeline.stages.run import EXIT_NOTHING_CHANGED, run_pipeline
from tests.fakes.server import FakeServer
from tests.fakes.tasks import FAKE_OPENAI_KEY, make_task, texts

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _keys(monkeypatch, data_root):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_OPENAI_KEY)


@pytest.fixture(scope="module")
def server():
    with FakeServer() as srv:
        yield srv


def label_task(root: Path, srv: FakeServer, student: Path, n: int = 12) -> Path:
    return make_task(
        root,
        name="runtask",
        teacher={"base_url": srv.url, "top_logprobs": 3, "params": {"temperature": 0, "max_tokens": 2}},
        inputs=texts(n),
        user="Review: {{ text }}\nAnswer positive or negative.",
        extra={
            "output": {"kind": "label", "labels": ["positive", "negative"]},
            "decontam": {"enabled": False},
            "split": {"eval_fraction": 0.25},
            "student": {"init": "pretrained", "model": str(student)},
            "train": {"method": "kd", "sft": {"max_steps": 1, "per_device_train_batch_size": 4}},
            "eval": {"batch_size": 8, "latency_samples": 1},
        },
    )


def sent(srv: FakeServer) -> int:
    return srv.stats()["n_served"]


def test_second_run_does_nothing_and_says_so(tmp_path, server, tiny_model_dir, capsys):
    folder = label_task(tmp_path, server, tiny_model_dir)
    before = sent(server)
    first = run_pipeline(load_task(folder), quiet=True)
    assert first["changed"] and all(v == "ran" for v in first["stages"].values())
    assert sent(server) - before == 12
    assert (TaskPaths("runtask").models_dir / first["model"] / "report.json").exists()

    before = sent(server)
    assert main(["run", str(folder), "--quiet"]) == EXIT_NOTHING_CHANGED
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # the one-line JSON summary
    assert summary["changed"] is False
    assert set(summary["stages"].values()) == {"skipped (unchanged)"}
    assert sent(server) == before  # not one request


def test_a_deleted_model_is_trained_again_without_asking_the_teacher(tmp_path, server, tiny_model_dir):
    """Deleting the models folder (or a dataset version) and running again trains (and curates) anew
    from the cached answers; before, the run said "unchanged", did nothing and named no model."""
    import shutil

    folder = label_task(tmp_path, server, tiny_model_dir)
    first = run_pipeline(load_task(folder), quiet=True)
    paths = TaskPaths("runtask")
    shutil.rmtree(paths.models_dir)
    before = sent(server)
    second = run_pipeline(load_task(folder), quiet=True)
    assert second["stages"] == {"generate": "skipped (unchanged)", "curate": "skipped (unchanged)",
                                "train": "ran", "evaluate": "ran"}
    assert second["model"] and (paths.models_dir / second["model"] / "report.json").exists()
    shutil.rmtree(paths.versions_dir / first["version"])
    third = run_pipeline(load_task(folder), quiet=True)
    assert third["stages"]["curate"] == "ran" and (paths.versions_dir / third["version"]).is_dir()
    assert sent(server) == before  # every answer from the cache


def test_new_inputs_only_are_requested_and_drift_is_reported(tmp_path, server, tiny_model_dir):
    folder = label_task(tmp_path, server, tiny_model_dir)
    first = run_pipeline(load_task(folder), quiet=True)
    with (folder / "inputs.jsonl").open("a") as fh:  # a day of new production inputs
        for row in texts(4, prefix="new review"):
            fh.write(json.dumps(row) + "\n")
    before = sent(server)
    second = run_pipeline(load_task(folder), quiet=True)
    assert sent(server) - before == 4
    assert second["changed"] and second["version"] != first["version"]
    assert second["drift"]["new_examples"] == 4 and second["drift"]["dropped_examples"] == 0
    drift = json.loads((TaskPaths("runtask").versions_dir / second["version"] / "drift.json").read_text())
    assert drift["previous"] == first["version"] and drift["examples"]["current"] == 16


def test_a_folder_of_daily_files_asks_only_a_new_days_inputs(tmp_path, server, tiny_model_dir):
    """``inputs.source.path: logs/*.jsonl``: the scheduled run reads every day's file; a new day's file
    changes the fingerprint and only its inputs reach the teacher, and a re-run with no new file does nothing."""
    folder = label_task(tmp_path, server, tiny_model_dir)
    (folder / "logs").mkdir()
    (folder / "inputs.jsonl").rename(folder / "logs" / "2026-12-01.jsonl")
    task_yaml = folder / "task.yaml"
    task_yaml.write_text(task_yaml.read_text().replace("path: inputs.jsonl", "path: logs/*.jsonl"))
    first = run_pipeline(load_task(folder), quiet=True)
    assert first["changed"]
    (folder / "logs" / "2026-12-02.jsonl").write_text("".join(json.dumps(r) + "\n" for r in texts(4, prefix="day two")))
    before = sent(server)
    second = run_pipeline(load_task(folder), quiet=True)
    assert sent(server) - before == 4
    assert second["changed"] and second["drift"]["new_examples"] == 4
    manifest = json.loads((TaskPaths("runtask").generated_dir / "manifest.json").read_text())
    assert {Path(p).name for p in manifest["inputs"]} >= {"2026-12-01.jsonl", "2026-12-02.jsonl"}
    before = sent(server)
    third = run_pipeline(load_task(folder), quiet=True)
    assert not third["changed"] and sent(server) == before


def test_a_quiet_run_carries_its_warnings_in_the_summary_line(tmp_path, server, tiny_model_dir, capsys):
    """cron sees nothing on success, so a warning printed only to the terminal reached nobody: a quiet
    run prints none, and its summary line and the stage's manifest keep them."""
    folder = label_task(tmp_path, server, tiny_model_dir)
    task_yaml = folder / "task.yaml"  # a third label the prompt never offers
    task_yaml.write_text(task_yaml.read_text().replace("  - negative\n", "  - negative\n  - neutral\n", 1))
    assert main(["run", str(folder), "--quiet"]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    assert err == "" and list(summary["warnings"]) == ["generate", "curate"]
    (line,) = summary["warnings"]["generate"]
    assert "never names label(s) 'neutral'" in line and not line.startswith("warning:")
    (curated,) = summary["warnings"]["curate"]  # and so the teacher never gave it any probability
    assert "12 of 12 soft labels are incomplete" in curated
    paths = TaskPaths("runtask")
    assert json.loads((paths.generated_dir / "manifest.json").read_text())["warnings"] == [line]
    assert json.loads((paths.versions_dir / summary["version"] / "manifest.json").read_text())["warnings"] == [curated]
    assert json.loads((paths.models_dir / summary["model"] / "train_manifest.json").read_text())["warnings"] == []
    run_pipeline(load_task(folder), stages=("generate",), force=True)  # not quiet: said as it happens
    assert "warning: " in capsys.readouterr().err


def test_template_change_requests_only_the_prompts_it_affects(tmp_path, server, tiny_model_dir):
    folder = label_task(tmp_path, server, tiny_model_dir)
    (folder / "user.j2").write_text(
        "{% if 'number 1' in text %}Review (short): {% else %}Review: {% endif %}{{ text }}\nAnswer positive or negative."
    )
    run_pipeline(load_task(folder), quiet=True, stages=("generate",))
    # edit only the branch taken by inputs containing "number 1" (1, 10, 11 of 0..11)
    (folder / "user.j2").write_text(
        "{% if 'number 1' in text %}Short review: {% else %}Review: {% endif %}{{ text }}\nAnswer positive or negative."
    )
    before = sent(server)
    run_pipeline(load_task(folder), quiet=True, stages=("generate",))
    assert sent(server) - before == 3


def test_run_refuses_while_another_holds_the_lock(tmp_path, server, tiny_model_dir):
    folder = label_task(tmp_path, server, tiny_model_dir)
    with TaskLock(TaskPaths("runtask").lock_file):
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "run", str(folder), "--quiet"],
            capture_output=True, text=True, check=False, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=tmp_path,
        )
    assert proc.returncode == 4
    assert "another run of this task is in progress" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_retention_keeps_the_last_versions(tmp_path, server, tiny_model_dir):
    folder = label_task(tmp_path, server, tiny_model_dir, n=8)
    versions = []
    for day in range(3):
        with (folder / "inputs.jsonl").open("a") as fh:
            fh.write(json.dumps({"text": f"day {day} review"}) + "\n")
        summary = run_pipeline(load_task(folder), quiet=True, keep=2, stages=("generate", "curate"))
        versions.append(summary["version"])
    kept = sorted(p.name for p in TaskPaths("runtask").versions_dir.iterdir() if p.is_dir())
    assert kept == sorted(versions[-2:])
    assert summary["pruned_versions"] == [versions[0]]


def test_bad_stage_name_is_a_one_line_error(tmp_path, server, tiny_model_dir, capsys):
    folder = label_task(tmp_path, server, tiny_model_dir)
    assert main(["run", str(folder), "--stages", "generate,trian"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --stages: unknown stage(s) trian")
