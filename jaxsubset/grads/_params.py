"""Parameter leaves by name, ``wrt`` selection, and the single-example loss."""

from __future__ import annotations

from typing import Any, Callable, Sequence, Union

import jax
import jax.numpy as jnp

from jaxsubset.grads.scores import cross_entropy
from jaxsubset.types import ApplyFn

Wrt = Union[None, str, Sequence[str], Callable[[str, Any], bool]]


def _key_name(k: Any) -> str | None:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def leaf_names(params: Any) -> list[str]:
    """``"/"``-joined key paths of the leaves of ``params`` in ``tree_flatten`` order.

    NNX ``State`` leaves end in ``.value``, which is dropped: ``"head/kernel"``.
    """
    names = []
    for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
        parts = [_key_name(k) for k in path]
        if parts and parts[-1] == "value":
            parts = parts[:-1]
        names.append("/".join(parts))
    return names


def select_leaves(params: Any, wrt: Wrt, leaves: list | None = None) -> list[int]:
    """Indices (in ``tree_flatten`` order) of the leaves of ``params`` that ``wrt`` selects.

    ``wrt`` is ``None`` (every leaf), a name or list of names (a leaf is selected if
    its path equals a name or lies under it: ``"head"`` selects ``"head/kernel"`` and
    ``"head/bias"``), or a predicate ``wrt(name, leaf) -> bool``. ``leaves``: ``params``'
    leaves when the caller has flattened it already.
    """
    leaves = jax.tree_util.tree_leaves(params) if leaves is None else leaves
    if not leaves:
        raise ValueError("params has no array leaves to differentiate.")
    if wrt is None:
        return list(range(len(leaves)))
    names = leaf_names(params)
    if callable(wrt):
        chosen = [i for i, (nm, lf) in enumerate(zip(names, leaves)) if wrt(nm, lf)]
    else:
        wanted = [wrt] if isinstance(wrt, str) else list(wrt)
        if not all(isinstance(w, str) for w in wanted):
            raise TypeError("wrt must be None, a parameter name, a list of names, or a predicate (name, leaf) -> bool.")
        chosen = [i for i, nm in enumerate(names)
                  if any(nm == w.strip("/") or nm.startswith(w.strip("/") + "/") for w in wanted)]
    if not chosen:
        raise ValueError(f"wrt={wrt!r} selects no parameter; parameter names are {names}.")
    return chosen


def example_loss(apply_fn: ApplyFn) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
    """``loss1(params, x1 (...), y1 ()) -> ()``: cross-entropy of one example, fed as a batch of 1."""
    def loss1(params: Any, x1: jax.Array, y1: jax.Array) -> jax.Array:
        return cross_entropy(apply_fn(params, x1[None]), jnp.reshape(y1, (1,)))[0]
    return loss1


def num_outputs(apply_fn: ApplyFn, params: Any, x1: Any) -> int:
    """Number of logits ``C`` of ``apply_fn`` (from shapes only; nothing is computed)."""
    out = jax.eval_shape(lambda p, a: apply_fn(p, a[None]), params, jax.ShapeDtypeStruct(x1.shape, x1.dtype))
    if len(out.shape) != 2 or out.shape[0] != 1:
        raise ValueError(f"apply_fn must map a batch (B, ...) to logits (B, C); a batch of 1 gave {out.shape}.")
    return int(out.shape[1])
