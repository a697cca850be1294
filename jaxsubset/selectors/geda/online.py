"""Online GEDA (the GEDA study's Algorithm 6.1): a GEDA subset, weighted by gradient matching."""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxsubset.checks import as_features
from jaxsubset.selectors.geda.selector import geda
from jaxsubset.selectors.weights import match_weights
from jaxsubset.subset import Subset


def online_geda(norms: Any, grads: Any, budget: int, *, num_nodes: int | None = 5, lam: float = 0.1,
                **geda_kwargs: Any) -> Subset:
    """GEDA on the gradient norms, then weights from a regularized gradient match.

    Args:
      norms: ``(n,)`` per-example gradient norms (GEDA's input).
      grads: ``(n, D)`` per-example gradient features (last-layer, projected or full) used
        to weight the chosen examples so that their weighted sum matches the pool's
        gradient sum (see :func:`jaxsubset.selectors.weights.match_weights`).
      budget: number of examples to keep.
      num_nodes, geda_kwargs: passed to :func:`jaxsubset.selectors.geda`.
      lam: scale-free ridge pull towards the uniform weight ``n / budget``.

    Returns:
      A :class:`Subset` whose weights average about ``n / budget``.
    """
    G = as_features(grads, name="grads")
    n = G.shape[0]
    if np.shape(norms)[0] != n:
        raise ValueError(f"norms has {np.shape(norms)[0]} rows but grads has {n}.")
    sub = geda(norms, budget, num_nodes=num_nodes, **geda_kwargs)
    if len(sub) == 0:
        return sub
    w = match_weights(G[sub.indices], G.sum(axis=0), prior=n / len(sub), lam=lam)
    if not np.any(w > 0):  # degenerate match (e.g. all-zero gradients): keep uniform weights
        w = np.full(len(sub), n / len(sub), np.float32)
    return Subset(sub.indices, w, {**sub.info, "method": "online_geda", "lam": lam})
