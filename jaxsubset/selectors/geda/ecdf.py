"""ECDF matching on binned norms: the GEDA objective, its exact minimizer, and within-bin picks.

GEDA (gradient-norm ECDF matching) measures how far the empirical CDF ``F_X`` of a
chosen subset ``X`` of norms is from the empirical CDF ``F_D`` of all norms ``D``::

    J(X) = integral |F_D(t) - F_X(t)| dt      over [m, M] = [min D, max D].

Every rule this module supports evaluates ``|F_D - F_X|`` at a finite, increasing
set of *boundaries* ``b_1 < ... < b_{B-1}`` with non-negative weights ``w_j``::

    J(X) ~= sum_j w_j |F_D(b_j) - F_X(b_j)| = sum_j w_j |a_j / n - S_j / k|,

where ``a_j = #{x in D : x <= b_j}``, ``S_j = #{x in X : x <= b_j}``, ``n = |D|`` and
``k = |X|``. The boundaries cut the norms into ``B`` *bins*, and ``J`` only depends on
how many chosen items fall in each bin (``S_j`` are prefix sums of those counts):

* ``num_nodes=N`` with ``quadrature="trapezoid"`` (the GEDA study): boundaries are the
  ``N - 1`` interior nodes ``t_j = m + j (M - m) / N`` and ``w_j = h = (M - m) / N``. As in
  the study the two end points are left out (both CDFs are 1 at ``M``; at ``m`` they
  vanish for continuous norms).
* ``quadrature="simpson"`` (even ``N``): same nodes, ``w_j = 4h/3`` at odd and ``2h/3`` at
  even interior nodes.
* ``num_nodes=None``: boundaries are the distinct norms ``u_1 < ... < u_U`` (all but the
  last) with ``w_j = u_{j+1} - u_j``. Both CDFs are constant between consecutive distinct
  norms, so this is the exact L1 distance between the ECDFs, i.e. the 1-Wasserstein
  distance between the two empirical distributions.

**Exact minimizer.** Write ``T_j = a_j k / n``. A sequence ``S`` is achievable by some
``X`` iff ``0 <= S_j - S_{j-1} <= a_j - a_{j-1}`` (bin sizes) with ``S_0 = 0`` and
``S_B = k``. ``S_j = round_half_up(T_j)`` minimizes every term ``|T_j - S_j|`` on its own,
and it is achievable: it is non-decreasing, ``S_B = round(k) = k``, and
``round(T_j) - round(T_{j-1}) <= ceil(T_j - T_{j-1}) <= a_j - a_{j-1}`` because
``T_j - T_{j-1} = (a_j - a_{j-1}) k / n`` and ``k <= n``. So the GEDA MILP has a closed
form solution (:func:`exact_counts`); :mod:`jaxsubset.selectors.geda.selector` also solves it
with OR-Tools, as the study did, and the tests check both against brute force.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxsubset.checks import as_scores

QUADRATURES = ("trapezoid", "simpson")
RULES = ("evenly_spaced", "random", "solver", "lowest", "highest")


@dataclasses.dataclass(frozen=True)
class BinnedProblem:
    """The GEDA objective reduced to bins (see the module docstring).

    Attributes:
      order: int64 ``(n,)`` stable argsort of the norms (ties by lower index); the
        items of bin ``b`` are ``order[starts[b]:starts[b] + sizes[b]]``.
      sizes: int64 ``(B,)`` number of norms per bin, in increasing norm order.
      bin_of: int64 ``(n,)`` bin of every item.
      int_weights: int64 ``(B - 1,)`` boundary weights as integers, or None when the
        weights are not integer multiples of one unit (``num_nodes=None``).
      weights: float64 ``(B - 1,)`` boundary weights ``w_j`` (``unit * int_weights`` when
        those exist).
      unit: float, the quadrature unit (``h`` or ``h / 3``; 1 for ``num_nodes=None``).
    """

    order: np.ndarray
    sizes: np.ndarray
    bin_of: np.ndarray
    int_weights: np.ndarray | None
    weights: np.ndarray
    unit: float

    @property
    def n(self) -> int:
        return int(self.order.size)

    @property
    def starts(self) -> np.ndarray:
        """int64 ``(B,)`` offset of every bin in ``order``."""
        return np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)

    @property
    def prefix(self) -> np.ndarray:
        """int64 ``(B - 1,)`` ``a_j``: number of norms at or below boundary ``j``."""
        return np.cumsum(self.sizes)[:-1].astype(np.int64)


def as_norms(norms: Any) -> np.ndarray:
    """Validate norms: a finite, non-negative float64 ``(n,)`` array, or raise."""
    x = as_scores(norms, name="norms")
    neg = np.flatnonzero(x < 0)
    if neg.size:
        raise ValueError(f"norms must be >= 0 (they are gradient norms); found negative values at rows "
                         f"{neg[:10].tolist()}{' ...' if neg.size > 10 else ''}.")
    return x


def check_nodes(num_nodes: int | None, quadrature: str) -> None:
    """Raise a clear error for an invalid ``num_nodes`` / ``quadrature`` pair."""
    if quadrature not in QUADRATURES:
        raise ValueError(f"Unknown quadrature {quadrature!r}; choose one of {list(QUADRATURES)}.")
    if num_nodes is None:
        return
    if isinstance(num_nodes, (bool, np.bool_)) or not isinstance(num_nodes, (int, np.integer)):
        raise TypeError(f"num_nodes must be a positive integer or None, got {num_nodes!r}.")
    if num_nodes < 1:
        raise ValueError(f"num_nodes must be >= 1 (the number of quadrature intervals), got {num_nodes}.")
    if num_nodes > 10**7:
        raise ValueError(f"num_nodes={num_nodes} would allocate {num_nodes} nodes; use at most 10**7, or "
                         "num_nodes=None for the exact 1-Wasserstein objective.")
    if quadrature == "simpson" and num_nodes % 2:
        raise ValueError(f"Simpson's rule needs an even number of intervals; got num_nodes={num_nodes}, "
                         f"use {num_nodes + 1} or quadrature='trapezoid'.")


def interior_nodes(lo: float, hi: float, num_nodes: int) -> tuple[np.ndarray, float]:
    """The ``N - 1`` interior nodes ``m + j (M - m) / N`` (``j = 1..N-1``) and the step ``h``."""
    h = (hi - lo) / num_nodes
    j = np.arange(1, num_nodes, dtype=np.float64)
    return lo + j * (hi - lo) / num_nodes, h


def build(norms: Any, num_nodes: int | None = 5, quadrature: str = "trapezoid") -> BinnedProblem:
    """Reduce the GEDA objective on ``norms`` ``(n,)`` to a :class:`BinnedProblem`."""
    x = as_norms(norms)
    check_nodes(num_nodes, quadrature)
    if x.size == 0:
        raise ValueError("norms is empty; GEDA needs at least one example.")
    order = np.argsort(x, kind="stable").astype(np.int64)
    xs = x[order]
    if num_nodes is None:
        uniq, first = np.unique(xs, return_index=True)
        sizes = np.diff(np.append(first, xs.size)).astype(np.int64)
        bin_sorted = np.repeat(np.arange(uniq.size, dtype=np.int64), sizes)
        weights = np.diff(uniq)
        int_w, unit = None, 1.0
    else:
        nodes, h = interior_nodes(float(xs[0]), float(xs[-1]), int(num_nodes))
        # bin b holds t_b < x <= t_{b+1} (t_0 = -inf, t_N = +inf): x <= t_j  <=>  bin < j.
        bin_sorted = np.searchsorted(nodes, xs, side="left").astype(np.int64)
        sizes = np.bincount(bin_sorted, minlength=int(num_nodes)).astype(np.int64)
        if quadrature == "trapezoid":
            int_w, unit = np.ones(int(num_nodes) - 1, np.int64), h
        else:
            int_w = np.where(np.arange(1, int(num_nodes)) % 2 == 1, 4, 2).astype(np.int64)
            unit = h / 3.0
        weights = unit * int_w.astype(np.float64)
    bin_of = np.empty_like(bin_sorted)
    bin_of[order] = bin_sorted
    return BinnedProblem(order, sizes, bin_of, int_w, weights, float(unit))


def exact_counts(problem: BinnedProblem, budget: int) -> np.ndarray:
    """Per-bin counts ``(B,)`` of an optimal selection of ``budget`` items (closed form).

    ``S_j = floor(a_j k / n + 1/2)`` in exact integer arithmetic; see the module docstring
    for the optimality proof.
    """
    n, k = problem.n, int(budget)
    if not 0 < k <= n:
        raise ValueError(f"budget must be in [1, {n}], got {k}.")
    s = _round_prefix(problem.prefix, k, n)
    full = np.concatenate([[0], s, [k]]).astype(np.int64)
    counts = np.diff(full)
    assert np.all(counts >= 0) and np.all(counts <= problem.sizes) and counts.sum() == k
    return counts


def _round_prefix(a: np.ndarray, k: int, n: int) -> np.ndarray:
    """``floor((2 a k + n) / (2 n))`` elementwise for int64 ``a`` in ``[0, n]``, without overflow."""
    q, r = np.divmod(a, n)                 # a = q n + r with q in {0, 1}
    if n >= 2**30:                         # 2 r k + n < 2^62 needs n < 2^30
        return np.array([(2 * int(v) * k + n) // (2 * n) for v in a], dtype=np.int64)
    return q * k + (2 * r * k + n) // (2 * n)


def int_terms(problem: BinnedProblem, counts: np.ndarray, budget: int) -> np.ndarray:
    """``|a_j k - S_j n|`` as exact int64 ``(B - 1,)`` (requires ``n * k < 2^62``)."""
    n, k = problem.n, int(budget)
    s = np.cumsum(np.asarray(counts, np.int64))[:-1]
    if n * k >= 2**62:
        raise OverflowError("n * budget is too large for exact int64 GEDA terms.")
    return np.abs(problem.prefix * k - s * n)


def objective(problem: BinnedProblem, counts: Any, budget: int) -> float:
    """``sum_j w_j |a_j / n - S_j / k|`` for per-bin counts ``(B,)`` of ``budget`` items."""
    counts = np.asarray(counts, np.int64)
    k = int(budget)
    if counts.shape != problem.sizes.shape:
        raise ValueError(f"counts must have shape {problem.sizes.shape}, got {counts.shape}.")
    if k <= 0 or counts.sum() != k:
        raise ValueError(f"counts must sum to budget={k} >= 1, got {int(counts.sum())}.")
    terms = int_terms(problem, counts, k)
    if problem.int_weights is not None:
        total = sum(int(w) * int(t) for w, t in zip(problem.int_weights, terms))  # exact integer
        return problem.unit * total / (problem.n * k)
    return float(np.dot(problem.weights, terms.astype(np.float64)) / (problem.n * k))


def counts_of(problem: BinnedProblem, indices: Any) -> np.ndarray:
    """Per-bin counts ``(B,)`` of the items ``indices`` ``(k,)``."""
    idx = np.asarray(indices, np.int64)
    return np.bincount(problem.bin_of[idx], minlength=problem.sizes.size).astype(np.int64)


def geda_objective(norms: Any, indices: Any, *, num_nodes: int | None = 5,
                   quadrature: str = "trapezoid") -> float:
    """The GEDA objective of the subset ``indices`` ``(k,)`` of ``norms`` ``(n,)``.

    ``num_nodes=None`` gives the exact 1-Wasserstein distance between the two ECDFs.
    """
    problem = build(norms, num_nodes, quadrature)
    idx = np.asarray(indices, np.int64).reshape(-1)
    if idx.size == 0:
        raise ValueError("indices is empty; the ECDF of an empty subset is undefined.")
    if idx.min() < 0 or idx.max() >= problem.n or np.unique(idx).size != idx.size:
        raise ValueError(f"indices must be unique and in [0, {problem.n}).")
    return objective(problem, counts_of(problem, idx), idx.size)


def spaced_ranks(size: np.ndarray, count: np.ndarray, i: np.ndarray) -> np.ndarray:
    """Rank of the ``i``-th of ``count`` evenly spaced picks among ``size`` sorted items.

    ``floor((2 i + 1) size / (2 count))``: the centres of ``count`` equal slices, which are
    strictly increasing because ``size >= count`` (e.g. ranks 1, 3, 5, ... for a half).
    """
    return (2 * i + 1) * size // (2 * count)


def pick_in_bins(problem: BinnedProblem, counts: np.ndarray, rule: str = "evenly_spaced",
                 seed: int = 0) -> np.ndarray:
    """Choose ``counts[b]`` items inside every bin ``b``; returns sorted int64 indices ``(k,)``.

    Inside a bin items are ordered by norm, ties by the lower index. Rules:
    ``"evenly_spaced"`` keeps evenly spaced ranks (:func:`spaced_ranks`), ``"lowest"`` /
    ``"highest"`` the smallest / largest norms, ``"random"`` a uniform draw without
    replacement inside every bin (``seed``; stratified random sampling with the optimal
    per-bin counts), ``"solver"`` the ``counts[b]`` highest *row indices* of every bin,
    whatever their norms: the choice a MIP solver makes on the study's per-item model
    (HiGHS through OR-Tools returns exactly this vertex; see :func:`solver_pick`). It
    follows data order, so on shuffled data it is a stratified random sample fixed by
    the order of the rows.
    """
    if rule not in RULES:
        raise ValueError(f"Unknown within-bin rule {rule!r}; choose one of {list(RULES)}.")
    counts = np.asarray(counts, np.int64)
    sizes, starts = problem.sizes, problem.starts
    k = int(counts.sum())
    bins = np.repeat(np.arange(sizes.size), counts)
    i = np.arange(k, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)  # rank among picks
    if rule == "evenly_spaced":
        ranks = spaced_ranks(sizes[bins], counts[bins], i)
    elif rule == "lowest":
        ranks = i
    elif rule == "highest":
        ranks = sizes[bins] - counts[bins] + i
    elif rule == "solver":
        return solver_pick(problem, counts)
    else:
        key = np.random.default_rng(seed).random(problem.n)
        bin_sorted = np.repeat(np.arange(sizes.size), sizes)
        shuffled = np.lexsort((key, bin_sorted))  # sorted positions, every bin's block shuffled in place
        return np.sort(problem.order[shuffled[starts[bins] + i]])
    return np.sort(problem.order[starts[bins] + ranks])



def solver_pick(problem: BinnedProblem, counts: np.ndarray) -> np.ndarray:
    """The ``counts[b]`` highest row indices of every bin ``b``; sorted int64 indices ``(k,)``.

    In the per-item MILP only the per-bin counts enter the objective, so every item of a
    bin is interchangeable and the solver's choice is an artefact of its search. The GEDA
    study let PuLP/CBC decide; a MIP solver on its 180-item instance, and HiGHS on the
    per-item model here (checked in ``tests/test_geda_rules.py``), take the last rows of
    each bin in data order. This rule makes that choice explicit and deterministic.
    """
    counts = np.asarray(counts, np.int64)
    by_index = np.lexsort((np.arange(problem.n), problem.bin_of))  # by bin, then by row index
    ends = np.cumsum(problem.sizes)
    k = int(counts.sum())
    bins = np.repeat(np.arange(counts.size), counts)
    i = np.arange(k, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.sort(by_index[ends[bins] - counts[bins] + i])
