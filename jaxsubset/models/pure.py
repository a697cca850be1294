"""Turn a Flax NNX model into the pure pair ``(apply_fn, params)`` the library works on."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
from flax import nnx

PyTree = Any
ApplyFn = Callable[[PyTree, jax.Array], jax.Array]
EmbedFn = Callable[[PyTree, jax.Array], "tuple[jax.Array, jax.Array]"]


@dataclasses.dataclass(frozen=True)
class PureModel:
    """A model as pure functions over a parameter pytree.

    Attributes:
      apply_fn: ``apply_fn(params, x (B, ...)) -> logits (B, C)``.
      params: the parameter pytree (a ``nnx.State`` of ``nnx.Param`` leaves for NNX models).
      apply_with_embedding: ``(params, x) -> (logits (B, C), h (B, d))`` with ``h`` the
        penultimate embedding feeding the linear head; ``None`` if the model has no head.
      head_key: the top-level key of the linear head's parameters in ``params`` (``"head"``).
    """

    apply_fn: ApplyFn
    params: PyTree
    apply_with_embedding: EmbedFn | None = None
    head_key: str | None = None


def to_pure(model: nnx.Module) -> PureModel:
    """Split an NNX module into ``PureModel``.

    The module must be stateless apart from its ``nnx.Param`` leaves (no BatchNorm
    running statistics, no dropout RNG): those would make ``apply_fn`` impure. The
    models in ``jaxsubset.models`` all satisfy this.
    """
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    if jax.tree_util.tree_leaves(rest):
        raise ValueError(
            "to_pure needs a model whose only state is nnx.Param (found other state such as "
            "BatchNorm statistics or RNG counters); use GroupNorm, or build the pure pair yourself.")

    def apply_fn(p: PyTree, x: jax.Array) -> jax.Array:
        return nnx.merge(graphdef, p, rest)(x)

    embed = None
    head_key = None
    if hasattr(model, "features") and isinstance(getattr(model, "head", None), nnx.Linear):
        head_key = "head"

        def embed(p: PyTree, x: jax.Array) -> "tuple[jax.Array, jax.Array]":
            m = nnx.merge(graphdef, p, rest)
            h = m.features(x)
            return m.head(h), h

    return PureModel(apply_fn, params, embed, head_key)
