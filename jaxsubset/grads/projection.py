"""Johnson–Lindenstrauss projections of per-sample gradients, generated block by block.

The projection ``R (P, k)`` is never stored: rows of ``R`` for parameter leaf ``j``
and row block ``b`` are drawn from ``fold_in(fold_in(key(seed), j), b)`` when they
are needed, multiplied into the gradients and dropped. So ``R`` depends only on the
seed, ``k``, the kind and the parameter shapes, not on the data, the chunk size or
the number of devices, and the memory it takes is one block of at most
``BLOCK_ELEMENTS`` numbers. Entries are scaled by ``1/sqrt(k)`` so that
``E[<R^T u, R^T v>] = <u, v>``.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

KINDS = ("rademacher", "gaussian")
BLOCK_ELEMENTS = 1 << 20


def check_projection(project_dim: int | None, kind: str) -> None:
    """Raise for a non-positive ``project_dim`` or an unknown projection ``kind``."""
    if project_dim is not None:
        if isinstance(project_dim, bool) or not isinstance(project_dim, (int, np.integer)):
            raise TypeError(f"project_dim must be a positive int or None, got {project_dim!r}.")
        if project_dim <= 0:
            raise ValueError(f"project_dim must be a positive int (the sketch size k), got {project_dim}.")
    if kind not in KINDS:
        raise ValueError(f"Unknown projection {kind!r}; choose one of {KINDS}.")


def _rows_per_block(k: int) -> int:
    return max(1, BLOCK_ELEMENTS // int(k))


def _block(key: jax.Array, rows: int, k: int, kind: str, dtype) -> jax.Array:
    if kind == "rademacher":
        r = jax.random.rademacher(key, (rows, k), dtype=dtype)
    else:
        r = jax.random.normal(key, (rows, k), dtype=dtype)
    return r / jnp.sqrt(jnp.asarray(k, dtype))


def _project_leaf(g: jax.Array, key: jax.Array, k: int, kind: str) -> jax.Array:
    """``g (B, s) @ R_leaf (s, k)`` with ``R_leaf`` made of row blocks drawn from ``key``."""
    s = g.shape[1]
    rows = _rows_per_block(k)
    full, rest = divmod(s, rows)
    dtype = jnp.promote_types(g.dtype, jnp.float32)
    out = jnp.zeros((g.shape[0], k), dtype)
    if full:
        def body(b, acc):
            gb = lax.dynamic_slice_in_dim(g, b * rows, rows, axis=1)
            return acc + gb.astype(dtype) @ _block(jax.random.fold_in(key, b), rows, k, kind, dtype)
        out = lax.fori_loop(0, full, body, out) if full > 1 else body(0, out)
    if rest:
        r = _block(jax.random.fold_in(key, full), rows, k, kind, dtype)[:rest]
        out = out + g[:, full * rows:].astype(dtype) @ r
    return out


def project(flat_grads: Sequence[jax.Array], leaf_ids: Sequence[int], project_dim: int, *, seed: int = 0,
            kind: str = "rademacher") -> jax.Array:
    """Project per-sample gradients given leaf by leaf onto ``project_dim`` dimensions.

    Args:
      flat_grads: one ``(B, s_j)`` array per parameter leaf (flattened row-major).
      leaf_ids: the index of each leaf in the parameter tree (fixes its block of ``R``).
      project_dim: ``k``.
      seed: the projection's seed.
      kind: ``"rademacher"`` (entries ``±1/sqrt(k)``) or ``"gaussian"`` (``N(0, 1/k)``).

    Returns:
      ``(B, k)``: ``concat(flat_grads) @ R``.
    """
    check_projection(project_dim, kind)
    return project_with_key(flat_grads, leaf_ids, int(project_dim), jax.random.key(int(seed)), kind)


def project_with_key(flat_grads: Sequence[jax.Array], leaf_ids: Sequence[int], project_dim: int,
                     key: jax.Array, kind: str = "rademacher") -> jax.Array:
    """``project`` with the seed's key ``jax.random.key(seed)`` given as an array (it may be traced).

    Under ``jit`` the key is then an argument, so one compiled function serves every seed.
    """
    out = None
    for g, j in zip(flat_grads, leaf_ids):
        part = _project_leaf(g, jax.random.fold_in(key, int(j)), int(project_dim), kind)
        out = part if out is None else out + part
    if out is None:
        raise ValueError("project needs at least one gradient block.")
    return out


def projection_matrix(leaf_sizes: Sequence[int], leaf_ids: Sequence[int], project_dim: int, *, seed: int = 0,
                      kind: str = "rademacher") -> np.ndarray:
    """The explicit ``(sum(leaf_sizes), k)`` matrix ``R`` that ``project`` applies (small ``P`` only).

    For inspection and tests; ``project`` never builds it.
    """
    check_projection(project_dim, kind)
    key = jax.random.key(int(seed))
    k = int(project_dim)
    rows = _rows_per_block(k)
    parts = []
    for s, j in zip(leaf_sizes, leaf_ids):
        lk = jax.random.fold_in(key, int(j))
        nb = -(-int(s) // rows)
        blocks = [_block(jax.random.fold_in(lk, b), rows, k, kind, jnp.float32) for b in range(nb)]
        parts.append(np.concatenate([np.asarray(b) for b in blocks], axis=0)[: int(s)])
    return np.concatenate(parts, axis=0)
