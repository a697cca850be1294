"""Greedy maximization of the facility-location function.

For a similarity ``s`` between ``m`` candidates (rows) and ``n`` points (columns) and a
baseline ``b`` (default: the smallest similarity), the facility-location value of a set
``A`` of candidates is

    F(A) = Σ_i max(max_{j∈A} s_ji - b, 0),       F(∅) = 0,

a monotone submodular function (each point is "covered" by its most similar chosen
candidate). Three optimizers, all returning the picks in order with their marginal gains:

- ``"naive"``: the textbook greedy; keeps every candidate's gain and updates it
  incrementally after each pick, touching only the points whose coverage improved;
- ``"lazy"``: lazy greedy (Minoux 1978) with a priority queue of stale upper bounds —
  the same picks as ``"naive"`` (ties go to the lower index in both) with far fewer
  gain evaluations;
- ``"stochastic"``: stochastic greedy (Mirzasoleiman et al. 2015): each step evaluates
  ``⌈(m/k)·ln(1/ε)⌉`` random remaining candidates; ``E[F] ≥ (1 - 1/e - ε)·OPT``.

Similarities come from a :class:`jaxsubset.kernels.Similarity` (evaluated block by
block, so the ``m × n`` matrix is never required) or a dense matrix.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from typing import Any

import numpy as np

from jaxsubset.kernels import Similarity, default_chunk, precomputed
from jaxsubset.subset import check_budget

OPTIMIZERS = ("naive", "lazy", "stochastic")


@dataclasses.dataclass(frozen=True)
class GreedyResult:
    """Outcome of a facility-location greedy run.

    Attributes:
      order: int64 ``(k,)`` chosen candidates in the order they were picked.
      gains: float64 ``(k,)`` marginal gain of each pick (``F`` of the first ``t``
        picks is ``gains[:t].sum()``).
      assignment: int64 ``(n,)``: for each point, the position in ``order`` of the pick
        most similar to it (ties go to the earlier pick); ``-1`` when ``k = 0``.
      baseline: the baseline ``b`` used.
      evaluations: number of candidate gains evaluated (rows of similarities computed).
    """

    order: np.ndarray
    gains: np.ndarray
    assignment: np.ndarray
    baseline: float
    evaluations: int

    @property
    def value(self) -> float:
        """``F(order)``."""
        return float(self.gains.sum())


def facility_value(sim: Any, selected: Any, baseline: float | None = None) -> float:
    """``F(A)`` on a dense similarity ``(m, n)`` (rows = candidates) for candidate indices ``selected``.

    ``baseline`` defaults to ``sim.min()``. Meant for checks and small problems.
    """
    S = np.asarray(sim, np.float64)
    b = float(S.min()) if baseline is None else float(baseline)
    idx = np.asarray(selected, np.int64).reshape(-1)
    if idx.size == 0:
        return 0.0
    return float(np.maximum(S[idx].max(0) - b, 0.0).sum())


def _initial_pass(op: Similarity, baseline: float | None, need_gains: bool) -> tuple[float, np.ndarray | None]:
    """One sweep over all rows: the baseline (min similarity) and the gains w.r.t. the empty set."""
    m, n = op.shape
    if baseline is not None and not need_gains:
        return float(baseline), None
    if op.matrix is not None and baseline is None:  # dense: no block copies
        b = float(op.matrix.min())
        if not need_gains:
            return b, None
        rowsum = op.matrix.sum(1, dtype=np.float64) - n * b
        return b, np.maximum(rowsum, 0.0, out=rowsum)
    rowsum = np.empty(m, np.float64) if need_gains else None
    mn = np.inf
    for s, blk in op.row_chunks():
        if baseline is None:
            mn = min(mn, float(blk.min()))
            if need_gains:
                rowsum[s:s + blk.shape[0]] = blk.sum(1, dtype=np.float64)
        else:
            np.subtract(blk, np.float32(baseline), out=blk)
            np.maximum(blk, 0.0, out=blk)
            rowsum[s:s + blk.shape[0]] = blk.sum(1, dtype=np.float64)
    if baseline is None:
        b = float(mn)
        if need_gains:
            rowsum -= n * b
            np.maximum(rowsum, 0.0, out=rowsum)
        return b, rowsum
    return float(baseline), rowsum


def _row_getter(op: Similarity):
    """``idx -> (len(idx), n)`` similarity rows; direct (unchecked) indexing for dense matrices."""
    if op.matrix is not None:
        M = op.matrix
        return lambda idx: M[idx]
    return op.rows


def _gains(op: Similarity, cand: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Fresh marginal gains ``(len(cand),)`` float64 of candidates given the coverage ``cov (n,)``."""
    out = np.empty(cand.size, np.float64)
    step = default_chunk(op.shape[1])
    rows = _row_getter(op)
    for s in range(0, cand.size, step):
        blk = rows(cand[s:s + step])
        blk -= cov[None, :]
        np.maximum(blk, 0.0, out=blk)
        out[s:s + blk.shape[0]] = blk.sum(1, dtype=np.float64)
    return out


