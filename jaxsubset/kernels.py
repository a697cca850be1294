"""Similarity kernels between per-example feature vectors, computed in row chunks.

Shared by CRAIG, GRAD-MATCH and the submodular mutual-information selectors.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

METRICS = ("euclidean", "cosine", "dot", "rbf")


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
