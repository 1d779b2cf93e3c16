"""The probe-initialised label head (pipeline/training/label_head.py): the ridge fit recovers a
linear readout, the student's label rows then read it at the answer position, and the untied head
survives save/load while the input embeddings stay as they were."""
from __future__ import annotations

import numpy as np
import torch

from pipeline.training.label_head import fit_rows, init_label_head, probe_targets
from tests.conftest import record_forward_shapes


def test_ridge_fit_recovers_a_linear_readout_and_picks_its_strength_on_held_out_rows():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(400, 16))
    true = rng.normal(size=(2, 16))
    targets = feats @ true.T
    targets -= targets.mean(1, keepdims=True)
    w, info = fit_rows(feats, targets, np.zeros((2, 16)))
    pred = feats @ w.T
    assert np.mean(pred.argmax(1) == targets.argmax(1)) > 0.97
    assert info["heldout_agreement"] > 0.95 and info["heldout_rows"] == 80


def test_targets_are_centred_and_standardised_one_hot_included():
    t = probe_targets([[0.6, 0.4], [0.2, 0.8], [1.0, 0.0]])
    assert np.allclose(t.sum(1), 0) and abs(np.sqrt((t**2).mean()) - 1) < 1e-9
    assert t[0, 0] > 0 and t[1, 1] > 0 and t[2, 0] > 0


def test_student_reads_the_probe_at_the_answer_position_and_keeps_its_embeddings(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.config.tie_word_embeddings = True
    model.tie_weights()
    emb_before = model.get_input_embeddings().weight.detach().clone()
    rng = np.random.default_rng(1)
    label_ids = [[40, 2], [50, 2]]
    rows, direction = [], None
    backbone = model.get_decoder()
    for i in range(120):  # prompts of random length; the teacher's label follows a direction of the features
        prompt = rng.integers(5, 400, size=int(rng.integers(4, 12))).tolist()
        with torch.no_grad():
            h = backbone(torch.tensor([prompt])).last_hidden_state[0, -1].numpy()
        direction = rng.normal(size=h.shape) if direction is None else direction
        p = 1 / (1 + np.exp(-3 * float(h @ direction) / np.linalg.norm(direction)))
        rows.append({"input_ids": prompt + label_ids[0], "answer_start": len(prompt), "label_probs": [p, 1 - p]})
    info = init_label_head(model, rows, label_ids, pad_id=0)
    assert info is not None and info["rows"] == 120
    _check_probe(model, rows, info, emb_before, tmp_path)


def _check_probe(model, rows, info, emb_before, tmp_path, truth=lambda r: r["label_probs"][0] > 0.5):
    from transformers import AutoModelForCausalLM

    assert model.get_output_embeddings().weight is not model.get_input_embeddings().weight
    assert torch.equal(model.get_input_embeddings().weight, emb_before)  # the prompt's words keep their meaning

    def agreement(m):
        hits = 0
        for r in rows:
            with torch.no_grad():
                logits = m(torch.tensor([r["input_ids"][: r["answer_start"]]])).logits[0, -1]
            hits += int((logits[40] > logits[50]).item() == truth(r))
        return hits / len(rows)

    assert agreement(model) >= 0.9 > info["train_agreement_before"]
    model.save_pretrained(tmp_path / "student")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "student")
    assert torch.equal(again.get_output_embeddings().weight, model.get_output_embeddings().weight)
    assert torch.equal(again.get_input_embeddings().weight, emb_before)


def test_an_sft_probe_fits_the_rows_own_labels_not_the_soft_ones(tiny_model_dir, tmp_path):
    """method sft trains on hard labels: its probe must not see the teacher's distribution (here the
    soft labels point the other way, so a probe that read them would disagree with every label)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    emb_before = model.get_input_embeddings().weight.detach().clone()
    rng = np.random.default_rng(2)
    backbone, direction, rows = model.get_decoder(), None, []
    for i in range(120):
        prompt = rng.integers(5, 400, size=int(rng.integers(4, 12))).tolist()
        with torch.no_grad():
            h = backbone(torch.tensor([prompt])).last_hidden_state[0, -1].numpy()
        direction = rng.normal(size=h.shape) if direction is None else direction
        first = float(h @ direction) > 0
        rows.append({"input_ids": prompt + [40, 2], "answer_start": len(prompt),
                     "label_probs": [0.2, 0.8] if first else [0.8, 0.2], "label_index": 0 if first else 1})
    info = init_label_head(model, rows, [[40, 2], [50, 2]], pad_id=0, hard=True)
    assert info is not None
    _check_probe(model, rows, info, emb_before, tmp_path, truth=lambda r: r["label_index"] == 0)


def test_shared_first_tokens_leave_the_head_alone(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    before = model.get_output_embeddings().weight.detach().clone()
    rows = [{"input_ids": [5, 6, 40, 41, 2], "answer_start": 2, "label_probs": [0.5, 0.5]}] * 20
    assert init_label_head(model, rows, [[40, 41, 2], [40, 42, 2]], pad_id=0) is None
    assert torch.equal(model.get_output_embeddings().weight, before)


def test_answer_features_run_a_shared_prefix_once_and_equal_the_plain_batch(tiny_model_dir, monkeypatch):
    """The probe's features come from the same shared-prefix forward as label scoring: the prompts'
    common prefix runs once per batch, and every row's feature equals the plain left-padded batch's."""
    from transformers import AutoModelForCausalLM

    import pipeline.label_scoring as ls
    from pipeline.training.label_head import answer_features

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    rng = np.random.default_rng(3)
    prefix = rng.integers(5, 400, size=12).tolist()
    rows = []
    for _ in range(7):
        prompt = prefix + rng.integers(5, 400, size=int(rng.integers(1, 9))).tolist()
        rows.append({"input_ids": prompt + [40, 2], "answer_start": len(prompt)})
    backbone = model.get_decoder()
    calls = record_forward_shapes(monkeypatch, backbone)
    shared, top_shared = answer_features(model, rows, pad_id=0, batch_size=4)
    assert [c[0] for c in calls] == [1, 4, 1, 3]  # per batch: the prefix once, then the rows' own tokens
    monkeypatch.setattr(ls, "MIN_SHARED_PREFIX", 10_000)  # the plain path
    plain, top_plain = answer_features(model, rows, pad_id=0, batch_size=4)
    np.testing.assert_allclose(shared, plain, atol=1e-4)
    np.testing.assert_allclose(top_shared, top_plain, atol=1e-4)
