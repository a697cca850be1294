"""Turn a Flax NNX model into the pure pair ``(apply_fn, params)`` the library works on."""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

import jax
from flax import nnx
from jaxsubset.types import ApplyFn, EmbedFn, PyTree


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


_FUNCTIONS: "collections.OrderedDict[Any, tuple[ApplyFn, EmbedFn | None]]" = collections.OrderedDict()
FUNCTIONS_CACHE_SIZE = 32
"""At most this many architectures keep their pure functions (least recently used dropped)."""


def _functions(graphdef: Any, rest: Any, embeddable: bool) -> "tuple[ApplyFn, EmbedFn | None]":
    """``(apply_fn, embed)`` of an architecture: the same function objects for an equal ``GraphDef``.

    Models of one architecture built from different seeds share their functions, so every
    cache keyed by the model function (the compiled per-example computations of
    :mod:`jaxsubset.grads`, the training programs) is hit by a new surrogate too.
    """
    try:
        key = (graphdef, jax.tree_util.tree_structure(rest), embeddable)
        hash(key)
    except TypeError:  # an unhashable graph: fresh functions, no caching
        key = None
    if key is not None and key in _FUNCTIONS:
        _FUNCTIONS.move_to_end(key)
        return _FUNCTIONS[key]

    def apply_fn(p: PyTree, x: jax.Array) -> jax.Array:
        return nnx.merge(graphdef, p, rest)(x)

    embed = None
    if embeddable:
        def embed(p: PyTree, x: jax.Array) -> "tuple[jax.Array, jax.Array]":
            m = nnx.merge(graphdef, p, rest)
            h = m.features(x)
            return m.head(h), h

    if key is not None:
        _FUNCTIONS[key] = (apply_fn, embed)
        while len(_FUNCTIONS) > FUNCTIONS_CACHE_SIZE:
            _FUNCTIONS.popitem(last=False)
    return apply_fn, embed


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

    embeddable = hasattr(model, "features") and isinstance(getattr(model, "head", None), nnx.Linear)
    apply_fn, embed = _functions(graphdef, rest, embeddable)
    head_key = "head" if embeddable else None
    return PureModel(apply_fn, params, embed, head_key)
