"""The NaN/inf scan of x runs inside the cached jitted call, and dense gradients come as host outer products.

References are independent: rows are planted by hand, and per-sample gradients are
compared with a Python loop of ``jax.grad`` on one example at a time.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsubset import grads
from jaxsubset.grads._inputs import NonFiniteError


def mlp_apply(p, x):
    return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"]


def mlp_embed(p, x):
    h = jnp.tanh(x @ p["w1"] + p["b1"])
    return h @ p["w2"], h


def params(seed):
    r = np.random.default_rng(seed)
    return {"w1": jnp.asarray(r.normal(size=(3, 4)), jnp.float32), "b1": jnp.asarray(r.normal(size=(4,)), jnp.float32),
            "w2": jnp.asarray(r.normal(size=(4, 3)), jnp.float32)}


CALLS = {
    "losses": lambda p, x, y: grads.losses(mlp_apply, p, x, y),
    "el2n": lambda p, x, y: grads.el2n(mlp_apply, p, x, y),
    "grad_norms": lambda p, x, y: grads.grad_norms(mlp_apply, p, x, y),
    "input_grad_norms": lambda p, x, y: grads.input_grad_norms(mlp_apply, p, x, y),
    "per_sample_grads": lambda p, x, y: grads.per_sample_grads(mlp_apply, p, x, y),
    "last_layer_factors": lambda p, x, y: grads.last_layer_factors(mlp_embed, p, x, y),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_nan_in_x_is_refused_on_a_second_cached_call(name):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(9, 3)).astype(np.float32)
    y = rng.integers(0, 3, 9)
    call = CALLS[name]
    call(params(0), x, y)  # compiles and caches the chunk function
    hits = grads.cache_info()["hits"]
    bad = x.copy()
    bad[6, 1] = np.nan
    bad[2, 0] = -np.inf
    with pytest.raises(NonFiniteError, match=r"x contains NaN or inf in rows \[2, 6\]"):
        call(params(1), bad, y)  # new parameter values: served from the cache, still checked
    assert grads.cache_info()["hits"] > hits


def loop_grads(apply_fn, p, x, y):
    def loss(q, xi, yi):
        return -jax.nn.log_softmax(apply_fn(q, xi[None]))[0, yi]
    rows = []
    for i in range(len(x)):
        g = jax.grad(loss)(p, x[i], y[i])
        rows.append(np.concatenate([np.ravel(leaf) for leaf in jax.tree_util.tree_leaves(g)]))
    return np.stack(rows)


def left_apply(p, x):
    """A weight on the left of its input (``W @ x``) and one used transposed: other factor orders."""
    h = jnp.tanh(jnp.einsum("pd,bd->bp", p["w"], x) + p["b"])
    return h @ p["v"].T


@pytest.mark.parametrize("method", ["auto", "probe", "vmap"])
def test_factored_dense_gradients_match_a_loop_of_grad(method):
    r = np.random.default_rng(3)
    p = {"w": jnp.asarray(r.normal(size=(5, 3)), jnp.float32), "b": jnp.asarray(r.normal(size=(5,)), jnp.float32),
         "v": jnp.asarray(r.normal(size=(4, 5)), jnp.float32)}
    x = r.normal(size=(7, 3)).astype(np.float32)
    y = r.integers(0, 4, 7)
    ref = loop_grads(left_apply, p, x, y)
    out = grads.per_sample_grads(left_apply, p, x, y, method=method, batch_size=3)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["auto", "vmap"])
def test_an_overflowing_outer_product_is_reported(method):
    # finite inputs, finite factors, but x_i ⊗ g_i overflows float32 in row 2
    def scaled(p, x):
        return 10.0 * (x @ p["w"])
    p = {"w": jnp.zeros((3, 3), jnp.float32)}
    x = np.ones((5, 3), np.float32)
    x[2] = 3e38
    y = np.array([0, 1, 2, 0, 1])
    with pytest.raises(FloatingPointError, match=r"rows \[2\]"):
        grads.per_sample_grads(scaled, p, x, y, method=method)
    ok = grads.per_sample_grads(scaled, p, np.delete(x, 2, axis=0), np.delete(y, 2), method=method)
    np.testing.assert_allclose(ok, loop_grads(scaled, p, np.delete(x, 2, axis=0), np.delete(y, 2)), rtol=1e-6)
