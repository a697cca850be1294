"""Facility location on a sparse k-nearest-neighbour graph: selection over millions of examples.

Each candidate ``j`` covers only itself and its ``K`` nearest neighbours ``N(j)`` (similarity
``-|x_i - x_j|``, the negated distance of :func:`jaxsubset.kernels.similarity_op`'s
``"euclidean"``), so the objective

    G(A) = Σ_i max(max_{j∈A, i∈{j}∪N(j)} s_ij - b, 0)

is a facility-location function on the graph: monotone, submodular, and a **lower bound** of the
dense ``F(A) = Σ_i max(max_{j∈A} s_ij - b, 0)`` (the dense one maximizes over more candidates).
A gain is a sum over ``K + 1`` entries instead of ``n``, so the lazy greedy costs
``O(evaluations · K)``; the graph costs ``O(n K)`` memory (int32 ids, float32 similarities) and
comes from faiss (:func:`jaxsubset.knn.approximate_knn`) or, for small ``n``, the exact
:func:`jaxsubset.knn.knn`. With ``K = n - 1`` the graph is complete and the picks are those of the
dense lazy greedy :func:`jaxsubset.selectors.facility_location`.

Choose ``K`` about ``n / budget`` or more: a candidate must be able to cover a share of the
points comparable with the share each pick represents, otherwise the greedy only counts covered
points. Afterwards every point is assigned to its exactly nearest pick (one blocked pass over
``n × budget`` distances), which gives CRAIG's weights and the dense objective.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from jaxsubset.knn import approximate_knn, check_k, knn
from jaxsubset.selectors.partitioned import check_features
from jaxsubset.solvers.greedy import Oracle, greedy
from jaxsubset.subset import Subset, check_budget

_EXACT_MAX_N = 20_000   # "auto" graph: exact knn() up to this many rows, approximate_knn() beyond


def knn_graph_greedy(cols: np.ndarray, sims: np.ndarray, budget: int, *, baseline: float,
                     self_similarity: float | None = 0.0, lazy_batch: int = 64
                     ) -> tuple[np.ndarray, np.ndarray, int]:
    """Lazy greedy (Minoux; the engine of :mod:`jaxsubset.solvers.greedy`) for facility location on a
    candidate-to-points graph.

    Args:
      cols: int ``(m, K)``: the points (ids in ``[0, n)``) that candidate ``j`` covers; no
        repeated id within a row.
      sims: float32 ``(m, K)``: the similarity of candidate ``j`` to each of those points.
      budget: number of picks ``k <= m``.
      baseline: ``b``: a point's value is ``max(best similarity - b, 0)`` (0 while uncovered).
      self_similarity: when not ``None``, candidates and points are one set (``m = n``) and
        candidate ``j`` also covers point ``j`` with this similarity (``cols`` then need not
        list ``j``; it must not list it twice).
      lazy_batch: stale candidates re-evaluated together (same picks as one at a time).

    Returns:
      ``(order (k,) int64, gains (k,) float64, evaluations)``; ties go to the lower index.
    """
    if cols.ndim != 2 or cols.shape != sims.shape or cols.dtype.kind not in "iu":
        raise ValueError(f"cols (int) and sims must be (m, K) arrays of one shape; got {cols.dtype} {cols.shape} "
                         f"and {sims.shape}.")
    m = cols.shape[0]
    budget = check_budget(budget, m)
    n = max(int(cols.max()) + 1 if cols.size else 0, m if self_similarity is not None else 0)
    b = np.float32(baseline)
    own = None if self_similarity is None else np.float32(self_similarity)
    cov = np.full(n, b, np.float32)
    gains0 = np.empty(m, np.float64)
    for s in range(0, m, 1 << 16):
        gains0[s:s + (1 << 16)] = np.maximum(sims[s:s + (1 << 16)] - b, 0.0).sum(1, dtype=np.float64)
    if own is not None:
        gains0 += max(float(own - b), 0.0)

    def gains(rows: np.ndarray) -> np.ndarray:
        g = np.maximum(sims[rows] - cov[cols[rows]], 0.0).sum(1, dtype=np.float64)
        if own is not None:
            g += np.maximum(own - cov[rows], 0.0)
        return g

    def add(picks: np.ndarray) -> None:
        j = int(picks[0])
        c = cols[j]
        cov[c] = np.maximum(cov[c], sims[j])
        if own is not None:
            cov[j] = max(cov[j], own)

    run = greedy(Oracle(m, gains, add), budget, optimizer="lazy", batch=lazy_batch, initial_gains=gains0)
    return run.order, run.gains, run.evaluations + m


def nearest_pick(features: np.ndarray, picks: np.ndarray, *, block_bytes: int = 32 << 20
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Exact nearest pick of every row of ``features (n, D)``: ``(dist (n,) float32, pos (n,) int64)``.

    ``pos`` is the position in ``picks`` (int ``(k,)`` row indices). One pass over the
    ``n × k`` squared distances in blocks of ``block_bytes`` (a matrix product per block); ties go
    to the earlier pick; a row that is itself a pick gets distance 0.
    """
    x = features
    picks = np.asarray(picks, np.int64)
    c = x[picks]
    csq = np.einsum("ij,ij->i", c, c)
    n = x.shape[0]
    rows = max(1, int(block_bytes) // (4 * max(picks.size, 1)))
    dist = np.empty(n, np.float32)
    pos = np.empty(n, np.int64)
    buf = np.empty((rows, picks.size), np.float32)
    for s in range(0, n, rows):
        blk = x[s:s + rows]
        d2 = np.matmul(blk, c.T, out=buf[:blk.shape[0]])
        d2 *= -2.0
        d2 += csq
        p = np.argmin(d2, axis=1)
        dist[s:s + blk.shape[0]] = np.take_along_axis(d2, p[:, None], 1)[:, 0] + np.einsum("ij,ij->i", blk, blk)
        pos[s:s + blk.shape[0]] = p
    np.sqrt(np.maximum(dist, 0.0, out=dist), out=dist)
    dist[picks] = 0.0
    pos[picks] = np.arange(picks.size)
    return dist, pos


def knn_facility_location(features: Any, budget: int, *, k_neighbors: int | None = None,
                          baseline: float | None = None, graph: str = "auto", nprobe: int = 2,
                          lazy_batch: int = 64, seed: int = 0) -> Subset:
    """Facility location (euclidean) of ``features (n, D)`` on a sparse kNN graph; ``budget`` picks.

    Args:
      features: ``(n, D)`` finite features.
      budget: number of picks ``k``, ``1 <= k <= n``.
      k_neighbors: ``K``, points each candidate covers besides itself, ``1 <= K <= n - 1``;
        default ``min(n - 1, max(10, ceil(n / k)))``.
      baseline: ``b`` of the objective; default the smallest similarity in the graph
        (``-`` the largest neighbour distance). Pass one to compare objectives across runs.
      graph: ``"exact"`` (:func:`jaxsubset.knn.knn`, ``O(n² D)``), ``"faiss"`` (k-means cells,
        :func:`jaxsubset.knn.approximate_knn`) or ``"auto"`` (exact up to 20 000 rows).
      nprobe: cells searched around each cell by :func:`~jaxsubset.knn.approximate_knn`.
      lazy_batch: stale candidates re-evaluated together by the lazy greedy (same picks).
      seed: seed of the k-means cells.

    Returns:
      A :class:`Subset`: picks in greedy order, weights = number of points whose nearest pick
      (exact, all ``n`` points) is that pick (they sum to ``n``). ``info``: ``graph_objective``
      (``G``), ``objective`` (the dense ``F`` with the same ``b``: ``G <= F``), ``mean_distance``
      (mean distance of a point to its nearest pick), ``baseline``, ``k_neighbors``,
      ``evaluations`` and the seconds of each stage (``graph_s``, ``greedy_s``, ``assign_s``;
      process CPU seconds ``graph_cpu_s``, ...).
    """
    x = check_features(features)
    n = x.shape[0]
    k = check_budget(budget, n)
    if k == 0:
        raise ValueError("budget must be >= 1 for facility location.")
    if n == 1:
        return Subset(np.zeros(1, np.int64), np.ones(1, np.float32), {"objective": 0.0})
    K = min(n - 1, max(10, math.ceil(n / k))) if k_neighbors is None else check_k(k_neighbors, n)
    if graph not in ("auto", "exact", "faiss"):
        raise ValueError(f"graph must be 'auto', 'exact' or 'faiss'; got {graph!r}.")
    if int(lazy_batch) < 1:
        raise ValueError(f"lazy_batch must be >= 1, got {lazy_batch!r}.")
    if baseline is not None and not np.isfinite(baseline):
        raise ValueError(f"baseline must be finite, got {baseline!r}.")
    t0, c0 = time.perf_counter(), time.process_time()
    exact = graph == "exact" or (graph == "auto" and n <= _EXACT_MAX_N)
    dist, nbr = knn(x, K) if exact else approximate_knn(x, K, nprobe=nprobe, seed=seed)
    sims = np.negative(dist, out=dist)   # in place: the graph is the one copy
    b = min(float(sims.min()), 0.0) if baseline is None else float(baseline)
    t1, c1 = time.perf_counter(), time.process_time()
    order, gains, evals = knn_graph_greedy(nbr, sims, k, baseline=b, self_similarity=0.0,
                                           lazy_batch=int(lazy_batch))
    del nbr, sims, dist
    t2, c2 = time.perf_counter(), time.process_time()
    d, pos = nearest_pick(x, order)
    w = np.bincount(pos, minlength=k).astype(np.float32)
    dense = float(np.maximum(-d.astype(np.float64) - b, 0.0).sum())
    info = {"graph_objective": float(gains.sum()), "objective": dense, "mean_distance": float(d.mean(dtype=np.float64)),
            "baseline": b, "k_neighbors": K, "evaluations": evals, "graph": "exact" if exact else "faiss",
            "graph_s": t1 - t0, "greedy_s": t2 - t1, "assign_s": time.perf_counter() - t2,
            "graph_cpu_s": c1 - c0, "greedy_cpu_s": c2 - c1, "assign_cpu_s": time.process_time() - c2}
    return Subset(order, w, info)


__all__ = ["knn_facility_location", "knn_graph_greedy", "nearest_pick"]
