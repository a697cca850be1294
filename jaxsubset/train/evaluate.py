"""Accuracy and per-class accuracy of a pure model."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxsubset.grads._chunk import chunked_map


def predict(apply_fn: Callable, params: Any, x: np.ndarray, *, batch_size: int = 1024) -> np.ndarray:
    """Predicted classes ``(n,)`` (argmax of the logits), computed in chunks."""
    fn = jax.jit(lambda xb: jnp.argmax(apply_fn(params, xb), axis=-1))
    return chunked_map(fn, (np.asarray(x),), batch_size=batch_size)


def accuracy(apply_fn: Callable, params: Any, x: np.ndarray, y: np.ndarray, num_classes: int, *,
             batch_size: int = 1024) -> tuple[float, np.ndarray]:
    """Overall accuracy and per-class accuracy ``(num_classes,)`` (NaN for classes absent from ``y``)."""
    y = np.asarray(y)
    pred = predict(apply_fn, params, x, batch_size=batch_size)
    correct = pred == y
    counts = np.bincount(y, minlength=num_classes)
    hits = np.bincount(y, weights=correct, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)
    return float(correct.mean()), per_class
