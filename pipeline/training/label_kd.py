"""Answer-level knowledge distillation for a teacher whose tokenizer is not the student's.

An API teacher (OpenAI's top-20 logprobs, say) gives token logprobs in *its* vocabulary, which
the student cannot be compared with token by token. For a label task we compare answers instead:
curate turns the teacher's logprobs into ``TrainRow.soft_label`` = P_teacher(label), and the
student's probability of a label is the probability of the whole label string as its answer:

    log P_student(label_j | prompt) = sum of the student's token logprobs of label_j's completion

Both are tempered over the label set (q^(1/T), and seq_logprob / T) and compared with a KL, scaled
by T^2 as in Hinton et al. (2015). This is sequence-level KD (Kim & Rush 2016) restricted to the
closed answer set, which is exactly where it is tractable.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# A label the teacher gave no mass gets this much, so log q stays finite; far below any real logprob.
PROB_FLOOR = 1e-8


def teacher_label_probs(soft_label: dict[str, float] | None, labels: list[str], label: str | None = None) -> list[float]:
    """The teacher's distribution over ``labels`` (in that order), renormalised over the label set.

    Mass on strings outside the label set is dropped (the student is only asked about labels).
    With no soft label, the hard ``label`` becomes one-hot. Returns [] when neither exists."""
    if soft_label:
        probs = [max(float(soft_label.get(name, 0.0)), 0.0) for name in labels]
    elif label is not None and label in labels:
        probs = [1.0 if name == label else 0.0 for name in labels]
    else:
        return []
    total = sum(probs)
    if total <= 0 or not math.isfinite(total):
        return []
    return [p / total for p in probs]


def label_kl(student_seq_logprobs: torch.Tensor, teacher_probs: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher_T || student_T) over the label set, per row.

    student_seq_logprobs: [B, L] log P_student(label string) at T=1 (unnormalised over labels:
    the student may put mass on answers outside the set; we renormalise within it).
    teacher_probs: [B, L], rows summing to 1. Returns [B]."""
    log_q = teacher_probs.to(student_seq_logprobs.dtype).clamp(min=PROB_FLOOR).log() / temperature
    log_q = F.log_softmax(log_q, dim=-1)
    log_s = F.log_softmax(student_seq_logprobs / temperature, dim=-1)
    return (log_q.exp() * (log_q - log_s)).sum(-1)


def label_logit_mse(student_logprobs: torch.Tensor, teacher_probs: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Logit matching over the label set (Ba & Caruana 2014; Hinton et al.'s high-temperature limit),
    per row: the mean squared difference between the student's and the teacher's *centred* label
    log-probabilities, the teacher's multiplied by ``scale``. Centring removes what a softmax
    ignores; ``scale`` = 1 / (the sd of the teacher's centred log-probs over the training set)
    standardises a flat teacher: a KL against targets like 0.53/0.47 barely moves the student, while
    these targets keep the teacher's ranking at unit spread. Argmax and ranking are unchanged by
    the scale, so agreement with the teacher is the same quantity either way.

    student_logprobs: [B, L] the student's log P(label) (any normalisation); teacher_probs: [B, L]."""
    log_q = teacher_probs.to(student_logprobs.dtype).clamp(min=PROB_FLOOR).log()
    target = (log_q - log_q.mean(-1, keepdim=True)) * scale
    centred = student_logprobs - student_logprobs.mean(-1, keepdim=True)
    return (centred - target).pow(2).mean(-1)


def teacher_logit_scale(rows_probs: list[list[float]]) -> float:
    """1 / sd of the teacher's centred label log-probs over a training set (1.0 when undefined)."""
    values = []
    for probs in rows_probs:
        if not probs or sum(probs) <= 0:
            continue
        logs = [math.log(max(p, PROB_FLOOR)) for p in probs]
        mean = sum(logs) / len(logs)
        values += [x - mean for x in logs]
    if len(values) < 2:
        return 1.0
    sd = math.sqrt(sum(v * v for v in values) / len(values))
    return 1.0 / sd if sd > 1e-6 else 1.0


def label_kd_objective(
    kd_rows: torch.Tensor,
    ce_token_sum: torch.Tensor,
    *,
    alpha: float,
    temperature: float,
    num_rows: torch.Tensor | int,
    num_items: torch.Tensor | int,
) -> torch.Tensor:
    """alpha*T^2*mean_rows(KD) + (1-alpha)*mean_tokens(CE), each mean over the whole accumulated batch:
    the KD term is one per row, the CE one per target token, so each gets its own global count.
    (For logit matching pass temperature=1: T only scales the KL.)"""
    rows = torch.as_tensor(num_rows).to(kd_rows.device).clamp(min=1)
    items = torch.as_tensor(num_items).to(kd_rows.device).clamp(min=1)
    return alpha * temperature**2 * kd_rows.sum() / rows + (1.0 - alpha) * ce_token_sum / items
