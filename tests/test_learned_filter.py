"""The filter-then-sample selectors ``learned_filter`` / ``loss_filter`` (issue 18) against brute-force references."""

import itertools
from collections import Counter

import numpy as np
import pytest

from jaxsubset import per_class_budget, selectors
from jaxsubset.selectors.noise_filter import filter_random


def _worst(scores, rates, drop="low"):
    """Brute force: the set of the round(sum rates) most suspicious rows (ties: lower index first)."""
    d = int(round(float(sum(rates))))
    key = (lambda i: (scores[i], i)) if drop == "low" else (lambda i: (-scores[i], i))
    return set(sorted(range(len(scores)), key=key)[:d])


def test_subsets_are_uniform_over_the_rows_left_after_the_drop():
    """n = 7 with 2 expected wrong labels, budget 2: the kept pair is a uniform draw from the C(5, 2) = 10
    pairs of the five rows outside the two lowest values."""
    scores = np.array([0.5, -1.0, 2.0, 0.1, -3.0, 0.7, 1.5])
    rates = np.full(7, 2.0 / 7.0)
    worst = _worst(scores, rates)
    assert worst == {4, 1}
    allowed = {frozenset(p) for p in itertools.combinations(sorted(set(range(7)) - worst), 2)}
    counts = Counter(frozenset(filter_random(scores, rates, 2, seed=s).indices.tolist()) for s in range(3000))
    assert set(counts) == allowed                          # never a dropped row, every allowed pair occurs
    freq = np.array([counts[p] for p in allowed]) / 3000
    assert np.all(np.abs(freq - 0.1) < 0.025)              # 5 binomial std devs of 0.0055


def test_the_drop_follows_the_expected_number_of_wrong_labels_and_the_direction():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=40)
    rates = rng.uniform(0, 0.5, 40)                        # round(sum) = the rows dropped
    for drop in ("low", "high"):
        worst = _worst(scores, rates, drop)
        sub = filter_random(scores, rates, 10, drop=drop, seed=3)
        assert sub.info["dropped"] == len(worst)
        assert not worst & set(sub.indices.tolist())
        assert len(sub) == 10 and np.all(np.diff(sub.indices) > 0) and np.all(sub.weights == 1)
    np.testing.assert_array_equal(filter_random(scores, rates, 10, drop="high", seed=3).indices,
                                  filter_random(-scores, rates, 10, drop="low", seed=3).indices)


def test_ties_drop_the_lower_index_and_the_drop_is_capped_to_keep_the_budget():
    scores = np.zeros(6)
    assert set(filter_random(scores, np.full(6, 1 / 3), 4, seed=0).indices.tolist()) == {2, 3, 4, 5}
    # 5 expected wrong labels but a budget of 3: only 3 rows are dropped, the best 3 are kept
    scores = np.arange(6.0)
    sub = filter_random(scores, np.full(6, 5 / 6), 3, seed=0)
    assert sub.info["dropped"] == 3 and sub.indices.tolist() == [3, 4, 5]


def test_the_registry_runs_it_per_class_with_each_class_rate():
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(3), [30, 20, 10])
    rng.shuffle(y)
    values = rng.normal(size=60)
    rho = np.array([0.1, 0.3, 0.0])
    q = {"learned_value": values, "noise_rate": rho[y], "loss": -values}
    sub = selectors.select("learned_filter", y, 24, q, seed=5, num_classes=3)
    expect = []
    for c, b in enumerate(per_class_budget(y, 24, 3)):      # per class, seed + c (the registry's convention)
        rows = np.flatnonzero(y == c)
        expect += rows[filter_random(values[rows], rho[y][rows], int(b), seed=5 + c).indices].tolist()
        worst = _worst(values[rows], rho[y][rows])
        assert len(worst) == round(rho[c] * rows.size)
        assert not {rows[i] for i in worst} & set(sub.indices.tolist())
    assert sub.indices.tolist() == sorted(expect) and sub.info["method"] == "learned_filter"
    loss = selectors.select("loss_filter", y, 24, q, seed=5, num_classes=3)
    np.testing.assert_array_equal(loss.indices, sub.indices)   # highest loss = lowest value here


def test_bad_input_is_refused_with_what_to_change():
    s = np.arange(5.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        filter_random(s, np.array([0.1, 0.2, 1.5, 0.0, 0.0]), 2)
    with pytest.raises(ValueError, match="one entry per row"):
        filter_random(s, np.full(4, 0.1), 2)
    with pytest.raises(ValueError, match="noise_rate contain"):
        filter_random(s, np.array([0.1, np.nan, 0.1, 0.1, 0.1]), 2)
    with pytest.raises(ValueError, match="scores contain"):
        filter_random(np.array([0.0, np.inf, 1, 2, 3]), np.full(5, 0.1), 2)
    with pytest.raises(ValueError, match="drop must be one of"):
        filter_random(s, np.full(5, 0.1), 2, drop="lowest")
    with pytest.raises(ValueError):
        filter_random(s, np.full(5, 0.1), 6)
    with pytest.raises(ValueError, match="needs quantities.*noise_rate"):
        selectors.select("learned_filter", np.zeros(5, int), 2, {"learned_value": s})
