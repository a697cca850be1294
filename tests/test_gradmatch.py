"""GRAD-MATCH: OMP with non-negative weights, per example and per mini-batch."""

import sys

import numpy as np
import pytest
import scipy.optimize

from jaxsubset.kernels import materialize_last_layer
from jaxsubset.selectors.gradmatch import gradmatch, gradmatch_batches, gradmatch_last_layer
from jaxsubset.solvers.omp import GramSolver, nnls_gram, omp
from jaxsubset.selectors.per_class import per_class


def test_nnls_gram_equals_scipy_nnls():
    rng = np.random.default_rng(0)
    for trial in range(20):
        m, p = rng.integers(5, 40), rng.integers(1, 15)
        A, b = rng.normal(size=(m, p)), rng.normal(size=m)
        ref = scipy.optimize.nnls(A, b)[0]
        x = nnls_gram(A.T @ A, A.T @ b)
        np.testing.assert_allclose(x, ref, atol=1e-8)
        warm = nnls_gram(A.T @ A, A.T @ b, x0=rng.random(p))  # any feasible warm start
        np.testing.assert_allclose(warm, ref, atol=1e-8)


@pytest.mark.parametrize("seed", range(3))
def test_omp_recovers_planted_nonnegative_combination(seed):
    rng = np.random.default_rng(seed)
    n, D, k = 120, 200, 6
    g = rng.normal(size=(n, D)).astype(np.float32)
    support = rng.choice(n, k, replace=False)
    coef = rng.uniform(0.5, 2.0, k)
    target = coef @ g[support].astype(np.float64) / n  # a mean-scale gradient
    sub = gradmatch(g, k, target=target, lam=0.0)
    np.testing.assert_array_equal(sub.indices, np.sort(support))
    np.testing.assert_allclose(sub.weights, coef[np.argsort(support)], rtol=1e-3)
    # A larger budget stops once the target is matched instead of adding noise atoms.
    more = gradmatch(g, 3 * k, target=target, lam=0.0, fill=False)
    assert set(more.indices[more.weights > 1e-3].tolist()) == set(support.tolist())
    assert len(more) < 3 * k and more.info["stop"] != "budget"


def test_planted_recovery_with_last_layer_factors():
    rng = np.random.default_rng(5)
    e, h = rng.normal(size=(90, 4)), rng.normal(size=(90, 30))
    g = materialize_last_layer(e, h).astype(np.float64)
    support = np.array([3, 17, 40, 71])
    coef = np.array([1.0, 2.5, 0.7, 1.3])
    target = (coef @ g[support] / 90).reshape(4, 31)  # (C, d+1) matrix form is accepted
    sub = gradmatch(None, 4, factors=(e, h), target=target, lam=0.0)
    np.testing.assert_array_equal(sub.indices, support)
    np.testing.assert_allclose(sub.weights, coef, rtol=1e-3)


def test_gradmatch_beats_random_subsets_and_factors_equal_materialized():
    rng = np.random.default_rng(1)
    n, D, k = 150, 40, 8
    centers = rng.normal(size=(5, D))
    g = centers[rng.integers(5, size=n)] + 0.5 * rng.normal(size=(n, D))
    full = g.sum(0)
    sub = gradmatch(g, k, lam=0.0)
    assert len(sub) == k and np.all(sub.weights >= 0)
    err = np.linalg.norm(sub.weights @ g[sub.indices] - full)
    np.testing.assert_allclose(err / np.linalg.norm(full), sub.info["residual"][-1], rtol=1e-3)
    assert np.all(np.diff(sub.info["residual"]) <= 1e-9)  # re-fitting never increases the residual
    for _ in range(20):  # random subsets, even with their optimal non-negative weights
        idx = rng.choice(n, k, replace=False)
        w = scipy.optimize.nnls(g[idx].T, full)[0]
        assert err < np.linalg.norm(w @ g[idx] - full)
    e, h = rng.normal(size=(60, 3)), rng.normal(size=(60, 7))
    a = gradmatch_last_layer(e, h, 10)
    b = gradmatch(materialize_last_layer(e, h), 10)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.weights, b.weights, rtol=1e-3, atol=1e-4)


def test_omp_signed_weights_and_ridge_shrink():
    rng = np.random.default_rng(2)
    A = rng.normal(size=(50, 30))
    b = A[[4, 9]].T @ np.array([2.0, -1.5])
    G = A @ A.T
    res = omp(lambda j: G[:, j], A @ b, float(b @ b), 5, nonneg=False)
    assert sorted(res["order"].tolist()) == [4, 9] and res["stop"] == "matched"
    np.testing.assert_allclose(res["weights"][np.argsort(res["order"])], [2.0, -1.5], rtol=1e-6)
    plain = gradmatch(A, 5, lam=0.0)
    ridged = gradmatch(A, 5, lam=10.0)
    assert ridged.weights.sum() < plain.weights.sum()


