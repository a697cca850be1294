"""Last-layer per-sample gradients in closed form (no backward pass).

For logits ``z = W h + b`` and the cross-entropy, the gradient of example ``i`` with
respect to the head ``(W, b)`` is ``e_i ⊗ [h_i, 1]`` with ``e_i = softmax(z_i) −
onehot(y_i)``: the representation CORDS / GRAD-MATCH / CRAIG use.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxsubset.grads._cache import Entry, compiled
from jaxsubset.grads.chunking import check_finite_rows, check_labels, check_xy, chunked_map
from jaxsubset.grads._inputs import check_inputs
from jaxsubset.grads.sharding import data_parallel, replicate
from jaxsubset.types import EmbedFn


def softmax_minus_onehot(logits: jax.Array, y: jax.Array) -> jax.Array:
    """``softmax(z) − onehot(y)``, float32 ``(B, C)``: the cross-entropy gradient with respect to the logits."""
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1) - jax.nn.one_hot(y, logits.shape[-1], dtype=jnp.float32)


def _check_embed_out(out: Any) -> tuple[int, int]:
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise TypeError("apply_with_embedding must return (logits (B, C), h (B, d)); got "
                        f"{type(out).__name__}. Pass PureModel.apply_with_embedding, not apply_fn.")
    z, h = out
    if len(z.shape) != 2 or len(h.shape) != 2 or z.shape[0] != h.shape[0]:
        raise ValueError("apply_with_embedding must return logits (B, C) and h (B, d); "
                         f"got {z.shape} and {h.shape}.")
    return int(z.shape[1]), int(h.shape[1])


def last_layer_factors(apply_with_embedding: EmbedFn, params: Any, x: Any, y: Any, *, batch_size: int = 1024,
                       progress: bool = False, mesh: Mesh | None = None,
                       return_logits: bool = False) -> tuple[np.ndarray, ...]:
    """The two factors of the last-layer gradients: ``e (n, C)`` and ``h (n, d)``.

    Args:
      apply_with_embedding: ``(params, x (B, ...)) -> (logits (B, C), h (B, d))`` with
        ``h`` the input of the linear head (``PureModel.apply_with_embedding``).
      params: the parameter pytree.
      x: inputs ``(n, ...)``; y: int labels ``(n,)`` in ``[0, C)``.
      batch_size, progress, mesh: chunking, progress bar and data-parallel mesh.
      return_logits: also return the logits ``z (n, C)`` (e.g. GLISTER's validation set).

    Returns:
      float32 ``e = softmax(z) − onehot(y)`` ``(n, C)`` and ``h`` ``(n, d)`` (and ``z``).
    """
    x, y = check_xy(x, y)
    check_inputs(x)
    entry = compiled("last_layer_factors", apply_with_embedding, params, (x, y), mesh, (),
                     lambda f: _factors_entry(f, params, x, mesh))
    check_labels(y, entry.info["width"])
    run = functools.partial(entry.run, replicate(params, mesh))
    e, h, z = chunked_map(run, (x, y), batch_size=batch_size, progress=progress, desc="last-layer factors",
                          mesh=mesh, rows_cache=entry.rows)
    check_finite_rows(z, "logits")
    check_finite_rows(h, "embeddings")
    return (e, h, np.asarray(z, np.float32)) if return_logits else (e, h)


def _factors_entry(apply_with_embedding: EmbedFn, params: Any, x: np.ndarray, mesh: Mesh | None) -> Entry:
    """Jitted ``(params, x (B, ...), y (B,)) -> (e (B, C), h (B, d), z (B, C))``; ``width`` is ``C``."""
    spec = jax.eval_shape(apply_with_embedding, params, jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype))
    c, _ = _check_embed_out(spec)

    def chunk(p, xb, yb):
        z, h = apply_with_embedding(p, xb)
        return softmax_minus_onehot(z, yb), h.astype(jnp.float32), z

    return Entry(data_parallel(chunk, mesh, 2), width=c)


def last_layer_grads(apply_with_embedding: EmbedFn, params: Any, x: Any, y: Any, *, batch_size: int = 1024,
                     progress: bool = False, mesh: Mesh | None = None) -> np.ndarray:
    """Closed-form per-example gradients of the linear head, ``(n, C·(d+1))``.

    Row ``i`` is ``(e_i ⊗ [h_i, 1]).reshape(-1)``: for class ``c`` the ``d`` weights
    ``e_ic · h_i`` followed by the bias ``e_ic``. Arguments as in ``last_layer_factors``.
    With a Flax ``nnx.Linear`` head (kernel ``(d, C)``), ``row.reshape(C, d+1)[:, :d].T``
    is the kernel gradient and ``[:, d]`` the bias gradient.
    """
    e, h = last_layer_factors(apply_with_embedding, params, x, y, batch_size=batch_size, progress=progress,
                              mesh=mesh)
    h1 = np.concatenate([h, np.ones((h.shape[0], 1), h.dtype)], axis=1)
    return (e[:, :, None] * h1[:, None, :]).reshape(e.shape[0], -1)
