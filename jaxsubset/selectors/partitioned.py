"""Facility location over a million examples: the partitioned greedy (GreeDi).

Mirzasoleiman et al. (2013), *Distributed submodular maximization*: split the ground set into
``m`` random parts, run the greedy in each part (on that part's similarities only), then run
the greedy once more over the union of the parts' picks, covering the **whole** ground set.
No ``n × n`` similarity is ever formed: stage 1 costs ``O(n²/m · D)`` in blocks, stage 2
``O(|union| · n · D)``; memory is ``O(n)`` besides the features. With ``partitions=1`` it is
exactly the (lazy) greedy of :func:`jaxsubset.selectors.facility_location`.

The parts can also be given (``parts=`` a label per example, e.g. classes or clusters).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from jaxsubset.kernels import Similarity, default_chunk, similarity_op
from jaxsubset.selectors.facility import facility_location
from jaxsubset.subset import Subset, check_budget


def coverage_value(op: Similarity, selected: Any, baseline: float) -> float:
    """``F(A) = Σ_i max(max_{j∈A} s_ji - b, 0)`` for row indices ``selected``, column block by block.

    ``op``: a :class:`~jaxsubset.kernels.Similarity` ``(m, n)`` (rows: candidates, columns: points).
    Memory ``O(|A| · chunk)``; suitable for ``n`` in the millions.
    """
    idx = np.asarray(selected, np.int64).reshape(-1)
    if idx.size == 0:
        return 0.0
    n = op.shape[1]
    step = max(default_chunk(idx.size), 1)
    total = 0.0
    for s in range(0, n, step):
        blk = op.block(idx, np.arange(s, min(s + step, n)))
        total += float(np.maximum(blk.max(0) - np.float32(baseline), 0.0).sum(dtype=np.float64))
    return total


def check_features(features: Any) -> np.ndarray:
    """``features`` as a finite float32 ``(n, D)`` array (n >= 1), or a ValueError/TypeError naming the fix."""
    x = np.asarray(features)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"features must be a non-empty (n, D) array; got shape {x.shape}.")
    if x.dtype.kind not in "fiu":
        raise TypeError(f"features must be numeric; got {x.dtype}.")
    x = x.astype(np.float32, copy=False)
    bad = ~np.isfinite(x).all(1)
    if bad.any():
        raise ValueError(f"features have non-finite values in {int(bad.sum())} rows (first: row "
                         f"{int(np.flatnonzero(bad)[0])}); fix or drop them before selection.")
    return x


def partitioned_facility_location(features: Any, budget: int, *, partitions: int = 1, parts: Any = None,
                                  per_part: int | None = None, metric: str = "euclidean",
                                  gamma: float | None = None, baseline: float | None = None,
                                  seed: int = 0, lazy_batch: int = 32) -> Subset:
    """GreeDi facility location on ``features (n, D)``: ``budget`` picks with cluster-size weights.

    Args:
      features: ``(n, D)`` finite features (embeddings, gradients, ...).
      budget: number of picks ``k``, ``1 <= k <= n``.
      partitions: number of random, equal-size parts ``m`` (ignored when ``parts`` is given).
        ``1`` is the plain lazy greedy over all points.
      parts: optional int ``(n,)`` part label of every example (e.g. its class).
      per_part: picks per part in stage 1 (default ``min(|part|, ceil(2k/m))``: the union then
        holds about ``2k`` candidates).
      metric, gamma: the similarity (see :func:`jaxsubset.kernels.similarity_op`). With the
        default ``gamma=None`` of ``"rbf"``, the scale comes from all the features.
      baseline: ``b`` of the objective; default ``min`` of the similarities seen in stage 2 (with
        one part, of all of them). Pass one to compare objectives across runs.
      seed: seed of the random partition.
      lazy_batch: stale candidates re-evaluated together by the lazy greedy (one pass over the
        features serves them all; the picks are the same as one at a time).

    Returns:
      A :class:`Subset`: picks in greedy order, weights = number of points each pick covers best
      (CRAIG's weights; they sum to ``n``); ``info`` has ``objective`` (``F`` over all ``n``
      points), ``baseline``, ``union_size``, ``stage1_s`` and ``stage2_s``.
    """
    x = check_features(features)
    n = x.shape[0]
    k = check_budget(budget, n)
    if k == 0:
        raise ValueError("budget must be >= 1 for facility location.")
    if gamma is None and metric == "rbf":
        gamma = float(similarity_op(x, metric="rbf").gamma)
    if parts is None:
        m = int(partitions)
        if not 1 <= m <= n:
            raise ValueError(f"partitions must be in [1, n={n}]; got {partitions}.")
        perm = np.random.default_rng(seed).permutation(n)
        groups = [np.sort(g) for g in np.array_split(perm, m)]
    else:
        lab = np.asarray(parts)
        if lab.shape != (n,) or lab.dtype.kind not in "iu":
            raise ValueError(f"parts must be an int array of shape ({n},); got {lab.dtype} {lab.shape}.")
        groups = [np.flatnonzero(lab == v) for v in np.unique(lab)]
        m = len(groups)
    if m == 1:
        t0 = time.perf_counter()
        res = facility_location(similarity_op(x, metric=metric, gamma=gamma), k, baseline=baseline,
                                lazy_batch=lazy_batch)
        dt = time.perf_counter() - t0
        w = np.bincount(res.assignment, minlength=k).astype(np.float32)
        return Subset(res.order, w, {"objective": res.value, "baseline": res.baseline, "union_size": n,
                                     "stage1_s": dt, "stage2_s": 0.0, "partitions": 1})
    kp = int(per_part) if per_part is not None else math.ceil(2 * k / m)
    if kp < 1:
        raise ValueError(f"per_part must be >= 1; got {per_part}.")
    t0 = time.perf_counter()
    picks = []
    for g in groups:
        r = facility_location(similarity_op(x[g], metric=metric, gamma=gamma), min(kp, g.size),
                              lazy_batch=lazy_batch)
        picks.append(g[r.order])
    union = np.unique(np.concatenate(picks))
    t1 = time.perf_counter()
    if union.size < k:
        raise ValueError(f"Stage 1 kept {union.size} candidates, fewer than budget={k}; raise per_part.")
    op = similarity_op(x[union], x, metric=metric, gamma=gamma)
    res = facility_location(op, k, baseline=baseline, lazy_batch=lazy_batch)
    w = np.bincount(res.assignment, minlength=k).astype(np.float32)
    return Subset(union[res.order], w, {"objective": res.value, "baseline": res.baseline,
                                        "union_size": int(union.size), "stage1_s": t1 - t0,
                                        "stage2_s": time.perf_counter() - t1, "partitions": m})
