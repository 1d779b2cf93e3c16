"""The KD math on its own: sparse top-k KL with a tail bucket, re-tempering, the objective's
normalisation, and the label-level KL."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.training.kd_loss import full_kl, kd_objective, sparse_topk_kl
from pipeline.training.label_kd import label_kd_objective, label_kl, teacher_label_probs

V = 11


def _topk(teacher_logits: torch.Tensor, k: int):
    lp = F.log_softmax(teacher_logits, -1)
    vals, ids = lp.topk(k, dim=-1)
    return ids, vals, torch.ones_like(ids, dtype=torch.bool)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.5])
def test_equals_full_kl_when_k_is_the_whole_vocabulary(temperature):
    torch.manual_seed(0)
    student, teacher = torch.randn(5, V) * 3, torch.randn(5, V) * 3
    ids, lps, mask = _topk(teacher, V)
    got = sparse_topk_kl(student, ids, lps, mask, temperature)
    torch.testing.assert_close(got, full_kl(student, teacher, temperature), rtol=1e-5, atol=1e-6)


def test_zero_when_student_is_the_teacher_full_vocab_and_top_k_with_tail():
    torch.manual_seed(1)
    logits = torch.randn(4, V) * 2
    ids, lps, mask = _topk(logits, V)
    assert sparse_topk_kl(logits, ids, lps, mask, 2.0).abs().max() < 1e-6
    ids, lps, mask = _topk(logits, 3)  # the tail holds the other 8 tokens' mass
    for temperature in (1.0, 2.0, 4.0):  # the student's tail shape is the teacher's: exact at any T
        assert sparse_topk_kl(logits, ids, lps, mask, temperature).abs().max() < 1e-6
    # and a different student is strictly positive
    assert (sparse_topk_kl(logits.flip(-1), ids, lps, mask, 1.0) > 1e-3).all()


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_tail_bucket_is_exact_when_the_student_tail_has_the_teacher_tail_shape(temperature):
    """k < V known tokens; the student's tail is the teacher's up to a constant (a non-uniform
    shape) while its top-k differs: the bucketed, re-tempered KL equals the full KL."""
    torch.manual_seed(2)
    k = 4
    teacher = torch.cat([torch.randn(3, k) + 3, torch.randn(3, V - k)], dim=-1)
    student = torch.cat([torch.randn(3, k) + 2, teacher[:, k:] + 0.7], dim=-1)
    lp = F.log_softmax(teacher, -1)
    ids, mask = torch.arange(k).expand(3, k), torch.ones(3, k, dtype=torch.bool)
    got = sparse_topk_kl(student, ids, lp[:, :k], mask, temperature)
    torch.testing.assert_close(got, full_kl(student, teacher, temperature), rtol=1e-5, atol=1e-6)
    # dropping the tail bucket (renormalising the top-k) would give a different number
    no_tail = full_kl(student[:, :k], teacher[:, :k], temperature)
    assert not torch.allclose(got, no_tail, atol=1e-4)
    if temperature != 1.0:  # and so would the old even-spread guess, (V-k) * (r/(V-k))^(1/T)
        even = torch.full((3,), (1 - 1 / temperature) * math.log(V - k))
        assert not torch.allclose(sparse_topk_kl(student, ids, lp[:, :k], mask, temperature, even), got, atol=1e-4)


def test_padded_slots_and_positions_without_teacher_are_ignored():
    torch.manual_seed(3)
    student, teacher = torch.randn(2, V), torch.randn(2, V)
    ids, lps, mask = _topk(teacher, 3)
    pad_ids = torch.cat([ids, torch.zeros(2, 2, dtype=torch.long)], -1)  # id 0 may also be a real id
    pad_lps = torch.cat([lps, torch.full((2, 2), float("nan"))], -1)
    pad_mask = torch.cat([mask, torch.zeros(2, 2, dtype=torch.bool)], -1)
    torch.testing.assert_close(sparse_topk_kl(student, pad_ids, pad_lps, pad_mask, 2.0),
                               sparse_topk_kl(student, ids, lps, mask, 2.0))
    none = torch.zeros(1, 3, dtype=torch.bool)
    s = student[:1].clone().requires_grad_()
    kl = sparse_topk_kl(s, ids[:1], lps[:1], none, 2.0)
    kl.sum().backward()
    assert kl.item() == pytest.approx(0.0, abs=1e-6) and torch.isfinite(s.grad).all()


def test_gradcheck_in_double_precision():
    torch.manual_seed(4)
    student = torch.randn(3, V, dtype=torch.double, requires_grad=True)
    teacher = torch.randn(3, V, dtype=torch.double)
    ids, lps, mask = _topk(teacher, 4)
    mask[0, 3] = False  # a padded slot
    # The tail's shape is a detached target taken from the student: hold it fixed, or the finite
    # differences would see the target move and the analytic gradient (by design) would not.
    shape = torch.tensor([0.3, 0.8, 1.1], dtype=torch.double)
    assert torch.autograd.gradcheck(lambda s: sparse_topk_kl(s, ids, lps, mask, 2.0, shape), (student,))
    full_ids, full_lps, full_mask = _topk(teacher, V)
    assert torch.autograd.gradcheck(lambda s: sparse_topk_kl(s, full_ids, full_lps, full_mask, 1.5), (student,))


def test_objective_weights_kl_by_t_squared_and_uses_plain_ce_without_a_teacher():
    kl = torch.tensor([0.5, 0.2, 9.0])
    ce = torch.tensor([1.0, 2.0, 3.0])
    has = torch.tensor([True, True, False])
    got = kd_objective(kl, ce, has, alpha=0.25, temperature=2.0, num_items=6)
    want = (0.25 * 4 * 0.5 + 0.75 * 1.0 + 0.25 * 4 * 0.2 + 0.75 * 2.0 + 3.0) / 6
    assert got.item() == pytest.approx(want)
    # without a global count it averages over this batch's tokens
    assert kd_objective(kl, ce, has, alpha=0.25, temperature=2.0).item() == pytest.approx(want * 6 / 3)


def test_summing_micro_batch_objectives_with_the_global_count_equals_one_batch():
    torch.manual_seed(5)
    kl, ce = torch.rand(7), torch.rand(7)
    has = torch.tensor([1, 1, 0, 1, 1, 1, 0], dtype=torch.bool)
    whole = kd_objective(kl, ce, has, alpha=0.5, temperature=2.0, num_items=7)
    parts = sum(kd_objective(kl[s], ce[s], has[s], alpha=0.5, temperature=2.0, num_items=7)
                for s in (slice(0, 2), slice(2, 7)))
    assert parts.item() == pytest.approx(whole.item())


def test_teacher_label_probs_renormalise_over_the_label_set():
    assert teacher_label_probs({"positive": 0.6, "negative": 0.2, "Positive": 0.2}, ["positive", "negative"]) == \
        pytest.approx([0.75, 0.25])
    assert teacher_label_probs(None, ["positive", "negative"], "negative") == [0.0, 1.0]
    assert teacher_label_probs(None, ["a", "b"], None) == []


def test_label_kl_is_zero_at_the_teacher_and_matches_a_hand_computation():
    q = torch.tensor([[0.8, 0.2]])
    seq_lp = torch.log(q) - 3.0  # the same distribution over labels, unnormalised over all answers
    assert label_kl(seq_lp, q, 2.0).item() == pytest.approx(0.0, abs=1e-7)
    s = torch.tensor([[0.5, 0.5]])
    qt = torch.tensor([math.sqrt(0.8), math.sqrt(0.2)])
    qt = qt / qt.sum()
    want = float((qt * (qt / 0.5).log()).sum())
    assert label_kl(s.log(), q, 2.0).item() == pytest.approx(want, rel=1e-5)
    s_grad = s.log().clone().requires_grad_()
    label_kd_objective(label_kl(s_grad, q, 2.0), torch.tensor(0.0), alpha=1.0, temperature=2.0,
                       num_rows=1, num_items=1).backward()
    assert s_grad.grad[0, 0] < 0  # pushes the student towards the teacher's favourite label
