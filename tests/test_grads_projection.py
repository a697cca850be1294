"""Johnson–Lindenstrauss sketches of per-sample gradients, and gradient Gram matrices."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxsubset import grads
from jaxsubset.grads import projection
from jaxsubset.models import MLP, to_pure

# Leaf sizes chosen so that, with k = 512 (2048 rows per block), one leaf spans two full
# blocks plus a remainder (the fori_loop path), one fits in a single partial block.
SIZES = (2 * 2048 + 100, 700, 1200)


def _random_leaves(n, seed=0):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.normal(size=(n, s)), jnp.float32) for s in SIZES]


@pytest.mark.parametrize("kind", projection.KINDS)
def test_blockwise_projection_equals_explicit_matrix(kind):
    leaves = _random_leaves(3)
    ids = [0, 4, 2]
    out = np.asarray(grads.project(leaves, ids, 512, seed=7, kind=kind))
    r = grads.projection_matrix(SIZES, ids, 512, seed=7, kind=kind)
    assert r.shape == (sum(SIZES), 512)
    np.testing.assert_allclose(out, np.concatenate([np.asarray(v) for v in leaves], 1) @ r, rtol=1e-4, atol=1e-3)
    # Same seed, same matrix; another seed, another matrix; entries of a Rademacher R are ±1/sqrt(k).
    np.testing.assert_array_equal(r, grads.projection_matrix(SIZES, ids, 512, seed=7, kind=kind))
    assert not np.allclose(r, grads.projection_matrix(SIZES, ids, 512, seed=8, kind=kind))
    if kind == "rademacher":
        np.testing.assert_allclose(np.abs(r), 1 / np.sqrt(512))


@pytest.mark.parametrize("kind", projection.KINDS)
def test_inner_products_preserved_within_jl_bound(kind):
    """n = 20 random vectors in R^6096 projected to k = 512 (fixed seeds).

    Johnson–Lindenstrauss: with probability >= 1 - delta every normalized inner-product
    error |<Ru, Rv> - <u, v>| / (|u||v|) is below eps = sqrt(8 ln(n^2 / delta) / k);
    delta = 0.01 gives eps = 0.40. The error of one pair has variance about 1/k for
    nearly orthogonal u, v, so the mean squared error must also lie in [0.6/k, 1.5/k].
    """
    n, k, delta = 20, 512, 0.01
    leaves = _random_leaves(n, seed=1)
    u = np.concatenate([np.asarray(v) for v in leaves], 1).astype(np.float64)
    pu = np.asarray(grads.project(leaves, [0, 1, 2], k, seed=3, kind=kind), np.float64)
    norms = np.linalg.norm(u, axis=1)
    err = (pu @ pu.T - u @ u.T) / np.outer(norms, norms)
    eps = np.sqrt(8 * np.log(n ** 2 / delta) / k)
    assert np.max(np.abs(err)) <= eps
    off = err[~np.eye(n, dtype=bool)]
    assert 0.6 / k <= np.mean(off ** 2) <= 1.5 / k


@functools.lru_cache(maxsize=None)
def _mlp():
    return to_pure(MLP(8, 3, hidden=(5,), rngs=nnx.Rngs(0)))


def _xy(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8)).astype(np.float32), rng.integers(0, 3, n)


def test_per_sample_grads_projection_is_full_grads_times_r():
    m = _mlp()
    x, y = _xy()
    full = grads.per_sample_grads(m.apply_fn, m.params, x, y)
    sizes = [leaf.size for leaf in jax.tree_util.tree_leaves(m.params)]
    for kind in projection.KINDS:
        sk = grads.per_sample_grads(m.apply_fn, m.params, x, y, project_dim=16, projection=kind, seed=5,
                                    batch_size=4)
        r = grads.projection_matrix(sizes, range(len(sizes)), 16, seed=5, kind=kind)
        np.testing.assert_allclose(sk, full @ r, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="Unknown projection"):
        grads.per_sample_grads(m.apply_fn, m.params, x, y, project_dim=4, projection="sparse")


def test_gram_last_layer_and_exact():
    m = _mlp()
    x, y = _xy()
    x2, y2 = _xy(4, seed=1)
    g = grads.last_layer_grads(m.apply_with_embedding, m.params, x, y)
    g2 = grads.last_layer_grads(m.apply_with_embedding, m.params, x2, y2)
    k = grads.gram(m.apply_with_embedding, m.params, x, y)
    np.testing.assert_allclose(k, g @ g.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads.gram(m.apply_with_embedding, m.params, x, y, x2, y2), g @ g2.T,
                               rtol=1e-5, atol=1e-6)
    exact_head = grads.gram(m.apply_fn, m.params, x, y, x2, y2, method="exact", wrt="head", batch_size=4)
    np.testing.assert_allclose(exact_head, g @ g2.T, rtol=1e-5, atol=1e-6)
    full = grads.per_sample_grads(m.apply_fn, m.params, x, y)
    np.testing.assert_allclose(grads.gram(m.apply_fn, m.params, x, y, method="exact"), full @ full.T,
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="both x2 and y2"):
        grads.gram(m.apply_with_embedding, m.params, x, y, x2)
    with pytest.raises(ValueError, match="method='exact' only"):
        grads.gram(m.apply_with_embedding, m.params, x, y, project_dim=4)
