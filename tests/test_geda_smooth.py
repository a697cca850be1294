import itertools

import numpy as np
import pytest

from jaxsubset.selectors.geda.ecdf import geda_objective
from jaxsubset.selectors.geda import geda
from jaxsubset.selectors.geda.smooth import geda_smoothed, silverman_bandwidth, smoothed_objective


def _brute(x, k, **kw):
    return min(smoothed_objective(x, list(c), **kw) for c in itertools.combinations(range(x.size), k))


@pytest.mark.parametrize("k,nodes,h", [(3, 6, None), (5, 10, 0.3), (2, 4, 2.0), (6, 8, None)])
def test_optimal_against_brute_force(k, nodes, h):
    x = np.random.default_rng(k).lognormal(size=11)
    sub = geda_smoothed(x, k, num_nodes=nodes, bandwidth=h)
    ref = _brute(x, k, num_nodes=nodes, bandwidth=h)
    assert sub.info["status"] == "OPTIMAL" and len(sub) == k
    assert sub.info["objective"] == pytest.approx(ref, abs=1e-9)
    assert sub.info["objective"] == pytest.approx(smoothed_objective(x, sub.indices, num_nodes=nodes, bandwidth=h))


def test_zero_bandwidth_is_plain_geda():
    x = np.random.default_rng(0).lognormal(size=40)
    s0 = geda_smoothed(x, 12, num_nodes=5, bandwidth=0.0)
    plain = geda(x, 12, num_nodes=5, solver="exact")
    assert s0.info["objective"] == pytest.approx(plain.info["objective"], abs=1e-12)
    assert geda_objective(x, s0.indices, num_nodes=5) == pytest.approx(plain.info["objective"], abs=1e-12)


def test_silverman_and_bad_input():
    x = np.random.default_rng(1).normal(size=2000)
    assert silverman_bandwidth(x) == pytest.approx(0.9 * 2000 ** -0.2, rel=0.1)
    assert silverman_bandwidth(np.ones(5)) == 0.0
    with pytest.raises(ValueError, match="MIP backend"):
        geda_smoothed(x[:20] ** 2, 3, solver="cp-sat")
    with pytest.raises(ValueError, match="bandwidth"):
        geda_smoothed(np.ones(5), 2, bandwidth=-1.0)
    with pytest.raises(ValueError, match="larger than the pool"):
        geda_smoothed(np.ones(5), 6)
    with pytest.raises(ValueError, match="NaN"):
        geda_smoothed(np.array([1.0, np.nan]), 1)
