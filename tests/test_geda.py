"""GEDA: every formulation and backend against brute force, a DP oracle and scipy's W1."""

import itertools

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from jaxsubset.selectors import per_class
from jaxsubset.selectors.geda import available_solvers, ecdf, geda

SOLVERS = [s for s in available_solvers() if s in ("exact", "cp-sat", "cbc", "scip", "highs")]
MIP = [s for s in SOLVERS if s not in ("exact", "cp-sat")]
CONFIGS = [  # (solver, formulation, hull_cuts)
    ("exact", "binned", True)] + [
    (s, f, cuts) for s in SOLVERS if s != "exact" for f, cuts in
    (("binned", True), ("binned", False), ("per_item", False))]


def ref_objective(x, idx, num_nodes, quadrature="trapezoid"):
    """Direct quadrature of |F_D - F_X| over the interior nodes (no binning)."""
    x = np.asarray(x, float)
    sel = x[np.asarray(idx)]
    lo, hi = x.min(), x.max()
    h = (hi - lo) / num_nodes
    total = 0.0
    for j in range(1, num_nodes):
        t = lo + j * (hi - lo) / num_nodes
        w = 1.0 if quadrature == "trapezoid" else (4.0 if j % 2 else 2.0) / 3.0
        total += w * h * abs(np.mean(x <= t) - np.mean(sel <= t))
    return total


def brute_force(x, k, num_nodes, quadrature="trapezoid"):
    if num_nodes is None:
        return min(wasserstein_distance(x, x[list(c)]) for c in itertools.combinations(range(len(x)), k))
    return min(ref_objective(x, c, num_nodes, quadrature) for c in itertools.combinations(range(len(x)), k))


def dp_optimum(problem, k):
    """Independent oracle: DP over bins on the prefix count S, O(B k^2)."""
    n, sizes, w = problem.n, problem.sizes, problem.weights
    a = np.cumsum(sizes)
    best = np.full(k + 1, np.inf)
    best[0] = 0.0
    for b in range(sizes.size):
        new = np.full(k + 1, np.inf)
        for s in range(k + 1):
            lo = max(0, s - int(sizes[b]))
            new[s] = best[lo:s + 1].min()
        if b < sizes.size - 1:
            new = new + w[b] * np.abs(a[b] / n - np.arange(k + 1) / k)
        best = new
    return best[k]


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(3)
    return np.round(rng.lognormal(size=11), 3)


ON_NODES = np.array([0.0, 2.0, 2.0, 4.0, 5.0, 6.0, 8.0, 8.0, 10.0, 3.0, 7.0])  # nodes 2, 4, 6, 8 for N=5


@pytest.mark.parametrize("solver,formulation,cuts", CONFIGS)
def test_every_backend_matches_brute_force(tiny, solver, formulation, cuts):
    for k, num_nodes, quad in [(1, 5, "trapezoid"), (4, 5, "trapezoid"), (7, 8, "simpson"), (11, 3, "trapezoid")]:
        sub = geda(tiny, k, num_nodes=num_nodes, solver=solver, formulation=formulation, hull_cuts=cuts,
                   quadrature=quad)
        best = brute_force(tiny, k, num_nodes, quad)
        assert sub.info["status"] == "OPTIMAL"
        assert len(sub) == k and np.all(np.diff(sub.indices) > 0)
        recomputed = ref_objective(tiny, sub.indices, num_nodes, quad)
        assert sub.info["objective"] == pytest.approx(recomputed, rel=1e-12, abs=1e-15)
        assert sub.info["objective"] == pytest.approx(best, rel=1e-12, abs=1e-15)
        assert sub.info["bound"] <= sub.info["objective"] + 1e-12
        assert sub.info["solver"] == solver and sub.info["formulation"] == formulation
    for k in (3, 6):   # norms equal to nodes count as <= t_j
        sub = geda(ON_NODES, k, num_nodes=5, solver=solver, formulation=formulation, hull_cuts=cuts)
        assert ref_objective(ON_NODES, sub.indices, 5) == pytest.approx(brute_force(ON_NODES, k, 5), abs=1e-15)


@pytest.mark.parametrize("solver", ["exact"] + MIP[:1])
def test_exact_wasserstein_matches_brute_force_and_scipy(tiny, solver):
    x = tiny.copy()
    x[3] = x[5]  # a tie: equal norms share one bin
    for k in (1, 3, 6, 11):
        sub = geda(x, k, num_nodes=None, solver=solver)
        w1 = wasserstein_distance(x, x[sub.indices])
        assert sub.info["objective"] == pytest.approx(w1, rel=1e-9, abs=1e-12)
        assert w1 == pytest.approx(brute_force(x, k, None), rel=1e-9, abs=1e-12)


def test_closed_form_and_solvers_match_dp_on_larger_instances():
    rng = np.random.default_rng(0)
    x = rng.lognormal(size=300)
    for num_nodes, k in [(50, 37), (7, 150), (None, 90)]:
        problem = ecdf.build(x, num_nodes)
        opt = dp_optimum(problem, k)
        assert ecdf.objective(problem, ecdf.exact_counts(problem, k), k) == pytest.approx(opt, rel=1e-10)
        if num_nodes is not None:
            sub = geda(x, k, num_nodes=num_nodes, solver="cp-sat")
            assert sub.info["objective"] == pytest.approx(opt, rel=1e-10)
            assert ref_objective(x, sub.indices, num_nodes) == pytest.approx(opt, rel=1e-10)


