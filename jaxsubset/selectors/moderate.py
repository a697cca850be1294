"""Moderate coreset (Xia et al., ICLR 2023): examples at the median distance to their class centre.

Within a pool (one class when run per class, as the registry does), the centre is the mean
embedding ``c = mean_i z_i`` and each example's distance is ``d_i = ||z_i - c||_2``. The examples
whose distance is closest to the median distance, ``|d_i - median(d)|`` smallest (ties by the
lower index), are kept: neither the easy core nor the far (hard or mislabeled) tail.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxsubset.checks import as_features
from jaxsubset.subset import Subset, check_budget


def centre_distances(embeddings: Any) -> np.ndarray:
    """``||z_i - mean(z)||_2`` float64 ``(n,)`` for embeddings ``z (n, d)``."""
    z = as_features(embeddings, name="embeddings").astype(np.float64)
    if z.shape[0] == 0:
        return np.zeros(0)
    return np.linalg.norm(z - z.mean(axis=0), axis=1)


def moderate(embeddings: Any, budget: int) -> Subset:
    """Keep the ``budget`` examples whose distance to the centre is closest to the median distance.

    Args:
      embeddings: float array ``(n, d)`` (the ``"embedding"`` quantity: penultimate features).
      budget: number of examples to keep, ``0 <= budget <= n``.
    """
    d = centre_distances(embeddings)
    budget = check_budget(budget, d.size)
    if budget == 0:
        return Subset.unweighted(np.zeros(0, np.int64), method="moderate")
    med = float(np.median(d))
    order = np.argsort(np.abs(d - med), kind="stable")
    return Subset.unweighted(np.sort(order[:budget]), method="moderate", median_distance=med)
