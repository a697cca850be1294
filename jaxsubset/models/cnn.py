"""The small CNN of the data-selection literature: 2 conv + 2 dense layers."""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


def _pool(x: jax.Array) -> jax.Array:
    """2x max-pool (stride 2, VALID) over every spatial axis of a channels-last batch.

    Written as crop + reshape + ``max`` rather than ``reduce_window``: the same values,
    and on XLA:CPU a backward pass several times cheaper (reduce_window's gradient, a
    select-and-scatter, dominated the CNN's backward there). Axes of size 1 are kept.
    """
    for axis in range(1, x.ndim - 1):
        s = x.shape[axis]
        if s < 2:
            continue
        x = jax.lax.slice_in_dim(x, 0, s - s % 2, axis=axis)
        x = jnp.max(x.reshape(*x.shape[:axis], s // 2, 2, *x.shape[axis + 1:]), axis=axis + 1)
    return x


class CNN(nnx.Module):
    """``x (B, *spatial, C) -> logits``: conv(32)-relu-pool, conv(64)-relu-pool, dense(128)-relu, head.

    This is the "MNIST CNN" used by the data-pruning and GEDA studies. It works on
    images ``(B, H, W, C)`` and on 1-D signals ``(B, L, C)`` (MNIST-1D): the
    convolutions have as many spatial dimensions as the input. There is no
    normalization layer, so per-sample gradients never mix examples.
    ``features(x)`` returns the 128-d penultimate embedding.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, *, channels: Sequence[int] = (32, 64),
                 hidden: int = 128, rngs: nnx.Rngs):
        input_shape = tuple(int(s) for s in input_shape)
        if len(input_shape) not in (2, 3):
            raise ValueError(f"CNN expects inputs (L, C) or (H, W, C); got per-example shape {input_shape}.")
        spatial = input_shape[:-1]
        k = (3,) * len(spatial)
        c_in = input_shape[-1]
        self.conv1 = nnx.Conv(c_in, channels[0], kernel_size=k, padding="SAME", rngs=rngs)
        self.conv2 = nnx.Conv(channels[0], channels[1], kernel_size=k, padding="SAME", rngs=rngs)
        out_spatial = [s for s in spatial]
        for _ in range(2):
            out_spatial = [s // 2 if s >= 2 else s for s in out_spatial]
        flat = math.prod(out_spatial) * channels[1]
        self.dense = nnx.Linear(flat, hidden, rngs=rngs)
        self.head = nnx.Linear(hidden, int(num_classes), rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        h = _pool(jax.nn.relu(self.conv1(x)))
        h = _pool(jax.nn.relu(self.conv2(h)))
        h = jnp.reshape(h, (h.shape[0], -1))
        return jax.nn.relu(self.dense(h))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.features(x))
