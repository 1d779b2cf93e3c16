"""Token-level knowledge distillation on stored top-k teacher logprobs: the pure math.

The teacher's logprobs are stored at T=1 and only for its top-k tokens (plus the sampled one).
We rebuild a distribution over k+1 outcomes: the k known tokens and one *tail bucket* holding the
rest of the probability mass, r = 1 - sum(p_i). The student's distribution is collapsed onto the
same k+1 outcomes, so the KL is exact for what we know and never invents mass the teacher did not
give (DistillKit's sparse KD, with Hinton et al. 2015's temperature).

Re-tempering the tail. The known tokens become p_i^(1/T). The tail's tempered mass is
sum_{j in tail} p_j^(1/T), which depends on how the teacher spreads r over the V-k unseen tokens:
between r^(1/T) (one token holds it all) and (V-k)^(1-1/T) * r^(1/T) (spread evenly). We assume the
teacher's tail has the *student's* shape: p_j = r * s_j / s_tail, with s the student at T=1, so

    tempered tail = r^(1/T) * sum_{j in tail} (s_j / s_tail)^(1/T)

computed exactly from the student's logits (and detached: it is part of the target, not of the
prediction). Why this rather than a guess about the shape (docs/train.md has the figures):
- it is exact when the student equals the teacher, at every T, so the loss and its gradient are
  zero there. A fixed guess is wrong by a constant, and then the KD term pushes a student that
  already matches its teacher away from it. Measured with k=20 on SmolLM2-135M's own next-token
  distributions at T=2, the even-spread guess puts a median 94.5% of the tempered target in the tail
  where the truth is 77.9% (bench/kd_tail.py). With an untrained 4-layer student's shape ours
  says 66.8%: far from the teacher it is no better than a guess (mean error 0.13 vs 0.19);
- on Zipf-like teachers over V=49,152 tokens its gradient's cosine with the full KL's is >= 0.9 at
  T=1, 2 and 4 and within 0.07 of what the exact tempered tail mass would give
  (tests/test_kd_loss_zipf.py); the even-spread guess gives 0.25 at T=2 there;
- it assumes nothing the data cannot show: no uniform tail, no power law fitted to k points.
At T=1 it is exactly r, whatever the shape; when k = V there is no tail and the loss is the full
tempered KL, which the tests check.

What no tail treatment can fix: at T >= 2 a 49k-token teacher's tempered distribution is mostly
tail (SmolLM2 at T=4: 98%), and the full KL's gradient then lives on tokens the top-k does not name.
Token-level KD on top-k logprobs follows the full KL closely at T=1, and at T=2 for confident
teachers; prefer a low temperature for it.

Loss (per target token, summed, then divided by the number of target tokens in the whole
accumulated batch, as transformers' ``num_items_in_batch`` does):

    alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student_1, teacher's token)

Positions without teacher logprobs (e.g. the end-of-turn token the API never returned) get plain
CE, so the student still learns to stop.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Below this tail mass the teacher's top-k is treated as the whole distribution. Stored logprobs are
# rounded (APIs give ~1e-6 precision), so a tail of 1e-7 is noise, not signal.
TAIL_EPS = 1e-6


def tempered_teacher(
    teacher_logprobs: torch.Tensor, teacher_mask: torch.Tensor, temperature: float, log_tail_shape: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-temper stored T=1 top-k logprobs into log q_T over the k known tokens and the tail bucket.

    teacher_logprobs, teacher_mask: [N, k]. log_tail_shape: [N], log sum_{j in tail} w_j^(1/T) for
    the assumed within-tail distribution w (``student_bucketed`` gives the student's). Returns
    (log_q_topk [N, k] with -inf where masked, log_q_tail [N], -inf where the top-k holds all the mass)."""
    lp = teacher_logprobs.masked_fill(~teacher_mask, float("-inf"))
    known_mass = torch.logsumexp(lp, dim=-1).exp().clamp(max=1.0)
    tail_mass = 1.0 - known_mass
    has_tail = (tail_mass > TAIL_EPS) & torch.isfinite(log_tail_shape)
    safe_tail = torch.where(has_tail, tail_mass, torch.ones_like(tail_mass))
    safe_shape = torch.where(has_tail, log_tail_shape, torch.zeros_like(log_tail_shape))
    # log[r^(1/T) * sum_tail w_j^(1/T)]
    log_tail = safe_tail.log() / temperature + safe_shape
    log_tail = torch.where(has_tail, log_tail, torch.full_like(log_tail, float("-inf")))
    scaled = lp / temperature
    log_z = torch.logsumexp(torch.cat([scaled, log_tail[:, None]], dim=-1), dim=-1)
    return scaled - log_z[:, None], log_tail - log_z


