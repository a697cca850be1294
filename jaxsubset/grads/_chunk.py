"""Chunked evaluation of a jitted per-example function over a whole data set."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm


def check_xy(x: Any, y: Any, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate inputs ``x (n, ...)`` and int labels ``y (n,)``; return them as numpy arrays."""
    x = np.asarray(x)
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D (n,), got shape {y.shape}.")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}; they must match.")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"y must hold integer class ids, got dtype {y.dtype}.")
    if num_classes is not None and y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}); found [{int(y.min())}, {int(y.max())}].")
    return x, y


def chunked_map(fn: Callable[..., Any], arrays: tuple[np.ndarray, ...], *, batch_size: int,
                progress: bool = False, desc: str = "") -> Any:
    """Apply jitted ``fn(*chunk)`` to consecutive row-chunks of ``arrays`` and concatenate.

    Every chunk is padded to ``batch_size`` rows (by repeating row 0) so that ``fn``
    compiles once; the padding rows are dropped from the output. ``fn`` must return
    a pytree of arrays with leading axis equal to the chunk size.

    Returns:
      The concatenated pytree of numpy arrays with leading axis ``n``.
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    n = arrays[0].shape[0]
    batch_size = int(min(batch_size, max(n, 1)))
    outs = []
    starts = range(0, n, batch_size)
    for s in tqdm(starts, desc=desc, disable=not progress, leave=False):
        e = min(s + batch_size, n)
        chunk = []
        for a in arrays:
            c = a[s:e]
            if e - s < batch_size:
                pad = np.repeat(a[:1], batch_size - (e - s), axis=0)
                c = np.concatenate([c, pad], axis=0)
            chunk.append(jnp.asarray(c))
        try:
            out = fn(*chunk)
        except Exception as err:  # XLA reports OOM as a RuntimeError/XlaRuntimeError
            if "RESOURCE_EXHAUSTED" in str(err) or "out of memory" in str(err).lower():
                raise MemoryError(f"A chunk of {batch_size} examples does not fit in memory; "
                                  "pass a smaller batch_size.") from err
            raise
        outs.append(jax.tree_util.tree_map(lambda o: np.asarray(o)[: e - s], out))
    if not outs:
        raise ValueError("Cannot evaluate on an empty data set (n = 0).")
    return jax.tree_util.tree_map(lambda *o: np.concatenate(o, axis=0), *outs)
