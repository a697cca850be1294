"""Inputs of the learned selection beyond the model's loss: neighbour-label agreement and noise rates."""

import numpy as np
import pytest

from jaxsubset.valuation.neighbours import label_agreement
from jaxsubset.valuation.noise import noise_rates


@pytest.mark.parametrize("k", [1, 3, 7, 50])
def test_label_agreement_equals_brute_force(k):
    rng = np.random.default_rng(k)
    h, y = rng.normal(size=(37, 5)), rng.integers(0, 3, 37)
    ref, ry = rng.normal(size=(20, 5)), rng.integers(0, 3, 20)
    want = np.empty(37)
    kk = min(k, 20)
    for i in range(37):                       # independent reference: full sort of exact distances
        near = np.argsort(np.sum((ref - h[i]) ** 2, axis=1))[:kk]
        want[i] = np.mean(ry[near] == y[i])
    got = label_agreement(h, y, ref, ry, k=k, chunk=16)     # several chunks, a ragged last one
    assert got.shape == (37,) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_label_agreement_bad_input():
    h, y = np.zeros((4, 2)), np.zeros(4, int)
    with pytest.raises(ValueError, match="width"):
        label_agreement(h, y, np.zeros((2, 3)), np.zeros(2, int))
    with pytest.raises(ValueError, match="k"):
        label_agreement(h, y, h, y, k=0)
    with pytest.raises(TypeError, match="integers"):
        label_agreement(h, y.astype(float), h, y)
    with pytest.raises(ValueError, match="at least one reference"):
        label_agreement(h, y, np.zeros((0, 2)), np.zeros(0, int))


def test_noise_rates_recover_planted_rates():
    """Rows labelled c: a fraction rho_c mislabelled (the model disagrees on all of them), the clean rows
    disagree at the clean error e_c measured on validation: the estimate is exactly rho_c."""
    rng = np.random.default_rng(0)
    rho, err = np.array([0.1, 0.3, 0.0]), np.array([0.2, 0.05, 0.5])
    tp, ty, vp, vy = [], [], [], []
    for c in range(3):
        n_c, m_c = 1000, 200
        wrong = int(rho[c] * n_c)
        clean_wrong = int(err[c] * (n_c - wrong))
        ty += [c] * n_c
        tp += [(c + 1) % 3] * wrong + [(c + 2) % 3] * clean_wrong + [c] * (n_c - wrong - clean_wrong)
        vy += [c] * m_c
        vp += [(c + 1) % 3] * int(err[c] * m_c) + [c] * (m_c - int(err[c] * m_c))
    perm = rng.permutation(len(ty))
    est = noise_rates(np.array(tp)[perm], np.array(ty)[perm], np.array(vp), np.array(vy), num_classes=3)
    np.testing.assert_allclose(est, rho, atol=1e-3)     # int() rounding of the clean-error counts


def test_noise_rates_bad_input():
    y = np.array([0, 1, 2, 1])
    with pytest.raises(ValueError, match=r"no examples of classes \[2\]"):
        noise_rates(y, y, np.array([0, 1]), np.array([0, 1]), num_classes=3)
    with pytest.raises(TypeError, match="integer"):
        noise_rates(y.astype(float), y, y, y, num_classes=3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        noise_rates(y + 1, y, y, y, num_classes=3)


def test_learned_neighbour_settings_bad_input():
    from flax import nnx

    from jaxsubset.models import to_pure
    from jaxsubset.models.mlp import MLP
    from jaxsubset.valuation.learned import fit_selection_model

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)).astype(np.float32), rng.integers(0, 2, 40).astype(np.int32)
    m = to_pure(MLP(3, 2, hidden=(4,), rngs=nnx.Rngs(0)))
    val = (x[:10], y[:10])
    with pytest.raises(ValueError, match=r"neighbours must be an integer >= 0"):
        fit_selection_model(m, x, y, num_classes=2, validation=val, neighbours=-1)
    with pytest.raises(ValueError, match=r'target="local".*neighbours >= 1'):
        fit_selection_model(m, x, y, num_classes=2, validation=val, neighbours=0, target="local")


def test_local_target_ranks_planted_noisy_labels_lowest():
    """target="local" (reward: does a step on j lower the loss of its nearest clean validation points) on
    the planted-noise mixture of test_valuation: AUROC of (-value) for the flipped rows >= 0.95; with
    shuffled validation labels (a broken signal) it falls below 0.8."""
    from flax import nnx
    from test_learned import mixture
    from test_valuation import LEARN, auroc

    from jaxsubset.models import to_pure
    from jaxsubset.models.mlp import MLP
    from jaxsubset.valuation.learned import fit_selection_model

    x, y, flipped, val = mixture(0, 600, 0.2, 200, scale=2.5)
    m = to_pure(MLP(8, 4, hidden=(32,), rngs=nnx.Rngs(0)))
    res = fit_selection_model(m, x, y, validation=val, target="local", **LEARN)
    a = auroc(-res.values, flipped)
    assert a >= 0.95, a
    broken = (val[0], np.random.default_rng(1).permutation(val[1]))
    a_b = auroc(-fit_selection_model(m, x, y, validation=broken, target="local", **LEARN).values, flipped)
    assert a_b < 0.8, a_b
