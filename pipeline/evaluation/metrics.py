"""Quality, latency and cost metrics: small pure functions, each tested on hand-computed cases.

An answer that could not be parsed (``None``) is always wrong: it never matches a label, a gold
value or another model's answer. Every rate is a fraction in [0, 1]; ``None`` means "no data".
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import jsonschema

from pipeline.config.output import NormalizeConfig
from pipeline.curation import parse as curate_parse

# ---------------------------------------------------------------------------------------- parsing


def parse_label(text: str, labels: Sequence[str], normalize: NormalizeConfig | None = None) -> str | None:
    """The label ``text`` names (as spelt in ``labels``), or None. The curate stage's parser, so a
    student's answer is read exactly as the teacher's answers were when the dataset was built."""
    return curate_parse.parse_label(text, list(labels), normalize or NormalizeConfig()).value


_ANY_JSON = jsonschema.Draft202012Validator({})


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The JSON object in ``text`` (a code fence or prose around it is removed, as curate does), or
    None. The schema is checked separately (``is_schema_valid``), so an answer that breaks it can
    still earn field-level credit."""
    value = curate_parse.parse_json(text, _ANY_JSON).value
    return value if isinstance(value, dict) else None


def is_schema_valid(obj: dict[str, Any] | None, schema: dict[str, Any] | None) -> bool:
    """True when ``obj`` is a JSON object that satisfies ``schema`` (any object when no schema)."""
    if obj is None:
        return False
    if schema is None:
        return True
    validator_cls = jsonschema.validators.validator_for(schema)
    return validator_cls(schema).is_valid(obj)


# ------------------------------------------------------------------------------------ label tasks


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def accuracy(predicted: Sequence[str | None], gold: Sequence[str]) -> float | None:
    """Share of predictions equal to the gold label."""
    return mean([float(p is not None and p == g) for p, g in zip(predicted, gold, strict=True)])


def agreement(a: Sequence[Any], b: Sequence[Any]) -> float | None:
    """Share of inputs on which two models gave the same (parsed, non-None) answer."""
    return mean([float(x is not None and x == y) for x, y in zip(a, b, strict=True)])


def macro_f1(predicted: Sequence[str | None], gold: Sequence[str], labels: Sequence[str]) -> float | None:
    """Unweighted mean of per-label F1 over the label set (as sklearn's
    ``f1_score(average="macro", labels=labels, zero_division=0)``). An unparsed prediction is a
    false negative for its gold label and a false positive for none. Written out rather than
    pulling in scikit-learn for ten lines."""
    pairs = list(zip(predicted, gold, strict=True))
    if not pairs:
        return None
    scores = []
    for label in labels:
        tp = sum(1 for p, g in pairs if p == label and g == label)
        fp = sum(1 for p, g in pairs if p == label and g != label)
        fn = sum(1 for p, g in pairs if p != label and g == label)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores)


# ------------------------------------------------------------------------------------- JSON tasks


def json_validity(objects: Sequence[dict | None], schema: dict[str, Any] | None) -> float | None:
    """Share of answers that parse as a JSON object satisfying the schema."""
    return mean([float(is_schema_valid(o, schema)) for o in objects])


def field_exact_match(predicted: dict[str, Any] | None, reference: dict[str, Any] | None) -> float | None:
    """Share of the reference's top-level fields whose value the prediction reproduces exactly.
    None when there is no reference object to compare with; 0 when the prediction did not parse."""
    if reference is None:
        return None
    if not reference:
        return float(predicted == {})
    if predicted is None:
        return 0.0
    return sum(1 for k, v in reference.items() if k in predicted and predicted[k] == v) / len(reference)


# ------------------------------------------------------------------------------------- text tasks

_scorer = None


class _UnicodeWordTokenizer:
    """rouge-score's default tokenizer keeps only [a-z0-9], so any non-Latin text scores 0; this
    keeps every Unicode word character instead (lowercased, no stemming)."""

    _word = re.compile(r"\w+", re.UNICODE)

    def tokenize(self, text: str) -> list[str]:
        return self._word.findall(text.lower())


def rouge_l(predicted: str | None, reference: str) -> float:
    """ROUGE-L F-measure (longest common subsequence of words), via Google's ``rouge-score``."""
    global _scorer
    if predicted is None:
        return 0.0
    if _scorer is None:
        from rouge_score import rouge_scorer

        _scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_UnicodeWordTokenizer())
    return _scorer.score(reference, predicted)["rougeL"].fmeasure


