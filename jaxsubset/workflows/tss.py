"""The targeted subset selection (TSS) loop and its baselines.

One round: train on a small labeled set ``E``; choose ``A ⊆ U`` (``|A| = budget``) from an
unlabeled pool ``U`` against a labeled target slice ``T``; reveal the labels of ``A`` only;
retrain on ``E ∪ A``; report overall and targeted-class test accuracy before and after.

Strategies: the submodular mutual information functions of
:func:`jaxsubset.workflows.targeted.targeted_select` (``"flqmi"``, ``"flvmi"``, ``"gcmi"``,
``"logdetmi"``), and target-agnostic baselines: ``"random"``, uncertainty sampling
(``"entropy"``, ``"least_confidence"``) and ``"badge"`` (k-means++ seeding on last-layer
gradient embeddings with hypothesized labels, Ash et al. 2020).

:func:`make_targeted_setting` builds the imbalanced setting of the TSS experiments: a few
classes are rare in ``E`` and ``U`` (:func:`jaxsubset.data.make_imbalanced`) and ``T`` is
drawn from held-out training examples of those classes.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import jax
import numpy as np

from jaxsubset.data.dataset import Dataset
from jaxsubset.data.transforms import make_imbalanced
from jaxsubset.grads.chunking import chunked_map
from jaxsubset.models.pure import PureModel
from jaxsubset.selectors.basic import random as random_subset
from jaxsubset.selectors.basic import top_k
from jaxsubset.selectors.smi import FUNCTIONS
from jaxsubset.subset import Subset
from jaxsubset.train import FitResult, fit
from jaxsubset.workflows.targeted import targeted_features, targeted_select

BASELINES = ("random", "entropy", "least_confidence", "badge")
STRATEGIES = tuple(FUNCTIONS) + BASELINES


# ----------------------------------------------------------------------------- baselines

def uncertainty_scores(logits: Any, kind: str = "entropy") -> np.ndarray:
    """Per-example uncertainty ``(n,)`` from logits ``(n, C)`` (larger = more uncertain).

    ``"entropy"``: ``-Σ_c p_c log p_c``; ``"least_confidence"``: ``1 - max_c p_c``.
    """
    if kind not in ("entropy", "least_confidence"):
        raise ValueError(f"Unknown uncertainty {kind!r}; choose 'entropy' or 'least_confidence'.")
    z = np.asarray(logits, np.float64)
    if z.ndim != 2 or z.shape[1] < 1:
        raise ValueError(f"logits must have shape (n, C), got {z.shape}.")
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))
    p = np.exp(logp)
    if kind == "entropy":
        return -np.sum(p * logp, axis=1)
    return 1.0 - p.max(axis=1)


def kmeanspp(features: Any, budget: int, *, seed: int = 0) -> Subset:
    """k-means++ seeding (BADGE's selection): ``budget`` rows spread out in feature space.

    The first row is the one of largest norm (as in BADGE); each next row is drawn with
    probability proportional to its squared distance to the nearest row chosen so far
    (``D²`` sampling). If every remaining row coincides with a chosen one, the next row is
    drawn uniformly from the unchosen rows.

    Args:
      features: ``(n, d)``, or a pair ``(e (n, C), h (n, d))`` standing for the last-layer
        gradients ``e ⊗ [h, 1]`` (their dot products are ``(e·e')(h·h' + 1)``; nothing of
        size ``n × C(d+1)`` is materialized).
      budget: number of rows, ``1 <= budget <= n``.
      seed: seed of the NumPy generator.

    Returns:
      A :class:`Subset` with sorted indices; ``info["order"]`` is the order of choice.
    """
    if isinstance(features, tuple):
        if len(features) != 2:
            raise ValueError(f"features given as a tuple must be the pair (e (n, C), h (n, d)); got "
                             f"{len(features)} items.")
        e, h = (np.asarray(a, np.float64) for a in features)
        if e.ndim != 2 or h.ndim != 2 or e.shape[0] != h.shape[0]:
            raise ValueError(f"the pair must be e (n, C) and h (n, d) with the same n; got {e.shape} and {h.shape}.")
    else:
        e, h = np.asarray(features, np.float64), None
        if e.ndim != 2:
            raise ValueError(f"features must be a 2-D array (n, d), got shape {e.shape}.")
    if not (np.all(np.isfinite(e)) and (h is None or np.all(np.isfinite(h)))):
        raise ValueError("features contain NaN or inf; fix the model or drop those rows.")
    n = e.shape[0]
    if isinstance(budget, (bool, np.bool_)) or not isinstance(budget, (int, np.integer)):
        raise TypeError(f"budget must be an integer number of examples, got {budget!r}.")
    if not 1 <= int(budget) <= n:
        raise ValueError(f"budget must be between 1 and the pool size {n}, got {budget}.")
    sq = np.sum(e * e, axis=1) * (1.0 if h is None else np.sum(h * h, axis=1) + 1.0)

    def dist2(j: int) -> np.ndarray:
        dot = e @ e[j] if h is None else (e @ e[j]) * (h @ h[j] + 1.0)
        return np.maximum(sq + sq[j] - 2.0 * dot, 0.0)

    rng = np.random.default_rng(seed)
    chosen = np.zeros(n, bool)
    order = [int(np.argmax(sq))]
    chosen[order[0]] = True
    d2 = dist2(order[0])
    d2[chosen] = 0.0
    for _ in range(int(budget) - 1):
        total = d2.sum()
        if total > 0:
            j = int(rng.choice(n, p=d2 / total))
        else:
            j = int(rng.choice(np.flatnonzero(~chosen)))
        order.append(j)
        chosen[j] = True
        d2 = np.minimum(d2, dist2(j))
        d2[chosen] = 0.0
    order_arr = np.asarray(order, np.int64)
    return Subset.unweighted(np.sort(order_arr), method="kmeans++", order=order_arr)


def _logits(model: PureModel, x: np.ndarray, batch_size: int) -> np.ndarray:
    fn = jax.jit(lambda xb: model.apply_fn(model.params, xb))
    return np.asarray(chunked_map(fn, (x,), batch_size=batch_size), np.float32)


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
    if isinstance(budget, (bool, np.bool_)) or not isinstance(budget, (int, np.integer)):
        raise TypeError(f"budget must be an integer number of examples, got {budget!r}.")
    if not 1 <= int(budget) <= n:
        raise ValueError(f"budget must be between 1 and the pool size {n}, got {budget}.")
    budget = int(budget)
    if strategy in FUNCTIONS:
        sub = targeted_select(model, None, pool_x, query_x, query_y, budget, function=strategy, eta=eta,
                              gamma=gamma, features=features, metric=metric, batch_size=batch_size,
                              **(smi_kwargs or {}))
    elif strategy == "random":
        sub = random_subset(n, budget, seed=seed)
    elif strategy in ("entropy", "least_confidence"):
        sub = top_k(uncertainty_scores(_logits(model, pool_x, batch_size), strategy), budget)
    else:  # badge
        grads, _ = targeted_features(model, None, pool_x, None, features="last_layer_grads", batch_size=batch_size)
        sub = kmeanspp(grads, budget, seed=seed)
    return Subset(sub.indices, sub.weights, {**sub.info, "strategy": strategy})


# ----------------------------------------------------------------------------- the imbalanced setting

@dataclasses.dataclass(frozen=True)
class TargetedSetting:
    """A labeled set, an unlabeled pool with hidden labels, and a target slice.

    Attributes:
      labeled: ``E`` as the training split of a :class:`Dataset` whose test split is the
        evaluation set.
      pool_x: ``U`` inputs ``(n, ...)``; pool_y: their hidden labels ``(n,)``.
      query_x, query_y: the target slice ``T`` ``(q, ...)`` and ``(q,)``.
      target_classes: the classes of ``T`` (rare in ``E`` and ``U``).
    """

    labeled: Dataset
    pool_x: np.ndarray
    pool_y: np.ndarray
    query_x: np.ndarray
    query_y: np.ndarray
    target_classes: tuple[int, ...]


def make_targeted_setting(ds: Dataset, rare_classes: Sequence[int], *, rare_keep: float = 0.1,
                          labeled_fraction: float = 0.1, query_per_class: int = 10,
                          pool_size: int | None = None, seed: int = 0) -> TargetedSetting:
    """Split ``ds``'s training split into ``E``, ``U`` and ``T`` with ``rare_classes`` rare.

    1. ``query_per_class`` training examples of each rare class are held out as ``T``.
    2. Of the rest, each rare class keeps a ``rare_keep`` fraction
       (:func:`jaxsubset.data.make_imbalanced`).
    3. Each class is split at random: ``max(1, round(labeled_fraction · n_c))`` rows to ``E``,
       the others to ``U``; with ``pool_size``, ``U`` is then subsampled uniformly.

    The test split is unchanged (targeted accuracy is measured on its rare-class rows).
    """
    rare = sorted({int(c) for c in rare_classes})
    if not rare:
        raise ValueError("rare_classes is empty; name at least one class to target.")
    bad = [c for c in rare if not 0 <= c < ds.num_classes]
    if bad:
        raise ValueError(f"rare_classes {bad} are outside [0, {ds.num_classes}).")
    if not 0.0 < float(labeled_fraction) < 1.0:
        raise ValueError(f"labeled_fraction must be in (0, 1), got {labeled_fraction}.")
    if int(query_per_class) < 1:
        raise ValueError(f"query_per_class must be >= 1, got {query_per_class}.")
    rng = np.random.default_rng(seed)
    held = []
    for c in rare:
        rows = rng.permutation(np.flatnonzero(ds.y_train == c))
        if rows.size < int(query_per_class) + 2:
            raise ValueError(f"class {c} has {rows.size} training examples; it needs query_per_class="
                             f"{query_per_class} for T plus at least 2 for E and U. Lower query_per_class.")
        held.append(rows[: int(query_per_class)])
    held = np.sort(np.concatenate(held))
    rest = np.setdiff1d(np.arange(ds.y_train.size), held)
    imb = make_imbalanced(ds.replace(x_train=ds.x_train[rest], y_train=ds.y_train[rest]), rare, rare_keep,
                          seed=seed)
    lab, pool = [], []
    for c in range(ds.num_classes):
        rows = rng.permutation(np.flatnonzero(imb.y_train == c))
        if rows.size == 0:
            continue
        k = min(rows.size, max(1, int(round(float(labeled_fraction) * rows.size))))
        lab.append(rows[:k])
        pool.append(rows[k:])
    lab, pool = np.sort(np.concatenate(lab)), np.sort(np.concatenate(pool))
    if pool_size is not None:
        if not 1 <= int(pool_size):
            raise ValueError(f"pool_size must be >= 1, got {pool_size}.")
        if int(pool_size) < pool.size:
            pool = np.sort(rng.choice(pool, size=int(pool_size), replace=False))
    labeled = imb.replace(x_train=imb.x_train[lab], y_train=imb.y_train[lab])
    return TargetedSetting(labeled, imb.x_train[pool], imb.y_train[pool], ds.x_train[held], ds.y_train[held],
                           tuple(rare))


# ----------------------------------------------------------------------------- one TSS round

def _check_labels(y: Any, n: int, c: int, name: str, xname: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) to match {xname}, got {y.shape}.")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"{name} must hold integer class ids, got dtype {y.dtype}.")
    if y.size and (y.min() < 0 or y.max() >= c):
        raise ValueError(f"{name} must lie in [0, {c}); found [{int(y.min())}, {int(y.max())}].")
    return y.astype(np.int32)


def _accuracies(model: PureModel, ds: Dataset, targets: np.ndarray, batch_size: int) -> tuple[float, float, np.ndarray]:
    """Overall accuracy, accuracy on test rows of ``targets``, per-class accuracy ``(C,)``."""
    pred = np.argmax(_logits(model, ds.x_test, batch_size), axis=1)
    correct = pred == ds.y_test
    counts = np.bincount(ds.y_test, minlength=ds.num_classes)
    hits = np.bincount(ds.y_test, weights=correct, minlength=ds.num_classes)
    per_class = np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)
    mask = np.isin(ds.y_test, targets)
    return float(correct.mean()), float(correct[mask].mean()), per_class


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
    pool_y = _check_labels(pool_y, n, c, "pool_y", "pool_x")
    query_y = _check_labels(query_y, query_x.shape[0], c, "query_y", "query_x")
    if isinstance(budget, (bool, np.bool_)) or not isinstance(budget, (int, np.integer)):
        raise TypeError(f"budget must be an integer number of examples, got {budget!r}.")
    if not 1 <= int(budget) <= n:
        raise ValueError(f"budget must be between 1 and the pool size {n}, got {budget}.")
    budget = int(budget)
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
    overall0, target0, per0 = _accuracies(before, labeled, targets, 1024)

    t0 = time.perf_counter()
    sub = select_targeted(strategy, before, pool_x, query_x, query_y, budget, eta=eta, gamma=gamma,
                          features=features, metric=metric, seed=seed, smi_kwargs=smi_kwargs)
    t_sel = time.perf_counter() - t0
    idx = sub.indices
    revealed = pool_y[idx]                                  # the only labels of U that are read
    union = labeled.replace(x_train=np.concatenate([labeled.x_train, pool_x[idx]]),
                            y_train=np.concatenate([labeled.y_train, revealed]))
    after = fit(model, union, **train_kw)
    overall1, target1, per1 = _accuracies(after.model, labeled, targets, 1024)
    hit = int(np.isin(revealed, targets).sum())
    return dict(strategy=strategy, budget=budget, seed=seed, num_labeled=int(labeled.y_train.size), num_pool=n,
                target_classes=targets.tolist(), overall_before=overall0, overall_after=overall1,
                overall_gain=overall1 - overall0, targeted_before=target0, targeted_after=target1,
                targeted_gain=target1 - target0, per_class_before=per0.tolist(), per_class_after=per1.tolist(),
                selected_target=hit, selected_target_fraction=hit / budget, selection_time_s=t_sel,
                kernel_time_s=float(sub.info.get("kernel_seconds", 0.0)),
                greedy_time_s=float(sub.info.get("select_seconds", 0.0)), train_time_s=after.train_time_s,
                indices=idx, model=after.model)


__all__ = ["tss_round", "select_targeted", "make_targeted_setting", "TargetedSetting", "kmeanspp",
           "uncertainty_scores", "STRATEGIES", "BASELINES"]
