"""output.calibrate: prior — a teacher biased toward one label still yields a balanced dataset."""
from __future__ import annotations

import pytest

from pipeline.config.task import load_task
from pipeline.curation.parse import calibrate, label_prior
from pipeline.records import TrainRow, read_jsonl
from pipeline.stages.curate import run_curate
from tests.curate_fixtures import edit_task_yaml, make_record, position, write_generated


def test_calibrate_divides_by_the_prior_and_renormalises():
    prior = label_prior([{"pos": 0.9, "neg": 0.1}, {"pos": 0.7, "neg": 0.3}], ["pos", "neg"])
    assert prior == pytest.approx({"pos": 0.8, "neg": 0.2})
    cal = calibrate({"pos": 0.7, "neg": 0.3}, prior)
    # 0.7/0.8 = 0.875 and 0.3/0.2 = 1.5 -> the less-positive-than-usual answer becomes negative
    assert cal == pytest.approx({"pos": 0.875 / 2.375, "neg": 1.5 / 2.375})
    assert calibrate({"pos": 1.0, "neg": 0.0}, {"pos": 1.0, "neg": 0.0}) == {"pos": 1.0, "neg": 0.0}


def biased_records():
    """Every answer says 'positive'; how strongly differs (log P(positive) from -0.1 to -0.7)."""
    records = []
    for i in range(10):
        lp_pos = -0.1 - 0.06 * i
        p_neg = 1 - 2.718281828 ** lp_pos
        import math

        top = [("positive", lp_pos), ("negative", math.log(p_neg))]
        records.append(make_record(f"review {i} " + "word " * i, "positive",
                                   logprobs=[position("positive", lp_pos, top)], salt=str(i)))
    return records


@pytest.mark.parametrize("mode, expected_negative", [("none", 0), ("prior", 5)])
def test_prior_calibration_balances_a_biased_teacher(task_copy, data_root, mode, expected_negative):
    folder = task_copy("sentiment")
    edit_task_yaml(folder, output={"kind": "label", "labels": ["positive", "negative"], "calibrate": mode},
                   decontam={"enabled": False}, dedupe={"enabled": False}, split={"eval_fraction": 0.0})
    task = load_task(folder)
    write_generated(data_root / "data", "sentiment", biased_records())
    manifest = run_curate(task, quiet=True)
    rows = list(read_jsonl(data_root / "data" / "sentiment" / "versions" / manifest["version"] / "train.jsonl", TrainRow))
    assert len(rows) == 10
    assert sum(r.label == "negative" for r in rows) == expected_negative
    if mode == "prior":
        assert manifest["label_prior"]["positive"] > 0.5
        for r in rows:  # the stored soft label is the calibrated one, and the label is its argmax
            assert r.label == max(r.soft_label, key=r.soft_label.get)
            assert r.completion[0].content == r.label


def test_evaluate_judges_the_teacher_with_the_prior_its_student_learnt(task_copy, data_root):
    import json

    from pipeline.stages.evaluate import calibrated_label, dataset_label_prior

    folder = task_copy("sentiment")
    edit_task_yaml(folder, output={"kind": "label", "labels": ["positive", "negative"], "calibrate": "prior"})
    task = load_task(folder)
    vdir = data_root / "data" / "sentiment" / "versions" / "v1"
    vdir.mkdir(parents=True)
    (vdir / "manifest.json").write_text(json.dumps({"label_prior": {"positive": 0.8, "negative": 0.2}}))
    prior = dataset_label_prior(task, "v1")
    assert prior == {"positive": 0.8, "negative": 0.2}
    weakest, strongest = biased_records()[9], biased_records()[0]
    assert calibrated_label(task, weakest, prior) == "negative"  # P(positive) 0.53 < its usual 0.8
    assert calibrated_label(task, strongest, prior) == "positive"
