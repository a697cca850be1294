"""Adaptive re-selection during training: per-sample quantities from the *current* model.

``make_reselect`` turns a registered selection method into the ``reselect(model, epoch)``
callback that :func:`jaxsubset.train.fit` calls every ``select_every`` epochs (after
``warm_start_epochs``). Methods that need gradient features (the quantity ``"grads"``) get
them in the representation chosen by ``scores``.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from jaxsubset import grads, selectors
from jaxsubset.data import Dataset
from jaxsubset.models.pure import PureModel
from jaxsubset.subset import Subset
from jaxsubset.workflows import quantities

SCORES = ("last_layer", "full", "projected")


def gradient_features(model: PureModel, x: Any, y: Any, *, kind: str = "last_layer", project_dim: int = 512,
                      seed: int = 0, batch_size: int = 256) -> np.ndarray:
    """Per-example gradient features ``(n, D)`` of the current model.

    - ``last_layer``: closed-form head gradients ``(n, C·(d+1))`` (no backward pass);
    - ``full``: exact per-sample gradients of all parameters ``(n, P)``;
    - ``projected``: those gradients sketched to ``(n, project_dim)`` (JL, seeded).
    """
    if kind == "last_layer":
        if model.apply_with_embedding is None:
            raise ValueError("scores='last_layer' needs a model with a linear head "
                             "(PureModel.apply_with_embedding); use scores='projected'.")
        return grads.last_layer_grads(model.apply_with_embedding, model.params, x, y, batch_size=batch_size * 4)
    if kind == "full":
        return grads.per_sample_grads(model.apply_fn, model.params, x, y, batch_size=batch_size)
    if kind == "projected":
        return grads.per_sample_grads(model.apply_fn, model.params, x, y, project_dim=project_dim, seed=seed,
                                      batch_size=batch_size)
    raise ValueError(f"Unknown scores {kind!r}; choose one of {list(SCORES)}.")


def compute_quantities(method: str, model: PureModel, x: Any, y: Any, *, scores: str = "last_layer",
                       project_dim: int = 512, seed: int = 0) -> dict[str, np.ndarray]:
    """Everything ``method`` needs, computed from ``model`` (``"grads"`` per ``scores``)."""
    m = selectors.get(method)
    out = {}
    for need in m.needs:
        if need == "grads":
            out[need] = gradient_features(model, x, y, kind=scores, project_dim=project_dim, seed=seed)
        else:
            out.update(quantities.compute([need], model, x, y))
    return out


def validation_quantities(model: PureModel, x_val: Any, y_val: Any) -> dict[str, np.ndarray]:
    """``{"val_logits", "val_h", "val_labels"}`` of a held-out set under the current ``model``."""
    if model.apply_with_embedding is None:
        raise ValueError("A validation-scored method needs a model with a linear head "
                         "(PureModel.apply_with_embedding).")
    _, h, z = grads.last_layer_factors(model.apply_with_embedding, model.params, x_val, y_val, return_logits=True)
    return {"val_logits": z, "val_h": h, "val_labels": np.asarray(y_val)}


def make_reselect(method: str, dataset: Dataset, budget: int, *, scores: str = "last_layer",
                  project_dim: int = 512, seed: int = 0,
                  validation: tuple[Any, Any] | None = None) -> Callable[[PureModel, int], Subset]:
    """``reselect(model, epoch) -> Subset``: run ``method`` (per class) on the current model.

    Randomized methods draw with ``seed + epoch`` so successive selections differ.
    ``validation=(x_val, y_val)``: the held-out set that validation-scored methods
    (GLISTER) evaluate with the current model at every selection; keep it out of
    ``dataset.x_train`` (:func:`jaxsubset.data.holdout`).
    """
    m = selectors.get(method)
    if scores not in SCORES:
        raise ValueError(f"Unknown scores {scores!r}; choose one of {list(SCORES)}.")
    if m.validation and validation is None:
        raise ValueError(f"Method {method!r} scores against a validation set: pass validation=(x_val, y_val) "
                         "of rows held out of the training set (jaxsubset.data.holdout(dataset, 0.1) splits "
                         "them off).")
    if validation is not None and (not isinstance(validation, (tuple, list)) or len(validation) != 2):
        raise TypeError("validation must be a pair (x_val, y_val).")

    def reselect(model: PureModel, epoch: int) -> Subset:
        q = compute_quantities(method, model, dataset.x_train, dataset.y_train, scores=scores,
                               project_dim=project_dim, seed=seed)
        val = validation_quantities(model, *validation) if m.validation else None
        return selectors.select(method, dataset.y_train, budget, q, seed=seed + epoch,
                                num_classes=dataset.num_classes, validation=val)

    return reselect
