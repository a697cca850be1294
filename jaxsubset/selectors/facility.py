"""Greedy maximization of the facility-location function.

For a similarity ``s`` between ``m`` candidates (rows) and ``n`` points (columns) and a
baseline ``b`` (default: the smallest similarity), the facility-location value of a set
``A`` of candidates is

    F(A) = Σ_i max(max_{j∈A} s_ji - b, 0),       F(∅) = 0,

a monotone submodular function (each point is "covered" by its most similar chosen
candidate). :class:`FacilityOracle` states its gains; the greedy engine
(:func:`jaxsubset.solvers.greedy.greedy`) picks: ``"naive"`` (every gain every step), ``"lazy"``
(the same picks with far fewer evaluations) or ``"stochastic"``.

Similarities come from a :class:`jaxsubset.kernels.Similarity` (evaluated block by
block, so the ``m × n`` matrix is never required) or a dense matrix.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxsubset.kernels import Similarity, default_chunk, precomputed
from jaxsubset.solvers.greedy import GreedyRun, greedy
from jaxsubset.subset import check_budget

OPTIMIZERS = ("naive", "lazy", "stochastic")


@dataclasses.dataclass(frozen=True)
class GreedyResult(GreedyRun):
    """A :class:`~jaxsubset.solvers.greedy.GreedyRun` of facility location (``F`` of the first ``t`` picks
    is ``gains[:t].sum()``), plus ``assignment`` (int64 ``(n,)``: for each point, the position in ``order``
    of its most similar pick, ties to the earlier; ``-1`` when ``k = 0``) and the ``baseline`` used."""

    assignment: np.ndarray
    baseline: float

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
    """One sweep over all rows: the baseline (default the min similarity) and the gains on the empty set."""
    if baseline is not None and not need_gains:
        return float(baseline), None
    m, n = op.shape
    rowsum, mn = np.empty(m, np.float64), np.inf
    for s, blk in ([(0, op.matrix)] if op.matrix is not None else op.row_chunks()):  # dense: no block copies
        if baseline is None:
            mn = min(mn, float(blk.min()))
            rowsum[s:s + blk.shape[0]] = blk.sum(1, dtype=np.float64)
        else:
            rowsum[s:s + blk.shape[0]] = np.maximum(blk - np.float32(baseline), 0.0).sum(1, dtype=np.float64)
    if baseline is None:
        baseline = mn
        rowsum = np.maximum(rowsum - n * mn, 0.0)
    return float(baseline), rowsum if need_gains else None


def _row_getter(op: Similarity):
    """``idx -> (len(idx), n)`` similarity rows; direct (unchecked) indexing for dense matrices."""
    if op.matrix is not None:
        M = op.matrix
        return lambda idx: M[idx]
    return op.rows


class FacilityOracle:
    """Gains of facility location for :func:`jaxsubset.solvers.greedy.greedy`.

    State: the per-point coverage ``max(b, max_{j∈A} s_ji)`` and each point's best pick. The row of
    the best candidate evaluated since the last pick is kept, so the lazy greedy's pick costs no
    extra row.
    """

    def __init__(self, op: Similarity, baseline: float):
        self.n, n = op.shape
        self._rows = _row_getter(op)
        self.cov = np.full(n, baseline, np.float32)
        self.best = np.full(n, -np.inf, np.float32)
        self.assignment = np.full(n, -1, np.int64)
        self._step = default_chunk(n)
        self._t = 0
        self._kept: tuple[tuple[float, int], np.ndarray] | None = None

    def gains(self, cand: np.ndarray) -> np.ndarray:
        out = np.empty(cand.size, np.float64)
        for s in range(0, cand.size, self._step):
            blk = self._rows(cand[s:s + self._step])
            out[s:s + blk.shape[0]] = np.maximum(blk - self.cov[None, :], 0.0).sum(1, dtype=np.float64)
            i = int(np.argmax(out[s:s + blk.shape[0]]))
            key = (-out[s + i], int(cand[s + i]))
            if self._kept is None or key < self._kept[0]:
                self._kept = (key, blk[i].copy())
        return out

    def add(self, picks: np.ndarray) -> None:
        for j in picks:
            row = self._kept[1] if self._kept is not None and self._kept[0][1] == j else self._rows([j])[0]
            upd = row > self.best
            self.best[upd] = row[upd]
            self.assignment[upd] = self._t
            np.maximum(self.cov, row, out=self.cov)
            self._t += 1
        self._kept = None


def facility_location(sim: Similarity | Any, budget: int, *, optimizer: str = "lazy", epsilon: float = 0.01,
                      seed: int = 0, baseline: float | None = None, lazy_batch: int = 1) -> GreedyResult:
    """Greedily pick ``budget`` candidates maximizing the facility-location function.

    Args:
      sim: a :class:`~jaxsubset.kernels.Similarity` or a dense finite matrix ``(m, n)``;
        rows are candidates, columns are the points to cover.
      budget: number of picks ``k``, ``0 <= k <= m``.
      optimizer: ``"lazy"`` (default), ``"naive"`` or ``"stochastic"``
        (:func:`jaxsubset.solvers.greedy.greedy`).
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
        return GreedyResult(np.zeros(0, np.int64), np.zeros(0), 0, np.full(n, -1, np.int64),
                            0.0 if baseline is None else float(baseline))
    b, gains0 = _initial_pass(op, baseline, need_gains=optimizer == "lazy")
    oracle = FacilityOracle(op, b)
    run = greedy(oracle, k, optimizer=optimizer, epsilon=float(epsilon), seed=seed, batch=int(lazy_batch),
                 initial_gains=gains0)
    return GreedyResult(run.order, run.gains, run.evaluations + (m if gains0 is not None else 0), oracle.assignment, b)


__all__ = ["facility_location", "facility_value", "FacilityOracle", "GreedyResult", "OPTIMIZERS"]