def test_per_batch_selects_whole_batches():
    rng = np.random.default_rng(3)
    e, h = rng.normal(size=(103, 3)), rng.normal(size=(103, 6))
    g = materialize_last_layer(e, h).astype(np.float64)
    sub = gradmatch_batches(None, 40, batch_size=10, factors=(e, h), seed=4, lam=0.0)
    batches = sub.info["batches"]
    assert len(batches) <= 4 and len(sub) <= 40
    perm = np.random.default_rng(4).permutation(103)
    all_batches = {tuple(sorted(perm[s:s + 10])) for s in range(0, 103, 10)}
    pos = {int(i): p for p, i in enumerate(sub.indices)}
    for b in batches:
        assert tuple(sorted(b)) in all_batches
        assert len({float(sub.weights[pos[int(i)]]) for i in b}) == 1  # one weight per batch
    # The residual it reports is the real one for the expanded per-example weights.
    err = np.linalg.norm(sub.weights @ g[sub.indices] - g.sum(0)) / np.linalg.norm(g.sum(0))
    np.testing.assert_allclose(err, sub.info["residual"][-1], rtol=1e-3)
    mat = gradmatch_batches(g, 40, batch_size=10, seed=4, lam=0.0)
    np.testing.assert_array_equal(mat.indices, sub.indices)


def test_per_class_gradmatch():
    rng = np.random.default_rng(6)
    y = np.repeat([0, 1], [40, 20])
    g = rng.normal(size=(60, 12))
    sub = per_class(gradmatch, y, 9, arrays={"grads": g})
    counts = np.bincount(y[sub.indices], minlength=2)
    assert counts[0] <= 6 and counts[1] <= 3 and len(sub) > 0


def test_gradmatch_bad_input():
    g = np.ones((6, 4))
    with pytest.raises(ValueError, match="larger than the pool"):
        gradmatch(g, 7)
    with pytest.raises(ValueError, match=r"target has shape \(3,\).*dimension 4"):
        gradmatch(g, 2, target=np.ones(3))
    with pytest.raises(ValueError, match=r"dimension 8"):
        gradmatch(None, 2, factors=(np.ones((6, 2)), np.ones((6, 3))), target=np.ones((2, 3)))
    with pytest.raises(ValueError, match="lam"):
        gradmatch(g, 2, lam=-1.0)
    with pytest.raises(ValueError, match="nonneg"):
        gradmatch(g, 2, nonneg=False)
    with pytest.raises(ValueError, match="smaller than one batch"):
        gradmatch_batches(g, 2, batch_size=3)
    with pytest.raises(ValueError, match="batch_size"):
        gradmatch_batches(g, 2, batch_size=0)
    bad = g.copy(); bad[1, 1] = np.nan
    with pytest.raises(ValueError, match=r"grads contain NaN or inf in rows \[1\]"):
        gradmatch(bad, 2)
    with pytest.raises(ValueError, match="NaN"):
        gradmatch(g, 2, target=np.array([1.0, np.nan, 0.0, 0.0]))


def test_matrix_free_pursuit_equals_gram_columns(monkeypatch):
    rng = np.random.default_rng(7)
    e, h = rng.normal(size=(300, 5)).astype(np.float32), rng.normal(size=(300, 40)).astype(np.float32)
    g = materialize_last_layer(e, h)
    for args, kw in [((None, 40), dict(factors=(e, h))), ((g, 40), {})]:
        cached = gradmatch(*args, matrix_free=False, **kw)
        free = gradmatch(*args, matrix_free=True, **kw)
        assert not cached.info["matrix_free"] and free.info["matrix_free"]
        np.testing.assert_array_equal(free.info["order"], cached.info["order"])
        np.testing.assert_allclose(free.weights, cached.weights, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(free.info["residual"], cached.info["residual"], rtol=1e-4)
    # The default switches to matrix-free once k × n float32 columns would pass 16 MiB.
    assert gradmatch(None, 40, factors=(e, h)).info["matrix_free"] is False
    monkeypatch.setattr(sys.modules["jaxsubset.selectors.gradmatch"], "_COLUMN_CACHE_BYTES", 4 * 300 * 40 - 1)
    assert gradmatch(None, 40, factors=(e, h)).info["matrix_free"] is True


def test_gram_solver_reuses_prefixes_and_grows():
    """Appending, dropping and re-adding indices gives the direct solve every time (packed factor)."""

    rng = np.random.default_rng(8)
    A = rng.normal(size=(60, 25))
    Q, c = (A.T @ A).astype(np.float32), rng.normal(size=25)
    solver = GramSolver(3)  # smaller than the sets below: the packed buffer must grow
    idx = np.arange(4)
    for _ in range(40):
        z = solver.solve(Q, c, idx)
        ref = np.linalg.solve(Q[np.ix_(idx, idx)].astype(np.float64), c[idx])
        np.testing.assert_allclose(z, ref, rtol=1e-8, atol=1e-10)
        if rng.random() < 0.6 and idx.size < 25:
            idx = np.append(idx, rng.choice(np.setdiff1d(np.arange(25), idx)))
        elif idx.size > 1:
            idx = np.delete(idx, rng.integers(idx.size))
