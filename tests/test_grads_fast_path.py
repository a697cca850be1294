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
