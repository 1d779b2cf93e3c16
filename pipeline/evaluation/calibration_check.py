"""Which calibration makes the teacher right most often, judged on the gold-labelled evaluation inputs.

A student can only be as good as the labels it learns, and ``output.calibrate`` decides those labels
(pipeline/curation/soft_labels.py). No method is right for every teacher and prompt: on the demo,
SmolLM2-135M answers "positive" to nearly everything and content-free calibration removes that
lean; on 175 gold-labelled requests of a synthetic 7-intent task its three content-free answers
over-correct (one intent gained e^5 over another): the teacher's accuracy was 10.9% with them, 32.0%
uncalibrated and 36.6% dividing by the run's mean (docs/evaluate.md). So when the evaluation inputs carry gold labels, evaluate re-labels them
with every method whose ingredients this run has (the transfer set's soft labels, and its
content-free answers for content_free and em), each with weights computed from the transfer set
exactly as curate computes them, and the report names a method that beats the configured one by
more than chance: McNemar's test on the paired answers, |b - c| > 2 sqrt(b + c), where b and c
count the inputs that only one of the two gets right. A method is named only when it also beats the
majority-class baseline of those inputs by more than chance (the same test against the constant
answer, metrics.margin_over_constant, as the report's headline): on 500 gold-labelled NYT editorial snippets
(bench/unseen_data.py) EM ran off to 'negative' for every input, 58.8% right, which is exactly
answering the majority label, and beat the dataset's 'prior' (49.8%) by McNemar. When no method
beats the baseline, the report says that calibration is not the fix.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.config.task import TaskFolder
from pipeline.curation.soft_labels import calibration_weights, label_distribution, reweight
from pipeline.evaluation.metrics import majority_share, margin_over_constant, mcnemar_beyond_chance
from pipeline.paths import TaskPaths
from pipeline.records import Record

METHODS = ("none", "prior", "content_free", "em")


def _dists(task: TaskFolder, records: Sequence[Record | None]) -> list[dict[str, float] | None]:
    out = task.config.output
    found = (label_distribution(r, out.labels, out.normalize.aliases, out.label_codes) if r is not None else None
             for r in records)
    return [d[0] if d is not None else None for d in found]


def _argmax(p: dict[str, float]) -> str:
    return max(p, key=p.get)


def compare_calibrations(task: TaskFolder, eval_records: Sequence[Record | None], golds: Sequence[str | None] | None,
                         transfer: Sequence[Record], content_free: Sequence[Record],
                         configured: str | None = None) -> dict[str, Any] | None:
    """{"n", "configured", "accuracy": {method: share of gold}, "suggest": a better method or None,
    "mcnemar": {"better", "worse"}}; None when there is nothing to compare (no gold, not a label task,
    no soft labels on the evaluation inputs). ``configured``: the method the dataset was built with,
    when curate's overshoot guard replaced output.calibrate (default: output.calibrate)."""
    out = task.config.output
    if out.kind != "label" or not golds:
        return None
    pairs = [(d, g) for d, g in zip(_dists(task, eval_records), golds) if d is not None and g is not None]
    if not pairs:
        return None
    train = [d for d in _dists(task, transfer) if d is not None]
    free = [d for d in _dists(task, content_free) if d is not None]
    right: dict[str, list[bool]] = {}
    for method in METHODS:
        if method == "none":
            weights = None
        else:
            cal = calibration_weights(method, train, out.labels, free)
            if cal is None:  # no content-free answers in this run, or no transfer soft labels
                continue
            weights = cal["weights"]
        right[method] = [_argmax(reweight(d, weights) if weights else d) == g for d, g in pairs]
    n = len(pairs)
    accuracy = {m: round(sum(r) / n, 4) for m, r in right.items()}
    used = configured or out.calibrate
    configured = used if used in right else "none"
    best = max(right, key=lambda m: (sum(right[m]), m == configured))
    better = sum(a and not b for a, b in zip(right[best], right[configured]))
    worse = sum(b and not a for a, b in zip(right[best], right[configured]))
    # a method must also beat answering the majority label always, by the headline's own test
    golds_kept = [g for _, g in pairs]
    majority_label, majority_fraction = majority_share(golds_kept)
    beats = {m: margin_over_constant(r, golds_kept, majority_label)["beyond_chance"] for m, r in right.items()}
    significant = beats[best] and best != configured and mcnemar_beyond_chance(better, worse)
    return {"n": n, "configured": used, "accuracy": accuracy, "suggest": best if significant else None,
            "mcnemar": {"method": best, "only_it_right": better, "only_configured_right": worse},
            "majority": {"label": majority_label, "share": round(majority_fraction, 4)},
            "no_margin": not any(beats.values())}


def check_task_calibration(task: TaskFolder, eval_records: Sequence[Record | None],
                           golds: Sequence[str | None] | None, configured: str | None = None) -> dict[str, Any] | None:
    """compare_calibrations with this task's generated transfer set and content-free answers."""
    from pipeline.stages.curate import read_generated

    if task.config.output.kind != "label" or not golds:
        return None
    paths = TaskPaths(task.name)
    if not paths.generated_jsonl.exists():
        return None
    transfer = read_generated(paths.generated_jsonl, strict=False, quiet=True)[0]
    free = read_generated(paths.content_free_jsonl, strict=False, quiet=True)[0] \
        if paths.content_free_jsonl.exists() else []
    return compare_calibrations(task, eval_records, golds, list(transfer), list(free), configured)


def fallback_sentence(calibration: dict[str, Any] | None) -> str | None:
    """One line for the report when curate's overshoot guard calibrated the dataset with another
    method than output.calibrate (the dataset manifest's ``calibration``)."""
    if not calibration or not calibration.get("configured"):
        return None
    over = calibration["overshoot"]
    named = ", ".join(f"'{lab}'" for lab in over.get("labels", [over["label"]]))
    return (f"Calibration: output.calibrate '{calibration['configured']}' made {named} the teacher's answer "
            f"for {over['share']:.0%} of the transfer set ({over['prior_share']:.0%} with 'prior'), so curate built the "
            f"dataset with '{calibration['method']}', and the teacher is judged with it here "
            "(output.calibrate_fallback).")


def calibration_sentence(check: dict[str, Any] | None) -> str | None:
    """One line for the report when another calibration labels the gold inputs clearly better, or
    when none lets the teacher beat the majority-class baseline."""
    if not check:
        return None
    acc = check["accuracy"]
    if check.get("no_margin"):
        major = check["majority"]
        return (f"Calibration: no output.calibrate makes the teacher beat answering '{major['label']}' always "
                f"({major['share']:.1%}) beyond chance on these {check['n']} inputs (" + ", ".join(f"{m} {a:.1%}" for m, a in acc.items())
                + "): calibration is not the fix; a stronger teacher, or a prompt it understands better, is.")
    if not check.get("suggest"):
        return None
    return (f"Calibration: the teacher's labels match gold on {acc[check['suggest']]:.1%} of the {check['n']} inputs "
            f"with output.calibrate '{check['suggest']}', {acc.get(check['configured'], acc['none']):.1%} with "
            f"'{check['configured']}', the dataset's (all: " + ", ".join(f"{m} {a:.1%}" for m, a in acc.items())
            + f"); set output.calibrate: {check['suggest']} and re-run curate, train and evaluate.")
