"""Scheduler safety: the task lock (contention and stale locks), retention, drift."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from pipeline.errors import LockedError
from pipeline.orchestration.drift import compare_versions, drift_markdown
from pipeline.orchestration.lock import TaskLock
from pipeline.orchestration.retention import prune_versions
from pipeline.paths import TaskPaths

HOLD = "import sys, time; from pipeline.orchestration.lock import TaskLock; l = TaskLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)"


def test_second_run_is_refused_while_the_first_holds_the_lock(tmp_path):
    lock_path = tmp_path / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=rf"in progress \(pid {holder.pid} "):
            TaskLock(lock_path).acquire()
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_killed_run_is_detected_as_stale_and_taken_over(tmp_path):
    lock_path = tmp_path / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with TaskLock(lock_path) as lock:
        assert lock.stale_holder["pid"] == holder.pid
        assert json.loads(lock_path.read_text())["pid"] == os.getpid()
    with TaskLock(lock_path) as lock:  # released cleanly: not stale
        assert lock.stale_holder is None


def _make_version(paths: TaskPaths, name: str, rows: list[dict], rejected=(), counts=None):
    vdir = paths.versions_dir / name
    vdir.mkdir(parents=True)
    with (vdir / "train.jsonl").open("w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    with (vdir / "rejected.jsonl").open("w") as fh:
        for reason in rejected:
            fh.write(json.dumps({"reason": reason}) + "\n")
    (vdir / "manifest.json").write_text(json.dumps({"counts": counts or {}}))
    paths.latest_pointer.write_text(name)
    return vdir


def test_retention_keeps_the_newest_versions_and_their_models(data_root):
    paths = TaskPaths("t")
    names = [f"2026010{i}T000000Z" for i in range(1, 5)]
    for n in names:
        _make_version(paths, n, [])
        model = paths.models_dir / f"{n}-kd"
        model.mkdir(parents=True)
        (model / "train_manifest.json").write_text(json.dumps({"dataset_version": n}))
    removed = prune_versions(paths, keep=2)
    assert removed == names[:2]
    assert sorted(p.name for p in paths.versions_dir.iterdir()) == names[2:]
    assert sorted(p.name for p in paths.models_dir.iterdir()) == [f"{n}-kd" for n in names[2:]]


def test_drift_reports_new_dropped_labels_and_rejections(data_root):
    paths = TaskPaths("t")
    a = _make_version(paths, "v1", [{"id": "1", "label": "pos"}, {"id": "2", "label": "neg"}], ["refusal"])
    b = _make_version(
        paths, "v2", [{"id": "2", "label": "neg"}, {"id": "3", "label": "neg"}, {"id": "4", "label": "neg"}],
        ["refusal", "truncated"], {"read": 4, "rejected": {"exact_duplicate": 1, "refusal": 1}},
    )
    report = compare_versions(a, b)
    assert report["new_examples"] == 2 and report["dropped_examples"] == 1
    assert report["labels"]["share_shift"]["pos"] == pytest.approx(-0.5)
    assert report["label_tvd"] == pytest.approx(0.5)
    assert report["rejected"]["current"] == {"refusal": 1, "truncated": 1}
    assert report["duplicate_rate"]["current"] == pytest.approx(0.25)
    assert "+2 new, -1 dropped" in drift_markdown(report)
    assert compare_versions(b, b)["changed"] is False


def test_first_version_reports_its_labels_not_a_shift_from_nothing(data_root):
    paths = TaskPaths("t")
    first = _make_version(paths, "v1", [{"id": "1", "label": "pos"}, {"id": "2", "label": "neg"}])
    report = compare_versions(None, first)
    assert report["label_tvd"] is None and report["labels"]["share_shift"] == {}
    md = drift_markdown(report)
    assert "TVD" not in md and "None" not in md
    assert "- label distribution: pos 1, neg 1 (the first version: no shift to report)" in md


def test_many_labels_show_the_largest_counts_and_shifts_and_say_how_many_more(data_root):
    """A 77-intent task's drift report must stay readable: ten labels, the rest counted (drift.json
    keeps every one)."""
    paths = TaskPaths("t")
    labels = [f"intent_{i:02d}" for i in range(12)]
    rows = [{"id": f"{lab}-{j}", "label": lab} for k, lab in enumerate(labels) for j in range(k + 1)]
    first = _make_version(paths, "v1", rows)
    md = drift_markdown(compare_versions(None, first))
    assert "- label distribution: intent_11 12, intent_10 11," in md and ", and 2 more (drift.json)" in md
    assert "intent_00" not in md
    second = _make_version(paths, "v2", rows + [{"id": f"extra-{j}", "label": "intent_00"} for j in range(30)])
    md = drift_markdown(compare_versions(first, second))
    shift_lines = [ln for ln in md.splitlines() if ln.startswith("  - intent_")]
    assert len(shift_lines) == 10 and shift_lines[0].startswith("  - intent_00: 1 -> 31")
    assert "  - and 2 more labels, shifted less (drift.json)" in md