def student_bucketed(
    student_logits: torch.Tensor, teacher_ids: torch.Tensor, teacher_mask: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The student's tempered log-probs on the teacher's top-k ids and on the bucket of all others,
    and the shape of its own tail: log sum_{j in tail} (s_j / s_tail)^(1/T) at T=1, detached.

    student_logits: [N, V]; teacher_ids: [N, k] (any value where masked). Returns ([N, k], [N], [N]);
    the shape is -inf where the top-k covers the vocabulary."""
    scaled = student_logits / temperature
    log_norm = torch.logsumexp(scaled, dim=-1)
    ids = teacher_ids.clamp(min=0)
    log_topk = scaled.gather(-1, ids) - log_norm[:, None]
    # scatter_add, not scatter: a padded slot may repeat a real id, and scatter's winner is undefined
    in_topk = torch.zeros_like(scaled).scatter_add(-1, ids, teacher_mask.to(scaled.dtype)) > 0
    no_tail = in_topk.all(-1, keepdim=True)
    # Rows whose top-k covers the vocabulary have no tail; give logsumexp a finite input there so
    # its gradient stays finite (the result is unused, the teacher's tail weight is 0).
    rest = scaled.masked_fill(in_topk & ~no_tail, float("-inf"))
    log_tail = torch.logsumexp(rest, dim=-1) - log_norm
    with torch.no_grad():
        lse_t = torch.logsumexp(rest, dim=-1)
        lse_1 = torch.logsumexp(student_logits.masked_fill(in_topk & ~no_tail, float("-inf")), dim=-1)
        shape = lse_t - lse_1 / temperature
        shape = torch.where(no_tail[:, 0], torch.full_like(shape, float("-inf")), shape)
    return log_topk, log_tail, shape


def sparse_topk_kl(
    student_logits: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    teacher_mask: torch.Tensor,
    temperature: float = 1.0,
    log_tail_shape: torch.Tensor | None = None,
) -> torch.Tensor:
    """KL(teacher_T || student_T) per position over the teacher's top-k plus one tail bucket. [N].

    The teacher's tail is given the student's shape (module docstring); ``log_tail_shape`` ([N])
    replaces that estimate with another, e.g. a fixed one for a gradient check, since the student's
    shape is a detached target and a finite difference would see it move."""
    s_topk, s_tail, shape = student_bucketed(student_logits, teacher_ids, teacher_mask, temperature)
    if log_tail_shape is not None:
        shape = log_tail_shape
    q_topk, q_tail = tempered_teacher(teacher_logprobs.to(student_logits.dtype), teacher_mask, temperature, shape)
    # masked_fill before use, not only where() after: a NaN in the unused branch still poisons backward
    q_topk = q_topk.masked_fill(~teacher_mask, 0.0)
    topk_terms = torch.where(teacher_mask, q_topk.exp() * (q_topk - s_topk), torch.zeros_like(s_topk))
    tail_has = torch.isfinite(q_tail)
    safe_q_tail = torch.where(tail_has, q_tail, torch.zeros_like(q_tail))
    tail_term = torch.where(tail_has, safe_q_tail.exp() * (safe_q_tail - s_tail), torch.zeros_like(s_tail))
    return topk_terms.sum(-1) + tail_term


def kd_objective(
    kl: torch.Tensor,
    ce: torch.Tensor,
    has_teacher: torch.Tensor,
    *,
    alpha: float,
    temperature: float,
    num_items: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """Sum of alpha*T^2*KL + (1-alpha)*CE over target tokens (CE alone where the teacher gave nothing),
    divided by ``num_items``: the number of target tokens across the accumulated batch (and devices).
    Dividing by a global count rather than averaging per micro-batch is what makes accumulation of
    2 x batch 1 equal one batch of 2."""
    per_token = torch.where(has_teacher, alpha * temperature**2 * kl + (1.0 - alpha) * ce, ce)
    denom = per_token.new_tensor(float(has_teacher.numel())) if num_items is None else torch.as_tensor(num_items)
    return per_token.sum() / denom.to(per_token.device).clamp(min=1)


def token_ce(student_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy at T=1 on the teacher's tokens. [N]."""
    return F.cross_entropy(student_logits.float(), targets, reduction="none")


def full_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Reference: the exact KL(teacher_T || student_T) per position from full logits. [N]."""
    q = F.log_softmax(teacher_logits / temperature, dim=-1)
    s = F.log_softmax(student_logits / temperature, dim=-1)
    return (q.exp() * (q - s)).sum(-1)

