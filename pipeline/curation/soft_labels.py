"""The soft label: what the teacher believes about a label-task input, defined once.

A soft label is ``{label: P(label)}`` over the task's whole label set, summing to 1, read from one
teacher answer (a ``Record``) and written by curate to ``Record.soft_label`` / ``TrainRow.soft_label``
with its kind (``pipeline.records.SoftLabelKind``); training reads it back with
``pipeline.training.label_kd.teacher_label_probs``. Where it comes from, best first:

- ``scored``: a scoring teacher (``hf``) gave log P(label) for every label
  (``Record.label_logprobs``, see pipeline/label_scoring.py): renormalised over the set, exact.
- ``logprobs``: the answer's top-k token logprobs (``parse.soft_label_from_logprobs``): a label
  whose first token was not in the top-k gets 0; renormalised over the labels that were.
- ``one_hot``: no probabilities (Anthropic, or no label in the top-k): the parsed label only.

For token-level KD the teacher's per-token top-k (``TrainRow.token_logprobs``) plays the same part;
it is not called a soft label here.

**Calibration** (``output.calibrate``) reweights every soft label of a run by per-label weights w,
``p'(y) ∝ p(y) · w(y)``, and the label becomes the argmax of p'. The weights are stored in the dataset
manifest, so evaluate judges the teacher's answers on real inputs exactly the same way.

- ``prior``: w = 1 / (the run's mean soft label). Right only when the classes are balanced: it
  forces the calibrated labels toward equal shares whatever the inputs hold.
- ``content_free`` (Zhao et al. 2021): w = 1 / p_cf, where p_cf is the mean soft label for the same
  prompt with content-free inputs ("N/A", "", "[MASK]"), asked by generate. It removes the prompt's
  own bias and leaves the inputs' class balance alone.
- ``em`` (Saerens et al. 2002): content-free first (posteriors under a uniform prior), then EM
  re-estimates the class prior π of this run's inputs: π ← mean_i normalise(p_i · π / uniform), to a
  fixed point; w = π / p_cf. Use it when the inputs are known to be imbalanced.

**The overshoot guard** (``calibration_overshoot``; curate falls back to ``prior`` on it unless
``output.calibrate_fallback: false``). Three content-free prompts are a small sample of the prompt's
bias. A label they give almost nothing (0.2% for the last of 7 intents listed in the prompt) gets a
weight of hundreds, and on real inputs, where the teacher gives it a little more, it becomes the
answer for most of the run: on a 7-intent task, 72% of the transfer set, with the teacher right on
10.9% of the gold-labelled requests against 36.6% with ``prior`` (docs/label-distillation.md). The
guard compares the two estimates of the same bias: when the labels that the content-free weights make
the answer more than twice as often as the run's own mean (``prior``, the batch calibration of Zhou
et al. 2024) does are, together, the answer for at least half of the run, the content-free estimate
is extrapolating. Together, because with many labels the over-corrected ones share the run: on a
synthetic 7-intent set the last two listed intents took 35% each (7% and 13% with ``prior``), the
teacher right on 18.6% of the gold against 45.4% with ``prior``. The
demo is the case it must leave alone: SmolLM2 answers "positive" to 99.7% of the snippets, and
content-free calibration gives "negative" 51.7% of them, "prior" 47.4% (1.09x).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from pipeline.config.output import label_code_map
from pipeline.curation.parse import soft_label_from_logprobs
from pipeline.records import Record

# Inputs that carry no content: the prompt's own label bias shows through (Zhao et al. 2021, §5).
CONTENT_FREE_INPUTS = ("N/A", "", "[MASK]")
EM_MAX_ITERATIONS = 200
EM_TOLERANCE = 1e-8
OVERSHOOT_SHARE = 0.5  # the guard: a label the answer for at least this share of the run ...
OVERSHOOT_RATIO = 2.0  # ... and this many times its share when dividing by the run's mean


def renormalised(label_logprobs: dict[str, float], labels: Sequence[str]) -> dict[str, float]:
    """softmax over the label set of log P(label)."""
    top = max(label_logprobs[lab] for lab in labels)
    w = {lab: math.exp(label_logprobs[lab] - top) for lab in labels}
    total = sum(w.values())
    return {lab: v / total for lab, v in w.items()}


def label_distribution(record: Record, labels: Sequence[str], aliases: dict[str, str] | None = None,
                       codes: bool = False) -> tuple[dict[str, float], float, str] | None:
    """(P(label) over the label set, the teacher's raw mass on the labels, kind) or None when the
    record carries no probabilities for the labels. ``codes`` (output.label_codes): the answer's
    top-k is read as code letters only (A, B, ...), never as label names."""
    if record.label_logprobs and all(lab in record.label_logprobs for lab in labels):
        mass = sum(math.exp(record.label_logprobs[lab]) for lab in labels)
        return renormalised(record.label_logprobs, labels), min(mass, 1.0), "scored"
    if codes:
        code_map = label_code_map(list(labels))
        soft = soft_label_from_logprobs(record.logprobs, list(code_map))
        if soft is None:
            return None
        return {code_map[c]: p for c, p in soft[0].items()}, soft[1], "logprobs"
    soft = soft_label_from_logprobs(record.logprobs, list(labels), aliases)
    if soft is None:
        return None
    return soft[0], soft[1], "logprobs"


def mean_distribution(dists: Sequence[dict[str, float]], labels: Sequence[str]) -> dict[str, float] | None:
    if not dists:
        return None
    return {lab: sum(d[lab] for d in dists) / len(dists) for lab in labels}


def reweight(p: dict[str, float], weights: dict[str, float]) -> dict[str, float]:
    """p · w, renormalised. A label with weight 0 keeps probability 0."""
    scaled = {lab: v * weights.get(lab, 0.0) for lab, v in p.items()}
    total = sum(scaled.values())
    return {lab: v / total for lab, v in scaled.items()} if total > 0 else dict(p)


def em_prior(posteriors: Sequence[dict[str, float]], labels: Sequence[str]) -> dict[str, float]:
    """Saerens et al. (2002): the class prior of these inputs, from posteriors computed under a
    uniform prior. Each step re-weights every posterior by π/uniform and averages them."""
    k = len(labels)
    prior = {lab: 1.0 / k for lab in labels}
    for _ in range(EM_MAX_ITERATIONS):
        adjusted = [reweight(p, {lab: prior[lab] * k for lab in labels}) for p in posteriors]
        new = mean_distribution(adjusted, labels) or prior
        done = max(abs(new[lab] - prior[lab]) for lab in labels) < EM_TOLERANCE
        prior = new
        if done:
            break
    return prior


def calibration_weights(method: str, dists: Sequence[dict[str, float]], labels: Sequence[str],
                        content_free: Sequence[dict[str, float]] | None = None) -> dict | None:
    """{"method", "weights", and what they came from}, or None for ``none`` / no soft labels.
    ``content_free``: the soft labels of the content-free prompts (needed by content_free and em)."""
    if method == "none" or not dists:
        return None
    floor = 1e-12  # a label the teacher never gives keeps weight 1/floor: huge but finite

    if method == "prior":
        mean = mean_distribution(dists, labels)
        return {"method": method, "mean": mean, "weights": {lab: 1.0 / max(mean[lab], floor) for lab in labels}}
    cf = mean_distribution(content_free or [], labels)
    if cf is None:
        return None
    w = {lab: 1.0 / max(cf[lab], floor) for lab in labels}
    out = {"method": method, "content_free": cf, "weights": w}
    if method == "em":
        prior = em_prior([reweight(p, w) for p in dists], labels)
        out.update(prior=prior, weights={lab: w[lab] * prior[lab] for lab in labels})
    return out


def argmax_shares(dists: Sequence[dict[str, float]], labels: Sequence[str],
                  weights: dict[str, float] | None) -> dict[str, float]:
    """The share of the run each label is the (reweighted) argmax of."""
    counts = dict.fromkeys(labels, 0)
    for p in dists:
        q = reweight(p, weights) if weights else p
        counts[max(labels, key=lambda lab: q[lab])] += 1
    n = max(len(dists), 1)
    return {lab: c / n for lab, c in counts.items()}


def calibration_overshoot(dists: Sequence[dict[str, float]], labels: Sequence[str],
                          weights: dict[str, float], prior_weights: dict[str, float]) -> dict | None:
    """{"label", "labels", "share", "prior_share"} when the labels that ``weights`` make the answer
    more than OVERSHOOT_RATIO times as often as ``prior_weights`` (``calibration_weights("prior",
    ...)``'s) do are, together, the answer for at least OVERSHOOT_SHARE of the run (module docstring);
    else None. ``label`` is the most frequent of them; the shares are the group's."""
    shares = argmax_shares(dists, labels, weights)
    prior = argmax_shares(dists, labels, prior_weights)
    boosted = sorted((lab for lab in labels if shares[lab] > OVERSHOOT_RATIO * prior[lab]), key=lambda lab: -shares[lab])
    share = sum(shares[lab] for lab in boosted)
    if boosted and share >= OVERSHOOT_SHARE:
        return {"label": boosted[0], "labels": boosted, "share": round(share, 4),
                "prior_share": round(sum(prior[lab] for lab in boosted), 4)}
    return None
