"""The targeted subset selection (TSS) loop and its baselines.

One round: train on a small labeled set ``E``; choose ``A ⊆ U`` (``|A| = budget``) from an
unlabeled pool ``U`` against a labeled target slice ``T``; reveal the labels of ``A`` only;
retrain on ``E ∪ A``; report overall and targeted-class test accuracy before and after.

Strategies: the submodular mutual information functions of
:func:`jaxsubset.workflows.targeted.targeted_select` (``"flqmi"``, ``"flvmi"``, ``"gcmi"``,
``"logdetmi"``), and target-agnostic baselines: ``"random"``, uncertainty sampling
(``"entropy"``, ``"least_confidence"``: :func:`jaxsubset.selectors.uncertainty` on the model's
softmax) and ``"badge"`` (:func:`jaxsubset.selectors.kmeanspp` on last-layer gradient embeddings
with hypothesized labels, Ash et al. 2020).

:func:`jaxsubset.data.make_targeted_setting` builds the imbalanced setting of the TSS experiments.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from jaxsubset.checks import check_labels
from jaxsubset.data.dataset import Dataset
from jaxsubset.grads.outputs import probabilities
from jaxsubset.models.pure import PureModel
from jaxsubset.selectors.basic import random as random_subset
from jaxsubset.selectors.kmeanspp import kmeanspp
from jaxsubset.selectors.smi import FUNCTIONS
from jaxsubset.selectors.uncertainty import uncertainty
from jaxsubset.subset import Subset, check_budget
from jaxsubset.train import FitResult, fit
from jaxsubset.train.evaluate import accuracy
from jaxsubset.workflows.targeted import targeted_features, targeted_select

BASELINES = ("random", "entropy", "least_confidence", "badge")
STRATEGIES = tuple(FUNCTIONS) + BASELINES


# ----------------------------------------------------------------------------- baselines

def select_targeted(strategy: str, model: PureModel, pool_x: Any, query_x: Any, query_y: Any, budget: int, *,
                    eta: float = 1.0, gamma: float = 0.0, features: str = "embeddings",
                    metric: str = "cosine", seed: int = 0, batch_size: int = 1024,
                    smi_kwargs: dict[str, Any] | None = None) -> Subset:
    """Choose ``budget`` pool rows with one strategy of :data:`STRATEGIES`.

    Args:
      strategy: an SMI function (``"flqmi"``, ``"flvmi"``, ``"gcmi"``, ``"logdetmi"``; uses the
        query set) or a baseline (``"random"``, ``"entropy"``, ``"least_confidence"``,
        ``"badge"``; ignore it).
      model: the :class:`PureModel` trained on the labeled set (``FitResult.model``).
      pool_x: unlabeled pool inputs ``(n, ...)``.
      query_x, query_y: the target slice ``(q, ...)`` and its int labels ``(q,)``.
      budget: ``1 <= budget <= n``.
      eta, gamma, features, metric, smi_kwargs: for the SMI strategies, see
        :func:`jaxsubset.workflows.targeted.targeted_select`.
      seed: for ``"random"`` and ``"badge"``.
      batch_size: rows per forward pass.

    Returns:
      The :class:`Subset` of pool rows (unit weights) with ``info["strategy"]``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}; choose one of {list(STRATEGIES)}.")
    if not isinstance(model, PureModel):
        raise TypeError(f"model must be a PureModel (e.g. FitResult.model), got {type(model).__name__}.")
    pool_x = np.asarray(pool_x)
    n = pool_x.shape[0]
    budget = check_budget(budget, n, minimum=1)
    if strategy in FUNCTIONS:
        sub = targeted_select(model, None, pool_x, query_x, query_y, budget, function=strategy, eta=eta,
                              gamma=gamma, features=features, metric=metric, batch_size=batch_size,
                              **(smi_kwargs or {}))
    elif strategy == "random":
        sub = random_subset(n, budget, seed=seed)
    elif strategy in ("entropy", "least_confidence"):
        sub = uncertainty(probabilities(model.apply_fn, model.params, pool_x, batch_size=batch_size), budget,
                          kind=strategy)
    else:  # badge
        grads, _ = targeted_features(model, None, pool_x, None, features="last_layer_grads", batch_size=batch_size)
        sub = kmeanspp(grads, budget, seed=seed)
    return Subset(sub.indices, sub.weights, {**sub.info, "strategy": strategy})


