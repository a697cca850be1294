"""GEDA's within-bin rules, and the finding that the evenly spaced selector is GEDA-optimal."""

import numpy as np
import pytest

from jaxsubset.selectors import METHODS, evenly_spaced, geda_solvers, select
from jaxsubset.selectors.geda import ecdf, geda


def _instances(count, seed=0):
    rng = np.random.default_rng(seed)
    for t in range(count):
        n = int(rng.integers(1, 60))
        k = int(rng.integers(1, n + 1))
        kind = t % 3
        if kind == 0:
            x = rng.lognormal(size=n)
        elif kind == 1:
            x = rng.integers(0, 6, size=n).astype(float)     # many ties
        else:
            x = np.abs(rng.standard_cauchy(size=n))          # heavy tail: most items in the first bin
        yield x, k, (None, 1, 2, 3, 5, 7, 20)[t % 7]


def _dp_optimum(problem, k):
    """Independent oracle: DP over bins on the prefix count, exact integer terms |a_j k - S_j n|."""
    n, sizes = problem.n, problem.sizes
    a = np.cumsum(sizes)
    best = np.full(k + 1, np.inf)
    best[0] = 0.0
    for b in range(sizes.size):
        new = np.array([best[max(0, s - int(sizes[b])):s + 1].min() for s in range(k + 1)])
        if b < sizes.size - 1:
            new = new + problem.weights[b] * np.abs(a[b] * k - np.arange(k + 1) * n) / (n * k)
        best = new
    return best[k]


def test_evenly_spaced_attains_the_geda_optimum():
    """The finding: evenly spaced ranks are an optimal GEDA selection for any N and for exact W1."""
    checked = 0
    for x, k, nodes in _instances(600):
        problem = ecdf.build(x, nodes)
        sel = evenly_spaced(x, k).indices
        got = ecdf.objective(problem, ecdf.counts_of(problem, sel), k)
        opt = _dp_optimum(problem, k)
        assert abs(got - opt) <= 1e-12 * max(1.0, opt), (x, k, nodes, got, opt)
        # prefix counts are a nearest integer of a_j k / n (ties at .5 may round either way)
        s = np.cumsum(ecdf.counts_of(problem, sel))[:-1]
        assert np.all(np.abs(s * problem.n - problem.prefix * k) * 2 <= problem.n)
        checked += 1
    assert checked == 600


@pytest.mark.parametrize("rule", ["evenly_spaced", "random", "solver"])
def test_every_rule_keeps_the_optimal_bin_counts(rule):
    for x, k, nodes in _instances(60, seed=1):
        sub = geda(x, k, num_nodes=nodes, rule=rule, seed=3, solver="exact")
        problem = ecdf.build(x, nodes)
        assert len(sub) == k and np.unique(sub.indices).size == k
        np.testing.assert_array_equal(ecdf.counts_of(problem, sub.indices), ecdf.exact_counts(problem, k))
        assert sub.info["rule"] == rule
        assert abs(sub.info["objective"] - _dp_optimum(problem, k)) <= 1e-12 * max(1.0, sub.info["objective"])


def test_random_rule_is_seeded_and_differs_from_evenly_spaced():
    x = np.random.default_rng(5).lognormal(size=400)
    a = geda(x, 100, rule="random", seed=1).indices
    np.testing.assert_array_equal(a, geda(x, 100, rule="random", seed=1).indices)
    assert not np.array_equal(a, geda(x, 100, rule="random", seed=2).indices)
    ev = geda(x, 100, rule="evenly_spaced").indices
    assert np.intersect1d(a, ev).size < 60
    # stratified uniform draw: every item of a bin is equally likely (count / size), checked over seeds
    problem = ecdf.build(x, 5)
    counts = ecdf.exact_counts(problem, 100)
    hits = np.zeros(x.size)
    for s in range(300):
        hits[geda(x, 100, rule="random", seed=s).indices] += 1
    big = np.argmax(problem.sizes)
    members = np.flatnonzero(problem.bin_of == big)
    p = counts[big] / problem.sizes[big]
    freq = hits[members] / 300
    assert abs(freq.mean() - p) < 1e-12                              # exact: each draw takes counts[big]
    assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / 300))  # no item favoured (e.g. by norm)


def test_solver_rule_takes_the_last_rows_of_each_bin():
    x = np.array([5.0, 1.0, 4.0, 2.0, 3.0, 1.5, 4.5, 5.5, 2.5, 3.5])
    problem = ecdf.build(x, 2)   # nodes at 3.25: bin 0 = rows {1,3,4,5,8}, bin 1 = rows {0,2,6,7,9}
    np.testing.assert_array_equal(problem.bin_of, [1, 0, 1, 0, 0, 0, 1, 1, 0, 1])
    assert ecdf.pick_in_bins(problem, np.array([2, 3]), "solver").tolist() == [5, 6, 7, 8, 9]
    sub = geda(x, 4, num_nodes=2, rule="solver")
    assert sub.indices.tolist() == [5, 7, 8, 9]
    # a row permutation changes the pick (data order), an evenly spaced pick does not
    perm = np.random.default_rng(0).permutation(x.size)
    a = geda(x[perm], 4, num_nodes=2, rule="solver").indices
    np.testing.assert_array_equal(a, ecdf.solver_pick(ecdf.build(x[perm], 2), np.array([2, 2])))


@pytest.mark.skipif("highs" not in geda_solvers(), reason="OR-Tools built without HiGHS")
def test_solver_rule_is_what_highs_picks_on_the_per_item_model():
    """Second implementation: the study's per-item MILP solved by HiGHS chooses the same rows."""
    rng = np.random.default_rng(11)
    for n, k in ((180, 60), (90, 20), (120, 70)):
        x = rng.gamma(2.0, 1.0, size=n)
        milp = geda(x, k, formulation="per_item", solver="highs").indices
        problem = ecdf.build(x, 5)
        # HiGHS may land on another optimal count vector; inside each bin it takes the last rows
        np.testing.assert_array_equal(milp, ecdf.solver_pick(problem, ecdf.counts_of(problem, milp)))


def test_unknown_rule_names_the_choices():
    with pytest.raises(ValueError, match="evenly_spaced.*random.*solver"):
        geda(np.arange(1.0, 9.0), 3, rule="data_order")


def test_rule_variants_are_registered():
    assert METHODS["geda_random"].kwargs == {"rule": "random"}
    assert METHODS["geda_solver"].kwargs == {"rule": "solver"}
    rng = np.random.default_rng(0)
    norms, labels = rng.lognormal(size=120), np.repeat([0, 1, 2], 40)
    a = select("geda_random", labels, 30, {"grad_norm": norms}, seed=0)
    b = select("geda_random", labels, 30, {"grad_norm": norms}, seed=1)
    assert len(a) == 30 and not np.array_equal(a.indices, b.indices)
    c = select("geda_solver", labels, 30, {"grad_norm": norms})
    for cls in range(3):
        rows = np.flatnonzero(labels == cls)
        expect = rows[geda(norms[rows], 10, rule="solver").indices]
        np.testing.assert_array_equal(np.intersect1d(c.indices, rows), expect)
