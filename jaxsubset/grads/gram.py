"""Inner products of per-sample gradients ``K[i, j] = <g_i, g_j>`` (CRAIG, GRAD-MATCH, targeted kernels)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from jax.sharding import Mesh

from jaxsubset.grads._params import Wrt
from jaxsubset.grads.last_layer import last_layer_factors
from jaxsubset.grads.per_sample import per_sample_grads
from jaxsubset.kernels import similarity

METHODS = ("last_layer", "exact")


def gram(fn: Callable, params: Any, x: Any, y: Any, x2: Any | None = None, y2: Any | None = None, *,
         method: str = "last_layer", wrt: Wrt = None, project_dim: int | None = None,
         projection: str = "rademacher", seed: int = 0, batch_size: int = 256, progress: bool = False,
         mesh: Mesh | None = None) -> np.ndarray:
    """Gram matrix of per-sample loss gradients between ``(x, y)`` and ``(x2, y2)`` (default: itself).

    Args:
      fn: with ``method="last_layer"``, ``apply_with_embedding(params, x) -> (logits, h)``
        (``PureModel.apply_with_embedding``); with ``method="exact"``,
        ``apply_fn(params, x) -> logits``.
      params: the parameter pytree.
      x, y: ``(n1, ...)`` inputs and labels; x2, y2: ``(n2, ...)`` (both or neither).
      method: ``"last_layer"``: gradients of the linear head in closed form,
        ``<g_i, g_j> = (e_i·e_j)(h_i·h_j + 1)``, never materialized;
        ``"exact"``: ``per_sample_grads`` (optionally ``wrt`` / ``project_dim``
        sketched) of both sets, multiplied chunk by chunk.
      wrt, project_dim, projection, seed: as in ``per_sample_grads`` (``"exact"`` only).
      batch_size, progress, mesh: chunking, progress bar and data-parallel mesh.

    Returns:
      float32 numpy ``(n1, n2)``.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose one of {METHODS}.")
    if (x2 is None) != (y2 is None):
        raise ValueError("Pass both x2 and y2, or neither.")
    kw = dict(batch_size=batch_size, progress=progress, mesh=mesh)
    if method == "last_layer":
        if wrt is not None or project_dim is not None:
            raise ValueError("wrt and project_dim apply to method='exact' only; the last-layer Gram is exact.")
        e1, h1 = last_layer_factors(fn, params, x, y, **kw)
        f2 = None if x2 is None else tuple(last_layer_factors(fn, params, x2, y2, **kw))
        return similarity((e1, h1), f2, metric="dot")
    pk = dict(wrt=wrt, project_dim=project_dim, projection=projection, seed=seed, **kw)
    g1 = per_sample_grads(fn, params, x, y, **pk).astype(np.float32, copy=False)
    g2 = g1 if x2 is None else per_sample_grads(fn, params, x2, y2, **pk).astype(np.float32, copy=False)
    out = np.empty((g1.shape[0], g2.shape[0]), np.float32)
    step = max(1, int(batch_size))
    for s in range(0, g1.shape[0], step):
        out[s:s + step] = g1[s:s + step] @ g2.T
    return out
