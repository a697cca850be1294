"""Similarity kernels and facility-location greedy (naive / lazy / stochastic)."""

import itertools
import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from jaxsubset import kernels
from jaxsubset.selectors.facility import facility_location, facility_value


def _ref_value(S, sel, b):
    return 0.0 if not sel else float(np.maximum(S[list(sel)].max(0) - b, 0).sum())


def _ref_greedy(S, k):
    """Textbook greedy that re-evaluates F from scratch; ties to the lowest index."""
    S = np.asarray(S, np.float64)
    b = S.min()
    sel = []
    for _ in range(k):
        base = _ref_value(S, sel, b)
        gains = [(_ref_value(S, sel + [j], b) - base) if j not in sel else -np.inf for j in range(S.shape[0])]
        sel.append(int(np.argmax(gains)))
    return sel


# ----------------------------------------------------------------------------- kernels

@pytest.mark.parametrize("metric", kernels.METRICS)
def test_similarity_matches_closed_forms(metric):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(23, 7)), rng.normal(size=(11, 7))
    a[3] = 0.0  # zero vector: cosine 0
    S = kernels.similarity(a, b, metric=metric, gamma=0.3, chunk=5)
    if metric == "dot":
        ref = a @ b.T
    elif metric == "euclidean":
        ref = -cdist(a, b)
    elif metric == "rbf":
        ref = np.exp(-0.3 * cdist(a, b, "sqeuclidean"))
    else:
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        ref = (a @ b.T) / np.maximum(na[:, None] * nb[None, :], 1e-30)
    assert S.shape == (23, 11) and S.dtype == np.float32
    np.testing.assert_allclose(S, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("metric", kernels.METRICS)
def test_last_layer_similarity_equals_materialized_gradients(metric):
    rng = np.random.default_rng(1)
    e, h = rng.normal(size=(17, 4)), rng.normal(size=(17, 6))
    g = kernels.materialize_last_layer(e, h)
    # layout: g.reshape(C, d+1)[c] = e_c * [h, 1]
    np.testing.assert_allclose(g[2].reshape(4, 7), np.outer(e[2], np.append(h[2], 1.0)), rtol=1e-6)
    fac = kernels.similarity((e, h), metric=metric, gamma=0.01)
    mat = kernels.similarity(g, metric=metric, gamma=0.01)
    np.testing.assert_allclose(fac, mat, rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(kernels.last_layer_gram(e, h), g @ g.T, rtol=1e-4, atol=1e-3)
    v = rng.normal(size=g.shape[1])
    np.testing.assert_allclose(kernels.last_layer_dot(e.astype(np.float32), h.astype(np.float32), v), g @ v,
                               rtol=1e-4, atol=1e-4)


def test_similarity_blocks_and_exact_self_pairs():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 5)) * 1e3  # large norms: float32 cancellation on the diagonal
    op = kernels.similarity_op(x, metric="euclidean")
    S = op.dense(chunk=7)
    assert np.all(np.diag(S) == 0.0)
    np.testing.assert_array_equal(op.block([5, 1, 30], [30, 2, 5]), S[np.ix_([5, 1, 30], [30, 2, 5])])
    np.testing.assert_allclose(op.transpose().block([3], [4, 9]), S[[4, 9]][:, [3]].T)
    assert np.all(np.diag(kernels.similarity(x, metric="rbf")) == 1.0)


def test_kernel_bad_input():
    with pytest.raises(ValueError, match="metric"):
        kernels.similarity(np.ones((3, 2)), metric="manhattan")
    x = np.ones((4, 3)); x[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*rows \[2\]"):
        kernels.similarity(x)
    with pytest.raises(ValueError, match="columns"):
        kernels.similarity(np.ones((3, 2)), np.ones((3, 4)))
    with pytest.raises(ValueError, match="rows"):
        kernels.similarity((np.ones((3, 2)), np.ones((4, 5))))
    with pytest.raises(ValueError, match="gamma"):
        kernels.similarity(np.ones((3, 2)), metric="rbf", gamma=-1.0)


# ----------------------------------------------------------------------------- facility location

def test_facility_value_is_monotone_and_submodular():
    rng = np.random.default_rng(3)
    for trial in range(30):
        m, n = rng.integers(3, 12), rng.integers(2, 15)
        S = rng.normal(size=(m, n))
        assert facility_value(S, []) == 0.0
        B = [j for j in range(m) if rng.random() < 0.5]
        A = [j for j in B if rng.random() < 0.5]
        rest = [j for j in range(m) if j not in B]
        if not rest:
            continue
        x = int(rng.choice(rest))
        fa, fb = facility_value(S, A), facility_value(S, B)
        ga, gb = facility_value(S, A + [x]) - fa, facility_value(S, B + [x]) - fb
        assert fb >= fa - 1e-12                    # monotone
        assert ga >= gb - 1e-12 and gb >= -1e-12   # diminishing returns


@pytest.mark.parametrize("seed", range(4))
def test_lazy_and_naive_equal_reference_greedy(seed):
    rng = np.random.default_rng(seed)
    m, n = 25, 30 if seed % 2 else 25
    S = rng.normal(size=(m, n)).astype(np.float32)
    k = 9
    ref = _ref_greedy(S, k)
    for opt in ("naive", "lazy"):
        r = facility_location(S, k, optimizer=opt)
        assert r.order.tolist() == ref, opt
        np.testing.assert_allclose(r.value, _ref_value(S.astype(np.float64), ref, S.min()), rtol=1e-5)
        np.testing.assert_allclose(np.cumsum(r.gains)[-1], r.value)
        assert np.all(np.diff(r.gains) <= 1e-4)  # greedy gains of a submodular function never increase
    r = facility_location(S, k, optimizer="lazy", lazy_batch=4)
    assert r.order.tolist() == ref


def test_lazy_equals_naive_on_operator_and_assignment_is_nearest_pick():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(120, 6))
    op = kernels.similarity_op(x, metric="euclidean")
    naive = facility_location(op, 15, optimizer="naive")
    lazy = facility_location(op, 15, optimizer="lazy")
    assert naive.order.tolist() == lazy.order.tolist()
    assert lazy.evaluations < 120 * 15 // 2  # far fewer than re-evaluating every candidate each step
    d = cdist(x, x[lazy.order])
    np.testing.assert_array_equal(lazy.assignment, np.argmin(d, axis=1))
    # CRAIG's objective: Σ_i (max pairwise distance - distance to the nearest pick).
    np.testing.assert_allclose(lazy.value, np.sum(cdist(x, x).max() - d.min(1)), rtol=1e-5)


