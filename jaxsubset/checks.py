"""Input validation, one module for the whole package: per-example scores, features and quantities,
labels, and the float32 range of kernel inputs (budgets: :func:`jaxsubset.subset.check_budget`)."""

from __future__ import annotations

from typing import Any

import numpy as np


def _refuse_rows(bad: np.ndarray, what: str, fix: str = "fix the scoring model or drop those rows") -> None:
    """Raise a ``ValueError`` naming the first rows in ``bad`` (sorted int indices), if any."""
    if bad.size:
        raise ValueError(f"{what} NaN or inf in rows {bad[:10].tolist()}{' ...' if bad.size > 10 else ''}; {fix}.")


def as_scores(scores: Any, *, name: str = "scores") -> np.ndarray:
    """Return ``scores`` as a finite float64 ``(n,)`` array or raise a clear error."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array (n,), got shape {s.shape}.")
    _refuse_rows(np.flatnonzero(~np.isfinite(s)), f"{name} contain")
    return s


def as_features(x: Any, *, name: str = "features") -> np.ndarray:
    """Return ``x`` as a finite float32 ``(n, d)`` array or raise a clear error."""
    a = np.asarray(x, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, d), got shape {a.shape}.")
    # a row sum is NaN/inf when the row holds one; the flagged rows are re-checked exactly (a finite row may
    # overflow its sum), so the scan needs no (n, d) temporary
    with np.errstate(over="ignore", invalid="ignore"):
        flagged = np.flatnonzero(~np.isfinite(a.sum(axis=1)))
    _refuse_rows(flagged[~np.all(np.isfinite(a[flagged]), axis=1)], f"{name} contain", "fix the model or drop those rows")
    check_float32_range(max(float(a.max()), -float(a.min())) if a.size else 0.0, a.shape[1], name)
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
    _refuse_rows(np.concatenate([np.flatnonzero(~np.isfinite(flat[s:s + step]).all(axis=1)) + s
                                 for s in range(0, flat.shape[0], step)]), f"quantity {name!r} contains")


FLOAT32_SAFE_NORM = 1e18
"""Largest row norm the float32 kernels accept: squared norms and sums of similarities stay below 1e38."""

FLOAT32_TINY = 1e-19
"""Smallest non-zero entry magnitude accepted: squares stay normal float32 numbers (> 1.2e-38)."""


def check_float32_range(max_abs: float, width: int, name: str) -> None:
    """Raise when entries of magnitude ``max_abs`` in rows of ``width`` would over- or underflow float32.

    Squared norms and inner products are formed in float32: rows with norms near 1.8e19
    overflow to inf (CRAIG weights then sum to ``k``, herding returns ``0..k-1``), and
    entries below about 1e-19 square to zero (GRAD-MATCH then picks nothing). Selectors are
    invariant to a common scale of the features, so rescaling is the fix.
    """
    bound = max_abs * np.sqrt(max(int(width), 1))
    if bound > FLOAT32_SAFE_NORM:
        raise ValueError(f"{name} are too large for float32 kernels (largest entry {max_abs:.3g}, row norms up "
                         f"to ~{bound:.3g} > {FLOAT32_SAFE_NORM:.0e}); rescale them, e.g. divide by their largest "
                         "norm (the selection does not depend on a common scale).")
    if 0.0 < max_abs < FLOAT32_TINY:
        raise ValueError(f"{name} are too small for float32 kernels (largest entry {max_abs:.3g} < "
                         f"{FLOAT32_TINY:.0e}: their squares underflow); rescale them, e.g. divide by their "
                         "largest norm (the selection does not depend on a common scale).")


def check_labels(labels: Any, n: int, num_classes: int, *, name: str = "labels", against: str = "") -> np.ndarray:
    """``labels`` as int64 ``(n,)`` class ids in ``[0, num_classes)``, else a ``ValueError``/``TypeError``.

    ``against`` names what the length must match (e.g. ``"pool_x"``) in the message.
    """
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},){f' to match {against}' if against else ''}, got {y.shape}.")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"{name} must hold integer class ids, got dtype {y.dtype}.")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{name} must lie in [0, {num_classes}) for a model with {num_classes} outputs; found "
                         f"[{int(y.min())}, {int(y.max())}].")
    return y.astype(np.int64)


def check_labelled_sets(x: Any, y: Any, ref_x: Any, ref_y: Any, k: Any, *, names: tuple[str, str],
                        what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Two labelled embedding sets for a kNN computation: ``x (n, d)`` with int ``y (n,)`` and
    ``ref_x (m, d)`` with int ``ref_y (m,)`` (one width, ``m >= 1``), and ``k >= 1`` neighbours.

    ``names`` name the two sets in messages (e.g. ``("training", "test")``); ``what`` names the method.
    Returns ``(x float32, y, ref_x float32, ref_y, k)``.
    """
    a, b = names
    h = as_features(x, name=f"{a} embeddings")
    r = as_features(ref_x, name=f"{b} embeddings")
    ya, yb = np.asarray(y), np.asarray(ref_y)
    if ya.shape != (h.shape[0],) or yb.shape != (r.shape[0],):
        raise ValueError(f"labels must be (n,) matching the embeddings; got {a} {ya.shape} for {h.shape[0]} rows and "
                         f"{b} {yb.shape} for {r.shape[0]} rows.")
    if h.shape[1] != r.shape[1]:
        raise ValueError(f"{a} and {b} embeddings differ in width: {h.shape[1]} vs {r.shape[1]}.")
    for name, lab in ((a, ya), (b, yb)):
        if lab.size and not np.issubdtype(lab.dtype, np.integer):
            raise TypeError(f"{name} labels must be integers, got dtype {lab.dtype}.")
    if r.shape[0] < 1:
        raise ValueError(f"{what} needs at least one {b} point.")
    if isinstance(k, (bool, np.bool_)) or int(k) != k or int(k) < 1:
        raise ValueError(f"k (the number of neighbours) must be an integer >= 1, got {k!r}.")
    return h, ya, r, yb, int(k)
