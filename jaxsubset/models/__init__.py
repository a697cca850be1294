"""Flax NNX models and their conversion to pure ``(apply_fn, params)`` pairs."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from flax import nnx

from jaxsubset.models.cnn import CNN
from jaxsubset.models.mlp import MLP
from jaxsubset.models.pure import PureModel, to_pure
from jaxsubset.models.resnet import ResNet18


def _mlp(shape: Sequence[int], c: int, rngs: nnx.Rngs) -> nnx.Module:
    return MLP(int(np.prod(shape)), c, rngs=rngs)


def _cnn(shape: Sequence[int], c: int, rngs: nnx.Rngs) -> nnx.Module:
    return CNN(shape, c, rngs=rngs)


def _resnet18(shape: Sequence[int], c: int, rngs: nnx.Rngs) -> nnx.Module:
    if len(shape) != 3:
        raise ValueError(f"resnet18 needs image inputs (H, W, C); got per-example shape {tuple(shape)}. "
                         "Use 'mlp' or 'cnn' for 1-D data.")
    return ResNet18(int(shape[-1]), c, rngs=rngs)


MODELS: dict[str, Callable[[Sequence[int], int, nnx.Rngs], nnx.Module]] = {
    "mlp": _mlp,
    "cnn": _cnn,
    "resnet18": _resnet18,
}


def create(name: str, input_shape: Sequence[int], num_classes: int, *, seed: int = 0) -> nnx.Module:
    """Build a registered model by name for per-example ``input_shape`` and ``num_classes``."""
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; choose one of {sorted(MODELS)}.")
    return MODELS[name](tuple(input_shape), int(num_classes), nnx.Rngs(int(seed)))


__all__ = ["MLP", "CNN", "ResNet18", "PureModel", "to_pure", "create", "MODELS"]
