"""GLISTER (last layer), herding and greedy k-center against from-scratch references."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import cdist

from jaxsubset.kernels import materialize_last_layer
from jaxsubset.selectors.coverage import herding, kcenter_greedy
from jaxsubset.selectors.glister import glister


def _glister_problem(seed=0, n=40, m=25, C=3, d=5):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(C, d + 1))
    h, hv = rng.normal(size=(n, d)), rng.normal(size=(m, d))
    y, yv = rng.integers(C, size=n), rng.integers(C, size=m)
    z = np.concatenate([h, np.ones((n, 1))], 1) @ W.T
    e = jax.nn.softmax(z) - jax.nn.one_hot(y, C)
    zv = np.concatenate([hv, np.ones((m, 1))], 1) @ W.T
    return np.asarray(e), h, W, hv, yv, zv


def _ref_glister(e, h, W, hv, yv, k, lr):
    """Move the head explicitly and differentiate the validation loss with jax.grad."""
    hv1 = jnp.asarray(np.concatenate([hv, np.ones((len(hv), 1))], 1))

    def val_loss(W):
        logp = jax.nn.log_softmax(hv1 @ W.T)
        return -jnp.mean(logp[jnp.arange(len(yv)), yv])

    g = materialize_last_layer(e, h).astype(np.float64)  # (n, C(d+1)), C-major like W.reshape(-1)
    W = jnp.asarray(W)
    sel = []
    for _ in range(k):
        gv = np.asarray(jax.grad(val_loss)(W)).reshape(-1)
        score = g @ gv
        score[sel] = -np.inf
        j = int(np.argmax(score))
        sel.append(j)
        W = W - lr * g[j].reshape(W.shape)
    return sel, float(val_loss(W))


@pytest.mark.parametrize("lr", [0.05, 1.0])
def test_glister_matches_explicit_lookahead(lr):
    e, h, W, hv, yv, zv = _glister_problem()
    sub = glister(e, h, 8, val_logits=zv, val_h=hv, val_labels=yv, lr=lr)
    ref, ref_loss = _ref_glister(e, h, W, hv, yv, 8, lr)
    assert sub.info["order"].tolist() == ref
    np.testing.assert_allclose(sub.info["val_loss"][1], ref_loss, rtol=1e-5)
    if lr < 0.1:  # a small lookahead step along the chosen gradients lowers the validation loss
        assert sub.info["val_loss"][1] < sub.info["val_loss"][0]
    np.testing.assert_array_equal(sub.weights, np.ones(8))


def test_glister_refresh_batches_picks():
    e, h, W, hv, yv, zv = _glister_problem(seed=1)
    one = glister(e, h, 6, val_logits=zv, val_h=hv, val_labels=yv, lr=0.1, refresh=1)
    all6 = glister(e, h, 6, val_logits=zv, val_h=hv, val_labels=yv, lr=0.1, refresh=6)
    # refresh = budget: the top-6 by alignment with the initial validation gradient
    first = np.asarray(e, np.float64)
    hv1 = np.concatenate([hv, np.ones((len(hv), 1))], 1)
    p = np.exp(zv - zv.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
    p[np.arange(len(yv)), yv] -= 1
    scores = materialize_last_layer(first, h) @ (p.T @ hv1 / len(yv)).reshape(-1)
    np.testing.assert_array_equal(all6.indices, np.sort(np.argsort(-scores)[:6]))
    assert one.info["order"][0] == all6.info["order"][0]


def test_glister_bad_input():
    e, h, W, hv, yv, zv = _glister_problem()
    kw = dict(val_logits=zv, val_h=hv, val_labels=yv)
    with pytest.raises(ValueError, match="classes"):
        glister(e, h, 3, **{**kw, "val_logits": zv[:, :2]})
    with pytest.raises(ValueError, match="dimension"):
        glister(e, h, 3, **{**kw, "val_h": hv[:, :2]})
    with pytest.raises(ValueError, match="val_labels"):
        glister(e, h, 3, **{**kw, "val_labels": yv + 5})
    with pytest.raises(ValueError, match="lr"):
        glister(e, h, 3, lr=0.0, **kw)
    with pytest.raises(ValueError, match="refresh"):
        glister(e, h, 3, refresh=0, **kw)
    with pytest.raises(ValueError, match="larger than the pool"):
        glister(e, h, 41, **kw)


# ----------------------------------------------------------------------------- herding

def test_herding_matches_reference_and_tracks_the_mean():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(60, 4)) + 3.0
    mu = x.mean(0)
    sel, total = [], np.zeros(4)
    for t in range(10):
        d = np.linalg.norm((t + 1) * mu - total - x, axis=1)
        d[sel] = np.inf
        j = int(np.argmin(d)); sel.append(j); total += x[j]
    sub = herding(x, 10)
    assert sub.info["order"].tolist() == sel
    err = np.linalg.norm(x[sub.indices].mean(0) - mu)
    np.testing.assert_allclose(sub.info["mean_error"], err, rtol=1e-5)
    rand = [np.linalg.norm(x[rng.choice(60, 10, replace=False)].mean(0) - mu) for _ in range(50)]
    assert err < np.min(rand)
    e, h = rng.normal(size=(50, 3)), rng.normal(size=(50, 4))
    np.testing.assert_array_equal(herding(None, 7, factors=(e, h)).info["order"],
                                  herding(materialize_last_layer(e, h), 7).info["order"])


# ----------------------------------------------------------------------------- k-center

def test_kcenter_matches_reference_and_is_2_approximate():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(14, 3))
    d = cdist(x, x)
    sub = kcenter_greedy(x, 4, seed=0)
    first = int(np.random.default_rng(0).integers(14))
    sel = [first]
    for _ in range(3):
        mind = d[:, sel].min(1)
        mind[sel] = -np.inf
        sel.append(int(np.argmax(mind)))
    assert sub.info["order"].tolist() == sel
    radius = d[:, sel].min(1).max()
    np.testing.assert_allclose(sub.info["radius"], radius, rtol=1e-5)
    opt = min(d[:, list(c)].min(1).max() for c in itertools.combinations(range(14), 4))
    assert radius <= 2 * opt + 1e-9


def test_kcenter_initial_centers_factors_and_bad_input():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(30, 5))
    sub = kcenter_greedy(x, 5, initial=[2, 7])
    assert not set(sub.indices.tolist()) & {2, 7} and len(sub) == 5
    d = cdist(x, x)
    assert sub.info["order"][0] == int(np.argmax(d[:, [2, 7]].min(1)))
    e, h = rng.normal(size=(40, 3)), rng.normal(size=(40, 4))
    np.testing.assert_array_equal(kcenter_greedy(None, 6, factors=(e, h)).indices,
                                  kcenter_greedy(materialize_last_layer(e, h), 6).indices)
    assert len(kcenter_greedy(x, 4, metric="cosine")) == 4
    with pytest.raises(ValueError, match="beyond the initial"):
        kcenter_greedy(x, 29, initial=[0, 1])
    with pytest.raises(ValueError, match="initial"):
        kcenter_greedy(x, 2, initial=[31])
    with pytest.raises(ValueError, match="metric"):
        kcenter_greedy(x, 2, metric="dot")
    bad = x.copy(); bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        herding(bad, 2)
    with pytest.raises(ValueError, match="NaN or inf"):
        kcenter_greedy(bad, 2)
