"""Round 4 inputs of the learned selection: a linear probe fitted on clean reference embeddings and the
distance-weighted (soft) neighbour agreement."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from jaxsubset.valuation.neighbours import soft_label_agreement
from jaxsubset.valuation.probe import probe_loss


def test_probe_loss_matches_sklearn_logistic_regression():
    """Same objective (mean cross-entropy + l2/2 |W|^2 on standardized inputs, unpenalized bias) as
    scikit-learn's multinomial LogisticRegression with C = 1 / (l2 m): the label losses agree."""
    rng = np.random.default_rng(0)
    m, d, c, l2 = 120, 4, 3, 0.05
    centers = rng.normal(scale=1.5, size=(c, d))
    ry = rng.integers(0, c, m)
    ref = centers[ry] + rng.normal(size=(m, d))
    h, y = rng.normal(scale=2.0, size=(30, d)), rng.integers(0, c, 30)
    got = probe_loss(h, y, ref, ry, num_classes=c, steps=3000, lr=0.05, l2=l2)
    mu, sd = ref.mean(0), ref.std(0) + 1e-6
    clf = LogisticRegression(C=1.0 / (l2 * m), tol=1e-10, max_iter=10_000).fit((ref - mu) / sd, ry)
    want = -np.log(clf.predict_proba((h - mu) / sd)[np.arange(30), y])
    assert got.shape == (30,) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)


def test_probe_loss_ranks_planted_wrong_labels_highest():
    rng = np.random.default_rng(1)
    centers = rng.normal(scale=3.0, size=(4, 6))
    ry, y = rng.integers(0, 4, 200), rng.integers(0, 4, 300)
    ref, h = centers[ry] + rng.normal(size=(200, 6)), centers[y] + rng.normal(size=(300, 6))
    noisy = y.copy()
    flip = rng.choice(300, 30, replace=False)
    noisy[flip] = (y[flip] + rng.integers(1, 4, 30)) % 4
    loss = probe_loss(h, noisy, ref, ry, num_classes=4)
    assert np.min(loss[flip]) > np.max(np.delete(loss, flip))


def test_probe_loss_bad_input():
    h, y = np.zeros((4, 2)), np.zeros(4, int)
    with pytest.raises(ValueError, match="num_classes"):
        probe_loss(h, y, h, y, num_classes=1)
    with pytest.raises(ValueError, match="lie in"):
        probe_loss(h, y + 3, h, y, num_classes=3)
    with pytest.raises(ValueError, match="at least 2"):
        probe_loss(h, y, h[:1], y[:1], num_classes=2)
    with pytest.raises(ValueError, match="steps"):
        probe_loss(h, y, h, y, num_classes=2, steps=0)
    with pytest.raises(ValueError, match="lr"):
        probe_loss(h, y, h, y, num_classes=2, lr=0.0)


@pytest.mark.parametrize("k", [1, 4, 50])
def test_soft_label_agreement_equals_brute_force(k):
    rng = np.random.default_rng(k)
    h, y = rng.normal(size=(23, 5)), rng.integers(0, 3, 23)
    ref, ry = rng.normal(size=(17, 5)), rng.integers(0, 3, 17)
    kk = min(k, 17)
    want = np.empty(23)
    for i in range(23):                      # independent reference: full sort, explicit softmax weights
        d = np.sum((ref - h[i]) ** 2, axis=1)
        near = np.argsort(d)[:kk]
        w = np.exp(-d[near] / d[near].mean())
        want[i] = np.sum(w * (ry[near] == y[i])) / np.sum(w)
    got = soft_label_agreement(h, y, ref, ry, k=k, chunk=8)
    assert got.shape == (23,) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_soft_label_agreement_bad_input():
    h, y = np.zeros((4, 2)), np.zeros(4, int)
    with pytest.raises(ValueError, match="k"):
        soft_label_agreement(h, y, h, y, k=0)
    with pytest.raises(ValueError, match="width"):
        soft_label_agreement(h, y, np.zeros((2, 3)), np.zeros(2, int))


def test_learned_probe_option_feeds_the_probe_loss_to_the_selection_network():
    """probe=True adds one input column, exactly probe_loss of the start's embeddings (fitted on the validation
    embeddings): with a fixed θ (lr=0) the values equal the selection network applied to the recomputed,
    standardized features [raw, agreement, probe loss, extra]. A non-bool probe is a TypeError. (Settings and
    shapes as tests/test_learned_dynamics.py, so that the suite compiles the alternation epoch once.)"""
    from flax import nnx
    from test_learned import mixture

    from jaxsubset.models import to_pure
    from jaxsubset.models.mlp import MLP
    from jaxsubset.valuation import learned as L
    from jaxsubset.valuation.neighbours import label_agreement

    c = 4
    extra = np.random.default_rng(7).normal(size=(200, 1)).astype(np.float32)
    kw = dict(num_classes=c, epochs=1, seed=0, batch_size=32, val_batch_size=50, steps_per_epoch=8, neighbours=3,
              target="local", lr=0.0, members=1)
    x, y, _, val = mixture(0, 200, 0.2, 60, scale=2.5)
    m = to_pure(MLP(8, c, hidden=(16,), rngs=nnx.Rngs(0)))
    res = L.fit_selection_model(m, x, y, validation=val, probe=True, point_features=extra, **kw)
    assert res.selector.layers[0].kernel.get_value().shape[0] == 2 * c + 4 + 1 + 1 + 1
    embed = res.model.apply_with_embedding
    raw, h = L._all_features(embed, res.model.params, x, y, False)
    _, hv = L._all_features(embed, res.model.params, val[0], val[1], False)
    pl = probe_loss(h, y, hv, val[1], num_classes=c)
    full = np.concatenate([raw, label_agreement(h, y, hv, val[1], k=3)[:, None], pl[:, None], extra], axis=1)
    ref = -np.asarray(res.selector(L.standardize(full, (full.mean(0), full.std(0)))))
    np.testing.assert_allclose(res.values, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match="probe must be True or False"):
        L.fit_selection_model(m, x, y, validation=val, probe=1, **kw)
