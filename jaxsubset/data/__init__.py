"""Data loaders: offline defaults, standard files, TensorFlow Datasets, and users' arrays."""

from __future__ import annotations

import os
from typing import Callable

from jaxsubset.data import files, locations, offline, remote
from jaxsubset.data.dataset import Dataset, from_arrays, load_npz, save_npz
from jaxsubset.data.remote import DatasetUnavailableError
from jaxsubset.data.targeted import TargetedSetting, make_targeted_setting
from jaxsubset.data.transforms import flip_labels, holdout, make_imbalanced

OFFLINE: dict[str, Callable[[int], Dataset]] = {"digits": offline.digits, "mnist1d": offline.mnist1d}
FILE_BASED = ("mnist", "fashion_mnist", "cifar10", "cifar100")
DATASETS = tuple(OFFLINE) + FILE_BASED

_MNIST_NAMES = {
    "mnist": tuple(str(i) for i in range(10)),
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"),
}


def _unavailable_message(name: str, data_dir: str | None) -> str:
    where = data_dir if data_dir else "(none given)"
    return (f"To use '{name}' offline, {locations.install_hint(name)}, or pass data_dir=DIR (CLI: --data-dir DIR) "
            f"holding the standard files: {', '.join(files.expected_files(name))} (data_dir was {where}). "
            f"Data sets that need no download: {', '.join(OFFLINE)}.")


def load(name: str, *, data_dir: str | None = None, seed: int = 0) -> Dataset:
    """Load a data set by name, or a ``.npz`` file by path.

    - ``digits`` (default, scikit-learn's 8x8 digits) and ``mnist1d`` (generated locally)
      never touch the network.
    - ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100`` are read from the standard
      distribution files in ``data_dir`` (or ``data_dir/<name>``) when present; with no
      ``data_dir``, from a system folder ``/usr/share/datasets/<name>/`` (``_`` written
      ``-``; roots from ``$JAXSUBSET_DATA_PATH``), where Debian's ``dataset-fashion-mnist``
      installs Fashion-MNIST; a system folder missing some files raises naming them.
      Otherwise through TensorFlow Datasets (a prepared data dir, or a download where reachable).
      With neither, :class:`DatasetUnavailableError` is raised within seconds, naming the
      files to put in ``data_dir`` and the offline data sets.

    Args:
      name: a name from :data:`DATASETS` or a path ending in ``.npz``.
      data_dir: folder with the distribution files / a TFDS data dir.
      seed: generation seed for generated data sets (``mnist1d``); the splits of the
        others are fixed.
    """
    if name.endswith(".npz"):
        return load_npz(name)
    if name in OFFLINE:
        return OFFLINE[name](seed)
    if name not in FILE_BASED:
        raise ValueError(f"Unknown data set {name!r}; choose one of {list(DATASETS)} or a path to a .npz file.")
    arrays = None
    system = locations.system_dir(name) if data_dir is None else None
    if system is not None:
        locations.check_complete(system, name)
        data_dir = system
    if data_dir is not None and os.path.isdir(data_dir):
        if name in _MNIST_NAMES:
            arrays = files.read_mnist_family(data_dir, name)
            if arrays is not None:
                arrays["class_names"] = _MNIST_NAMES[name]
        else:
            arrays = files.read_cifar(data_dir, name)
    if arrays is None:
        arrays = remote.load_tfds(name, data_dir, _unavailable_message(name, data_dir))
        if arrays["x_train"].ndim == 3:
            arrays["x_train"] = arrays["x_train"][..., None]
            arrays["x_test"] = arrays["x_test"][..., None]
    names = tuple(arrays.pop("class_names"))
    return Dataset(num_classes=len(names), class_names=names, name=name, **arrays)


__all__ = ["Dataset", "DatasetUnavailableError", "DATASETS", "load", "from_arrays", "load_npz", "save_npz",
           "make_imbalanced", "flip_labels", "holdout", "TargetedSetting", "make_targeted_setting"]
