"""Targeted selection with a model: hypothesized labels, gradient / embedding features, SMI."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsubset.grads.scores import cross_entropy
from jaxsubset.models import create, to_pure
from jaxsubset.selectors.smi import smi, smi_similarity
from jaxsubset.workflows.targeted import targeted_features, targeted_select

C, D = 3, 8


def _mixture(rng, n, means):
    y = rng.integers(0, C, n)
    return (means[y] + rng.normal(size=(n, D))).astype(np.float32), y


@functools.lru_cache(maxsize=None)
def _setting(seed=0):
    """A small MLP trained briefly (full-batch Adam) on a 3-class Gaussian mixture, a pool, a query from class 1."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(C, D)) * 1.2
    xtr, ytr = _mixture(rng, 150, means)
    pool_x, pool_y = _mixture(rng, 600, means)
    qx, qy = _mixture(rng, 200, means)
    qx, qy = qx[qy == 1][:15], qy[qy == 1][:15]
    model = to_pure(create("mlp", (D,), C, seed=seed))
    opt = optax.adam(3e-3)

    @jax.jit
    def step(p, s):
        g = jax.grad(lambda p: cross_entropy(model.apply_fn(p, xtr), ytr).mean())(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    params, state = model.params, opt.init(model.params)
    for _ in range(30):
        params, state = step(params, state)
    return model, params, pool_x, pool_y, qx, qy


def test_last_layer_features_give_the_gram_of_true_head_gradients():
    model, params, pool_x, _, _, _ = _setting()
    x = pool_x[:12]
    (e, h), yhat = targeted_features(model, params, x, features="last_layer_grads")
    logits = np.asarray(model.apply_fn(params, x))
    np.testing.assert_array_equal(yhat, logits.argmax(1))

    # Reference: per-example gradient of the cross-entropy w.r.t. the head (kernel and bias) with jax.grad.
    def loss(head, xi, yi):
        p = jax.tree_util.tree_map(lambda a: a, params)   # a copy whose head is the differentiated one
        p["head"] = head
        return cross_entropy(model.apply_fn(p, xi[None]), yi[None])[0]

    grads = jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))(params["head"], jnp.asarray(x), jnp.asarray(yhat))
    g = np.concatenate([np.asarray(l).reshape(12, -1) for l in jax.tree_util.tree_leaves(grads)], axis=1)
    gram_ref = g @ g.T
    gram = (e @ e.T) * (h @ h.T + 1.0)
    np.testing.assert_allclose(gram, gram_ref, rtol=1e-4, atol=1e-6 * np.abs(gram_ref).max())
    np.testing.assert_allclose(smi_similarity((e, h)), smi_similarity(g), atol=1e-4)


def test_query_features_use_true_labels():
    model, params, _, _, qx, qy = _setting()
    e, labels = targeted_features(model, params, qx, qy, features="logit_grads")
    p = np.asarray(jax.nn.softmax(model.apply_fn(params, qx)))
    np.testing.assert_allclose(e, p - np.eye(C)[qy], atol=1e-6)
    np.testing.assert_array_equal(labels, qy)
    h, _ = targeted_features(model, params, qx, qy, features="embeddings")
    np.testing.assert_allclose(h, np.asarray(model.apply_with_embedding(params, qx)[1]), atol=1e-5)


@pytest.mark.parametrize("features", ["last_layer_grads", "embeddings"])
def test_targeted_select_picks_the_query_class(features):
    model, params, pool_x, pool_y, qx, qy = _setting()
    chance = np.mean(pool_y == 1)
    for function, floor in (("flqmi", 0.8), ("gcmi", 0.8), ("logdetmi", 0.6)):
        sub = targeted_select(model, params, pool_x, qx, qy, 40, function=function, features=features)
        frac = np.mean(pool_y[sub.indices] == 1)
        assert frac >= floor and frac >= 2 * chance, (function, frac, chance)
        assert sub.info["features"] == features and len(sub) == 40
        yhat = np.asarray(model.apply_fn(params, pool_x[sub.indices])).argmax(1)
        np.testing.assert_array_equal(sub.info["hypothesized_labels"], yhat)


def test_targeted_select_equals_smi_on_the_same_features():
    model, params, pool_x, _, qx, qy = _setting()
    pf, _ = targeted_features(model, params, pool_x, features="last_layer_grads")
    qf, _ = targeted_features(model, params, qx, qy, features="last_layer_grads")
    ref = smi(pf, qf, 10, function="flvmi", eta=0.5, gamma=0.1)
    sub = targeted_select(model, params, pool_x, qx, qy, 10, function="flvmi", eta=0.5, gamma=0.1)
    np.testing.assert_array_equal(sub.info["order"], ref.info["order"])


def test_bare_apply_fn_supports_logit_gradients_only():
    model, params, pool_x, pool_y, qx, qy = _setting()
    sub = targeted_select(model.apply_fn, params, pool_x, qx, qy, 20, features="logit_grads")
    assert len(sub) == 20
    with pytest.raises(TypeError, match="needs the penultimate embedding"):
        targeted_select(model.apply_fn, params, pool_x, qx, qy, 20, features="last_layer_grads")
    sub2 = targeted_select(model.apply_fn, params, pool_x, qx, qy, 20, features="embeddings",
                           apply_with_embedding=model.apply_with_embedding)
    ref = targeted_select(model, params, pool_x, qx, qy, 20, features="embeddings")
    np.testing.assert_array_equal(sub2.indices, ref.indices)


def test_targeted_bad_input():
    model, params, pool_x, _, qx, qy = _setting()
    with pytest.raises(ValueError, match="query_x is empty"):
        targeted_select(model, params, pool_x, qx[:0], qy[:0], 5)
    with pytest.raises(ValueError, match=r"labels must have shape \(15,\)"):
        targeted_select(model, params, pool_x, qx, qy[:-1], 5)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        targeted_select(model, params, pool_x, qx, qy + 5, 5)
    with pytest.raises(ValueError, match="must match"):
        targeted_select(model, params, pool_x, qx[:, :4], qy, 5)
    with pytest.raises(ValueError, match="query_y is required"):
        targeted_select(model, params, pool_x, qx, None, 5)
    with pytest.raises(ValueError, match="Unknown features"):
        targeted_select(model, params, pool_x, qx, qy, 5, features="grads")
    with pytest.raises(ValueError, match="budget must be between 1 and the pool size 600"):
        targeted_select(model, params, pool_x, qx, qy, 601)
    with pytest.raises(ValueError, match="eta must be"):
        targeted_select(model, params, pool_x, qx, qy, 5, eta=-1.0)
    # params=None means the PureModel's own (here: untrained) parameters
    a = targeted_select(model, None, pool_x, qx, qy, 5)
    b = targeted_select(model, model.params, pool_x, qx, qy, 5)
    np.testing.assert_array_equal(a.indices, b.indices)
    with pytest.raises(TypeError, match="params is required"):
        targeted_select(model.apply_fn, None, pool_x, qx, qy, 5, features="logit_grads")
