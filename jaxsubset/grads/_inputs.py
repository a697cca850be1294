"""Cheap host-side checks of the inputs every public ``jaxsubset.grads`` function receives."""

from __future__ import annotations

import numpy as np

class NonFiniteError(FloatingPointError, ValueError):
    """A per-example result (loss, gradient, logits) came out NaN or inf; the message names the rows.

    Both a ``FloatingPointError`` (numerics) and a ``ValueError`` (what callers catch for bad
    inputs such as finite values too large for the model).
    """


_CHUNK_ELEMENTS = 1 << 22
"""Elements checked per step (a 4 MiB boolean temporary at most)."""


def check_inputs(x: np.ndarray, *, name: str = "x") -> np.ndarray:
    """Raise unless ``x (n, ...)`` has at least one row and only finite numbers; return ``x``.

    A NaN or inf input would otherwise reach the model, where ReLU and max-pooling can drop
    it (XLA returns a finite score for a corrupted row) or an input gradient can come out
    as 0 (the "easiest" example). Integer and boolean inputs are always finite and are not scanned.

    Raises:
      ValueError: ``x`` is empty.
      NonFiniteError: (a ``ValueError`` and a ``FloatingPointError``) rows holding NaN/inf
        (listed, at most 10).
      TypeError: ``x`` is not numeric (object, string, ... dtype).
    """
    x = np.asarray(x)
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"{name} has no rows (shape {x.shape}); pass at least one example.")
    if x.dtype != np.bool_ and not np.issubdtype(x.dtype, np.number):
        raise TypeError(f"{name} must hold numbers, got dtype {x.dtype}; convert it to float32.")
    if x.dtype == np.bool_ or np.issubdtype(x.dtype, np.integer):
        return x
    per_row = max(1, int(np.prod(x.shape[1:], dtype=np.int64)))
    step = max(1, _CHUNK_ELEMENTS // per_row)
    flat = x.reshape(x.shape[0], per_row)
    bad = [np.flatnonzero(~np.isfinite(flat[s:s + step]).all(axis=1)) + s for s in range(0, x.shape[0], step)]
    bad = np.concatenate(bad)
    if bad.size:
        raise NonFiniteError(f"{name} contains NaN or inf in rows {bad[:10].tolist()}{' ...' if bad.size > 10 else ''}; "
                         "clean or drop those rows before scoring (a model may silently map them to a finite "
                         "score).")
    return x
