"""Accuracy and per-class accuracy of a pure model."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxsubset.grads.chunking import chunked_map


def make_predict(apply_fn: Callable) -> Callable:
    """Jitted ``predict(params, x (B, ...)) -> classes (B,)``; build once, reuse across evaluations."""
    return jax.jit(lambda params, xb: jnp.argmax(apply_fn(params, xb), axis=-1))


def predict(apply_fn: Callable, params: Any, x: np.ndarray, *, batch_size: int = 1024,
            predict_fn: Callable | None = None) -> np.ndarray:
    """Predicted classes ``(n,)`` (argmax of the logits), computed in chunks."""
    fn = predict_fn or make_predict(apply_fn)
    return chunked_map(lambda xb: fn(params, xb), (np.asarray(x),), batch_size=batch_size)


def accuracy(apply_fn: Callable, params: Any, x: np.ndarray, y: np.ndarray, num_classes: int, *,
             batch_size: int = 1024, predict_fn: Callable | None = None) -> tuple[float, np.ndarray]:
    """Overall accuracy and per-class accuracy ``(num_classes,)`` (NaN for classes absent from ``y``)."""
    y = np.asarray(y)
    pred = predict(apply_fn, params, x, batch_size=batch_size, predict_fn=predict_fn)
    correct = pred == y
    counts = np.bincount(y, minlength=num_classes)
    hits = np.bincount(y, weights=correct, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)
    return float(correct.mean()), per_class
