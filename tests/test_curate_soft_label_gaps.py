"""Curate says how often a soft label is incomplete: a runner-up token that starts several labels
(its mass cannot be split), or a label outside the teacher's top-k, no longer vanish silently."""
from __future__ import annotations

import pytest

from pipeline.config.task import load_task
from pipeline.curation.parse import label_mass_left_out
from pipeline.stages.curate import run_curate
from tests.curate_fixtures import edit_task_yaml, make_record, position, write_generated

LABELS = ["search creative work", "search screening event", "play music"]


def play_music_with_search_runner_up():
    """The teacher wrote "play music"; "search" (0.25) starts two labels and was not written."""
    return [position("play", -0.35, [("play", -0.35), ("search", -1.39), ("the", -4.0)]),
            position(" music", -0.01, [(" music", -0.01)])]


def test_a_runner_up_shared_by_two_labels_is_reported_as_left_out():
    runner_up, outside = label_mass_left_out(play_music_with_search_runner_up(), LABELS)
    assert runner_up == pytest.approx(0.25, abs=0.01)
    assert outside == pytest.approx(1 - 0.705 - 0.249 - 0.018, abs=0.01)  # "search ..." labels got nothing


def test_a_soft_label_with_every_label_in_the_top_k_leaves_nothing_out():
    assert label_mass_left_out([position("positive", -0.1, [("positive", -0.1), ("negative", -2.4)])],
                               ["positive", "negative"]) == (0.0, 0.0)


def test_curate_counts_incomplete_soft_labels_and_warns_past_the_threshold(task_copy, data_root, capsys):
    folder = task_copy("sentiment")
    edit_task_yaml(folder, output={"kind": "label", "labels": LABELS}, decontam={"enabled": False},
                   filters={"drop_truncated": False})
    complete = [position("play", -0.01, [("play", -0.01), ("the", -5.0)]), position(" music", -0.01, [(" music", -0.01)])]
    records = [make_record(f"song {i}", "play music", logprobs=play_music_with_search_runner_up()) for i in range(3)]
    records += [make_record(f"tune {i}", "play music", logprobs=complete) for i in range(7)]
    write_generated(data_root / "data", "sentiment", records)
    manifest = run_curate(load_task(folder))
    gaps = manifest["soft_label_gaps"]
    assert gaps["soft_labels"] == 10 and gaps["incomplete"] == 3 and gaps["runner_up_left_out"] == 3
    assert "warning: curate: 3 of 10 soft labels are incomplete" in capsys.readouterr().err
