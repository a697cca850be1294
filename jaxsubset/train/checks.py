"""Argument checks of :func:`jaxsubset.train.fit` that catch mistakes before any training."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxsubset.data.dataset import Dataset
from jaxsubset.subset import Subset

TINY_WEIGHT = 1e-30
"""Largest subset weight below which float32 products ``w_i * loss_i`` underflow to zero."""


def check_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """``value`` as an ``int >= minimum``; a float such as ``2.0`` is a ``TypeError`` naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}; pass e.g. {name}={max(minimum, 1)}.")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return int(value)


def check_weights(subset: Subset | None, name: str = "subset") -> None:
    """Raise unless ``subset``'s weights can train: some weight must be large enough for float32.

    The batch loss is ``Σ w_i ℓ_i / Σ w_i``: with all weights 0 every batch is skipped (loss
    0.0, nothing learned), and with all weights below :data:`TINY_WEIGHT` (e.g. a
    GRAD-MATCH subset whose weights underflowed) the products vanish the same way.
    """
    if subset is None or len(subset) == 0:
        return
    top = float(np.max(subset.weights))
    if top == 0.0:
        raise ValueError(f"All {len(subset)} weights of the {name} are zero, so training would learn nothing "
                         "(loss 0.0); give some examples a positive weight, or pass weights=None for ones.")
    if top < TINY_WEIGHT:
        raise ValueError(f"The {name}'s weights are all below {TINY_WEIGHT:g} (largest {top:.3g}), so float32 "
                         "loss terms underflow to zero; rescale them, e.g. weights / weights.max() "
                         "(the weighted mean loss does not depend on a common scale).")


def check_fit_args(dataset: Dataset, subset: Subset | None, *, epochs: Any, batch_size: Any, eval_every: Any,
                   lr: Any = 1e-3, warm_start_subset: Subset | None = None) -> None:
    """Type and value checks of ``fit``'s arguments (see :func:`check_int`, :func:`check_weights`)."""
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be a jaxsubset.data.Dataset, got {type(dataset).__name__}; wrap arrays "
                        "with jaxsubset.data.from_arrays(...).")
    if subset is not None and not isinstance(subset, Subset):
        raise TypeError(f"subset must be a jaxsubset.Subset or None, got {type(subset).__name__}.")
    check_int(epochs, "epochs")
    check_int(batch_size, "batch_size")
    check_int(eval_every, "eval_every")
    try:
        ok = bool(np.isfinite(float(lr)) and float(lr) > 0)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}.")
    check_weights(subset)
    check_weights(warm_start_subset, "warm_start_subset")


def check_model_outputs(apply_fn: Any, params: Any, dataset: Dataset) -> int:
    """Raise unless the model maps one example to ``(1, C)`` logits with ``C >= dataset.num_classes``.

    A model with fewer outputs than classes would train on out-of-range labels and fail an
    epoch later with a NaN loss; this names the mismatch before training. Returns ``C``.
    """
    spec = jax.ShapeDtypeStruct((1, *dataset.input_shape), np.float32)
    try:
        out = jax.eval_shape(apply_fn, params, spec)
    except Exception as err:
        raise ValueError(f"The model cannot take the data set's inputs of shape {dataset.input_shape} "
                         f"({type(err).__name__}: {err}); build it for that input shape.") from err
    shape = getattr(out, "shape", None)
    if shape is None or len(shape) != 2 or shape[0] != 1:
        raise ValueError(f"The model must map a batch (B, ...) to logits (B, C); a batch of 1 gave {shape}.")
    width = int(shape[1])
    top = int(max(dataset.y_train.max(), dataset.y_test.max()))
    if width < dataset.num_classes or top >= width:
        raise ValueError(f"The model has {width} outputs but the data set has {dataset.num_classes} classes "
                         f"(labels up to {top}); build the model with num_classes={dataset.num_classes}.")
    return width
