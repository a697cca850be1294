"""The type vocabulary, defined once and imported everywhere else."""

from __future__ import annotations

from typing import Any, Callable

import jax

PyTree = Any
"""A parameter pytree (nested dicts / NNX state of arrays)."""

ApplyFn = Callable[[PyTree, jax.Array], jax.Array]
"""``apply_fn(params, x (B, ...)) -> logits (B, C)``."""

EmbedFn = Callable[[PyTree, jax.Array], "tuple[jax.Array, jax.Array]"]
"""``apply_with_embedding(params, x (B, ...)) -> (logits (B, C), h (B, d))``, ``h`` the input of a linear head."""

DYNAMICS = ("forgetting", "aum", "loss_mean", "loss_var", "el2n_mean", "el2n_var")
"""Names of the per-example training-dynamics quantities, recorded by ``train.fit(..., record_dynamics=True)``."""
