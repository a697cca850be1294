"""Top up a selection that stopped early to exactly its budget (uniform random, weight 1), as CORDS does."""

from __future__ import annotations

from typing import Any

import numpy as np


def fill_to_budget(indices: Any, weights: Any, n: int, budget: int, *, seed: int = 0,
                   weight: float = 1.0) -> tuple[np.ndarray, np.ndarray, int]:
    """Add ``budget - len(indices)`` rows drawn uniformly without replacement from the unselected ones.

    GRAD-MATCH's pursuit stops once the target is matched (or nothing correlates with
    the residual) and may return fewer than ``budget`` examples; CORDS then adds the
    remainder uniformly at random from the unselected examples with weight 1. This
    function does that for any selector.

    Args:
      indices: int ``(m,)`` unique rows already selected, ``m <= budget``.
      weights: float ``(m,)`` their weights (kept unchanged).
      n: pool size; the filled rows come from ``[0, n)`` minus ``indices``.
      budget: the number of rows wanted, ``<= n``.
      seed: seed of the draw.
      weight: weight of every filled row (1, as CORDS).

    Returns:
      ``(indices (budget,), weights (budget,), filled)``: indices sorted, weights aligned,
      ``filled`` the number of rows added.
    """
    idx = np.asarray(indices, np.int64).reshape(-1)
    w = np.asarray(weights, np.float32).reshape(-1)
    n, budget = int(n), int(budget)
    if budget > n:
        raise ValueError(f"fill=True asks for budget={budget} examples but the pool has only {n}; lower the "
                         "budget to at most the pool size, or pass fill=False.")
    if idx.size != w.size:
        raise ValueError(f"indices ({idx.size},) and weights ({w.size},) must align.")
    if idx.size > budget:
        raise ValueError(f"{idx.size} rows are already selected, more than budget={budget}.")
    missing = budget - idx.size
    if missing:
        free = np.ones(n, bool)
        free[idx] = False
        extra = np.random.default_rng(seed).choice(np.flatnonzero(free), size=missing, replace=False)
        idx = np.concatenate([idx, extra.astype(np.int64)])
        w = np.concatenate([w, np.full(missing, weight, np.float32)])
    order = np.argsort(idx, kind="stable")
    return idx[order], w[order], int(missing)
