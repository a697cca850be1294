"""The main job: select a subset with a method, train on it, compare with random and full data."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from jaxsubset import data, selectors
from jaxsubset.data import Dataset, holdout
from jaxsubset.subset import Subset, budget_from_fraction
from jaxsubset.train import POLICIES, InfoBatch, RandomOnline, fit
from jaxsubset.train.loop import as_pure
from jaxsubset.workflows import surrogate
from jaxsubset.workflows.adaptive import validation_quantities
from jaxsubset.workflows.quantities import compute
from jaxsubset.workflows.surrogate import check_scoring


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Settings of :func:`compare` (the ``jaxsubset run`` command)."""

    dataset: str = "digits"
    model: str = "cnn"
    method: str = "geda"
    fraction: float = 0.3
    epochs: int = 20
    seeds: int = 3
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    schedule: str = "cosine"
    score_epochs: int = 3      # 0: score at the run's own initial model (θ₀), which is then trained
    score_models: int = 1      # surrogates whose scalar scores (EL2N, loss, ...) are averaged
    data_dir: str | None = None
    progress: bool = True
    dynamic: str | None = None  # "infobatch" | "random_online" | "rs2": see compare_dynamic


def select_subset(method: str, ds: Dataset, budget: int, *, model: Any, seed: int, score_epochs: int,
                  batch_size: int = 64, lr: float = 1e-3, optimizer: str = "adam",
                  progress: bool = False, score_models: int = 1) -> tuple[Subset, float]:
    """Run ``method`` per class on ``ds``'s training set; return the subset and the wall time.

    Methods that need per-example quantities (loss, gradient norms, ...) get them from
    :func:`jaxsubset.workflows.surrogate.score` (counted in the time): with ``score_epochs >= 1``
    from ``score_models`` surrogates ``model`` trained that many epochs on the full data
    (scalar scores averaged); with ``score_epochs == 0`` from ``model`` itself at its
    initial parameters (a name is initialized from ``seed``; pass the PureModel you then
    train, as :func:`compare` does, to score and train the very same parameters).
    Validation-scored methods (GLISTER) hold out a stratified 10 % of the training rows
    (:func:`jaxsubset.data.holdout`, seeded): the surrogate trains on the rest, the method
    selects from the rest and scores against the held-out rows, which are never selected.
    """
    m = selectors.get(method)
    check_scoring(score_epochs, score_models)
    t0 = time.perf_counter()
    quantities: dict[str, np.ndarray] = {}
    pool = np.arange(ds.y_train.size)
    val = None
    if m.validation:
        pool, val_rows = holdout(ds, 0.1, seed)
        if budget > pool.size:
            raise ValueError(f"budget={budget} is larger than the {pool.size} rows left after holding out "
                             f"{val_rows.size} validation rows for {method!r}; lower the fraction.")
        val = (ds.x_train[val_rows], ds.y_train[val_rows])
        ds = ds.replace(x_train=ds.x_train[pool], y_train=ds.y_train[pool])
    validation = None
    train_kw = dict(batch_size=batch_size, lr=lr, optimizer=optimizer)
    if m.needs and val is None:
        quantities = surrogate.score(list(m.needs), model, ds, seed=seed, score_epochs=score_epochs,
                                     score_models=score_models, train_kw=train_kw, progress=progress)[0]
    elif m.needs:  # a validation-scored method (GLISTER): one model scores both pools, θ₀ or surrogate 0
        sur = as_pure(model, ds, seed) if score_epochs == 0 else fit(
            model, ds, epochs=score_epochs, seed=seed + 1000, progress=progress, eval_every=score_epochs,
            **train_kw).model
        quantities = compute(list(m.needs), sur, ds.x_train, ds.y_train)
        validation = validation_quantities(sur, *val)
    sub = selectors.select(method, ds.y_train, budget, quantities, seed=seed, num_classes=ds.num_classes,
                           validation=validation)
    if val is not None:
        sub = Subset(pool[sub.indices], sub.weights, sub.info)
    return sub, time.perf_counter() - t0


