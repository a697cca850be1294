"""Input validation shared by selectors."""

from __future__ import annotations

import inspect
from typing import Any, Callable

import numpy as np


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
    from jaxsubset.kernels import check_float32_range

    check_float32_range(float(np.max(np.abs(a))) if a.size else 0.0, a.shape[1], name)
    return a


def accepts_keyword(fn: Callable[..., Any], name: str) -> bool:
    """True if ``fn`` names a ``name`` parameter (a ``**kwargs`` catch-all does not count)."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def accepts_seed(fn: Callable[..., Any]) -> bool:
    """True if ``fn`` takes a ``seed`` keyword (randomized selectors get one forwarded)."""
    return accepts_keyword(fn, "seed")
