"""k-means++ seeding as a selector (BADGE's selection, Ash et al. 2020): rows spread out in feature space."""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxsubset.subset import Subset, check_budget


def kmeanspp(features: Any, budget: int, *, seed: int = 0) -> Subset:
    """k-means++ seeding (BADGE's selection): ``budget`` rows spread out in feature space.

    The first row is the one of largest norm (as in BADGE); each next row is drawn with
    probability proportional to its squared distance to the nearest row chosen so far
    (``D²`` sampling). If every remaining row coincides with a chosen one, the next row is
    drawn uniformly from the unchosen rows.

    Args:
      features: ``(n, d)``, or a pair ``(e (n, C), h (n, d))`` standing for the last-layer
        gradients ``e ⊗ [h, 1]`` (their dot products are ``(e·e')(h·h' + 1)``; nothing of
        size ``n × C(d+1)`` is materialized).
      budget: number of rows, ``1 <= budget <= n``.
      seed: seed of the NumPy generator.

    Returns:
      A :class:`Subset` with sorted indices; ``info["order"]`` is the order of choice.
    """
    if isinstance(features, tuple):
        if len(features) != 2:
            raise ValueError(f"features given as a tuple must be the pair (e (n, C), h (n, d)); got "
                             f"{len(features)} items.")
        e, h = (np.asarray(a, np.float64) for a in features)
        if e.ndim != 2 or h.ndim != 2 or e.shape[0] != h.shape[0]:
            raise ValueError(f"the pair must be e (n, C) and h (n, d) with the same n; got {e.shape} and {h.shape}.")
    else:
        e, h = np.asarray(features, np.float64), None
        if e.ndim != 2:
            raise ValueError(f"features must be a 2-D array (n, d), got shape {e.shape}.")
    if not (np.all(np.isfinite(e)) and (h is None or np.all(np.isfinite(h)))):
        raise ValueError("features contain NaN or inf; fix the model or drop those rows.")
    n = e.shape[0]
    budget = check_budget(budget, n, minimum=1)
    sq = np.sum(e * e, axis=1) * (1.0 if h is None else np.sum(h * h, axis=1) + 1.0)

    def dist2(j: int) -> np.ndarray:
        dot = e @ e[j] if h is None else (e @ e[j]) * (h @ h[j] + 1.0)
        return np.maximum(sq + sq[j] - 2.0 * dot, 0.0)

    rng = np.random.default_rng(seed)
    chosen = np.zeros(n, bool)
    order = [int(np.argmax(sq))]
    chosen[order[0]] = True
    d2 = dist2(order[0])
    d2[chosen] = 0.0
    for _ in range(budget - 1):
        total = d2.sum()
        if total > 0:
            j = int(rng.choice(n, p=d2 / total))
        else:
            j = int(rng.choice(np.flatnonzero(~chosen)))
        order.append(j)
        chosen[j] = True
        d2 = np.minimum(d2, dist2(j))
        d2[chosen] = 0.0
    order_arr = np.asarray(order, np.int64)
    return Subset.unweighted(np.sort(order_arr), method="kmeans++", order=order_arr)


__all__ = ["kmeanspp"]