class _Coverage:
    """Per-point coverage ``max(b, max_{j∈A} s_ji)`` and the best pick of every point."""

    def __init__(self, n: int, baseline: float):
        self.cov = np.full(n, baseline, np.float32)
        self.best = np.full(n, -np.inf, np.float32)
        self.assignment = np.full(n, -1, np.int64)

    def add(self, row: np.ndarray, t: int) -> np.ndarray:
        """Cover with a new pick's similarity row; return the points whose coverage rose."""
        upd = row > self.best
        self.best[upd] = row[upd]
        self.assignment[upd] = t
        changed = np.flatnonzero(row > self.cov)
        return changed


def facility_location(sim: Similarity | Any, budget: int, *, optimizer: str = "lazy", epsilon: float = 0.01,
                      seed: int = 0, baseline: float | None = None, lazy_batch: int = 1) -> GreedyResult:
    """Greedily pick ``budget`` candidates maximizing the facility-location function.

    Args:
      sim: a :class:`~jaxsubset.kernels.Similarity` or a dense finite matrix ``(m, n)``;
        rows are candidates, columns are the points to cover.
      budget: number of picks ``k``, ``0 <= k <= m``.
      optimizer: ``"lazy"`` (default), ``"naive"`` or ``"stochastic"``.
      epsilon: stochastic greedy's ``ε`` in ``(0, 1)``: each step samples
        ``⌈(m/k)·ln(1/ε)⌉`` candidates.
      seed: seed of the stochastic sampler.
      baseline: ``b`` in ``F``; default the minimum similarity (one pass over ``sim``).
      lazy_batch: lazy greedy re-evaluates up to this many stale candidates per block
        (more BLAS-friendly for operators computed on the fly; same picks).

    Returns:
      A :class:`GreedyResult`.
    """
    op = sim if isinstance(sim, Similarity) else precomputed(sim)
    m, n = op.shape
    k = check_budget(budget, m)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}.")
    if not 0.0 < float(epsilon) < 1.0:
        raise ValueError(f"epsilon must be in (0, 1), got {epsilon!r}.")
    if baseline is not None and not np.isfinite(baseline):
        raise ValueError(f"baseline must be finite, got {baseline!r}.")
    if int(lazy_batch) < 1:
        raise ValueError(f"lazy_batch must be >= 1, got {lazy_batch!r}.")
    if k == 0 or n == 0:
        return GreedyResult(np.zeros(0, np.int64), np.zeros(0), np.full(n, -1, np.int64),
                            0.0 if baseline is None else float(baseline), 0)
    b, gains0 = _initial_pass(op, baseline, need_gains=optimizer != "stochastic")
    run = {"naive": _naive, "lazy": _lazy, "stochastic": _stochastic}[optimizer]
    order, gains, cover, evals = run(op, k, b, gains0, epsilon=float(epsilon), seed=seed,
                                     lazy_batch=int(lazy_batch))
    return GreedyResult(np.asarray(order, np.int64), np.asarray(gains, np.float64), cover.assignment, b,
                        evals + (m if gains0 is not None else 0))


