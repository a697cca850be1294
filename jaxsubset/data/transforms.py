"""Data-set transforms used by the targeted-selection and mislabel experiments."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxsubset.data.dataset import Dataset
from jaxsubset.data.offline import stratified_split


def make_imbalanced(ds: Dataset, classes: Sequence[int], keep_fraction: float, seed: int = 0) -> Dataset:
    """Keep only ``keep_fraction`` of the *training* examples of ``classes`` (others untouched).

    Each listed class keeps ``max(1, round(keep_fraction * n_c))`` examples drawn
    without replacement; the test split is unchanged. Row order is preserved.
    """
    f = float(keep_fraction)
    if not 0.0 < f <= 1.0:  # also refuses NaN
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}.")
    ids = np.asarray(classes).reshape(-1)
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"classes must be integer class ids, got {list(classes)!r}.")
    classes = [int(c) for c in ids]
    bad = [c for c in classes if not 0 <= c < ds.num_classes]
    if bad:
        raise ValueError(f"classes {bad} are outside [0, {ds.num_classes}).")
    rng = np.random.default_rng(seed)
    keep = np.ones(ds.y_train.size, bool)
    for c in sorted(set(classes)):
        rows = np.flatnonzero(ds.y_train == c)
        if rows.size == 0:
            raise ValueError(f"class {c} has no training examples to subsample.")
        k = max(1, int(round(f * rows.size)))
        drop = rng.permutation(rows)[k:]
        keep[drop] = False
    return ds.replace(x_train=ds.x_train[keep], y_train=ds.y_train[keep])


def flip_labels(ds: Dataset, fraction: float, seed: int = 0) -> tuple[Dataset, np.ndarray]:
    """Replace the labels of ``round(fraction * n)`` training examples by a different class.

    Each chosen example gets a label drawn uniformly from the *other* ``C - 1`` classes.

    Returns:
      ``(new_dataset, flipped)`` with ``flipped`` the sorted int64 indices whose label changed.
    """
    f = float(fraction)
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}.")
    if ds.num_classes < 2:
        raise ValueError("flip_labels needs at least two classes.")
    rng = np.random.default_rng(seed)
    n = ds.y_train.size
    flipped = np.sort(rng.choice(n, size=int(round(f * n)), replace=False)).astype(np.int64)
    y = ds.y_train.copy()
    shift = rng.integers(1, ds.num_classes, size=flipped.size)
    y[flipped] = (y[flipped] + shift) % ds.num_classes
    return ds.replace(y_train=y), flipped


def holdout(ds: Dataset, fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split the training rows into a pool and a stratified validation part.

    ``round(fraction * n_c)`` rows of every class go to validation (at least one row in
    total). For selectors that score against a validation set (GLISTER): select from
    ``pool`` and pass ``(x_train[val], y_train[val])`` as the validation set.

    Returns:
      ``(pool, val)``: sorted int64 training-row indices, disjoint, together all rows.
    """
    f = float(fraction)
    if not 0.0 < f < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}.")
    pool, val = stratified_split(np.asarray(ds.y_train), f, seed)
    if val.size == 0 or pool.size == 0:
        raise ValueError(f"fraction={fraction} leaves an empty {'validation set' if val.size == 0 else 'pool'} "
                         f"for {ds.y_train.size} training rows; choose a fraction between them.")
    return pool.astype(np.int64), val.astype(np.int64)
