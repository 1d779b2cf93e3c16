"""What `distill train` says on the console and in its manifest about what it really did: rows
dropped by max_length, and "KD" on one-hot labels, which is plain cross-entropy."""
from __future__ import annotations

from pipeline.records import Message
from pipeline.stages.train import run_train
from tests.test_train_stage import _task
from tests.train_data import teacher_rows, write_version


def test_rows_dropped_by_max_length_are_said_on_the_console(data_root, tiny_model_dir, capsys):
    rows = teacher_rows(tiny_model_dir, n=8)
    for row in rows[:3]:  # three few-shot-sized prompts that fill max_length before the answer
        row.prompt = [Message(role="system", content="Classify the review. " * 40), *row.prompt[1:]]
    write_version(data_root, "sentiment", rows, rows[:2])
    m = run_train(_task(data_root, tiny_model_dir, method="sft", sft={"max_steps": 1, "max_length": 64}), quiet=False)
    err = capsys.readouterr().err
    assert "train: sft" not in err and "cross-entropy" not in err  # only what needs saying
    longest = m["counts"]["train"]["longest_tokens"]
    assert m["counts"]["train"]["dropped_truncated"] == 3 and longest > 64
    assert (f"train: 3 of 8 training rows and 2 of 2 eval rows are longer than train.sft.max_length 64 and were "
            f"dropped; set train.sft.max_length: {longest}") in err


def test_kd_on_one_hot_labels_is_called_cross_entropy_in_log_and_manifest(data_root, tiny_model_dir, capsys):
    rows = teacher_rows(tiny_model_dir, n=8, with_ids=False)
    for row in rows:  # a teacher without logprobs (Anthropic): curate's one-hot soft labels
        row.soft_label = {lab: float(lab == row.label) for lab in ("positive", "negative")}
        row.soft_label_kind, row.token_logprobs = "one_hot", None
    write_version(data_root, "sentiment", rows, rows[:2])
    m = run_train(_task(data_root, tiny_model_dir, method="kd", sft={"max_steps": 1}), quiet=False)
    assert m["kd_level"] == "label" and m["objective"].startswith("cross-entropy")
    assert m["soft_labels"] == {"one_hot": 8}
    assert "KD on one-hot labels is plain cross-entropy" in capsys.readouterr().err


def test_kd_on_soft_labels_is_kd(data_root, tiny_model_dir):
    rows = teacher_rows(tiny_model_dir, n=4, with_ids=False)
    write_version(data_root, "sentiment", rows, rows[:2])
    m = run_train(_task(data_root, tiny_model_dir, method="kd", sft={"max_steps": 1}), quiet=True)
    assert m["objective"] == "kd" and m["soft_labels"] == {"logprobs": 4}


def test_run_output_has_no_weight_loading_bars_or_library_deprecation_warnings(data_root, tiny_model_dir, capfd):
    import warnings

    from transformers.utils import logging as hf_logging

    from pipeline.cli import main

    rows = teacher_rows(tiny_model_dir, n=4)
    write_version(data_root, "sentiment", rows, rows[:2])
    task = _task(data_root, tiny_model_dir, method="sft", sft={"max_steps": 1})
    hf_logging.enable_progress_bar()  # as in a fresh process: an earlier test may have turned them off
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train", str(task.path), "--set", "max_steps=1"]) == 0
    out = capfd.readouterr()
    output = out.out + out.err
    assert "trained " in out.out
    for noise in ("Loading weights", "Writing model shards"):
        assert noise not in output, output[-2000:]
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]
