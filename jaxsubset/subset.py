"""The `Subset` type every selector returns, and budget arithmetic shared by selectors."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np


@dataclasses.dataclass(frozen=True)
class Subset:
    """A weighted subset of a pool of ``n`` examples.

    Attributes:
      indices: int64 array ``(k,)`` of unique row indices into the pool.
      weights: float32 array ``(k,)`` of finite, non-negative per-example weights
        (all ones for unweighted selectors; e.g. CRAIG cluster sizes otherwise).
      info: free-form metadata a selector reports (solver status, objective, timings).
    """

    indices: np.ndarray
    weights: np.ndarray
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        idx = np.asarray(self.indices)
        if idx.dtype == np.bool_:
            raise TypeError("Subset indices must be integers, got a boolean array (a mask?); pass "
                            "np.flatnonzero(mask) to keep the rows where it is True.")
        if idx.size and not np.issubdtype(idx.dtype, np.number):
            raise TypeError(f"Subset indices must be integers, got dtype {idx.dtype}.")
        if idx.ndim != 1:
            raise ValueError(f"Subset indices must be 1-D, got shape {idx.shape}.")
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            if not np.all(np.equal(np.mod(idx, 1), 0)) or np.abs(idx).max() >= 2**62:
                raise ValueError("Subset indices must be integers; got non-integral or huge values.")
        idx = idx.astype(np.int64)
        if idx.size and idx.min() < 0:
            raise ValueError(f"Subset indices must be >= 0; found {int(idx.min())}.")
        if np.unique(idx).size != idx.size:
            vals, counts = np.unique(idx, return_counts=True)
            raise ValueError(
                f"Subset indices must be unique; duplicated: {vals[counts > 1][:10].tolist()}. "
                "Express repetition through weights instead.")
        # a copy: editing the caller's array afterwards must not change the validated subset
        w = np.ones(idx.shape, np.float32) if self.weights is None else np.array(self.weights, np.float32)
        if w.shape != idx.shape:
            raise ValueError(f"Subset weights shape {w.shape} does not match indices shape {idx.shape}.")
        if not np.all(np.isfinite(w)):
            raise ValueError("Subset weights must be finite; found NaN or inf.")
        if w.size and w.min() < 0:
            raise ValueError(f"Subset weights must be >= 0; found {float(w.min())}.")
        object.__setattr__(self, "indices", idx)
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "info", dict(self.info))

    @classmethod
    def unweighted(cls, indices: Any, **info: Any) -> "Subset":
        """A subset with all weights equal to one."""
        idx = np.asarray(indices, np.int64).reshape(-1)
        return cls(idx, np.ones(idx.shape, np.float32), info)

    def __len__(self) -> int:
        return int(self.indices.size)

    def check_pool(self, n: int) -> "Subset":
        """Raise unless every index is in ``[0, n)``; return ``self`` for chaining."""
        if self.indices.size and self.indices.max() >= n:
            raise ValueError(
                f"Subset index {int(self.indices.max())} is out of range for a pool of {n} examples.")
        return self

    def mask(self, n: int) -> np.ndarray:
        """Boolean ``(n,)`` membership mask."""
        self.check_pool(n)
        m = np.zeros(n, bool)
        m[self.indices] = True
        return m


def check_budget(budget: int, n: int, *, name: str = "budget", minimum: int = 0) -> int:
    """Validate an integer budget in ``[minimum, n]`` against a pool of ``n`` and return it as ``int``."""
    if isinstance(budget, (bool, np.bool_)) or not isinstance(budget, (int, np.integer)):
        raise TypeError(f"{name} must be an integer number of examples, got {budget!r}.")
    budget = int(budget)
    if minimum > 0 and not minimum <= budget <= n:
        raise ValueError(f"{name} must be between {minimum} and the pool size {n}, got {budget}.")
    if budget < 0:
        raise ValueError(f"{name} must be >= 0, got {budget}.")
    if budget > n:
        raise ValueError(f"{name}={budget} is larger than the pool of {n} examples; "
                         f"use a budget <= {n}.")
    return budget


def budget_from_fraction(fraction: float, n: int) -> int:
    """``round(fraction * n)`` for a fraction in ``(0, 1]`` (at least one example, 0 for an empty pool)."""
    f = float(fraction)
    if not np.isfinite(f) or not 0.0 < f <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}.")
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be an integer pool size >= 0, got {n!r}.")
    return min(int(n), max(1, int(round(f * n))))


MAX_CLASSES = 1 << 24
"""Largest ``num_classes`` accepted (per-class arrays have one entry per class)."""


def check_num_classes(num_classes: Any) -> int:
    """``num_classes`` as an ``int`` in ``[1, MAX_CLASSES]``, else a ``TypeError``/``ValueError``."""
    if isinstance(num_classes, (bool, np.bool_)) or not isinstance(num_classes, (int, np.integer)):
        raise TypeError(f"num_classes must be an integer, got {num_classes!r}.")
    if not 1 <= int(num_classes) <= MAX_CLASSES:
        raise ValueError(f"num_classes must be in [1, {MAX_CLASSES}], got {num_classes}; remap the labels to "
                         "0..C-1 (np.unique(y, return_inverse=True)).")
    return int(num_classes)


def infer_num_classes(labels: Any, *, what: str = "labels") -> int:
    """``max(labels) + 1`` for integer-valued ``labels``, refusing sparse ids that would blow it up.

    A stray label such as 2 000 000 among ten classes would make two million classes (and
    per-class arrays of that size); when ``max + 1`` exceeds ``2 * distinct + 1000`` the
    labels are judged sparse and a ``ValueError`` says how to remap them.
    """
    y = np.asarray(labels).reshape(-1)
    if y.size == 0:
        raise ValueError(f"Cannot infer num_classes from empty {what}; pass num_classes.")
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.number):
        raise TypeError(f"{what} must be integer class ids, got dtype {y.dtype}.")
    if not np.issubdtype(y.dtype, np.integer) and not (np.all(np.isfinite(y)) and np.all(np.mod(y, 1) == 0)):
        raise ValueError(f"{what} must be integer class ids; found non-integral or non-finite values.")
    if y.min() < 0:
        raise ValueError(f"{what} must be class ids >= 0; found {y.min():.0f}.")
    top = int(y.max())
    distinct = int(np.unique(y).size)
    if top + 1 > 2 * distinct + 1000:
        raise ValueError(f"{what} reach {top} but hold only {distinct} distinct values, which would make "
                         f"num_classes={top + 1}; remap them to 0..{distinct - 1} "
                         "(np.unique(y, return_inverse=True)) or pass num_classes explicitly.")
    return check_num_classes(top + 1)


def per_class_budget(labels: Any, budget: int, num_classes: int | None = None) -> np.ndarray:
    """Split ``budget`` across classes in proportion to class sizes.

    Uses largest-remainder (Hamilton) rounding: every class first gets
    ``floor(budget * n_c / n)``, and the remaining units go to the classes with
    the largest fractional parts (ties broken by the lower class id). No class
    receives more than it has; empty classes receive zero.

    Args:
      labels: int array ``(n,)`` of class ids in ``[0, num_classes)``.
      budget: total number of examples to keep, ``0 <= budget <= n``.
      num_classes: number of classes ``C``; defaults to ``max(labels) + 1``.

    Returns:
      int64 array ``(C,)`` of per-class budgets summing to ``budget``.
    """
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}.")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"labels must be integers, got dtype {y.dtype}.")
    n = y.size
    budget = check_budget(budget, n)
    if n and y.min() < 0:
        raise ValueError(f"labels must be >= 0; found {int(y.min())}.")
    if num_classes is None:
        num_classes = infer_num_classes(y) if n else 0
    else:
        num_classes = check_num_classes(num_classes)
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}); found range "
                         f"[{int(y.min())}, {int(y.max())}].")
    sizes = np.bincount(y, minlength=num_classes).astype(np.int64)
    if n == 0:
        return sizes
    base = (budget * sizes) // n          # integer arithmetic: no rounding surprises
    remainder = (budget * sizes) % n      # fractional part, times n
    rem = budget - int(base.sum())
    order = np.lexsort((np.arange(num_classes), -remainder))  # largest remainder, then class id
    for c in order[:rem]:
        base[c] += 1
    # Floors never exceed class sizes; the remainders sum to rem * n with each < n, so at
    # least `rem` classes have a positive remainder, and only those (never full) get a unit.
    assert int(base.sum()) == budget and np.all(base <= sizes)
    return base
