"""`geda_smoothed` against an objective written here from its definition with scipy.stats.norm.cdf.

F̃(t) = mean_i Φ((t − x_i) / h); objective Σ_j w_j |F̃_D(t_j) − F̃_S(t_j)| over the interior nodes
t_j = lo + j (hi − lo) / N, w_j = step (trapezoid) or step/3 · (4, 2, 4, …) (Simpson).
"""

import itertools

import numpy as np
import pytest
from scipy.stats import norm

from jaxsubset.selectors.geda.smooth import geda_smoothed, silverman_bandwidth, smoothed_objective


def ref_table(x, num_nodes, h, quadrature="trapezoid"):
    """Φ((t_j − x_i)/h) for every item i and interior node j (a loop of norm.cdf), and the weights w_j."""
    lo, hi = min(x), max(x)
    step = (hi - lo) / num_nodes
    nodes = [lo + j * step for j in range(1, num_nodes)]
    cdf = [[norm.cdf((t - xi) / h) for t in nodes] for xi in x]
    w = [step if quadrature == "trapezoid" else step / 3 * (4 if j % 2 else 2) for j in range(1, num_nodes)]
    return cdf, w


def ref_value(table, idx):
    cdf, w = table
    total = 0.0
    for j, wj in enumerate(w):
        full = sum(row[j] for row in cdf) / len(cdf)
        sub = sum(cdf[i][j] for i in idx) / len(idx)
        total += wj * abs(full - sub)
    return total


def ref_objective(x, idx, num_nodes, h, quadrature="trapezoid"):
    return ref_value(ref_table(x, num_nodes, h, quadrature), idx)


def ref_silverman(x):
    q75, q25 = np.percentile(x, [75, 25])
    return 0.9 * min(np.std(x, ddof=1), (q75 - q25) / 1.34) * len(x) ** -0.2


@pytest.mark.parametrize("h,quadrature", [(0.3, "trapezoid"), (2.5, "trapezoid"), (0.7, "simpson")])
def test_objective_equals_the_norm_cdf_loop(h, quadrature):
    x = np.random.default_rng(3).lognormal(size=15) * 2.0
    rng = np.random.default_rng(4)
    for _ in range(5):
        idx = rng.choice(15, size=4, replace=False)
        assert smoothed_objective(x, idx, num_nodes=6, bandwidth=h, quadrature=quadrature) == pytest.approx(
            ref_objective(x, idx, 6, h, quadrature), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("k,nodes,h", [(3, 6, 0.4), (4, 5, 3.0), (3, 4, None)])
def test_optimum_equals_brute_force_on_the_reference_objective(k, nodes, h):
    x = np.random.default_rng(k + nodes).lognormal(size=10) * 1.5
    sub = geda_smoothed(x, k, num_nodes=nodes, bandwidth=h)
    hh = ref_silverman(x) if h is None else h
    assert sub.info["bandwidth"] == pytest.approx(hh, rel=1e-12)
    table = ref_table(x, nodes, hh)
    best = min(ref_value(table, c) for c in itertools.combinations(range(10), k))
    assert sub.info["status"] == "OPTIMAL" and len(sub) == k
    assert ref_objective(x, sub.indices, nodes, hh) == pytest.approx(best, abs=1e-9)
    assert sub.info["objective"] == pytest.approx(best, abs=1e-9)


def test_silverman_matches_its_formula():
    x = np.random.default_rng(5).gamma(2.0, size=300)
    assert silverman_bandwidth(x) == pytest.approx(ref_silverman(x), rel=1e-12)
