"""Routing: answer with the student when it is confident, otherwise call the teacher.

The student's confidence on one input is its highest renormalised label probability (label
tasks) or the mean log-probability of its answer's tokens (JSON and text). Sorting inputs by
confidence, covering the top share with the student and sending the rest to the teacher traces a
coverage-vs-quality curve; the chosen threshold is the lowest confidence at which the student's
quality on the share it answers still reaches the target, i.e. the largest share of traffic the
student can take alone.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

# Scores within this of the target count as reaching it (float sums of 0/1 scores drift).
_EPS = 1e-9


def renormalised_label_probs(label_logprobs: Mapping[str, float]) -> dict[str, float]:
    """Softmax over the labels' sequence log-probabilities: P(label | answer is one of the labels)."""
    top = max(label_logprobs.values())
    weights = {k: math.exp(v - top) for k, v in label_logprobs.items()}
    total = sum(weights.values())
    return {k: w / total for k, w in weights.items()}


def label_confidence(label_logprobs: Mapping[str, float]) -> tuple[str, float]:
    """The most likely label and its renormalised probability."""
    probs = renormalised_label_probs(label_logprobs)
    best = max(probs, key=probs.__getitem__)
    return best, probs[best]


def mean_token_logprob(token_logprobs: Sequence[float]) -> float:
    """Mean natural-log probability per generated token (-inf for an empty answer)."""
    return sum(token_logprobs) / len(token_logprobs) if token_logprobs else -math.inf


@dataclass(frozen=True)
class CurvePoint:
    threshold: float  # the student answers when its confidence >= threshold
    coverage: float  # share of traffic the student answers
    student_quality: float  # the student's mean score on the share it answers
    routed_quality: float  # overall score: the student's answers on that share, the teacher's on the rest

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def coverage_curve(
    confidence: Sequence[float], student_scores: Sequence[float], teacher_scores: Sequence[float]
) -> list[CurvePoint]:
    """One point per distinct confidence value, from the most confident (lowest coverage) down to
    full coverage. Inputs with equal confidence are always routed together, since a threshold
    cannot split them."""
    n = len(confidence)
    if not n or not (n == len(student_scores) == len(teacher_scores)):
        raise ValueError("confidence, student_scores and teacher_scores must be non-empty and of equal length")
    order = sorted(range(n), key=lambda i: confidence[i], reverse=True)
    teacher_total = sum(teacher_scores)
    points: list[CurvePoint] = []
    student_sum = teacher_covered = 0.0
    for rank, i in enumerate(order):
        student_sum += student_scores[i]
        teacher_covered += teacher_scores[i]
        is_last_of_tie = rank == n - 1 or confidence[order[rank + 1]] != confidence[i]
        if not is_last_of_tie:
            continue
        k = rank + 1
        points.append(
            CurvePoint(
                threshold=confidence[i],
                coverage=k / n,
                student_quality=student_sum / k,
                routed_quality=(student_sum + teacher_total - teacher_covered) / n,
            )
        )
    return points


def best_threshold(curve: Sequence[CurvePoint], target: float) -> CurvePoint | None:
    """The point with the largest coverage whose student quality reaches ``target``; None when the
    student reaches it on no share at all (send everything to the teacher)."""
    reaching = [p for p in curve if p.student_quality >= target - _EPS]
    return max(reaching, key=lambda p: p.coverage) if reaching else None


def routed_cost_per_1000(coverage: float, student_usd: float | None, teacher_usd: float | None) -> float | None:
    """Every request runs through the student (that is how its confidence is known); the share it
    does not cover is then paid again to the teacher."""
    if student_usd is None:
        return None
    if coverage >= 1.0:
        return student_usd
    if teacher_usd is None:
        return None
    return student_usd + (1 - coverage) * teacher_usd


def held_out_threshold(indices: Sequence[int], ids: Sequence[str], confidence: Sequence[float],
                       student_scores: Sequence[float | None], teacher_scores: Sequence[float | None],
                       target: float) -> dict:
    """Choose the threshold on one half of the inputs and measure it on the other. The halves are
    fixed by input id (the hash's last hex digit even / odd), so a re-run splits the same way.
    Returns {"point": CurvePoint on the reporting half (or None), "chosen_on", "reported_on"}."""
    choose = [i for i in indices if int(ids[i][-1], 16) % 2 == 0]
    report = [i for i in indices if int(ids[i][-1], 16) % 2 == 1]
    out: dict = {"point": None, "chosen_on": len(choose), "reported_on": len(report)}
    if not choose or not report:
        return out
    pick = best_threshold(coverage_curve([confidence[i] for i in choose], [student_scores[i] for i in choose],
                                         [teacher_scores[i] for i in choose]), target)
    if pick is None:
        return out
    answered = [i for i in report if confidence[i] >= pick.threshold]
    n = len(report)
    student_sum = sum(student_scores[i] for i in answered)
    rest = sum(teacher_scores[i] for i in report if confidence[i] < pick.threshold)
    out["point"] = CurvePoint(
        threshold=pick.threshold, coverage=len(answered) / n,
        student_quality=student_sum / len(answered) if answered else 0.0,
        routed_quality=(student_sum + rest) / n,
    )
    return out


def routing_pays(routed_usd: float | None, routed_quality: float, teacher_usd: float | None,
                 teacher_quality: float | None) -> bool:
    """Routing is worth it only when it costs less than sending everything to the teacher and keeps
    its quality (within a point)."""
    if routed_usd is None or teacher_usd is None or teacher_quality is None:
        return True
    return routed_usd < teacher_usd and routed_quality >= teacher_quality - 0.01
