"""output.calibrate: a teacher's label bias removed, without forcing balanced classes.

'prior' divides by the run's mean (balanced classes assumed); 'content_free' divides by the
teacher's answer to content-free inputs (Zhao et al. 2021); 'em' then re-estimates the inputs'
class prior (Saerens et al. 2002). On an 80/20 input set the last two keep 80/20."""
from __future__ import annotations

import math
import random

import pytest

from pipeline.config.task import load_task
from pipeline.curation.soft_labels import argmax_shares, calibration_weights, em_prior, renormalised, reweight
from pipeline.records import TrainRow, read_jsonl, write_jsonl
from pipeline.stages.curate import run_curate
from tests.curate_fixtures import edit_task_yaml, make_record, position, write_generated

LABELS = ["positive", "negative"]


def test_prior_weights_divide_by_the_mean_and_renormalise():
    cal = calibration_weights("prior", [{"pos": 0.9, "neg": 0.1}, {"pos": 0.7, "neg": 0.3}], ["pos", "neg"])
    assert cal["mean"] == pytest.approx({"pos": 0.8, "neg": 0.2})
    # 0.7/0.8 = 0.875 and 0.3/0.2 = 1.5 -> the less-positive-than-usual answer becomes negative
    assert reweight({"pos": 0.7, "neg": 0.3}, cal["weights"]) == pytest.approx({"pos": 0.875 / 2.375, "neg": 1.5 / 2.375})


def test_em_recovers_the_class_prior_of_calibrated_posteriors():
    rng = random.Random(0)
    posteriors = []
    for _ in range(4000):  # two unit Gaussians at +-1: the posterior under a uniform prior is sigmoid(2x)
        x = rng.gauss(1.0 if rng.random() < 0.7 else -1.0, 1.0)
        p = 1 / (1 + math.exp(-2 * x))
        posteriors.append({"a": p, "b": 1 - p})
    assert em_prior(posteriors, ["a", "b"])["a"] == pytest.approx(0.7, abs=0.03)


def biased_records():
    """Every answer says 'positive'; how strongly differs (log P(positive) from -0.1 to -0.7)."""
    records = []
    for i in range(10):
        lp_pos = -0.1 - 0.06 * i
        top = [("positive", lp_pos), ("negative", math.log(1 - math.exp(lp_pos)))]
        records.append(make_record(f"review {i} " + "word " * i, "positive",
                                   logprobs=[position("positive", lp_pos, top)], salt=str(i)))
    return records


def _curate(folder, data_root, calibrate: str):
    edit_task_yaml(folder, output={"kind": "label", "labels": LABELS, "calibrate": calibrate},
                   decontam={"enabled": False}, dedupe={"enabled": False}, split={"eval_fraction": 0.0})
    manifest = run_curate(load_task(folder), quiet=True)
    rows = list(read_jsonl(data_root / "data" / "sentiment" / "versions" / manifest["version"] / "train.jsonl", TrainRow))
    return manifest, rows


@pytest.mark.parametrize("mode, expected_negative", [("none", 0), ("prior", 5)])
def test_prior_calibration_balances_a_biased_teacher(task_copy, data_root, mode, expected_negative):
    write_generated(data_root / "data", "sentiment", biased_records())
    manifest, rows = _curate(task_copy("sentiment"), data_root, mode)
    assert len(rows) == 10
    assert sum(r.label == "negative" for r in rows) == expected_negative
    if mode == "prior":
        assert manifest["calibration"]["mean"]["positive"] > 0.5
        for r in rows:  # the stored soft label is the calibrated one, and the label is its argmax
            assert r.label == max(r.soft_label, key=r.soft_label.get)
            assert r.completion[0].content == r.label


def scored_record(text: str, p_positive: float, salt: str):
    record = make_record(text, "positive" if p_positive >= 0.5 else "negative", salt=salt)
    record.label_logprobs = {"positive": math.log(p_positive), "negative": math.log(1 - p_positive)}
    return record


BIAS = 1.5  # the teacher's own log-odds toward "positive", whatever the input


