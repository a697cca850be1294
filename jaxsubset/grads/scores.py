"""Per-example losses and EL2N scores (forward passes only)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsubset.grads._chunk import check_xy, chunked_map

ApplyFn = Callable[[Any, jax.Array], jax.Array]


def _check_finite_rows(values: np.ndarray, what: str, offset: int = 0) -> np.ndarray:
    bad = np.flatnonzero(~np.all(np.isfinite(values.reshape(values.shape[0], -1)), axis=1))
    if bad.size:
        raise FloatingPointError(f"{what} are NaN or inf for rows {(bad + offset)[:10].tolist()}"
                                 f"{' ...' if bad.size > 10 else ''}; check the inputs and parameters.")
    return values


def cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy: ``logits (B, C)``, int ``y (B,)`` -> ``(B,)``."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, y[:, None].astype(jnp.int32), axis=-1)[:, 0]


def losses(apply_fn: ApplyFn, params: Any, x: Any, y: Any, *, batch_size: int = 1024,
           progress: bool = False) -> np.ndarray:
    """Per-example cross-entropy ``(n,)`` of the model ``apply_fn(params, x) -> logits``."""
    x, y = check_xy(x, y)
    fn = jax.jit(lambda xb, yb: cross_entropy(apply_fn(params, xb), yb))
    out = chunked_map(fn, (x, y), batch_size=batch_size, progress=progress, desc="losses")
    return _check_finite_rows(out, "losses")


def el2n(models: Sequence[tuple[ApplyFn, Any]] | tuple[ApplyFn, Any], x: Any, y: Any, *,
         num_classes: int | None = None, batch_size: int = 1024, progress: bool = False) -> np.ndarray:
    """EL2N score ``(n,)``: ``||softmax(f(x)) - onehot(y)||_2`` averaged over models.

    Paul et al. (2021) average it over several initializations or early-training
    checkpoints; pass a list of ``(apply_fn, params)`` pairs for that, or one pair.
    """
    if len(models) == 2 and callable(models[0]):
        models = [models]  # a single (apply_fn, params) pair
    if len(models) == 0:
        raise ValueError("el2n needs at least one (apply_fn, params) pair.")
    x, y = check_xy(x, y, num_classes)
    total = np.zeros(x.shape[0], np.float64)
    for apply_fn, params in models:
        def one(xb, yb, apply_fn=apply_fn, params=params):
            p = jax.nn.softmax(apply_fn(params, xb), axis=-1)
            return jnp.linalg.norm(p - jax.nn.one_hot(yb, p.shape[-1]), axis=-1)
        total += chunked_map(jax.jit(one), (x, y), batch_size=batch_size, progress=progress, desc="el2n")
    return _check_finite_rows((total / len(models)).astype(np.float32), "EL2N scores")