# --------------------------------------------------------------------------------- latency & cost


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation between ranks (numpy's default)."""
    if not values:
        return None
    xs = sorted(values)
    rank = (len(xs) - 1) * q / 100
    lo, hi = math.floor(rank), math.ceil(rank)
    return xs[lo] + (xs[hi] - xs[lo]) * (rank - lo)


def latency_summary(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """p50, p95 and mean of per-request latencies (seconds), and how many were measured."""
    return {
        "p50_s": percentile(seconds, 50),
        "p95_s": percentile(seconds, 95),
        "mean_s": mean(list(seconds)),
        "n": len(seconds),
    }


def machine_cost_per_1000(seconds_per_request: float | None, usd_per_hour: float) -> float | None:
    """USD for 1,000 requests on a machine billed by the hour, at the measured seconds per request."""
    if seconds_per_request is None:
        return None
    return seconds_per_request * usd_per_hour / 3600 * 1000


def token_cost_per_1000(costs_usd: Sequence[float | None]) -> float | None:
    """USD for 1,000 requests at the mean per-request cost; None (unknown, never 0) when any
    request's price is unknown or there are no requests."""
    if not costs_usd or any(c is None for c in costs_usd):
        return None
    return sum(costs_usd) / len(costs_usd) * 1000


def quality_percent(student: float | None, teacher: float | None) -> float | None:
    """The student's quality as a percentage of the teacher's (None when the teacher scored 0)."""
    if student is None or teacher is None or teacher <= 0:
        return None
    return 100 * student / teacher


def majority_share(reference: Sequence[Any]) -> tuple[Any, float] | None:
    """(the most frequent reference answer, its share): what always answering that one label scores."""
    values = [r for r in reference if r is not None]
    if not values:
        return None
    counts: dict[Any, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    best = max(counts, key=counts.__getitem__)
    return best, counts[best] / len(values)


def gap_closed(student: float | None, teacher: float | None, baseline: float | None) -> float | None:
    """(student - baseline) / (teacher - baseline): the share of the teacher's margin over the
    majority-class baseline that the student keeps. None when the teacher does not beat the baseline
    (then there is no margin to close)."""
    if student is None or teacher is None or baseline is None or teacher - baseline <= 1e-9:
        return None
    return (student - baseline) / (teacher - baseline)


def mcnemar_beyond_chance(b: int, c: int) -> bool:
    """McNemar's test on paired answers, one-sided at about 2 sd: the first of two models is right on
    ``b`` inputs where the second is wrong, the second on ``c`` where the first is wrong, and
    b - c > 2 sqrt(b + c)."""
    return b - c > 2 * math.sqrt(b + c)


def margin_over_constant(scores: Sequence[Any], reference: Sequence[Any], constant: Any) -> dict[str, Any]:
    """Whether a model (``scores``: truthy where it is right, per input) beats always answering
    ``constant`` by more than chance (``mcnemar_beyond_chance``): b the inputs only the model gets
    right, c those only the constant gets right."""
    b = sum(1 for s, r in zip(scores, reference, strict=True) if s and r != constant)
    c = sum(1 for s, r in zip(scores, reference, strict=True) if not s and r == constant)
    return {"only_model_right": b, "only_constant_right": c, "beyond_chance": mcnemar_beyond_chance(b, c)}


def per_label(labels: Sequence[str], teacher: Sequence[Any], student: Sequence[Any],
              gold: Sequence[Any] | None = None) -> list[dict[str, Any]]:
    """One row per label, in ``labels``' order: how often gold, the teacher and the student give it;
    how often the student agrees where the teacher gives it, and the teacher where the student does;
    and, where the student does not agree, its most frequent other answer (None: unparsed). The
    headline's agreement and kappa are averages; this shows where a student falls short (a label it
    never answers, one it answers for another)."""
    rows = []
    for label in labels:
        where = [i for i, t in enumerate(teacher) if t == label]
        others: dict[Any, int] = {}
        for i in where:
            if student[i] != label:
                others[student[i]] = others.get(student[i], 0) + 1
        instead = max(others, key=lambda k: (others[k], k is not None)) if others else None
        both, answered = len(where) - sum(others.values()), sum(s == label for s in student)
        rows.append({
            "label": label,
            "gold": None if gold is None else sum(g == label for g in gold),
            "teacher": len(where),
            "student": answered,
            "student_agrees": both / len(where) if where else None,
            # of the student's answers of it, the share the teacher gave too (precision, where the above is recall)
            "teacher_agrees": both / answered if answered else None,
            "student_instead": None if not others else {"answer": instead, "count": others[instead]},
        })
    return rows


def cohen_kappa(a: Sequence[Any], b: Sequence[Any]) -> float | None:
    """Cohen's kappa between two labelings: agreement corrected for what their label frequencies
    would give by chance. 1 = identical, 0 = chance. None when undefined."""
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    if not pairs:
        return None
    n = len(pairs)
    observed = sum(x == y for x, y in pairs) / n
    labels = {x for x, _ in pairs} | {y for _, y in pairs}
    expected = sum((sum(x == lab for x, _ in pairs) / n) * (sum(y == lab for _, y in pairs) / n) for lab in labels)
    if expected >= 1.0 - 1e-12:
        return 1.0 if observed >= 1.0 - 1e-12 else None
    return (observed - expected) / (1.0 - expected)
