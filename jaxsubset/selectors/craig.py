"""CRAIG (Mirzasoleiman et al. 2020): a weighted coreset by facility location on gradients.

CRAIG picks ``k`` examples whose gradients best "cover" every example's gradient —
greedy maximization of ``F(S) = Σ_i max_{j∈S} s_ij`` with ``s = max d - d`` for the
Euclidean distance ``d`` between per-example gradients — and weights each pick by the
number of examples it is the closest pick to (the CRAIG step sizes), so the weights
sum to ``n``.

Similarities are evaluated in blocks (:mod:`jaxsubset.kernels`) on
:data:`~jaxsubset.kernels.features.Features`: feature rows ``(n, D)`` (any per-example gradients or
embeddings), or last-layer factors ``(e, h)`` with the closed-form Gram ``(e_i·e_j)(h_i·h_j + 1)``
so the ``n × C(d+1)`` gradient matrix is never formed. Pools up to ``dense_limit`` examples
keep the ``n × n`` similarity in memory for fast greedy steps; larger pools recompute
rows on demand (``O(n)`` memory beyond the inputs).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from jaxsubset.kernels import METRICS, precomputed, similarity_op
from jaxsubset.kernels.features import Features, is_factored
from jaxsubset.selectors.facility import facility_location
from jaxsubset.subset import Subset, check_budget

CRAIG_METRICS = tuple(METRICS)


def craig(features: Features, budget: int, *, metric: str = "euclidean", optimizer: str = "lazy",
          seed: int = 0, epsilon: float = 0.01, gamma: float | None = None, dense_limit: int = 16384,
          rows: Any = None) -> Subset:
    """Select a CRAIG coreset of ``budget`` examples with facility-location weights.

    Args:
      features: ``(n, D)`` per-example gradients (or embeddings), or last-layer factors
        ``(e (n, C), h (n, d))`` standing for ``g_i = e_i ⊗ [h_i, 1]``.
      budget: number of examples ``k``, ``0 <= k <= n``.
      metric: similarity between gradients, a name of :data:`jaxsubset.kernels.METRICS`
        (``"euclidean"``: CRAIG's ``max d - d``); facility location uses the similarity minus its minimum.
      optimizer: ``"lazy"`` (exact greedy with a priority queue), ``"stochastic"``
        (stochastic greedy, ``(1 - 1/e - ε)`` in expectation) or ``"naive"``.
      seed: seed of the stochastic optimizer.
      epsilon: the stochastic optimizer's ``ε``.
      gamma: RBF scale (see :func:`jaxsubset.kernels.similarity_op`).
      dense_limit: largest ``n`` for which the ``n × n`` float32 similarity is held in memory.
      rows: int indices of a sub-pool to select from (e.g. one class; :func:`per_class`
        passes them): similarities are computed from the pool's rows in blocks, without
        copying the sub-pool; the returned indices are positions in ``rows``.

    Returns:
      A :class:`Subset` with sorted indices and weights ``w_j = |{i : j is i's most
      similar pick}|`` (ties to the earlier pick), ``Σ w = n``. ``info`` holds
      ``order`` (picks in greedy order), ``gains``, ``objective``, ``evaluations``,
      ``seconds`` and the settings.
    """
    if metric not in CRAIG_METRICS:
        raise ValueError(f"Unknown metric {metric!r}; choose one of {CRAIG_METRICS}.")
    t0 = time.perf_counter()
    op = similarity_op(features, metric=metric, gamma=gamma, names=("features", "features"), rows=rows)
    n = op.shape[0]
    k = check_budget(budget, n)
    dense = n <= int(dense_limit)
    sim = precomputed(op.dense()) if dense and k > 0 else op
    res = facility_location(sim, k, optimizer=optimizer, epsilon=epsilon, seed=seed,
                            lazy_batch=1 if dense else 16)
    counts = np.bincount(res.assignment[res.assignment >= 0], minlength=k).astype(np.float32)
    sort = np.argsort(res.order, kind="stable")
    info = dict(method="craig", metric=metric, optimizer=optimizer, order=res.order, gains=res.gains,
                objective=res.value, evaluations=res.evaluations, dense=dense,
                factored=is_factored(features), seconds=time.perf_counter() - t0)
    return Subset(res.order[sort], counts[sort], info)


__all__ = ["craig", "CRAIG_METRICS"]
