"""Uncertainty selectors (DeepCore's "Uncertainty"): keep the examples a surrogate is least sure about.

From one surrogate's softmax ``p (n, C)``, the uncertainty of example ``i`` is

- ``"least_confidence"``: ``1 - max_c p_ic``;
- ``"entropy"``: ``-sum_c p_ic log p_ic`` (``0 log 0 = 0``);
- ``"margin"``: ``1 - (p_i(1) - p_i(2))``, one minus the gap between the two largest probabilities.

All three are larger for more uncertain examples; the selector keeps the ``budget`` largest
(ties by the lower index), as DeepCore keeps the smallest confidence / margin / negative entropy.
The label is not used (these are active-learning scores).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxsubset.subset import Subset, check_budget

KINDS = ("least_confidence", "entropy", "margin")


def as_probs(probs: Any, *, atol: float = 1e-3) -> np.ndarray:
    """``probs`` as float64 ``(n, C)`` softmax rows (``C >= 2``, non-negative, summing to 1) or a clear error."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probs must be softmax probabilities of shape (n, C) with C >= 2, got shape {p.shape}.")
    if not np.all(np.isfinite(p)):
        raise ValueError("probs contain NaN or inf; fix the scoring model.")
    if p.size and (p.min() < -atol or np.abs(p.sum(axis=1) - 1.0).max() > atol):
        raise ValueError("probs rows must be non-negative and sum to 1: pass softmax probabilities (the 'probs' "
                         "quantity of jaxsubset.workflows.quantities), not logits.")
    return p


def uncertainty_scores(probs: Any, kind: str = "least_confidence") -> np.ndarray:
    """Uncertainty ``(n,)`` of each row of softmax ``probs (n, C)``; larger = more uncertain (see module doc)."""
    if kind not in KINDS:
        raise ValueError(f"Unknown uncertainty kind {kind!r}; choose one of {list(KINDS)}.")
    p = as_probs(probs)
    if kind == "least_confidence":
        return 1.0 - p.max(axis=1)
    if kind == "entropy":
        with np.errstate(divide="ignore", invalid="ignore"):
            plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
        return -plogp.sum(axis=1)
    top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def uncertainty(probs: Any, budget: int, *, kind: str = "least_confidence") -> Subset:
    """Keep the ``budget`` most uncertain rows of softmax ``probs (n, C)`` (ties by the lower index).

    Args:
      probs: float array ``(n, C)`` of softmax probabilities.
      budget: number of examples to keep, ``0 <= budget <= n``.
      kind: ``"least_confidence" | "entropy" | "margin"``.
    """
    u = uncertainty_scores(probs, kind)
    budget = check_budget(budget, u.size)
    order = np.argsort(-u, kind="stable")
    return Subset.unweighted(np.sort(order[:budget]), method="uncertainty", kind=kind)
