"""Rank-based selectors from the GEDA study: evenly spaced ranks, random within score quantiles."""

from __future__ import annotations

import numpy as np

from jaxsubset.checks import as_scores
from jaxsubset.subset import Subset, check_budget


def _ranked(scores: np.ndarray) -> np.ndarray:
    """int64 ``(n,)`` indices by increasing score, ties by the lower index."""
    return np.argsort(scores, kind="stable").astype(np.int64)


def evenly_spaced(scores: np.ndarray, budget: int) -> Subset:
    """Sort by score and keep ``budget`` evenly spaced ranks (the study's "evenly spaced").

    Rank ``r`` (0-based, by increasing score, ties by the lower index) is kept iff
    ``r = floor((2 i + 1) n / (2 budget))`` for some ``i in [0, budget)``: the centre of
    each of ``budget`` equal slices of the ranking. Keeping half removes one of every
    two (ranks 1, 3, 5, ...); ``budget = n`` keeps everything.

    Args:
      scores: float array ``(n,)``, finite.
      budget: number of examples to keep, ``0 <= budget <= n``.
    """
    s = as_scores(scores)
    budget = check_budget(budget, s.size)
    if budget == 0:
        return Subset.unweighted(np.zeros(0, np.int64), method="evenly_spaced")
    i = np.arange(budget, dtype=np.int64)
    ranks = (2 * i + 1) * s.size // (2 * budget)
    return Subset.unweighted(np.sort(_ranked(s)[ranks]), method="evenly_spaced")


def quantile_random(scores: np.ndarray, budget: int, *, seed: int = 0, num_quantiles: int = 4) -> Subset:
    """Random selection inside each score quantile (the study's "random over the quartiles").

    The ranking by score (ties by the lower index) is cut into ``num_quantiles`` groups
    of (nearly) equal size: rank ``r`` belongs to group ``floor(r * q / n)``. The budget
    is split across groups in proportion to their sizes by systematic rounding: with
    ``T_g = budget * (size of groups 0..g) / n`` and one uniform ``u`` in ``[0, 1)``, group
    ``g`` gets ``floor(T_g + u) - floor(T_{g-1} + u)`` items. Every group gets the floor or
    the ceiling of its quota ``budget * size_g / n`` and, over seeds, exactly its quota on
    average (a budget below ``q`` samples every group, not always the lowest ones). Each
    group keeps a uniform random draw.

    Args:
      scores: float array ``(n,)``, finite.
      budget: number of examples to keep, ``0 <= budget <= n``.
      seed: seed of the NumPy generator (deterministic for a seed).
      num_quantiles: number of groups ``q >= 1`` (4: quartiles).
    """
    s = as_scores(scores)
    budget = check_budget(budget, s.size)
    if isinstance(num_quantiles, (bool, np.bool_)) or not isinstance(num_quantiles, (int, np.integer)):
        raise TypeError(f"num_quantiles must be a positive integer, got {num_quantiles!r}.")
    if num_quantiles < 1:
        raise ValueError(f"num_quantiles must be >= 1, got {num_quantiles}.")
    n, q = s.size, int(num_quantiles)
    info = dict(method="quantile_random", num_quantiles=q)
    if budget == 0:
        return Subset.unweighted(np.zeros(0, np.int64), **info)
    ranked = _ranked(s)
    group = np.arange(n, dtype=np.int64) * q // n            # group of each rank
    rng = np.random.default_rng(seed)
    budgets = _systematic_split(np.bincount(group, minlength=q), budget, rng)
    parts = []
    for g, b in enumerate(budgets):
        members = ranked[group == g]
        if b:
            parts.append(rng.choice(members, size=int(b), replace=False))
    return Subset.unweighted(np.sort(np.concatenate(parts)), **info)


def _systematic_split(sizes: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Split ``budget`` over groups of ``sizes (q,)`` by systematic rounding of the cumulative quotas.

    ``S_g = floor((budget * cumsum(sizes)_g + u n) / n)`` in exact integer arithmetic with
    ``u n`` an integer drawn uniformly from ``[0, n)``; the counts ``diff([0, S])`` sum to
    ``budget``, each is the floor or ceiling of ``budget * sizes_g / n`` (so never more
    than ``sizes_g``), and each has expectation exactly ``budget * sizes_g / n``.
    """
    n = int(sizes.sum())
    cum = np.cumsum(sizes.astype(object)) * int(budget)   # Python ints: no overflow
    shift = int(rng.integers(0, n))
    prefix = np.array([(int(c) + shift) // n for c in cum], np.int64)
    counts = np.diff(np.concatenate([[0], prefix]))
    assert counts.sum() == budget and np.all(counts >= 0) and np.all(counts <= sizes)
    return counts
