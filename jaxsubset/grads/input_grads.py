"""Per-example input-gradient norms ``||∂ℓ_i/∂x_i||₂`` (the "high-influence" score)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxsubset.grads._cache import Entry, compiled
from jaxsubset.grads._inputs import check_input_array, with_finite_rows
from jaxsubset.grads._params import example_loss, num_outputs
from jaxsubset.grads.chunking import check_finite_rows, check_labels, check_xy, map_entry
from jaxsubset.grads.sharding import data_parallel
from jaxsubset.types import ApplyFn


def input_grad_norms(apply_fn: ApplyFn, params: Any, x: Any, y: Any, *, batch_size: int = 1024,
                     progress: bool = False, mesh: Mesh | None = None) -> np.ndarray:
    """``||∇_x ℓ(f_θ(x_i), y_i)||₂`` for every example, ``(n,)`` float32.

    One batched backward pass per chunk (no parameter gradients are formed).

    Args:
      apply_fn: ``apply_fn(params, x (B, ...)) -> logits (B, C)``.
      params: the parameter pytree.
      x: float inputs ``(n, ...)``; y: int labels ``(n,)``.
      batch_size, progress, mesh: chunking, progress bar and data-parallel mesh.
    """
    x, y = check_xy(x, y)
    check_input_array(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"input_grad_norms needs float inputs x, got dtype {x.dtype}; cast x to float32.")
    entry = compiled("input_grad_norms", apply_fn, params, (x, y), mesh, (), lambda f: _entry(f, params, x, mesh))
    check_labels(y, entry.info["width"])
    out = map_entry(entry, params, (x, y), batch_size=batch_size, progress=progress, desc="input-gradient norms",
                    mesh=mesh)
    return check_finite_rows(out, "input-gradient norms")


def _entry(apply_fn: ApplyFn, params: Any, x: np.ndarray, mesh: Mesh | None) -> Entry:
    """Jitted ``(params, x (B, ...), y (B,)) -> (||∂ℓ_i/∂x_i|| (B,), finite rows of x (B,))``; ``width``: logits."""
    loss1 = example_loss(apply_fn)

    def chunk(p, xb, yb):
        g = jax.vmap(jax.grad(loss1, argnums=1), in_axes=(None, 0, 0))(p, xb, yb)
        return jnp.sqrt(jnp.sum(jnp.square(g.astype(jnp.float32)).reshape(g.shape[0], -1), axis=1))

    return Entry(data_parallel(with_finite_rows(chunk), mesh, 2), width=num_outputs(apply_fn, params, x[0]))