def _naive(op: Similarity, k: int, b: float, gains0: np.ndarray, **_: Any):
    m, n = op.shape
    gains = gains0.copy()
    cover = _Coverage(n, b)
    order, picked_gains = [], []
    step = default_chunk(m)
    # Incremental updates drift by float rounding; candidates within `slack` of the best are
    # re-evaluated exactly so that ties resolve like the lazy optimizer (lowest index).
    slack = 1e-6 * max(float(np.max(gains0)), 1e-300)
    rows = _row_getter(op)
    for t in range(k):
        top = np.flatnonzero(gains >= gains.max() - slack)
        if top.size > 1:
            fresh = _gains(op, top, cover.cov)
            j = int(top[np.argmax(fresh)])
        else:
            j = int(top[0])
        row = rows([j])[0]
        changed = cover.add(row, t)
        new = cover.cov.copy()
        new[changed] = row[changed]
        picked_gains.append(float(np.maximum(row - cover.cov, 0.0).sum(dtype=np.float64)))
        # Gain of candidate c drops by Σ_{i changed} [max(s_ci - cov_i, 0) - max(s_ci - new_i, 0)].
        for s in range(0, changed.size, step):
            cc = changed[s:s + step]
            blk = op.matrix[:, cc] if op.matrix is not None else op.block(None, cc)
            old_part = np.maximum(blk - cover.cov[cc], 0.0).sum(1, dtype=np.float64)
            blk -= new[cc]
            np.maximum(blk, 0.0, out=blk)
            gains -= old_part - blk.sum(1, dtype=np.float64)
        cover.cov = new
        order.append(j)
        gains[order] = -np.inf
    return order, picked_gains, cover, 0


def _lazy(op: Similarity, k: int, b: float, gains0: np.ndarray, *, lazy_batch: int, **_: Any):
    m, n = op.shape
    heap = [(-float(g), j) for j, g in enumerate(gains0)]
    heapq.heapify(heap)
    stamp = np.zeros(m, np.int64)  # iteration at which a candidate's gain was last computed
    cover = _Coverage(n, b)
    order, picked_gains, evals = [], [], 0
    rows_of = _row_getter(op)
    for t in range(k):
        # Only the row of the best fresh gain seen in this step is kept: the pick is that candidate.
        best_key, best_row = None, None
        while True:
            negg, j = heapq.heappop(heap)
            if stamp[j] == t:
                break
            batch = [j]
            while len(batch) < lazy_batch and heap and stamp[heap[0][1]] != t:
                batch.append(heapq.heappop(heap)[1])
            rows = rows_of(np.asarray(batch))
            g = np.maximum(rows - cover.cov[None, :], 0.0).sum(1, dtype=np.float64)
            evals += len(batch)
            for jj, gg, rr in zip(batch, g, rows):
                stamp[jj] = t
                key = (-float(gg), jj)
                if best_key is None or key < best_key:
                    best_key, best_row = key, rr
                heapq.heappush(heap, key)
        row = best_row if best_key is not None and best_key[1] == j else rows_of([j])[0]
        changed = cover.add(row, t)
        cover.cov[changed] = row[changed]
        order.append(j)
        picked_gains.append(-negg)
    return order, picked_gains, cover, evals


def _stochastic(op: Similarity, k: int, b: float, gains0: None, *, epsilon: float, seed: int, **_: Any):
    m, n = op.shape
    rng = np.random.default_rng(seed)
    sample = min(m, int(math.ceil(m / k * math.log(1.0 / epsilon))))
    remaining = np.arange(m)
    r = m
    cover = _Coverage(n, b)
    order, picked_gains, evals = [], [], 0
    for t in range(k):
        take = min(sample, r)
        pos = np.sort(rng.choice(r, size=take, replace=False)) if take < r else np.arange(r)
        cand = remaining[pos]
        sort = np.argsort(cand, kind="stable")
        cand, pos = cand[sort], pos[sort]
        g = _gains(op, cand, cover.cov)
        evals += cand.size
        best = int(np.argmax(g))
        j = int(cand[best])
        row = _row_getter(op)([j])[0]
        changed = cover.add(row, t)
        cover.cov[changed] = row[changed]
        order.append(j)
        picked_gains.append(float(g[best]))
        p = pos[best]
        remaining[p], remaining[r - 1] = remaining[r - 1], remaining[p]
        r -= 1
    return order, picked_gains, cover, evals


__all__ = ["facility_location", "facility_value", "GreedyResult", "OPTIMIZERS"]
