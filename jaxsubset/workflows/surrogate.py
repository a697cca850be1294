"""Where selection scores come from: the run's own initial model (θ₀) or trained surrogates.

``score_epochs = 0`` means exactly: the per-example quantities are computed at the
initial (or user-supplied, e.g. pretrained) parameters of the run itself, and the model
that is then trained on the subset starts from those same parameters (the GEDA study
scores its ImageNet-pretrained ResNet-18 at epoch 0 and trains it). ``score_epochs = E
>= 1`` trains ``score_models = K`` surrogates for ``E`` epochs on the full data, from the
seeds ``seed + 1000 + j`` (``j < K``), and the trained model starts from the run's own
initial parameters. With ``K > 1`` the scalar quantities (``el2n``, ``loss``,
``grad_norm``, ...) are averaged over the surrogates, as Paul et al. (2021) average EL2N
over several short trainings; feature quantities (``grads``, last-layer factors) come
from the first surrogate (averaging gradient features of different networks is
meaningless).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np

from jaxsubset.data import Dataset
from jaxsubset.train import fit
from jaxsubset.train.loop import as_pure
from jaxsubset.types import DYNAMICS
from jaxsubset.workflows.quantities import compute


def check_scoring(score_epochs: Any, score_models: Any = 1) -> tuple[int, int]:
    """Validate ``(score_epochs >= 0, score_models >= 1)``; ``score_models > 1`` needs trained surrogates."""
    for name, v, lo in (("score_epochs", score_epochs, 0), ("score_models", score_models, 1)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, got {v!r}.")
        if v < lo:
            hint = (" (0: score at the run's own initial parameters; E >= 1: train a surrogate for E epochs)"
                    if name == "score_epochs" else " (the number of surrogates whose scores are averaged)")
            raise ValueError(f"{name} must be >= {lo}, got {v}{hint}.")
    if score_epochs == 0 and score_models > 1:
        raise ValueError("score_epochs=0 scores at the run's own initial model, which is one model; "
                         f"score_models={score_models} averages over surrogates trained for score_epochs >= 1 "
                         "epochs. Use score_models=1 or score_epochs >= 1.")
    return int(score_epochs), int(score_models)


def score(needs: Sequence[str], model: Any, ds: Dataset, *, seed: int, score_epochs: int, score_models: int = 1,
          train_kw: dict[str, Any] | None = None, progress: bool = False,
          init: Callable[[int], Any] | None = None) -> tuple[dict[str, np.ndarray], Any, float]:
    """Compute the quantities ``needs`` for ``ds``'s training rows; see the module docstring.

    Args:
      needs: quantity names (:data:`jaxsubset.workflows.quantities.QUANTITIES`); may be empty.
      model: the run's model: a registered name, an NNX module or a :class:`PureModel`
        (e.g. pretrained weights).
      seed: the run's seed (initializes a named model).
      score_epochs, score_models: see :func:`check_scoring`.
      train_kw: keywords for :func:`jaxsubset.train.fit` when training surrogates
        (``batch_size``, ``lr``, ``optimizer``, ...).
      init: ``init(s)`` returns the model to start a surrogate from for seed ``s``
        (default: ``model`` itself, a named model being initialized from ``s``).

    Returns:
      ``(quantities, start, seconds)``: a dict name -> array with leading axis ``n``;
      ``start``, the model the subset training must start from (the very
      :class:`PureModel` that was scored when ``score_epochs == 0``, else ``model``);
      and the wall time of surrogate training plus scoring.
    """
    score_epochs, score_models = check_scoring(score_epochs, score_models)
    needs = list(dict.fromkeys(needs))
    t0 = time.perf_counter()
    if score_epochs == 0:
        start = as_pure(model, ds, seed)
        quantities = compute(needs, start, ds.x_train, ds.y_train) if needs else {}
        return quantities, start, time.perf_counter() - t0
    if not needs:
        return {}, model, 0.0
    init = init or (lambda s: model)
    quantities: dict[str, np.ndarray] = {}
    scalar = []
    for j in range(score_models):
        s = seed + 1000 + j
        record = any(q in DYNAMICS for q in needs)  # training dynamics over score_epochs epochs
        res = fit(init(s), ds, epochs=score_epochs, seed=s, progress=progress, eval_every=score_epochs,
                  record_dynamics=record, **(train_kw or {}))
        sur = res.model
        want = needs if j == 0 else scalar
        if not want:
            break
        q = compute(want, sur, ds.x_train, ds.y_train, dynamics=res.history.get("dynamics"))
        if j == 0:
            quantities = {k: np.asarray(v, np.float64) if np.ndim(v) == 1 else v for k, v in q.items()}
            scalar = [k for k in needs if np.ndim(q[k]) == 1]
        else:
            for k in scalar:
                quantities[k] = quantities[k] + np.asarray(q[k], np.float64)
    for k in scalar:
        quantities[k] = (quantities[k] / score_models).astype(np.float32)
    return quantities, model, time.perf_counter() - t0


__all__ = ["check_scoring", "score"]
