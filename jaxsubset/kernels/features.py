"""The one ``Features`` notion of the feature selectors: an array ``(n, D)`` or last-layer factors ``(e, h)``.

A tuple ``(e (n, C), h (n, d))`` stands for the last-layer gradients ``e ⊗ [h, 1]`` (closed-form head
gradients, never materialized; :mod:`jaxsubset.kernels.last_layer`); anything else is a feature matrix
``(n, D)`` (embeddings, materialized or projected gradients). Only a tuple means factors.
"""

from __future__ import annotations

from typing import Any, Union

import numpy as np

from jaxsubset.kernels.blocks import finite_matrix
from jaxsubset.kernels.last_layer import as_factors

Features = Union[np.ndarray, tuple]
"""A feature matrix ``(n, D)`` or a pair ``(e (n, C), h (n, d))`` of last-layer factors."""


def is_factored(features: Any) -> bool:
    """Whether ``features`` are last-layer factors ``(e, h)`` rather than a matrix."""
    return isinstance(features, tuple)


def check_features(features: Features, name: str = "features",
                   rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Validated float32 ``(x, None)`` for a matrix, ``(e, h)`` for factors; raises naming ``name``.
    With ``rows`` (checked indices) only those rows are checked for NaN/inf."""
    if is_factored(features):
        return as_factors(features, name, rows)
    x = np.asarray(features)
    if rows is not None and x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got shape {x.shape}.")
    return finite_matrix(x, name, rows), None


def num_rows(features: Features) -> int:
    """Number of examples ``n``."""
    return int(np.shape(features[0] if is_factored(features) else features)[0])


def take_rows(features: Features, rows: Any) -> Features:
    """The features of examples ``rows`` (a pair stays a pair)."""
    return tuple(np.asarray(a)[rows] for a in features) if is_factored(features) else np.asarray(features)[rows]


__all__ = ["Features", "is_factored", "check_features", "num_rows", "take_rows"]