def test_degenerate_inputs():
    same = np.full(6, 2.5)
    for solver in ("exact", "cp-sat"):
        sub = geda(same, 4, solver=solver)
        assert len(sub) == 4 and sub.info["objective"] == 0.0
    x = np.array([0.3, 0.1, 0.9, 0.5, 0.7])
    full = geda(x, 5)
    np.testing.assert_array_equal(full.indices, np.arange(5))
    assert full.info["objective"] == 0.0
    empty = geda(x, 0)
    assert len(empty) == 0 and empty.info["status"] == "TRIVIAL"
    one = geda(x, 1, num_nodes=4)          # the best single point sits at the median node
    assert ref_objective(x, one.indices, 4) == pytest.approx(brute_force(x, 1, 4))
    ties = np.array([1.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 3.0])
    sub = geda(ties, 4, num_nodes=4, solver="cp-sat")
    assert sub.info["objective"] == pytest.approx(brute_force(ties, 4, 4))


@pytest.mark.parametrize("solver", ["exact", "cp-sat"] + MIP[:1])
def test_permuting_the_input_permutes_the_selection(solver):
    rng = np.random.default_rng(1)
    x = rng.lognormal(size=60)
    perm = rng.permutation(60)
    a = geda(x, 17, num_nodes=6, solver=solver)
    b = geda(x[perm], 17, num_nodes=6, solver=solver)
    np.testing.assert_array_equal(np.sort(perm[b.indices]), a.indices)


def test_within_bin_rules():
    x = np.arange(1.0, 21.0)                 # 20 distinct norms, 4 bins of 5 with num_nodes=4
    problem = ecdf.build(x, 4)
    np.testing.assert_array_equal(problem.sizes, [5, 5, 5, 5])
    counts = np.array([2, 1, 0, 5])
    assert ecdf.pick_in_bins(problem, counts, "lowest").tolist() == [0, 1, 5, 15, 16, 17, 18, 19]
    assert ecdf.pick_in_bins(problem, counts, "highest").tolist() == [3, 4, 9, 15, 16, 17, 18, 19]
    # evenly spaced: ranks floor((2i+1)*5/(2c)) -> c=2: 1, 3; c=1: 2
    assert ecdf.pick_in_bins(problem, counts, "evenly_spaced").tolist() == [1, 3, 7, 15, 16, 17, 18, 19]
    r = ecdf.pick_in_bins(problem, counts, "random", seed=4)
    np.testing.assert_array_equal(ecdf.counts_of(problem, r), counts)
    assert len(np.unique(r)) == 8
    draws = {tuple(ecdf.pick_in_bins(problem, counts, "random", seed=s)) for s in range(10)}
    assert len(draws) > 1
    y = np.random.default_rng(0).lognormal(size=200)
    objs = {rule: geda(y, 50, rule=rule).info["objective"] for rule in ecdf.RULES}
    assert len(set(objs.values())) == 1     # the rule never changes the objective


def test_geda_runs_per_class():
    rng = np.random.default_rng(2)
    norms, labels = rng.lognormal(size=90), np.repeat([0, 1, 2], 30)
    sub = per_class(geda, labels, 30, arrays={"norms": norms}, num_nodes=5)
    assert len(sub) == 30 and np.all(np.bincount(labels[sub.indices]) == 10)
    for c in range(3):
        rows = np.flatnonzero(labels == c)
        chosen = np.intersect1d(sub.indices, rows)
        assert ref_objective(norms[rows], np.searchsorted(rows, chosen), 5) == pytest.approx(
            sub.info["per_class"][c]["objective"], rel=1e-12, abs=1e-15)


def test_bad_input_raises_clear_errors():
    x = np.array([0.1, 0.4, 0.2, 0.9])
    with pytest.raises(ValueError, match=">= 0"):
        geda(np.array([0.1, -0.2, 0.3]), 1)
    with pytest.raises(ValueError, match="NaN or inf"):
        geda(np.array([0.1, np.nan, 0.3]), 1)
    with pytest.raises(ValueError, match="larger than the pool"):
        geda(x, 5)
    with pytest.raises(ValueError, match=">= 0"):
        geda(x, -1)
    with pytest.raises(ValueError, match="num_nodes must be >= 1"):
        geda(x, 2, num_nodes=0)
    with pytest.raises(ValueError, match="even number"):
        geda(x, 2, num_nodes=5, quadrature="simpson")
    with pytest.raises(ValueError, match="cp-sat") as err:
        geda(x, 2, solver="gurobi-ish")
    assert "cbc" in str(err.value) or "scip" in str(err.value)
    with pytest.raises(ValueError, match="integer objective weights"):
        geda(x, 2, num_nodes=None, solver="cp-sat")
    with pytest.raises(ValueError, match="formulation"):
        geda(x, 2, formulation="dense")
    with pytest.raises(ValueError, match="rule"):
        geda(x, 2, rule="median")
    with pytest.raises(ValueError, match="time_limit_s"):
        geda(x, 2, time_limit_s=0)


def test_time_limit_without_a_solution_raises():
    x = np.random.default_rng(0).lognormal(size=3000)
    with pytest.raises(RuntimeError, match="time_limit_s"):
        geda(x, 1000, num_nodes=50, formulation="per_item", solver="cp-sat", time_limit_s=1e-6)
