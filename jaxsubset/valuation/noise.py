"""Per-class label-noise rate from a model's disagreement with the training labels and its clean error.

A model trained briefly on noisy labels mostly predicts the true class of a mislabelled row, so it
disagrees with the given label there; on correctly labelled rows of class ``c`` it disagrees about
as often as it errs on clean rows of class ``c`` (``e_c``, measured on a clean validation set).
With ``ρ_c`` the fraction of rows labelled ``c`` whose label is wrong, the training disagreement
rate is ``d_c ≈ ρ_c + (1 - ρ_c) e_c``, hence ``ρ_c ≈ (d_c - e_c) / (1 - e_c)``. The raw
disagreement ``d_c`` overestimates ``ρ_c`` by the model's own error: a filter that drops ``d_c``
of a class also drops its hardest clean rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def noise_rates(train_pred: Any, train_labels: Any, val_pred: Any, val_labels: Any, *,
                num_classes: int) -> np.ndarray:
    """Estimated fraction ``(C,)`` (float64, in [0, 1]) of wrong labels among the training rows of each class.

    Args:
      train_pred: int ``(n,)`` the model's predicted classes on the training rows.
      train_labels: int ``(n,)`` their given (possibly noisy) labels.
      val_pred: int ``(m,)`` predictions on a clean validation set.
      val_labels: int ``(m,)`` its labels; every class present in ``train_labels`` must occur.
      num_classes: ``C``.
    """
    arrays = [np.asarray(a) for a in (train_pred, train_labels, val_pred, val_labels)]
    for name, a in zip(("train_pred", "train_labels", "val_pred", "val_labels"), arrays):
        if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
            raise TypeError(f"{name} must be a 1-D integer array, got shape {a.shape} and dtype {a.dtype}.")
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} must lie in [0, {num_classes}); found [{a.min()}, {a.max()}].")
    tp, ty, vp, vy = arrays
    if tp.shape != ty.shape or vp.shape != vy.shape:
        raise ValueError(f"predictions and labels must have equal shapes; got {tp.shape} vs {ty.shape} (training) "
                         f"and {vp.shape} vs {vy.shape} (validation).")
    n_t = np.bincount(ty, minlength=num_classes)
    n_v = np.bincount(vy, minlength=num_classes)
    missing = np.flatnonzero((n_t > 0) & (n_v == 0))
    if missing.size:
        raise ValueError(f"The validation set has no examples of classes {missing.tolist()}: their clean error "
                         "cannot be measured. Use a stratified validation split (jaxsubset.data.holdout).")
    d = np.bincount(ty, weights=(tp != ty), minlength=num_classes) / np.maximum(n_t, 1)
    e = np.bincount(vy, weights=(vp != vy), minlength=num_classes) / np.maximum(n_v, 1)
    return np.clip((d - e) / np.maximum(1.0 - e, 1e-12), 0.0, 1.0)


__all__ = ["noise_rates"]
