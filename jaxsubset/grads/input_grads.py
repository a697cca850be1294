"""Per-example input-gradient norms ``||∂ℓ_i/∂x_i||₂`` (the "high-influence" score)."""

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
from jaxsubset.grads._params import example_loss
from jaxsubset.grads.per_sample import cached_width
from jaxsubset.grads.sharding import data_parallel, replicate
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
    check_inputs(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"input_grad_norms needs float inputs x, got dtype {x.dtype}; cast x to float32.")
    check_labels(y, cached_width(apply_fn, params, x))
    entry = compiled("input_grad_norms", apply_fn, params, (x, y), mesh, (), lambda f: _entry(f, mesh))
    run = functools.partial(entry.run, replicate(params, mesh))
    out = chunked_map(run, (x, y), batch_size=batch_size, progress=progress, desc="input-gradient norms",
                      mesh=mesh, rows_cache=entry.rows)
    return check_finite_rows(out, "input-gradient norms")


def _entry(apply_fn: ApplyFn, mesh: Mesh | None) -> Entry:
    """Jitted ``(params, x (B, ...), y (B,)) -> ||∂ℓ_i/∂x_i|| (B,)``."""
    loss1 = example_loss(apply_fn)

    def chunk(p, xb, yb):
        g = jax.vmap(jax.grad(loss1, argnums=1), in_axes=(None, 0, 0))(p, xb, yb)
        return jnp.sqrt(jnp.sum(jnp.square(g.astype(jnp.float32)).reshape(g.shape[0], -1), axis=1))

    return Entry(data_parallel(chunk, mesh, 2))
