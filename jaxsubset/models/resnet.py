"""ResNet-18 for small (e.g. 32x32) images, with GroupNorm.

Normalization choice: BatchNorm statistics mix the examples of a batch, which makes
"per-sample gradients" depend on the rest of the batch. GroupNorm normalizes each
example on its own, so per-sample gradients, norms and scores are well defined in
training and scoring alike, and the model has no mutable batch statistics.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


def _norm(c: int, rngs: nnx.Rngs) -> nnx.GroupNorm:
    return nnx.GroupNorm(c, num_groups=min(32, c), rngs=rngs)


class BasicBlock(nnx.Module):
    """Two 3x3 convolutions with GroupNorm and an identity / 1x1 projection shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(c_in, c_out, (3, 3), strides=stride, padding=1, use_bias=False, rngs=rngs)
        self.norm1 = _norm(c_out, rngs)
        self.conv2 = nnx.Conv(c_out, c_out, (3, 3), padding=1, use_bias=False, rngs=rngs)
        self.norm2 = _norm(c_out, rngs)
        if stride != 1 or c_in != c_out:
            self.proj = nnx.Conv(c_in, c_out, (1, 1), strides=stride, use_bias=False, rngs=rngs)
            self.proj_norm = _norm(c_out, rngs)
        else:
            self.proj = None
            self.proj_norm = None

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.nn.relu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        s = x if self.proj is None else self.proj_norm(self.proj(x))
        return jax.nn.relu(h + s)


class ResNet18(nnx.Module):
    """``x (B, H, W, C) -> logits``; CIFAR-style stem (3x3 conv, no max-pool), 4 stages of 2 blocks.

    ``features(x)`` returns the 512-d (``width * 8``) global-average-pooled embedding.
    """

    def __init__(self, in_channels: int, num_classes: int, *, width: int = 64,
                 blocks: Sequence[int] = (2, 2, 2, 2), rngs: nnx.Rngs):
        self.stem = nnx.Conv(in_channels, width, (3, 3), padding=1, use_bias=False, rngs=rngs)
        self.stem_norm = _norm(width, rngs)
        stages = []
        c = width
        for i, nb in enumerate(blocks):
            c_out = width * 2 ** i
            for j in range(nb):
                stages.append(BasicBlock(c, c_out, 2 if (j == 0 and i > 0) else 1, rngs=rngs))
                c = c_out
        self.blocks = nnx.List(stages)
        self.head = nnx.Linear(c, int(num_classes), rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        h = jax.nn.relu(self.stem_norm(self.stem(x)))
        for block in self.blocks:
            h = block(h)
        return jnp.mean(h, axis=(1, 2))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.features(x))
