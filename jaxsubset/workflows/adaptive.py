"""Adaptive re-selection during training: per-sample quantities from the *current* model.

``make_reselect`` turns a registered selection method into the ``reselect(model, epoch)``
callback that :func:`jaxsubset.train.fit` calls every ``select_every`` epochs (after
``warm_start_epochs``); :func:`fit_adaptive` builds it and trains. Methods that need gradient
features (the quantity ``"grads"``) get them in the representation chosen by ``scores``.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from jaxsubset import grads, selectors
from jaxsubset.data import Dataset
from jaxsubset.models.pure import PureModel
from jaxsubset.subset import Subset, check_budget
from jaxsubset.train import FitResult, fit
from jaxsubset.workflows import quantities
from jaxsubset.workflows.quantities import SCORES, gradient_features

def compute_quantities(method: str, model: PureModel, x: Any, y: Any, *, scores: str = "last_layer",
                       project_dim: int = 512, seed: int = 0) -> dict[str, np.ndarray]:
    """Everything ``method`` needs, computed from ``model`` (``"grads"`` per ``scores``)."""
    needs = selectors.get(method).needs
    out = quantities.compute([q for q in needs if q != "grads"], model, x, y)  # a group (e, h) computed once
    if "grads" in needs:
        out["grads"] = gradient_features(model, x, y, kind=scores, project_dim=project_dim, seed=seed)
    return {q: out[q] for q in needs}


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


def fit_adaptive(model: Any, dataset: Dataset, method: str, budget: int, *, select_every: int,
                 warm_start_epochs: int = 0, warm_start_subset: Subset | None = None, scores: str = "last_layer",
                 project_dim: int = 512, validation: tuple[Any, Any] | None = None, seed: int = 0,
                 **fit_kwargs: Any) -> FitResult:
    """Train with ``method`` re-run on ``budget`` rows every ``select_every`` epochs (GRAD-MATCH style).

    :func:`make_reselect` builds the callback (per-class selection with the current model,
    gradient features per ``scores``, ``validation=(x_val, y_val)`` for GLISTER) and
    :func:`jaxsubset.train.fit` trains: the first ``warm_start_epochs`` on ``warm_start_subset``
    (all rows when ``None``), then on each selection. ``fit_kwargs`` go to ``fit`` (``epochs``,
    ``batch_size``, ``lr``, ...); the selections are in ``history["selections"]``.
    """
    budget = check_budget(budget, dataset.y_train.size)
    reselect = make_reselect(method, dataset, budget, scores=scores, project_dim=project_dim, seed=seed,
                             validation=validation)
    return fit(model, dataset, reselect=reselect, select_every=select_every, select_size=budget,
               warm_start_epochs=warm_start_epochs, warm_start_subset=warm_start_subset, seed=seed, **fit_kwargs)