def imbalanced_run(data_root, n: int = 300, share: float = 0.8, mu: float = 2.0):
    """A scoring teacher on inputs that are 80% positive: log-odds = 2*mu*x + BIAS, x ~ N(+-mu, 1)
    (the true log-likelihood ratio of two unit Gaussians at +-mu), and its content-free answers."""
    rng = random.Random(1)
    records = []
    for i in range(n):
        x = rng.gauss(mu if i < share * n else -mu, 1.0)
        records.append(scored_record(f"review {i}", 1 / (1 + math.exp(-(2 * mu * x + BIAS))), str(i)))
    write_generated(data_root / "data", "sentiment", records)
    empty = [scored_record(text, 1 / (1 + math.exp(-BIAS)), f"cf{text}") for text in ("N/A", "", "[MASK]")]
    write_jsonl(data_root / "data" / "sentiment" / "generated" / "content_free.jsonl", empty)


@pytest.mark.parametrize("mode", ["content_free", "em"])
def test_calibration_keeps_an_80_20_input_set_80_20(task_copy, data_root, mode):
    imbalanced_run(data_root)
    manifest, rows = _curate(task_copy("sentiment"), data_root, mode)
    share = sum(r.label == "positive" for r in rows) / len(rows)
    assert 0.75 <= share <= 0.85, (mode, share)
    assert all(r.soft_label_kind == "scored" for r in rows)
    if mode == "em":
        assert manifest["calibration"]["prior"]["positive"] == pytest.approx(0.8, abs=0.05)
        mean = sum(r.soft_label["positive"] for r in rows) / len(rows)
        assert mean == pytest.approx(0.8, abs=0.05)  # EM's fixed point: the soft labels average to the prior


def test_content_free_calibration_needs_the_content_free_answers(task_copy, data_root):
    from pipeline.errors import ConfigError

    write_generated(data_root / "data", "sentiment", biased_records())
    with pytest.raises(ConfigError, match="content_free.jsonl: no content-free answers.*re-run `distill generate"):
        _curate(task_copy("sentiment"), data_root, "content_free")


def test_evaluate_judges_the_teacher_with_the_weights_its_student_learnt(task_copy, data_root):
    import json

    from pipeline.stages.evaluate import dataset_label_weights, teacher_label

    folder = task_copy("sentiment")
    edit_task_yaml(folder, output={"kind": "label", "labels": LABELS, "calibrate": "prior"})
    task = load_task(folder)
    vdir = data_root / "data" / "sentiment" / "versions" / "v1"
    vdir.mkdir(parents=True)
    weights = {"positive": 1 / 0.8, "negative": 1 / 0.2}
    (vdir / "manifest.json").write_text(json.dumps({"calibration": {"method": "prior", "weights": weights}}))
    assert dataset_label_weights(task, "v1") == weights
    weakest, strongest = biased_records()[9], biased_records()[0]
    assert teacher_label(task, weakest, weights) == "negative"  # P(positive) 0.53 < its usual 0.8
    assert teacher_label(task, strongest, weights) == "positive"


INTENTS = ["book_flight", "book_hotel", "play_music"]


def intent_run(data_root, n: int = 90, labels: list[str] = INTENTS, base: tuple[float, ...] = (0.5, 0.45, 0.05),
               content_free: tuple[float, ...] = (0.55, 0.448, 0.002), jitter: float = 0.0):
    """A scoring teacher over intents, as SmolLM2 behaves on a listed-label prompt: it favours the labels
    listed first (``base``) and triples the right one, each probability varied by up to ``jitter`` as
    real inputs vary; its content-free answers (``content_free``) give the last labels 0.2%, less than
    it gives them on any real input."""
    rng = random.Random(0)
    records = []
    for i in range(n):
        p = [b * (3.0 if j == i % len(labels) else 1.0) * rng.uniform(1 - jitter, 1 + jitter) for j, b in enumerate(base)]
        record = make_record(f"request {i}", labels[i % len(labels)], salt=str(i))
        record.label_logprobs = {lab: math.log(v / sum(p)) for lab, v in zip(labels, p)}
        records.append(record)
    write_generated(data_root / "data", "sentiment", records)
    free = []
    for text in ("N/A", "", "[MASK]"):
        record = make_record(text, labels[0], salt=f"cf{text}")
        record.label_logprobs = {lab: math.log(v) for lab, v in zip(labels, content_free)}
        free.append(record)
    write_jsonl(data_root / "data" / "sentiment" / "generated" / "content_free.jsonl", free)
    return records