# ----------------------------------------------------------------------------- one TSS round

def _accuracies(model: PureModel, ds: Dataset, targets: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Overall test accuracy, accuracy on the test rows of ``targets``, per-class accuracy ``(C,)``."""
    overall, per_class = accuracy(model.apply_fn, model.params, ds.x_test, ds.y_test, ds.num_classes)
    counts = np.bincount(ds.y_test, minlength=ds.num_classes)[targets]
    hits = np.where(counts > 0, per_class[targets] * counts, 0.0)
    return overall, float(hits.sum() / counts.sum()), per_class


def tss_round(model: Any, labeled: Dataset, pool_x: Any, pool_y: Any, query_x: Any, query_y: Any, budget: int, *,
              strategy: str = "flqmi", eta: float = 1.0, gamma: float = 0.0, features: str = "embeddings",
              metric: str = "cosine", epochs: int = 20, batch_size: int = 64, lr: float = 1e-3,
              optimizer: str = "adam", schedule: str = "cosine", seed: int = 0,
              target_classes: Sequence[int] | None = None, initial: Any = None, progress: bool = False,
              smi_kwargs: dict[str, Any] | None = None, fit_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train on ``E``, select ``A`` from ``U`` against ``T``, reveal ``A``'s labels, retrain on ``E ∪ A``.

    Both trainings start from the same initialization (``model`` and ``seed``) and use the
    same settings, so the difference measures the selected data. Only ``pool_y[A]`` is read.

    Args:
      model: a model name (``"mlp"``, ``"cnn"``, ...), an NNX module or a :class:`PureModel`:
        the starting point of both trainings.
      labeled: ``E`` as the training split of a :class:`Dataset`; its test split is the
        evaluation set.
      pool_x: unlabeled pool ``U`` ``(n, ...)``, same per-example shape as ``labeled``.
      pool_y: the pool's hidden int labels ``(n,)``, revealed only for the chosen rows.
      query_x, query_y: the labeled target slice ``T`` ``(q, ...)`` and ``(q,)``, ``q >= 1``.
      budget: ``|A|``, ``1 <= budget <= n``.
      strategy: one of :data:`STRATEGIES`.
      eta, gamma, features, metric, smi_kwargs: SMI settings (see
        :func:`jaxsubset.workflows.targeted.targeted_select`). ``features`` defaults to
        ``"embeddings"``: last-layer gradients use *hypothesized* labels for the pool, and
        when the model trained on ``E`` misclassifies the rare target classes (the usual
        case), the pool's target-class points get the wrong label and their gradients stop
        resembling the query's (measured in ``experiments/targeted.py``).
      epochs, batch_size, lr, optimizer, schedule, seed, progress, fit_kwargs: training
        settings for :func:`jaxsubset.train.fit` (both trainings).
      target_classes: classes whose test accuracy is "targeted" (default: the classes of ``query_y``).
      initial: a :class:`~jaxsubset.train.FitResult` (or :class:`PureModel`) already trained on
        ``E`` with these settings, to share the first training across strategies.

    Returns:
      A dict with ``strategy``, ``budget``, ``seed``, ``num_labeled``, ``num_pool``,
      ``overall_before`` / ``overall_after`` / ``overall_gain``, ``targeted_before`` /
      ``targeted_after`` / ``targeted_gain`` (fractions in ``[0, 1]``; gains are differences),
      ``per_class_before`` / ``per_class_after`` (lists of ``C``), ``selected_target``
      (how many of ``A`` belong to the target classes) and ``selected_target_fraction``,
      ``selection_time_s`` (features, kernel and optimization), ``kernel_time_s`` and
      ``greedy_time_s`` (SMI only, else 0), ``train_time_s`` (the retraining),
      ``indices`` (int64 pool rows of ``A``) and ``model`` (the retrained :class:`PureModel`).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}; choose one of {list(STRATEGIES)}.")
    if not isinstance(labeled, Dataset):
        raise TypeError(f"labeled must be a jaxsubset.data.Dataset holding E as its training split, got "
                        f"{type(labeled).__name__}; build one with jaxsubset.data.from_arrays.")
    c = labeled.num_classes
    pool_x = np.asarray(pool_x, np.float32)
    query_x = np.asarray(query_x, np.float32)
    for name, x in (("pool_x", pool_x), ("query_x", query_x)):
        if x.ndim < 2 or x.shape[1:] != labeled.input_shape:
            raise ValueError(f"{name} examples have shape {x.shape[1:]} but the labeled set's have "
                             f"{labeled.input_shape}; they must match.")
    if query_x.shape[0] == 0:
        raise ValueError("query_x is empty; the target slice T needs at least one labeled example.")
    n = pool_x.shape[0]
    pool_y = check_labels(pool_y, n, c, name="pool_y", against="pool_x")
    query_y = check_labels(query_y, query_x.shape[0], c, name="query_y", against="query_x")
    budget = check_budget(budget, n, minimum=1)
    targets = np.unique(query_y) if target_classes is None else np.unique(np.asarray(target_classes, np.int64))
    if targets.size == 0 or targets.min() < 0 or targets.max() >= c:
        raise ValueError(f"target_classes must be a non-empty list of classes in [0, {c}), got {target_classes!r}.")
    if not np.isin(labeled.y_test, targets).any():
        raise ValueError(f"the evaluation (test) split has no examples of target classes {targets.tolist()}.")

    train_kw = dict(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, schedule=schedule,
                    seed=seed, progress=progress, eval_every=epochs, **(fit_kwargs or {}))
    if initial is None:
        before = fit(model, labeled, **train_kw).model
    elif isinstance(initial, FitResult):
        before = initial.model
    elif isinstance(initial, PureModel):
        before = initial
    else:
        raise TypeError(f"initial must be a FitResult or PureModel trained on E, got {type(initial).__name__}.")
    overall0, target0, per0 = _accuracies(before, labeled, targets)

    t0 = time.perf_counter()
    sub = select_targeted(strategy, before, pool_x, query_x, query_y, budget, eta=eta, gamma=gamma,
                          features=features, metric=metric, seed=seed, smi_kwargs=smi_kwargs)
    t_sel = time.perf_counter() - t0
    idx = sub.indices
    revealed = pool_y[idx]                                  # the only labels of U that are read
    union = labeled.replace(x_train=np.concatenate([labeled.x_train, pool_x[idx]]),
                            y_train=np.concatenate([labeled.y_train, revealed]))
    after = fit(model, union, **train_kw)
    overall1, target1, per1 = _accuracies(after.model, labeled, targets)
    hit = int(np.isin(revealed, targets).sum())
    return dict(strategy=strategy, budget=budget, seed=seed, num_labeled=int(labeled.y_train.size), num_pool=n,
                target_classes=targets.tolist(), overall_before=overall0, overall_after=overall1,
                overall_gain=overall1 - overall0, targeted_before=target0, targeted_after=target1,
                targeted_gain=target1 - target0, per_class_before=per0.tolist(), per_class_after=per1.tolist(),
                selected_target=hit, selected_target_fraction=hit / budget, selection_time_s=t_sel,
                kernel_time_s=float(sub.info.get("kernel_seconds", 0.0)),
                greedy_time_s=float(sub.info.get("select_seconds", 0.0)), train_time_s=after.train_time_s,
                indices=idx, model=after.model)


__all__ = ["tss_round", "select_targeted", "STRATEGIES", "BASELINES"]