def compare(cfg: RunConfig, ds: Dataset | None = None, *, model: Any = None) -> list[dict[str, Any]]:
    """Train on ``cfg.method``'s subset, a random subset of the same size and the full data.

    ``model`` (optional): the model every arm starts from instead of ``cfg.model`` initialized
    from the seed, e.g. pretrained weights (an NNX module or :class:`PureModel`). With
    ``cfg.score_epochs == 0`` the method scores at exactly the parameters training starts from.

    Returns one row per (seed, arm) with ``method``, ``fraction``, ``seed``,
    ``test_accuracy``, ``selection_time_s`` (scoring included), ``train_time_s``, ``num_examples``.
    """
    if cfg.dynamic is not None:
        return compare_dynamic(cfg, ds)
    selectors.get(cfg.method)  # fail fast on unknown names
    check_scoring(cfg.score_epochs, cfg.score_models)
    if int(cfg.seeds) < 1:
        raise ValueError(f"seeds must be >= 1, got {cfg.seeds}.")
    if ds is None:
        ds = data.load(cfg.dataset, data_dir=cfg.data_dir)
    n = ds.y_train.size
    budget = budget_from_fraction(cfg.fraction, n)
    arms = [cfg.method] + (["random"] if cfg.method != "random" else [])
    rows = []
    train_kw = dict(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, optimizer=cfg.optimizer,
                    schedule=cfg.schedule, progress=cfg.progress, eval_every=cfg.epochs)
    for seed in range(cfg.seeds):
        start = cfg.model if model is None else model
        if cfg.score_epochs == 0:  # score and train the very same initial parameters
            start = as_pure(start, ds, seed)
        for arm in arms:
            sub, sel_t = select_subset(arm, ds, budget, model=start, seed=seed, score_epochs=cfg.score_epochs,
                                       batch_size=cfg.batch_size, lr=cfg.lr, optimizer=cfg.optimizer,
                                       score_models=cfg.score_models)
            res = fit(start, ds, sub, seed=seed, **train_kw)
            rows.append(dict(method=arm, fraction=cfg.fraction, seed=seed, num_examples=len(sub),
                             test_accuracy=res.history["test_accuracy"][-1], selection_time_s=sel_t,
                             train_time_s=res.train_time_s))
        res = fit(start, ds, None, seed=seed, **train_kw)
        rows.append(dict(method="full", fraction=1.0, seed=seed, num_examples=n,
                         test_accuracy=res.history["test_accuracy"][-1], selection_time_s=0.0,
                         train_time_s=res.train_time_s))
    return rows


def compare_dynamic(cfg: RunConfig, ds: Dataset | None = None) -> list[dict[str, Any]]:
    """Dynamic pruning ``cfg.dynamic`` vs full data vs RandomOnline at the same sample-steps.

    ``infobatch`` uses ``InfoBatch()`` (r = 0.5, anneal = 0.125); ``random_online`` and ``rs2``
    train on ``cfg.fraction`` of the data per epoch. The RandomOnline arm gets the fraction of
    sample-steps the dynamic arm actually used. Rows as :func:`compare` (``fraction`` 1: every
    arm draws from the full data), plus ``sample_steps`` and ``step_fraction`` (the used share
    of full-data sample-steps).
    """
    if cfg.dynamic not in POLICIES:
        raise ValueError(f"Unknown dynamic policy {cfg.dynamic!r}; choose one of {sorted(POLICIES)}.")
    if int(cfg.seeds) < 1:
        raise ValueError(f"seeds must be >= 1, got {cfg.seeds}.")
    if ds is None:
        ds = data.load(cfg.dataset, data_dir=cfg.data_dir)
    n = ds.y_train.size
    policy = InfoBatch() if cfg.dynamic == "infobatch" else POLICIES[cfg.dynamic](cfg.fraction)
    train_kw = dict(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, optimizer=cfg.optimizer,
                    schedule=cfg.schedule, progress=cfg.progress, eval_every=cfg.epochs)
    rows = []
    for seed in range(cfg.seeds):
        arms = [("full", None), (cfg.dynamic, policy)]
        for i, (arm, pol) in enumerate(arms):
            res = fit(cfg.model, ds, None, seed=seed, dynamic=pol, **train_kw)
            frac = res.sample_steps / (n * cfg.epochs)
            rows.append(dict(method=arm, fraction=1.0, seed=seed, num_examples=n,
                             test_accuracy=res.history["test_accuracy"][-1], selection_time_s=0.0,
                             train_time_s=res.train_time_s, sample_steps=res.sample_steps, step_fraction=frac))
            if arm == cfg.dynamic and arm != "random_online":
                arms.append(("random_online", RandomOnline(min(1.0, frac))))
    return rows
