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


def label_kd_objective(
    kl_rows: torch.Tensor,
    ce_token_sum: torch.Tensor,
    *,
    alpha: float,
    temperature: float,
    num_rows: torch.Tensor | int,
    num_items: torch.Tensor | int,
) -> torch.Tensor:
    """alpha*T^2*mean_rows(KL) + (1-alpha)*mean_tokens(CE), each mean over the whole accumulated batch:
    the KL is one term per row, the CE one per target token, so each gets its own global count."""
    rows = torch.as_tensor(num_rows).to(kl_rows.device).clamp(min=1)
    items = torch.as_tensor(num_items).to(kl_rows.device).clamp(min=1)
    return alpha * temperature**2 * kl_rows.sum() / rows + (1.0 - alpha) * ce_token_sum / items
