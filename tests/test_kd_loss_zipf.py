"""The sparse top-k KL against the full-vocabulary KL on realistic teachers: Zipf-like next-token
distributions over SmolLM2's 49,152 tokens, the teacher keeping its top-20 (the most
`teacher.top_logprobs` allows). What is compared is the gradient w.r.t. the student's logits (all positions at once, the
vector an optimiser steps along), by cosine.

Students: "perturbed" is the teacher's logits plus N(0, 1) noise (a student close to its teacher);
"unrelated" has N(0, 1) logits of its own (a student that has learnt nothing yet).

Measured (seed 0): perturbed 1.000 / 0.997 / 0.922 and unrelated 1.000 / 0.968 / 0.910 at T = 1 / 2 /
4. With the old even-spread tail, (V-k) * (r/(V-k))^(1/T), the first test fails: the perturbed
student's cosine is then 0.25 at T=2 and 0.02 at T=4 (checked by hand with the old module). T=4 is
the margin: over seeds 0-4 the cosines are 0.913-0.952 (perturbed) and 0.908-0.910 (unrelated),
where the exact tail mass would give 0.96-0.98.
"""
from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.training.kd_loss import full_kl, sparse_topk_kl

V, K = 49152, 20
# (Zipf exponent s, extra logit on the top token) per position. Confident: the top-5 hold 95% to
# 99.9% of the mass, as in issue 10's example. Heavy: like SmolLM2-135M's own tails, whose log-log
# slope is 1.5 over ranks 20-200 and 1.8 over ranks 200-2,000 (bench/kd_tail.py; top-20 mass here
# 52% to 99.9%).
# Each list is repeated 4 times (24 positions) so that one position's noise does not decide the result.
CONFIDENT = ((2.5, 0.0), (3.0, 0.0), (3.5, 0.0), (4.0, 0.0), (2.5, 2.0), (3.0, 3.0)) * 4
HEAVY = ((1.2, 0.0), (1.5, 0.0), (2.0, 0.0), (1.5, 3.0), (2.0, 4.0), (1.2, 6.0)) * 4


def zipf_teacher(spec, g: torch.Generator) -> torch.Tensor:
    """Logits -s*log(rank) + N(0, 0.2) noise, the ids randomly permuted. [len(spec), V], float64."""
    s, boost = (torch.tensor(col, dtype=torch.double)[:, None] for col in zip(*spec))
    logits = -s * torch.arange(1, V + 1, dtype=torch.double).log() + 0.2 * torch.randn(len(spec), V, generator=g,
                                                                                       dtype=torch.double)
    logits[:, :1] += boost
    perm = torch.rand(len(spec), V, generator=g).argsort(-1)
    return logits.gather(-1, perm)


@functools.cache
def case(spec: tuple, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The teacher and its two students, built once per module."""
    g = torch.Generator().manual_seed(seed)
    teacher = zipf_teacher(spec, g)
    return teacher, {"perturbed": teacher + torch.randn(teacher.shape, generator=g, dtype=torch.double),
                     "unrelated": torch.randn(teacher.shape, generator=g, dtype=torch.double)}


def gradient_cosine(teacher: torch.Tensor, student: torch.Tensor, temperature: float,
                    log_tail_shape: torch.Tensor | None = None) -> float:
    lp = F.log_softmax(teacher, -1)
    vals, ids = lp.topk(K, -1)
    sparse = student.clone().requires_grad_()
    sparse_topk_kl(sparse, ids, vals, torch.ones_like(ids, dtype=torch.bool), temperature, log_tail_shape).sum().backward()
    full = student.clone().requires_grad_()
    full_kl(full, teacher, temperature).sum().backward()
    return F.cosine_similarity(sparse.grad.flatten(), full.grad.flatten(), dim=0).item()


def exact_tail_shape(teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """log sum_{j in tail} (p_j / r)^(1/T) from the teacher's full distribution: the tail estimate
    an oracle would use. With it the bucket's only loss is not naming the tail tokens."""
    lp = F.log_softmax(teacher, -1)
    tail_lp = lp.scatter(-1, lp.topk(K, -1).indices, float("-inf"))
    return torch.logsumexp((tail_lp - torch.logsumexp(tail_lp, -1, keepdim=True)) / temperature, -1)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_sparse_gradient_follows_the_full_kl_on_a_confident_zipf_teacher(temperature):
    teacher, students = case(CONFIDENT, 0)
    for name, student in students.items():
        cos = gradient_cosine(teacher, student, temperature)
        assert cos >= 0.9, f"{name} student at T={temperature}: cosine {cos:.3f}"


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_on_a_heavy_tailed_teacher_the_tail_estimate_is_not_what_limits_the_gradient(temperature):
    """A SmolLM2-like tail at T >= 2 is most of the tempered target (measured on SmolLM2 at T=4:
    98%), and the full KL's gradient lives on tail tokens the top-20 does not name: no bucket can
    follow it there. What the tail estimate can do is match the exact tail mass; the old even
    spread does not (at T=2 here: -0.02, against 0.99 for ours and 1.00 with the exact mass)."""
    teacher, students = case(HEAVY, 1)
    student = students["perturbed"]
    ours = gradient_cosine(teacher, student, temperature)
    ceiling = gradient_cosine(teacher, student, temperature, exact_tail_shape(teacher, temperature))
    assert ours >= ceiling - 0.1, (ours, ceiling)
    if temperature == 1.0:
        assert ours >= 0.9  # at T=1 the tail's mass is known exactly, whatever its shape
    else:
        even = torch.full((len(HEAVY),), (1 - 1 / temperature) * math.log(V - K), dtype=torch.double)
        assert gradient_cosine(teacher, student, temperature, even) < ours - 0.2
