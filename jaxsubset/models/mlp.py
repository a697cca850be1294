"""Multi-layer perceptron (flattens any input)."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


class MLP(nnx.Module):
    """``x (B, ...) -> logits (B, num_classes)``: flatten, ``len(hidden)`` ReLU layers, a linear head.

    ``features(x)`` returns the penultimate embedding ``(B, hidden[-1])``.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: Sequence[int] = (256, 256),
                 *, rngs: nnx.Rngs):
        dims = [int(in_features), *map(int, hidden)]
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(dims[:-1], dims[1:])])
        self.head = nnx.Linear(dims[-1], int(num_classes), rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        h = jnp.reshape(x, (x.shape[0], -1))
        for layer in self.layers:
            h = jax.nn.relu(layer(h))
        return h

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.features(x))