def test_stochastic_greedy_within_guarantee():
    rng = np.random.default_rng(11)
    m, k, eps = 12, 3, 0.2
    S = rng.random((m, 20))
    opt = max(facility_value(S, list(c), 0.0 + S.min()) for c in itertools.combinations(range(m), k))
    greedy = facility_location(S, k, optimizer="lazy").value
    assert greedy >= (1 - 1 / math.e) * opt - 1e-9
    vals = [facility_location(S, k, optimizer="stochastic", epsilon=eps, seed=s).value for s in range(40)]
    assert all(v <= opt * (1 + 1e-6) for v in vals)  # float32 similarities
    # A sample covering all candidates every step is the exact greedy.
    full = facility_location(S, k, optimizer="stochastic", epsilon=1e-9)
    assert full.order.tolist() == facility_location(S, k, optimizer="naive").order.tolist()
    # Deterministic for a seed; different seeds explore differently.
    a = facility_location(S, k, optimizer="stochastic", epsilon=eps, seed=5)
    assert a.order.tolist() == facility_location(S, k, optimizer="stochastic", epsilon=eps, seed=5).order.tolist()


def test_stochastic_greedy_close_to_naive_greedy_where_random_subsets_are_not():
    """8 separated clusters of 10, RBF similarity, k = 8: the greedy covers every cluster. Every stochastic
    run (eps = 0.2, 40 seeds) stays above 0.78 x the naive greedy's value (mean above 0.85; observed min 0.81,
    mean 0.90) while every one of 200 random 8-subsets falls below 0.78 (observed max 0.72): the bound can fail."""
    rng = np.random.default_rng(11)
    centers = rng.normal(size=(8, 5)) * 6
    x = np.concatenate([c + rng.normal(size=(10, 5)) for c in centers])
    S = np.exp(-cdist(x, x, "sqeuclidean") / 4)
    greedy = facility_location(S, 8, optimizer="naive").value
    sto = np.array([facility_location(S, 8, optimizer="stochastic", epsilon=0.2, seed=s).value for s in range(40)])
    assert np.all(sto >= 0.78 * greedy) and sto.mean() >= 0.85 * greedy
    rr = np.random.default_rng(0)
    rand = np.array([facility_value(S, rr.choice(80, 8, replace=False)) for _ in range(200)])
    assert np.all(rand < 0.78 * greedy) and rand.mean() < 0.85 * greedy


def test_user_baseline_and_empty_budget():
    rng = np.random.default_rng(4)
    S = rng.normal(size=(10, 10))
    r = facility_location(S, 4, baseline=0.0)
    assert S.min() < 0 and r.order.tolist() == _ref_greedy(np.maximum(S, 0.0), 4)
    np.testing.assert_allclose(r.value, facility_value(S, r.order, 0.0), rtol=1e-6)
    z = facility_location(S, 0)
    assert z.order.size == 0 and z.value == 0.0 and np.all(z.assignment == -1)


def test_facility_bad_input():
    S = np.zeros((4, 4))
    with pytest.raises(ValueError, match="larger than the pool"):
        facility_location(S, 5)
    with pytest.raises(ValueError, match="optimizer"):
        facility_location(S, 2, optimizer="greedy++")
    with pytest.raises(ValueError, match="epsilon"):
        facility_location(S, 2, optimizer="stochastic", epsilon=1.5)
    S[1, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        facility_location(S, 2)
