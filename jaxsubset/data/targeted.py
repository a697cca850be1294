"""The imbalanced setting of targeted selection (``E``, ``U``, ``T``) that ``workflows.tss.tss_round`` runs on."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from jaxsubset.data.dataset import Dataset
from jaxsubset.data.transforms import make_imbalanced


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


__all__ = ["TargetedSetting", "make_targeted_setting"]
