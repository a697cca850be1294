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
        if idx.ndim != 1:
            raise ValueError(f"Subset indices must be 1-D, got shape {idx.shape}.")
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            if not np.all(np.equal(np.mod(idx, 1), 0)):
                raise ValueError("Subset indices must be integers; got non-integral values.")
        idx = idx.astype(np.int64)
        if idx.size and idx.min() < 0:
            raise ValueError(f"Subset indices must be >= 0; found {int(idx.min())}.")
        if np.unique(idx).size != idx.size:
            vals, counts = np.unique(idx, return_counts=True)
            raise ValueError(
                f"Subset indices must be unique; duplicated: {vals[counts > 1][:10].tolist()}. "
                "Express repetition through weights instead.")
        w = np.ones(idx.shape, np.float32) if self.weights is None else np.asarray(self.weights, np.float32)
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


def check_budget(budget: int, n: int, *, name: str = "budget") -> int:
    """Validate an integer budget against a pool of ``n`` and return it as ``int``."""
    if isinstance(budget, (bool, np.bool_)) or not isinstance(budget, (int, np.integer)):
        raise TypeError(f"{name} must be an integer number of examples, got {budget!r}.")
    budget = int(budget)
    if budget < 0:
        raise ValueError(f"{name} must be >= 0, got {budget}.")
    if budget > n:
        raise ValueError(f"{name}={budget} is larger than the pool of {n} examples; "
                         f"use a budget <= {n}.")
    return budget


def budget_from_fraction(fraction: float, n: int) -> int:
    """``round(fraction * n)`` for a fraction in ``(0, 1]`` (at least one example)."""
    f = float(fraction)
    if not np.isfinite(f) or not 0.0 < f <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}.")
    return max(1, min(n, int(round(f * n))))


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
    if num_classes is None:
        num_classes = int(y.max()) + 1 if n else 0
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
