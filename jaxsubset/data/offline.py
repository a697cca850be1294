"""Data sets available with no download: scikit-learn's digits and a locally generated MNIST-1D."""

from __future__ import annotations

import numpy as np

from jaxsubset.data.dataset import Dataset


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)`` with ``round(test_fraction * n_c)`` test rows from each class."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        k = int(round(test_fraction * rows.size))
        test.append(rows[:k])
        train.append(rows[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def digits(seed: int = 0) -> Dataset:
    """The 1 797 8x8 handwritten digits shipped with scikit-learn, as ``(n, 8, 8, 1)`` in ``[0, 1]``.

    The train/test split is fixed (stratified, 20 % test: 1 438 / 359 examples) and does
    not depend on ``seed``, so results are comparable across runs.
    """
    del seed
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[..., None]
    y = bunch.target.astype(np.int32)
    tr, te = stratified_split(y, 0.2, seed=0)
    return Dataset(x[tr], y[tr], x[te], y[te], 10, tuple(str(i) for i in range(10)), "digits")


def mnist1d(seed: int = 0, num_samples: int = 5000) -> Dataset:
    """MNIST-1D (Greydanus 2020) generated locally from the ``mnist1d`` package's templates.

    Signals of length 40, returned as ``(n, 40, 1)`` (standardized by the generator, so
    not in ``[0, 1]``). ``seed=0`` reproduces the package's canonical data set
    (generator seed 42); other seeds give other draws. 80 % train / 20 % test. The
    package's download path is never used, and NumPy's global random state is
    restored afterwards (the generator reseeds it).
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = 42 + int(seed)
    args.num_samples = int(num_samples)
    state = np.random.get_state()
    import random as _random
    py_state = _random.getstate()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(state)
        _random.setstate(py_state)
    x_tr = np.asarray(d["x"], np.float32)[..., None]
    x_te = np.asarray(d["x_test"], np.float32)[..., None]
    return Dataset(x_tr, np.asarray(d["y"]), x_te, np.asarray(d["y_test"]), 10,
                   tuple(str(i) for i in range(10)), "mnist1d")
