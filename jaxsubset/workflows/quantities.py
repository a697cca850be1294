"""Name -> per-example quantity computed from a model, for methods that declare ``needs``.

Each entry is ``fn(model: PureModel, x (n, ...), y (n,), *, batch_size) -> array (n, ...)``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import numpy as np

from jaxsubset import grads
from jaxsubset.grads import outputs
from jaxsubset.models.pure import PureModel
from jaxsubset.types import DYNAMICS, EmbedFn
from jaxsubset.valuation.knn_shapley import knn_shapley_quantity
from jaxsubset.valuation.learned import learned_value_quantity

Quantity = Callable[..., np.ndarray]


def _head(m: PureModel, what: str) -> EmbedFn:
    """The model's ``apply_with_embedding``, which closed-form head gradients need."""
    if m.apply_with_embedding is None:
        raise ValueError(f"{what} needs a model with a linear head (apply_with_embedding).")
    return m.apply_with_embedding


SCORES = ("last_layer", "full", "projected")


def gradient_features(model: PureModel, x: Any, y: Any, *, kind: str = "last_layer", project_dim: int = 512,
                      seed: int = 0, batch_size: int = 256) -> np.ndarray:
    """Per-example gradient features ``(n, D)`` of the current model.

    - ``last_layer``: closed-form head gradients ``(n, C·(d+1))`` (no backward pass);
    - ``full``: exact per-sample gradients of all parameters ``(n, P)``;
    - ``projected``: those gradients sketched to ``(n, project_dim)`` (JL, seeded).
    """
    if kind == "last_layer":
        return grads.last_layer_grads(_head(model, "Last-layer gradient features (use 'projected' otherwise)"),
                                      model.params, x, y, batch_size=batch_size * 4)
    if kind == "full":
        return grads.per_sample_grads(model.apply_fn, model.params, x, y, batch_size=batch_size)
    if kind == "projected":
        return grads.per_sample_grads(model.apply_fn, model.params, x, y, project_dim=project_dim, seed=seed,
                                      batch_size=batch_size)
    raise ValueError(f"Unknown scores {kind!r}; choose one of {list(SCORES)}.")



QUANTITIES: dict[str, Quantity] = {
    "loss": lambda m, x, y, *, batch_size=1024: grads.losses(m.apply_fn, m.params, x, y, batch_size=batch_size),
    "el2n": lambda m, x, y, *, batch_size=1024: grads.el2n(m.apply_fn, m.params, x, y, batch_size=batch_size),
    # the chunk asked for; grad_norms shrinks it to its 16 MiB buffer budget (fit_rows)
    "grad_norm": lambda m, x, y, *, batch_size=1024: grads.grad_norms(m.apply_fn, m.params, x, y,
                                                                      batch_size=batch_size),
    "input_grad_norm": lambda m, x, y, *, batch_size=1024: grads.input_grad_norms(m.apply_fn, m.params, x, y,
                                                                                  batch_size=batch_size),
    # per-example gradient features: last-layer closed form, or all parameters' sketched to 512 (adaptive
    # selection picks the kind per run: workflows.adaptive.make_reselect(scores=...))
    "grads": lambda m, x, y, *, batch_size=1024: gradient_features(m, x, y, batch_size=max(batch_size // 4, 1)),
    "grads_projected": lambda m, x, y, *, batch_size=1024: gradient_features(m, x, y, kind="projected",
                                                                             batch_size=min(batch_size, 256)),
    # softmax (n, C) for the uncertainty selectors; penultimate embeddings (n, d) for Moderate / D2
    "probs": lambda m, x, y, *, batch_size=1024: outputs.probabilities(m.apply_fn, m.params, x, batch_size=batch_size),
    "embedding": lambda m, x, y, *, batch_size=1024: outputs.embeddings(m.apply_with_embedding, m.params, x,
                                                                        batch_size=batch_size),
    # learned data values (holds out 10 % of the rows as validation; see valuation.learned)
    "learned_value": learned_value_quantity,
    # KNN-Shapley (Jia et al. 2019) on penultimate embeddings, 2 000 training rows as test points
    "knn_shapley": knn_shapley_quantity,
}
# Quantities computed together: asking for any member computes the group once.
GROUPS: dict[tuple[str, ...], Callable[..., tuple[np.ndarray, ...]]] = {
    ("last_layer_e", "last_layer_h"): lambda m, x, y, *, batch_size=1024: grads.last_layer_factors(
        _head(m, "last-layer factors"), m.params, x, y, batch_size=batch_size),
}


# Training dynamics (forgetting, AUM, loss / EL2N mean and variance over epochs) are recorded during
# a surrogate's training (train.fit(..., record_dynamics=True); jaxsubset.train.stats.dynamics), not
# computed from a trained model: compute(..., dynamics=result.history["dynamics"]) serves them.


def _recorded_only(name: str) -> Quantity:
    def quantity(m: PureModel, x: Any, y: Any, *, batch_size: int = 1024) -> np.ndarray:
        raise ValueError(f"The quantity {name!r} is recorded during training, not computed from a model: train the "
                         "surrogate with jaxsubset.train.fit(..., record_dynamics=True) and pass "
                         "dynamics=result.history['dynamics'] to quantities.compute (workflows.run.select_subset "
                         "does this with score_epochs surrogate epochs).")
    return quantity


for _name in DYNAMICS:
    QUANTITIES[_name] = _recorded_only(_name)


def register_quantity(name: str, fn: Quantity) -> None:
    """Add a quantity ``fn(model, x, y, *, batch_size) -> (n, ...)`` under ``name``."""
    if name in QUANTITIES:
        raise ValueError(f"A quantity named {name!r} is already registered.")
    QUANTITIES[name] = fn


def compute(names: Iterable[str], model: PureModel, x: Any, y: Any, *, batch_size: int = 1024,
            dynamics: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Compute the named quantities for every example; unknown names list the valid ones.

    ``dynamics``: a fit's ``history["dynamics"]`` (rows of ``x``), serving :data:`DYNAMICS`.
    """
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name in out:
            continue
        if name in DYNAMICS and dynamics is not None:
            out[name] = np.asarray(dynamics[name])
            if out[name].shape != (len(y),):
                raise ValueError(f"dynamics[{name!r}] has shape {out[name].shape}, expected ({len(y)},): record the "
                                 "dynamics on the same training rows as x.")
            continue
        group = next((g for g in GROUPS if name in g), None)
        if group is not None:
            out.update(zip(group, (np.asarray(a) for a in GROUPS[group](model, x, y, batch_size=batch_size))))
            continue
        if name not in QUANTITIES:
            valid = sorted(QUANTITIES) + sorted(q for g in GROUPS for q in g)
            raise ValueError(f"Unknown quantity {name!r}; choose one of {valid}.")
        out[name] = np.asarray(QUANTITIES[name](model, x, y, batch_size=batch_size))
    return {name: out[name] for name in names}
