"""Per-example losses and EL2N scores (forward passes only)."""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxsubset.grads._cache import Entry, compiled
from jaxsubset.grads.chunking import check_finite_rows, check_labels, check_xy, chunked_map
from jaxsubset.grads._inputs import check_inputs
from jaxsubset.grads.sharding import data_parallel, replicate
from jaxsubset.types import ApplyFn


def cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy: ``logits (B, C)``, int ``y (B,)`` -> ``(B,)``."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, y[:, None].astype(jnp.int32), axis=-1)[:, 0]


def _width(apply_fn: ApplyFn, params: Any, x: np.ndarray) -> int:
    out = jax.eval_shape(apply_fn, params, jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype))
    if len(out.shape) != 2:
        raise ValueError(f"apply_fn must map a batch (B, ...) to logits (B, C); a batch of 1 gave {out.shape}.")
    return int(out.shape[1])


def losses(apply_fn: ApplyFn, params: Any, x: Any, y: Any, *, batch_size: int = 1024,
           progress: bool = False, mesh: Mesh | None = None) -> np.ndarray:
    """Per-example cross-entropy ``(n,)`` of the model ``apply_fn(params, x) -> logits``.

    ``mesh``: optional data-parallel mesh (``jaxsubset.grads.data_mesh()``).
    """
    x, y = check_xy(x, y)
    check_inputs(x)
    entry = compiled("losses", apply_fn, params, (x, y), mesh, (), lambda f: _losses_entry(f, params, x, mesh))
    check_labels(y, entry.info["width"])
    run = functools.partial(entry.run, replicate(params, mesh))
    out = chunked_map(run, (x, y), batch_size=batch_size, progress=progress, desc="losses", mesh=mesh,
                      rows_cache=entry.rows)
    return check_finite_rows(out, "losses")


def _losses_entry(apply_fn: ApplyFn, params: Any, x: np.ndarray, mesh: Mesh | None) -> Entry:
    """Jitted ``(params, x (B, ...), y (B,)) -> losses (B,)`` and the model's number of logits."""
    def fn(p, xb, yb):
        return cross_entropy(apply_fn(p, xb), yb)

    return Entry(data_parallel(fn, mesh, 2), width=_width(apply_fn, params, x))


def _el2n_entry(apply_fn: ApplyFn, params: Any, x: np.ndarray, mesh: Mesh | None) -> Entry:
    """Jitted ``(params, x (B, ...), y (B,)) -> (EL2N (B,), logits (B, C))`` and ``C``."""
    def one(p, xb, yb):
        logits = apply_fn(p, xb)
        prob = jax.nn.softmax(logits, axis=-1)
        return jnp.linalg.norm(prob - jax.nn.one_hot(yb, prob.shape[-1]), axis=-1), logits

    return Entry(data_parallel(one, mesh, 2), width=_width(apply_fn, params, x))


def el2n(models: Sequence[tuple[ApplyFn, Any]] | tuple[ApplyFn, Any], x: Any, y: Any, *,
         num_classes: int | None = None, batch_size: int = 1024, progress: bool = False,
         mesh: Mesh | None = None) -> np.ndarray:
    """EL2N score ``(n,)``: ``||softmax(f(x)) - onehot(y)||_2`` averaged over models.

    Paul et al. (2021) average it over several initializations or early-training
    checkpoints; pass a list of ``(apply_fn, params)`` pairs for that, or one pair.
    """
    if len(models) == 2 and callable(models[0]):
        models = [models]  # a single (apply_fn, params) pair
    if len(models) == 0:
        raise ValueError("el2n needs at least one (apply_fn, params) pair.")
    x, y = check_xy(x, y, num_classes)
    check_inputs(x)
    total = np.zeros(x.shape[0], np.float64)
    for apply_fn, params in models:
        entry = compiled("el2n", apply_fn, params, (x, y), mesh, (),
                         lambda f, params=params: _el2n_entry(f, params, x, mesh))
        check_labels(y, entry.info["width"])
        run = functools.partial(entry.run, replicate(params, mesh))
        scores, logits = chunked_map(run, (x, y), batch_size=batch_size, progress=progress, desc="el2n",
                                     mesh=mesh, rows_cache=entry.rows)
        check_finite_rows(logits, "logits")
        total += scores
    return check_finite_rows((total / len(models)).astype(np.float32), "EL2N scores")
