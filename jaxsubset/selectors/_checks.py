"""Input validation shared by selectors."""

from __future__ import annotations

import inspect
from typing import Any, Callable

import numpy as np

from jaxsubset.kernels import check_float32_range


def as_scores(scores: Any, *, name: str = "scores") -> np.ndarray:
    """Return ``scores`` as a finite float64 ``(n,)`` array or raise a clear error."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array (n,), got shape {s.shape}.")
    bad = np.flatnonzero(~np.isfinite(s))
    if bad.size:
        raise ValueError(f"{name} contain NaN or inf at rows {bad[:10].tolist()}"
                         f"{' ...' if bad.size > 10 else ''}; fix the scoring model or drop those rows.")
    return s


def as_features(x: Any, *, name: str = "features") -> np.ndarray:
    """Return ``x`` as a finite float32 ``(n, d)`` array or raise a clear error."""
    a = np.asarray(x, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, d), got shape {a.shape}.")
    bad = np.flatnonzero(~np.all(np.isfinite(a), axis=1))
    if bad.size:
        raise ValueError(f"{name} contain NaN or inf in rows {bad[:10].tolist()}"
                         f"{' ...' if bad.size > 10 else ''}; fix the model or drop those rows.")
    check_float32_range(float(np.max(np.abs(a))) if a.size else 0.0, a.shape[1], name)
    return a


def check_quantity(values: Any, name: str, n: int | None = None) -> None:
    """Raise unless ``values`` (leading axis ``n``) is numeric and finite; rows are checked in blocks.

    Args:
      values: a per-example quantity ``(n, ...)`` (scores, gradients, factors).
      name: its name in the message (e.g. ``"grad_norm"``).
      n: the expected number of rows (the labels' length), or None.
    """
    a = np.asarray(values)
    if a.ndim == 0:
        raise ValueError(f"quantity {name!r} must have a leading axis of examples, got a scalar.")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"quantity {name!r} has {a.shape[0]} rows but labels has {n}; they must match.")
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.number):
        raise TypeError(f"quantity {name!r} must be numeric, got dtype {a.dtype}.")
    if np.issubdtype(a.dtype, np.integer) or a.shape[0] == 0:
        return
    flat = a.reshape(a.shape[0], -1)
    step = max(1, (1 << 22) // max(flat.shape[1], 1))
    bad = np.concatenate([np.flatnonzero(~np.isfinite(flat[s:s + step]).all(axis=1)) + s
                          for s in range(0, flat.shape[0], step)])
    if bad.size:
        raise ValueError(f"quantity {name!r} contains NaN or inf in rows {bad[:10].tolist()}"
                         f"{' ...' if bad.size > 10 else ''}; fix the scoring model or drop those rows.")


def accepts_keyword(fn: Callable[..., Any], name: str) -> bool:
    """True if ``fn`` names a ``name`` parameter (a ``**kwargs`` catch-all does not count)."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def accepts_seed(fn: Callable[..., Any]) -> bool:
    """True if ``fn`` takes a ``seed`` keyword (randomized selectors get one forwarded)."""
    return accepts_keyword(fn, "seed")
