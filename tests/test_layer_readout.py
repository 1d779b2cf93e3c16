"""bench/layer_readout.py's readout: the probe's ridge fit, the argmax of the fitted log-probs."""
from __future__ import annotations

import numpy as np

from bench.layer_readout import ridge_agreement


def _data(n: int, rng, informative: bool):
    x = rng.normal(size=(n, 16)) * rng.uniform(0.1, 50.0, size=16)  # scales as uneven as a residual stream
    z = x[:, 3] / x[:, 3].std() + 0.1 * rng.normal(size=n)
    logit = z if informative else rng.normal(size=n)
    y = np.stack([-np.logaddexp(0, -logit), -np.logaddexp(0, logit)], 1)  # log P(a), log P(b)
    return x, y


def test_a_feature_that_carries_the_teachers_log_odds_is_read():
    rng = np.random.default_rng(0)
    x, y = _data(600, rng, informative=True)
    agreement, _ = ridge_agreement(x[:400], np.exp(y[:400]), x[400:], y[400:].argmax(1).tolist())
    assert agreement > 0.9


def test_features_that_carry_nothing_read_at_chance():
    rng = np.random.default_rng(1)
    x, y = _data(600, rng, informative=False)
    agreement, _ = ridge_agreement(x[:400], np.exp(y[:400]), x[400:], y[400:].argmax(1).tolist())
    assert 0.35 < agreement < 0.65


def test_every_layer_is_read_through_the_final_norm_once(tiny_model_dir):
    """A cut at k reads norm(h_k); the whole model (k = all layers) reads exactly what its head reads."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench.layer_readout import answer_states
    from pipeline.evaluation.student import _positions, encode

    tok = AutoTokenizer.from_pretrained(tiny_model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    texts = ["a warm film", "a dull and very long mess"]
    states = answer_states(model, tok, texts)
    with torch.inference_mode():
        enc = encode(tok, texts)
        out = model.model(**enc, position_ids=_positions(enc["attention_mask"]), output_hidden_states=True)
        first = model.model.norm(out.hidden_states[1][:, -1]).numpy()
    assert np.allclose(states[:, -1], out.last_hidden_state[:, -1].numpy(), atol=1e-5)
    assert np.allclose(states[:, 1], first, atol=1e-5)
