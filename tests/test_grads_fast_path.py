"""The per-call fast path of the cached public functions keeps every check.

- The NaN/inf scan of ``x`` inside the jitted call is a row sum (``finite_rows``): a row of
  finite values whose sum overflows is flagged on the device and cleared by an exact host
  re-check, while a real NaN/inf row is still refused, on a cached second call too.
- Chunks go to the jitted function as NumPy arrays: int64 labels and float64 inputs give the
  values of the canonical int32/float32 arrays.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from test_compile_cache import _listen, compiles  # noqa: F401  (the compile counter; _listen registers it)

from jaxsubset import grads
from jaxsubset.grads._inputs import NonFiniteError


def squash_apply(p, x):
    """Bounded in x: huge finite inputs give finite logits."""
    return jnp.tanh(x * 1e-38) @ p["w"] + p["b"]


def params(seed):
    r = np.random.default_rng(seed)
    return {"w": jnp.asarray(r.normal(size=(3, 4)), jnp.float32), "b": jnp.asarray(r.normal(size=(4,)), jnp.float32)}


def reference_norms(p, x, y):
    """Per-example gradient norms by a Python loop of ``jax.grad`` (independent of the ghost path)."""
    def loss(q, xi, yi):
        return -jax.nn.log_softmax(squash_apply(q, xi[None]))[0, yi]
    out = []
    for i in range(len(x)):
        g = jax.grad(loss)(p, jnp.asarray(x[i]), int(y[i]))
        out.append(np.sqrt(sum(float(jnp.sum(leaf ** 2)) for leaf in jax.tree_util.tree_leaves(g))))
    return np.asarray(out)


@pytest.mark.parametrize("fn", ["grad_norms", "losses", "per_sample_grads"])
def test_finite_rows_whose_sum_overflows_are_not_refused(fn):
    r = np.random.default_rng(0)
    x = r.normal(size=(6, 3)).astype(np.float32)
    x[4] = 3e38  # finite, but the row sums to inf in float32
    y = r.integers(0, 4, 6)
    out = getattr(grads, fn)(squash_apply, params(0), x, y)
    assert np.all(np.isfinite(out))
    if fn == "grad_norms":
        np.testing.assert_allclose(out, reference_norms(params(0), x, y), rtol=1e-5)


def test_overflowing_row_next_to_a_nan_row_names_only_the_nan_row():
    r = np.random.default_rng(1)
    x = r.normal(size=(7, 3)).astype(np.float32)
    y = r.integers(0, 4, 7)
    grads.grad_norms(squash_apply, params(0), x, y)  # cached from here on
    x[1] = -3e38
    x[5, 2] = np.inf
    x[6, 0] = np.nan
    with pytest.raises(NonFiniteError, match=r"rows \[5, 6\];"):
        grads.grad_norms(squash_apply, params(1), x, y)


def test_int64_labels_and_float64_inputs_give_the_canonical_values():
    r = np.random.default_rng(2)
    x = r.normal(size=(10, 3))
    y = r.integers(0, 4, 10)
    p = params(0)
    want = grads.grad_norms(squash_apply, p, x.astype(np.float32), y.astype(np.int32))
    got = grads.grad_norms(squash_apply, p, x, y)  # float64 / int64 numpy: canonicalized by jit
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(got, reference_norms(p, x.astype(np.float32), y), rtol=1e-5)


# --- compile once, and only once per signature -------------------------------------------------

def mlp_apply(p, x):
    h = jax.nn.relu(x.reshape(x.shape[0], -1) @ p["w1"] + p["b1"])
    return h @ p["w2"] + p["b2"]


def mlp_params(seed, d=6, hidden=5, c=4, dtype=jnp.float32):
    r = np.random.default_rng(seed)
    return {"w1": jnp.asarray(r.normal(size=(d, hidden)) * 0.5, dtype), "b1": jnp.asarray(r.normal(size=(hidden,)), dtype),
            "w2": jnp.asarray(r.normal(size=(hidden, c)) * 0.5, dtype), "b2": jnp.asarray(r.normal(size=(c,)), dtype)}


def closed_form_norms(p, x, y):
    """``||∇θ ℓ_i||`` of ``mlp_apply`` in closed form (float64 NumPy; independent of any JAX autodiff).

    ``δ2 = softmax(z) - onehot(y)``, ``δ1 = (δ2 W2ᵀ) ⊙ [pre-activation > 0]``; a dense layer's weight
    gradient is ``input ⊗ δ``, so its squared norm is ``|input|²·|δ|²``; a bias's is ``|δ|²``.
    """
    w1, b1, w2, b2 = (np.asarray(jnp.asarray(p[k], jnp.float32), np.float64) for k in ("w1", "b1", "w2", "b2"))
    x = np.asarray(np.asarray(x, np.float32), np.float64).reshape(len(x), -1)
    pre = x @ w1 + b1
    h = np.maximum(pre, 0)
    z = h @ w2 + b2
    e = np.exp(z - z.max(axis=1, keepdims=True))
    d2 = e / e.sum(axis=1, keepdims=True)
    d2[np.arange(len(y)), y] -= 1
    d1 = (d2 @ w2.T) * (pre > 0)
    sq = lambda a: np.sum(a * a, axis=1)  # noqa: E731
    return np.sqrt(sq(h) * sq(d2) + sq(d2) + sq(x) * sq(d1) + sq(d1))


def test_default_chunking_second_call_compiles_nothing_and_matches():
    r = np.random.default_rng(3)
    x = r.normal(size=(37, 6)).astype(np.float32)
    y = r.integers(0, 4, 37)
    grads.grad_norms(mlp_apply, mlp_params(0), x, y)
    out, n = compiles(lambda: grads.grad_norms(mlp_apply, mlp_params(1), x, y))
    assert n == 0
    np.testing.assert_allclose(out, closed_form_norms(mlp_params(1), x, y), rtol=2e-5)
    # the same values in other chunkings (a ragged last chunk included)
    np.testing.assert_allclose(grads.grad_norms(mlp_apply, mlp_params(1), x, y, batch_size=8), out, rtol=1e-6)


def test_default_chunk_size():
    from jaxsubset.grads.ghost import default_rows
    assert default_rows() == (1024 if jax.default_backend() == "cpu" else 256)
    assert default_rows(grads.data_mesh()) == 256  # no memory budget with a mesh: the old default


@pytest.mark.parametrize("change", ["x float16", "params bfloat16", "hidden width", "extra leaf"])
def test_changed_dtype_shape_or_tree_misses_and_is_correct(change):
    r = np.random.default_rng(4)
    x = r.normal(size=(9, 6)).astype(np.float32)
    y = r.integers(0, 4, 9)
    grads.grad_norms(mlp_apply, mlp_params(0), x, y)  # cached
    p, xx = mlp_params(1), x
    if change == "x float16":
        xx = x.astype(np.float16)
    elif change == "params bfloat16":
        p = mlp_params(1, dtype=jnp.bfloat16)
    elif change == "hidden width":
        p = mlp_params(1, hidden=7)
    else:
        p = {**p, "unused": jnp.ones((3,))}
    out, n = compiles(lambda: grads.grad_norms(mlp_apply, p, xx, y))
    assert n >= 1, change
    tol = 2e-2 if change == "params bfloat16" else 2e-5
    np.testing.assert_allclose(out, closed_form_norms(p, xx, y), rtol=tol, err_msg=change)
