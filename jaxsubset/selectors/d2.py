"""D2 pruning (Maharana, Yadav & Bansal, ICLR 2024): message passing over a kNN graph of embeddings.

Nodes are examples, edges join each example to its ``k`` nearest neighbours in embedding space
(exact, blocked: :func:`jaxsubset.knn.knn`, never an ``n x n`` matrix), weighted
``w_ij = exp(-gamma * d_ij)``. With difficulty ``s`` scaled to ``[0, 1]`` (hardest = 1):

- forward message passing: ``s'_i = s_i + sum_{j in N(i)} exp(-gamma_f d_ij) s_j``: an example is
  important when it is hard and sits in a hard, dense region;
- selection with reverse message passing: repeatedly take the unselected example of largest
  ``s'``, then lower its neighbours: ``s'_j -= exp(-gamma_r d_ij) s'_i`` for ``j in N(i)``, so the
  next picks come from elsewhere (diversity).

As in the paper (which inherits CCS's cutoff) the ``beta`` fraction of the hardest examples can be
dropped first. Cost: the kNN graph (see :mod:`jaxsubset.knn`) plus ``O(budget * n)`` for the greedy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxsubset.knn import check_k, knn
from jaxsubset.checks import as_features, as_scores
from jaxsubset.selectors.ccs import hard_cutoff
from jaxsubset.subset import Subset, check_budget


def difficulty(scores: Any, hard: str = "high") -> np.ndarray:
    """Scores mapped to ``[0, 1]`` with 1 = hardest (``hard="high"``: larger is harder; ``"low"``: smaller)."""
    if hard not in ("low", "high"):
        raise ValueError(f"hard must be 'high' (larger score = harder, e.g. EL2N) or 'low' (e.g. AUM), got {hard!r}.")
    h = as_scores(scores)
    h = h if hard == "high" else -h
    if h.size == 0:
        return h
    lo, hi = h.min(), h.max()
    return np.ones_like(h) if hi <= lo else (h - lo) / (hi - lo)


def _gamma(gamma: float | None, dist: np.ndarray) -> float:
    if gamma is None:  # distances measured in units of the mean neighbour distance
        m = float(dist.mean()) if dist.size else 0.0
        return 1.0 / m if m > 0 else 1.0
    if not np.isfinite(gamma) or gamma < 0:
        raise ValueError(f"gamma must be a finite number >= 0 (or None for 1 / mean kNN distance), got {gamma}.")
    return float(gamma)


def forward_scores(s: np.ndarray, dist: np.ndarray, idx: np.ndarray, gamma: float) -> np.ndarray:
    """Forward message passing: ``s_i + sum_j exp(-gamma dist_ij) s_{idx_ij}`` for a kNN graph ``(n, k)``."""
    return s + (np.exp(-gamma * dist.astype(np.float64)) * s[idx]).sum(axis=1)


def reverse_select(scores: np.ndarray, dist: np.ndarray, idx: np.ndarray, gamma: float, budget: int) -> np.ndarray:
    """Greedy selection with reverse message passing; returns the picks in selection order ``(budget,)``."""
    s = np.array(scores, np.float64)
    w = np.exp(-gamma * dist.astype(np.float64))
    taken = np.zeros(s.size, bool)
    picks = np.empty(budget, np.int64)
    for t in range(budget):
        i = int(np.argmax(np.where(taken, -np.inf, s)))
        picks[t] = i
        taken[i] = True
        s[idx[i]] -= w[i] * s[i]
    return picks


def d2(embeddings: Any, scores: Any, budget: int, *, k: int = 10, gamma_forward: float | None = None,
       gamma_reverse: float | None = None, beta: float | None = 0.0, hard: str = "high") -> Subset:
    """D2 pruning: kNN graph, forward message passing of difficulty, greedy reverse message passing.

    Args:
      embeddings: float ``(n, d)`` (the ``"embedding"`` quantity).
      scores: difficulty ``(n,)`` (EL2N, forgetting: ``hard="high"``; AUM: ``hard="low"``).
      budget: number of examples to keep, ``0 <= budget <= n``.
      k: neighbours per example, ``1 <= k < n - floor(beta n)`` (the paper uses 10 on CIFAR).
      gamma_forward, gamma_reverse: edge weights ``exp(-gamma d)``; ``None`` = 1 / (mean kNN distance).
      beta: fraction of the hardest examples dropped before building the graph, in ``[0, 1)``;
        ``None`` chooses it from the pruning rate as CCS does (:func:`~jaxsubset.selectors.ccs.auto_beta`).
      hard: which end of ``scores`` is hard.

    Returns:
      Unweighted :class:`Subset` (indices sorted); ``info["order"]`` holds the picks in greedy order.
    """
    z = as_features(embeddings, name="embeddings")
    s = difficulty(scores, hard)
    n = s.size
    if z.shape[0] != n:
        raise ValueError(f"embeddings have {z.shape[0]} rows but scores have {n}; they must describe the same pool.")
    budget = check_budget(budget, n)
    beta, num_drop = hard_cutoff(beta, budget, n)
    if budget == 0:
        return Subset.unweighted(np.zeros(0, np.int64), method="d2", order=[])
    kept = np.sort(np.argsort(-s, kind="stable")[num_drop:])
    check_k(k, kept.size, what="the pool (class) after the hard cutoff")
    dist, idx = knn(z[kept], k)
    gf, gr = _gamma(gamma_forward, dist), _gamma(gamma_reverse, dist)
    picks = kept[reverse_select(forward_scores(s[kept], dist, idx, gf), dist, idx, gr, budget)]
    return Subset.unweighted(np.sort(picks), method="d2", k=int(k), gamma_forward=gf, gamma_reverse=gr,
                             beta=beta, order=picks.tolist())