@pytest.mark.parametrize("mode", ["content_free", "em"])
def test_content_free_weights_that_overshoot_fall_back_to_the_runs_mean(task_copy, data_root, capsys, mode):
    """The content-free weights make play_music the answer to every request (weight 500); the guard
    sees it against 'prior' (a third), says so in one line, and builds the version with 'prior'."""
    intent_run(data_root)
    folder = task_copy("sentiment")
    edit_task_yaml(folder, output={"kind": "label", "labels": INTENTS, "calibrate": mode},
                   decontam={"enabled": False}, dedupe={"enabled": False}, split={"eval_fraction": 0.0})
    manifest = run_curate(load_task(folder))
    cal = manifest["calibration"]
    assert cal["method"] == "prior" and cal["configured"] == mode
    assert cal["overshoot"] == {"label": "play_music", "labels": ["play_music"], "share": 1.0,
                                "prior_share": pytest.approx(1 / 3, abs=0.01)}
    err = capsys.readouterr().err
    assert "output.calibrate '" + mode + "' makes 'play_music' the answer for 100% of the transfer set" in err
    assert "output.calibrate_fallback: false" in err
    rows = list(read_jsonl(data_root / "data" / "sentiment" / "versions" / manifest["version"] / "train.jsonl", TrainRow))
    assert [r.label for r in rows] == [INTENTS[i % 3] for i in range(90)]  # prior recovers every intent

    edit_task_yaml(folder, output={"kind": "label", "labels": INTENTS, "calibrate": mode, "calibrate_fallback": False})
    kept = run_curate(load_task(folder), quiet=True)["calibration"]
    assert kept["method"] == mode and "fallback" not in kept


def test_labels_that_content_free_over_corrects_together_are_one_overshoot(task_copy, data_root, capsys):
    """With more labels the over-corrected ones share the run: the last three of seven listed intents
    get 0.2% each from the content-free answers, and each becomes the answer for under half of the run
    (the one-label threshold), but together for most of it: the guard sees the three."""
    labels = ["book_flight", "book_hotel", "cancel_booking", "check_balance", "play_music", "set_alarm", "get_weather"]
    records = intent_run(data_root, 120, labels, base=(0.3, 0.25, 0.2, 0.1, 0.05, 0.05, 0.05),
                         content_free=(0.4, 0.3, 0.15, 0.144, 0.002, 0.002, 0.002), jitter=0.2)
    folder = task_copy("sentiment")
    edit_task_yaml(folder, output={"kind": "label", "labels": labels, "calibrate": "content_free"},
                   decontam={"enabled": False}, dedupe={"enabled": False}, split={"eval_fraction": 0.0})
    manifest = run_curate(load_task(folder))
    over = manifest["calibration"]["overshoot"]
    assert manifest["calibration"]["method"] == "prior"
    assert set(over["labels"]) == {"play_music", "set_alarm", "get_weather"} and over["share"] > 0.8
    each = argmax_shares([renormalised(r.label_logprobs, labels) for r in records], labels,
                         manifest["calibration"]["configured_weights"])
    assert max(each.values()) < 0.5  # the one-label guard stayed quiet here
    err = capsys.readouterr().err
    assert "the content-free answers gave them 0.2%, 0.2%, 0.2%, too little to estimate their bias from" in err
    rows = list(read_jsonl(data_root / "data" / "sentiment" / "versions" / manifest["version"] / "train.jsonl", TrainRow))
    assert sum(r.label == labels[i % 7] for i, r in enumerate(rows)) >= 110  # prior recovers the intents


def test_the_guard_leaves_a_95_5_input_set_to_content_free(task_copy, data_root):
    """Real imbalance is not overshoot: content-free calibration keeps 95/5 and the guard stays quiet."""
    imbalanced_run(data_root, share=0.95)
    manifest, rows = _curate(task_copy("sentiment"), data_root, "content_free")
    assert manifest["calibration"]["method"] == "content_free"
    assert 0.9 <= sum(r.label == "positive" for r in rows) / len(rows) <= 0.97
