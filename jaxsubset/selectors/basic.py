"""The simplest selectors: uniform random and score top-k."""

from __future__ import annotations

import numpy as np

from jaxsubset.subset import Subset, check_budget
from jaxsubset.checks import as_scores


def random(n: int, budget: int, *, seed: int = 0) -> Subset:
    """``budget`` indices drawn uniformly without replacement from ``range(n)``, sorted.

    Args:
      n: pool size.
      budget: number of examples to keep, ``0 <= budget <= n``.
      seed: seed of the NumPy generator (deterministic for a seed).
    """
    if int(n) < 0:
        raise ValueError(f"n must be >= 0, got {n}.")
    budget = check_budget(budget, int(n))
    idx = np.random.default_rng(seed).choice(int(n), size=budget, replace=False)
    return Subset.unweighted(np.sort(idx), method="random")


def top_k(scores: np.ndarray, budget: int, *, largest: bool = True) -> Subset:
    """Keep the ``budget`` examples with the largest (or smallest) scores.

    Ties are broken by the lower index (a stable sort), so the result is deterministic.

    Args:
      scores: float array ``(n,)``, finite.
      budget: number of examples to keep.
      largest: keep the highest scores ("hard" examples for loss / gradient norm) if
        True, the lowest ("easy") if False.
    """
    s = as_scores(scores)
    budget = check_budget(budget, s.size)
    order = np.argsort(-s if largest else s, kind="stable")
    return Subset.unweighted(np.sort(order[:budget]), method="top_k", largest=largest)
