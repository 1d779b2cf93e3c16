"""Score the student's and the teacher's answers by output kind, against gold answers when the
eval inputs have them and against the teacher's answers otherwise.

Per input, each model gets a score in [0, 1] (label: correct or not; JSON: field-level exact
match; text: ROUGE-L). These per-input scores feed the routing curve; their means are the
headline quality. With the teacher as reference, inputs whose teacher answer did not parse
cannot be scored and are left out (score None) and counted.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.config.output import OutputConfig
from pipeline.evaluation import metrics as m

PRIMARY_METRIC = {"label": "accuracy", "json": "field_exact_match", "text": "rouge_l"}


def parse_answer(text: str, output: OutputConfig, schema: dict | None = None) -> Any:
    """The answer as its kind's value: a label from the set, a JSON object, or non-empty text;
    None when it does not parse."""
    if output.kind == "label":
        return m.parse_label(text, output.labels or [], output.answer_normalize())
    if output.kind == "json":
        return m.parse_json_object(text)
    return text.strip() or None


@dataclass
class Scored:
    metric: str  # the headline quality metric
    reference: str  # "gold" or "teacher"
    student_parsed: list[Any]
    teacher_parsed: list[Any]
    student_scores: list[float | None]  # None: not scorable (no usable reference)
    teacher_scores: list[float | None]
    student_metrics: dict[str, float | None]
    teacher_metrics: dict[str, float | None]
    golds: list[Any] | None = None  # the parsed gold answers, when the inputs have them

    @property
    def scored(self) -> list[int]:
        return [i for i, s in enumerate(self.student_scores) if s is not None]

    def quality(self, which: str) -> float | None:
        scores = self.student_scores if which == "student" else self.teacher_scores
        kept = [scores[i] for i in self.scored]
        return sum(kept) / len(kept) if kept else None


def _item_score(kind: str, answer: Any, reference: Any) -> float:
    if kind == "label":
        return float(answer is not None and answer == reference)
    if kind == "json":
        return m.field_exact_match(answer, reference)
    return m.rouge_l(answer, reference)


def score_answers(
    output: OutputConfig,
    student_texts: Sequence[str],
    teacher_texts: Sequence[str],
    golds: Sequence[Any] | None,
    schema: dict | None = None,
) -> Scored:
    """Parse both models' answers and score them; ``golds`` are already-parsed gold values."""
    kind = output.kind
    s_parsed = [parse_answer(t, output, schema) for t in student_texts]
    t_parsed = [parse_answer(t, output, schema) for t in teacher_texts]
    with_gold = golds is not None
    refs = list(golds) if with_gold else t_parsed
    s_scores: list[float | None] = []
    t_scores: list[float | None] = []
    for s, t, ref in zip(s_parsed, t_parsed, refs, strict=True):
        if ref is None:
            s_scores.append(None)
            t_scores.append(None)
            continue
        s_scores.append(_item_score(kind, s, ref))
        t_scores.append(_item_score(kind, t, ref) if with_gold else 1.0)

    s_metrics: dict[str, float | None] = {"unparsed_rate": m.mean([float(p is None) for p in s_parsed])}
    t_metrics: dict[str, float | None] = {"unparsed_rate": m.mean([float(p is None) for p in t_parsed])}
    s_metrics["agreement_with_teacher"] = m.agreement(s_parsed, t_parsed)
    metric = PRIMARY_METRIC[kind]
    if kind == "label":
        if with_gold:
            labels = output.labels or []
            s_metrics["accuracy"] = m.accuracy(s_parsed, refs)
            t_metrics["accuracy"] = m.accuracy(t_parsed, refs)
            s_metrics["macro_f1"] = m.macro_f1(s_parsed, refs, labels)
            t_metrics["macro_f1"] = m.macro_f1(t_parsed, refs, labels)
        else:
            metric = "agreement_with_teacher"
    elif kind == "json":
        s_metrics["json_valid"] = m.json_validity(s_parsed, schema)
        t_metrics["json_valid"] = m.json_validity(t_parsed, schema)
    scored = Scored(metric, "gold" if with_gold else "teacher", s_parsed, t_parsed, s_scores, t_scores, s_metrics,
                    t_metrics, list(golds) if with_gold else None)
    if kind != "label" or not with_gold:  # accuracy already set; the others are the mean item score
        s_metrics[metric] = scored.quality("student")
        t_metrics[metric] = scored.quality("teacher")
    return scored
