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
