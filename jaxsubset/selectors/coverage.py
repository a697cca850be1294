"""Cheap geometric selectors on gradients or embeddings: herding and greedy k-center.

- :func:`herding` (Welling 2009; Chen et al. 2010): pick points one at a time so that the
  running mean of the picks tracks the mean of the pool.
- :func:`kcenter_greedy` (Gonzalez 1985; Sener & Savarese 2018): repeatedly pick the
  point farthest from the current centers (a 2-approximation of the k-center radius).

Both take :data:`~jaxsubset.kernels.features.Features` (a feature matrix ``(n, D)`` or last-layer
gradient factors ``(e, h)``), pick through :func:`jaxsubset.solvers.greedy.greedy`, need ``O(n)`` memory beyond the inputs, and one pass
over the pool (``O(n·D)``) per pick.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from jaxsubset.kernels import last_layer_dot, similarity_op, last_layer_mean_grad
from jaxsubset.kernels.features import Features, check_features
from jaxsubset.solvers.greedy import Oracle, greedy
from jaxsubset.subset import Subset, check_budget


def herding(features: Features, budget: int) -> Subset:
    """Kernel herding with a linear kernel: match the pool mean with the mean of the picks.

    Step ``t`` (0-based) picks the unpicked ``i`` minimizing
    ``‖(t + 1)·μ - Σ_{j∈S} x_j - x_i‖`` with ``μ`` the pool mean (ties: lowest index).

    Args:
      features: ``(n, D)`` gradients or embeddings, or last-layer factors ``(e (n, C), h (n, d))``.
      budget: number of examples ``k``.

    Returns:
      An unweighted :class:`Subset`; ``info["order"]`` is the pick order and
      ``info["mean_error"]`` the final ``‖μ - mean(x_S)‖``.
    """
    t0 = time.perf_counter()
    X, H = check_features(features)
    n = X.shape[0]
    if H is not None:  # factored: g_i = e_i ⊗ [h_i, 1] with e = X
        sq = (np.einsum("nc,nc->n", X, X) * (np.einsum("nd,nd->n", H, H) + 1.0)).astype(np.float64)
        mu = last_layer_mean_grad(X, H)
        h1 = np.concatenate([H, np.ones((n, 1), np.float32)], axis=1)
        dots = lambda v: last_layer_dot(X, H, v)  # noqa: E731
        row = lambda j: np.outer(X[j], h1[j]).reshape(-1).astype(np.float64)  # noqa: E731
    else:
        sq = np.einsum("nd,nd->n", X, X).astype(np.float64)
        mu = X.mean(0, dtype=np.float64)
        dots = lambda v: (X @ v.astype(np.float32)).astype(np.float64)  # noqa: E731
        row = lambda j: X[j].astype(np.float64)  # noqa: E731
    k = check_budget(budget, n)
    total = np.zeros_like(mu)

    def gains(cand: np.ndarray) -> np.ndarray:  # -(‖v - x_i‖² - ‖v‖²), v = (t + 1)·μ - Σ_S x_j
        return (2.0 * dots((len(order) + 1) * mu - total) - sq)[cand]

    def add(picks: np.ndarray) -> None:
        nonlocal total
        order.extend(int(j) for j in picks)
        total = total + sum(row(int(j)) for j in picks)

    order: list[int] = []
    greedy(Oracle(n, gains, add), k)
    err = float(np.linalg.norm(mu - total / k)) if k else float(np.linalg.norm(mu))
    return Subset.unweighted(np.sort(np.asarray(order, np.int64)), method="herding",
                             order=np.asarray(order, np.int64), mean_error=err, seconds=time.perf_counter() - t0)


def kcenter_greedy(features: Features, budget: int, *, metric: str = "euclidean", seed: int = 0,
                   initial: Any | None = None) -> Subset:
    """Greedy k-center: repeatedly add the point farthest from the chosen centers.

    Args:
      features: ``(n, D)`` gradients or embeddings, or last-layer factors ``(e (n, C), h (n, d))``.
      budget: number of *new* centers ``k`` (``initial`` ones are not counted or returned).
      metric: ``"euclidean"`` distance or ``"cosine"`` distance ``1 - cos``.
      seed: picks the first center uniformly at random when ``initial`` is empty.
      initial: int indices of already chosen centers (e.g. a labeled set).

    Returns:
      An unweighted :class:`Subset` of the new centers; ``info["order"]`` is the pick
      order and ``info["radius"]`` the largest distance from any point to its nearest
      center after the selection.
    """
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"Unknown metric {metric!r}; choose 'euclidean' or 'cosine'.")
    t0 = time.perf_counter()
    op = similarity_op(features, metric=metric, names=("features", "features"))
    n = op.shape[0]
    init = np.zeros(0, np.int64) if initial is None else np.unique(np.asarray(initial).reshape(-1))
    if init.size and (not np.issubdtype(init.dtype, np.integer) or init.min() < 0 or init.max() >= n):
        raise ValueError(f"initial must hold integer indices in [0, {n}).")
    init = init.astype(np.int64)
    k = check_budget(budget, n - init.size, name="budget (beyond the initial centers)")

    def dist(rows: np.ndarray) -> np.ndarray:
        s = op.rows(rows).astype(np.float64)
        return -s if metric == "euclidean" else 1.0 - s

    mind = np.full(n, np.inf)
    for s in range(0, init.size, 256):
        mind = np.minimum(mind, dist(init[s:s + 256]).min(0))

    def add(picks: np.ndarray) -> None:
        nonlocal mind
        mind = np.minimum(mind, dist(picks).min(0))

    first = [int(np.random.default_rng(seed).integers(n))] if init.size == 0 and k else []
    excluded = np.zeros(n)
    excluded[init] = -np.inf  # initial centers are never picked again
    order = greedy(Oracle(n, lambda c: (mind + excluded)[c], add), k, forced=first).order.tolist()
    radius = float(mind.max()) if n and (k or init.size) else float("inf")
    return Subset.unweighted(np.sort(np.asarray(order, np.int64)), method="kcenter_greedy",
                             order=np.asarray(order, np.int64), radius=radius, seconds=time.perf_counter() - t0)


__all__ = ["herding", "kcenter_greedy"]
