"""The weighted training objective."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxsubset.grads.scores import cross_entropy


def weighted_mean(values: jax.Array, w: jax.Array) -> jax.Array:
    """``Σ w_i v_i / Σ w_i`` for ``values, w (B,)``; 0 when all weights are 0 (padding)."""
    total = jnp.sum(w)
    return jnp.where(total > 0, jnp.sum(w * values) / jnp.where(total > 0, total, 1.0), 0.0)


def weighted_loss(apply_fn: Callable[[Any, jax.Array], jax.Array], params: Any, x: jax.Array, y: jax.Array,
                  w: jax.Array) -> jax.Array:
    """Weighted cross-entropy ``Σ w_i ℓ_i / Σ w_i`` over a batch ``x (B, ...)``, ``y (B,)``, ``w (B,)``.

    With ``w = 1`` this is the plain mean loss; integer weights give the same value and
    gradient as repeating example ``i`` ``w_i`` times.
    """
    return weighted_mean(cross_entropy(apply_fn(params, x), y), w)
