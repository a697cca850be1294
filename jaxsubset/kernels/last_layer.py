"""Factored last-layer gradients ``g = e ⊗ [h, 1]`` and their algebra, never materialized.

The gradient of the cross-entropy w.r.t. a linear head ``W (C, d + 1)`` (bias last) is
``g = e ⊗ [h, 1]`` with ``e = softmax(z) - onehot(y)`` ``(n, C)`` and ``h`` the penultimate
embedding ``(n, d)``, so ``<g_i, g_j> = (e_i·e_j)(h_i·h_j + 1)`` and ``<g_i, v>`` are computed
without forming ``g`` (``n × C(d+1)`` floats); see :func:`materialize_last_layer` for the layout.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsubset.kernels.blocks import check_rows, finite_matrix, gather, gather_step, row_step

@jax.jit
def _last_layer_gram_block(e1, h1, e2, h2):
    return (e1 @ e2.T) * (h1 @ h2.T + 1.0)


def last_layer_gram(e1: Any, h1: Any, e2: Any | None = None, h2: Any | None = None, *,
                    chunk: int = 4096) -> np.ndarray:
    """Inner products of last-layer per-example gradients without materializing them.

    The last-layer gradient of example i is ``e_i ⊗ [h_i, 1]`` with
    ``e_i = softmax(z_i) - onehot(y_i)`` ``(C,)`` and ``h_i`` the penultimate
    embedding ``(d,)``, so ``<g_i, g_j> = (e_i·e_j)(h_i·h_j + 1)``.

    Args:
      e1: ``(n1, C)`` softmax-minus-onehot rows; h1: ``(n1, d)`` embeddings.
      e2, h2: ``(n2, C)``, ``(n2, d)``; default to ``e1, h1``.
      chunk: rows of the first argument processed per jitted call.

    Returns:
      float32 ``(n1, n2)`` Gram matrix.
    """
    e1 = np.asarray(e1, np.float32); h1 = np.asarray(h1, np.float32)
    e2 = e1 if e2 is None else np.asarray(e2, np.float32)
    h2 = h1 if h2 is None else np.asarray(h2, np.float32)
    if e1.shape[0] != h1.shape[0] or e2.shape[0] != h2.shape[0]:
        raise ValueError("e and h must have the same number of rows.")
    if e1.shape[1] != e2.shape[1] or h1.shape[1] != h2.shape[1]:
        raise ValueError(f"Dimension mismatch: e {e1.shape[1]} vs {e2.shape[1]}, h {h1.shape[1]} vs {h2.shape[1]}.")
    out = np.empty((e1.shape[0], e2.shape[0]), np.float32)
    E2, H2 = jnp.asarray(e2), jnp.asarray(h2)
    for s in range(0, e1.shape[0], chunk):
        out[s:s + chunk] = np.asarray(_last_layer_gram_block(jnp.asarray(e1[s:s + chunk]),
                                                             jnp.asarray(h1[s:s + chunk]), E2, H2))
    return out


def as_factors(factors: Any, name: str = "factors", rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate last-layer factors ``(e (n, C), h (n, d))`` and return them as float32 arrays.

    With ``rows`` only those rows are checked for NaN/inf (see :func:`finite_matrix`).
    """
    if not isinstance(factors, (tuple, list)) or len(factors) != 2:
        raise TypeError(f"{name} must be a pair (e (n, C), h (n, d)) of last-layer factors, "
                        f"got {type(factors).__name__}.")
    e0, h0 = np.asarray(factors[0]), np.asarray(factors[1])
    if e0.ndim == 2 and h0.ndim == 2 and e0.shape[0] != h0.shape[0]:
        raise ValueError(f"{name}: e has {e0.shape[0]} rows but h has {h0.shape[0]}; they must match.")
    rows = check_rows(rows, e0.shape[0]) if e0.ndim == 2 else rows
    e = finite_matrix(e0, f"{name}[0] (e)", rows)
    h = finite_matrix(h0, f"{name}[1] (h)", rows)
    return e, h


def materialize_last_layer(e: Any, h: Any) -> np.ndarray:
    """Materialize last-layer gradients ``g_i = vec(e_i ⊗ [h_i, 1])`` as ``(n, C·(d+1))`` float32.

    Row layout is C-major: ``g_i.reshape(C, d + 1)[c] = e_ic · [h_i, 1]`` (the head's
    weight rows followed by the bias in the last column). Only for small problems,
    tests and baselines — the selectors work on the factors directly.
    """
    e, h = as_factors((e, h))
    h1 = np.concatenate([h, np.ones((h.shape[0], 1), np.float32)], axis=1)
    return (e[:, :, None] * h1[:, None, :]).reshape(e.shape[0], -1)


def last_layer_mean_grad(e: Any, h: Any, rows: np.ndarray | None = None) -> np.ndarray:
    """Mean last-layer gradient ``(1/n) Σ_i e_i ⊗ [h_i, 1]`` as a ``(C·(d+1),)`` vector (over ``rows``)."""
    e, h = as_factors((e, h), rows=rows)
    m = e.shape[0] if rows is None else rows.size
    acc = np.zeros((e.shape[1], h.shape[1] + 1))
    step = row_step(h.shape[1]) if rows is None else gather_step(h.shape[1], 8, m)  # float64 blocks
    for s in range(0, m, step):
        eb = gather(e, rows, slice(s, s + step)).astype(np.float64)
        acc[:, :-1] += eb.T @ gather(h, rows, slice(s, s + step)).astype(np.float64)
        acc[:, -1] += eb.sum(0)
    return (acc / max(m, 1)).reshape(-1)

def last_layer_dot(e: np.ndarray, h: np.ndarray, v: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """``<g_i, v>`` for every factored gradient ``g_i = e_i ⊗ [h_i, 1]``, as float64 ``(n,)``.

    ``v`` is a gradient-space vector ``(C·(d+1),)`` (layout of :func:`materialize_last_layer`)
    or matrix ``(C, d+1)``; costs ``O(n·C·d)`` and no gradient is materialized
    (temporaries: small row blocks). With ``rows``, only those examples, in that order.
    """
    C, d = e.shape[1], h.shape[1]
    V = np.asarray(v, np.float64).reshape(C, d + 1)
    Wt = V[:, :d].T.astype(np.float32)
    m = e.shape[0] if rows is None else rows.size
    out = np.empty(m)
    step = row_step(C) if rows is None else gather_step(d, 4, m)
    for s in range(0, m, step):
        sl = slice(s, s + step)
        hv = (gather(h, rows, sl) @ Wt).astype(np.float64)
        hv += V[:, d]
        out[sl] = np.einsum("nc,nc->n", gather(e, rows, sl), hv)
    return out


def last_layer_weighted_sum(e: np.ndarray, h: np.ndarray, rows: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``Σ_s w_s e_{rows_s} ⊗ [h_{rows_s}, 1]`` as a float64 ``(C, d + 1)`` matrix (small gathered row blocks)."""
    C, d = e.shape[1], h.shape[1]
    out = np.zeros((C, d + 1))
    rows = np.asarray(rows, np.int64)
    w = np.asarray(w, np.float64)
    step = gather_step(d)
    for s in range(0, rows.size, step):
        r = rows[s:s + step]
        ew = e[r].astype(np.float64) * w[s:s + step, None]
        out[:, :d] += ew.T @ h[r].astype(np.float64)
        out[:, d] += ew.sum(0)
    return out

__all__ = ["as_factors", "last_layer_gram", "materialize_last_layer", "last_layer_mean_grad", "last_layer_dot",
           "last_layer_weighted_sum"]
