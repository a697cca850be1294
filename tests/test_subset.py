from fractions import Fraction

import numpy as np
import pytest

from jaxsubset import Subset, budget_from_fraction, per_class_budget
from jaxsubset.selectors import per_class, random, top_k


def reference_largest_remainder(sizes, budget):
    """Independent exact-rational implementation of Hamilton's method."""
    n = sum(sizes)
    quotas = [Fraction(budget * s, n) for s in sizes]
    base = [int(q) for q in quotas]
    rest = budget - sum(base)
    order = sorted(range(len(sizes)), key=lambda c: (-(quotas[c] - base[c]), c))
    for c in order[:rest]:
        base[c] += 1
    return base


def test_subset_validation():
    s = Subset(np.array([3, 1]), np.array([1.0, 2.0]))
    assert s.indices.dtype == np.int64 and s.weights.dtype == np.float32 and len(s) == 2
    with pytest.raises(ValueError, match="unique"):
        Subset(np.array([1, 1]), np.ones(2))
    with pytest.raises(ValueError, match=">= 0"):
        Subset(np.array([-1]), np.ones(1))
    with pytest.raises(ValueError, match="finite"):
        Subset(np.array([0]), np.array([np.nan]))
    with pytest.raises(ValueError, match=">= 0"):
        Subset(np.array([0]), np.array([-1.0]))
    with pytest.raises(ValueError, match="shape"):
        Subset(np.array([0, 1]), np.ones(3))
    with pytest.raises(ValueError, match="out of range"):
        Subset.unweighted([0, 5]).check_pool(5)
    assert Subset.unweighted([0, 4]).mask(5).tolist() == [True, False, False, False, True]


@pytest.mark.parametrize("seed", range(20))
def test_per_class_budget_matches_exact_reference(seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(0, 30, size=rng.integers(1, 8))
    if sizes.sum() == 0:
        sizes[0] = 1
    labels = np.repeat(np.arange(sizes.size), sizes)
    budget = int(rng.integers(0, sizes.sum() + 1))
    got = per_class_budget(labels, budget, sizes.size)
    assert got.tolist() == reference_largest_remainder(sizes.tolist(), budget)
    assert got.sum() == budget and np.all(got <= sizes)


def test_per_class_budget_edges():
    y = np.array([0, 0, 0, 2, 2])  # class 1 is empty
    assert per_class_budget(y, 0, 3).tolist() == [0, 0, 0]
    assert per_class_budget(y, 5, 3).tolist() == [3, 0, 2]
    assert per_class_budget(y, 3, 3).tolist() == [2, 0, 1]  # 1.8 and 1.2: remainder to class 0
    with pytest.raises(ValueError, match="larger than the pool"):
        per_class_budget(y, 6, 3)
    with pytest.raises(ValueError, match=">= 0"):
        per_class_budget(y, -1, 3)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        per_class_budget(y, 1, 2)
    with pytest.raises(TypeError):
        per_class_budget(y, 1.5, 3)


def test_budget_from_fraction():
    assert budget_from_fraction(1.0, 10) == 10 and budget_from_fraction(0.25, 10) == 2
    assert budget_from_fraction(1e-6, 10) == 1
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            budget_from_fraction(bad, 10)


def test_random_and_top_k():
    s = random(100, 10, seed=3)
    assert len(s) == 10 and np.all(np.diff(s.indices) > 0) and s.indices.max() < 100
    assert np.array_equal(s.indices, random(100, 10, seed=3).indices)
    assert not np.array_equal(s.indices, random(100, 10, seed=4).indices)
    assert len(random(5, 5).indices) == 5 and len(random(5, 0).indices) == 0
    with pytest.raises(ValueError, match="larger than the pool"):
        random(5, 6)
    scores = np.array([0.5, 3.0, -1.0, 3.0, 2.0])
    assert top_k(scores, 2).indices.tolist() == [1, 3]
    assert top_k(scores, 2, largest=False).indices.tolist() == [0, 2]
    assert top_k(scores, 1).indices.tolist() == [1]  # tie -> lower index
    with pytest.raises(ValueError, match="NaN"):
        top_k(np.array([1.0, np.nan]), 1)


def test_per_class_keeps_proportions_and_maps_indices():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=200)
    scores = rng.normal(size=200)
    sub = per_class(top_k, y, 50, arrays={"scores": scores})
    want = per_class_budget(y, 50, 4)
    assert np.bincount(y[sub.indices], minlength=4).tolist() == want.tolist()
    for c in range(4):  # inside each class, the chosen rows are that class's top scores
        rows = np.flatnonzero(y == c)
        ref = rows[np.argsort(-scores[rows], kind="stable")[: want[c]]]
        assert set(sub.indices[y[sub.indices] == c]) == set(ref)
    with pytest.raises(ValueError, match="rows"):
        per_class(top_k, y, 5, arrays={"scores": scores[:10]})
