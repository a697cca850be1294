"""Rank-based selectors against simple reference implementations."""

from fractions import Fraction

import numpy as np
import pytest

from jaxsubset.selectors import per_class, top_k
from jaxsubset.selectors.ranking import evenly_spaced, quantile_random


def ranked(scores):
    """Reference ranking with Python's sort: by score, ties by index."""
    return [i for _, i in sorted((float(s), i) for i, s in enumerate(scores))]


def test_evenly_spaced_removes_one_of_every_two():
    s = np.array([5.0, 1.0, 4.0, 2.0, 3.0, 0.0, 7.0, 6.0])     # ranks: 5,1,3,4,2,0,7,6
    order = ranked(s)
    sub = evenly_spaced(s, 4)
    assert sorted(sub.indices.tolist()) == sorted(order[1::2])


@pytest.mark.parametrize("n,b", [(10, 3), (17, 5), (9, 9), (7, 1), (100, 33)])
def test_evenly_spaced_matches_reference(n, b):
    s = np.random.default_rng(n + b).integers(0, 5, size=n).astype(float)   # many ties
    order = ranked(s)
    ranks = [int(Fraction(2 * i + 1, 2 * b) * n) for i in range(b)]      # centres of b equal slices
    assert evenly_spaced(s, b).indices.tolist() == sorted(order[r] for r in ranks)
    gaps = np.diff(ranks)
    assert set(gaps.tolist()) <= {n // b, -(-n // b)}                   # as even as integers allow


def test_quantile_random_draws_proportionally_inside_quartiles():
    rng = np.random.default_rng(0)
    s = rng.normal(size=100)
    order = ranked(s)
    quartile = np.empty(100, int)
    quartile[order] = np.arange(100) // 25
    subs = [quantile_random(s, 22, seed=k) for k in range(20)]
    for sub in subs:
        counts = np.bincount(quartile[sub.indices], minlength=4)
        assert sorted(counts.tolist()) == [5, 5, 6, 6]       # 22 = 4 * 5.5, largest remainder
        assert len(np.unique(sub.indices)) == 22
    assert quantile_random(s, 22, seed=3).indices.tolist() == subs[3].indices.tolist()
    assert len({tuple(sub.indices) for sub in subs}) > 1
    # every member of a quartile is eventually picked: the draw is uniform inside quartiles
    seen = np.zeros(100, bool)
    for k in range(200):
        seen[quantile_random(s, 40, seed=k).indices] = True
    assert seen.all()


def test_quantile_random_edge_cases():
    s = np.arange(10.0)
    assert quantile_random(s, 10).indices.tolist() == list(range(10))
    assert len(quantile_random(s, 0)) == 0
    one_group = quantile_random(s, 3, num_quantiles=1, seed=1)
    assert len(one_group) == 3
    many = quantile_random(s[:3], 2, num_quantiles=8)       # more groups than items
    assert len(many) == 2
    with pytest.raises(ValueError, match="num_quantiles"):
        quantile_random(s, 2, num_quantiles=0)
    with pytest.raises(ValueError, match="larger than the pool"):
        evenly_spaced(s, 11)
    with pytest.raises(ValueError, match="NaN"):
        evenly_spaced(np.array([1.0, np.nan]), 1)


@pytest.mark.parametrize("largest", [True, False])
def test_top_k_matches_reference(largest):
    s = np.random.default_rng(5).integers(0, 6, size=40).astype(float)
    key = (lambda i: (-s[i], i)) if largest else (lambda i: (s[i], i))
    ref = sorted(sorted(range(40), key=key)[:13])
    assert top_k(s, 13, largest=largest).indices.tolist() == ref


def test_rank_selectors_run_per_class():
    rng = np.random.default_rng(1)
    s, y = rng.normal(size=60), np.repeat([0, 1], 30)
    for sel in (evenly_spaced, quantile_random):
        sub = per_class(sel, y, 20, arrays={"scores": s})
        assert np.bincount(y[sub.indices]).tolist() == [10, 10]
    sub = per_class(evenly_spaced, y, 20, arrays={"scores": s})
    for c in (0, 1):
        rows = np.flatnonzero(y == c)
        expected = rows[evenly_spaced(s[rows], 10).indices]
        assert np.intersect1d(sub.indices, rows).tolist() == sorted(expected.tolist())
