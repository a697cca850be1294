"""Where file-based data sets are looked for when no ``data_dir`` is given: system data folders.

Debian's ``dataset-fashion-mnist`` package installs the four gzipped IDX files of
Fashion-MNIST in ``/usr/share/datasets/fashion-mnist/``. :func:`system_dir` finds such a
folder for any data set in the standard layout, under the roots listed in the environment
variable ``JAXSUBSET_DATA_PATH`` (``os.pathsep``-separated; default ``/usr/share/datasets``).
"""

from __future__ import annotations

import os

from jaxsubset.data import files
from jaxsubset.data.remote import DatasetUnavailableError

ENV_VAR = "JAXSUBSET_DATA_PATH"
DEFAULT_ROOTS = ("/usr/share/datasets",)
# Debian package per data set, named in the "not found" message.
DEBIAN_PACKAGES = {"fashion_mnist": "dataset-fashion-mnist"}


def roots() -> tuple[str, ...]:
    """The system data roots searched, in order (``$JAXSUBSET_DATA_PATH`` or the default)."""
    env = os.environ.get(ENV_VAR)
    if env is None:
        return DEFAULT_ROOTS
    return tuple(r for r in env.split(os.pathsep) if r)


def folder_names(name: str) -> tuple[str, ...]:
    """Folder names a data set may have under a root: ``fashion_mnist`` -> ``fashion-mnist``, ``fashion_mnist``."""
    return tuple(dict.fromkeys((name.replace("_", "-"), name)))


def system_dir(name: str) -> str | None:
    """The first existing ``<root>/<folder name>`` for ``name``, or ``None``.

    Only the folder named after the data set is returned, never a sibling (``mnist`` does
    not find ``fashion-mnist``), so a data set never silently stands in for another.
    """
    for root in roots():
        for folder in folder_names(name):
            path = os.path.join(root, folder)
            if os.path.isdir(path):
                return path
    return None


def install_hint(name: str) -> str:
    """How to get ``name`` onto this machine (the Debian package where one exists)."""
    pkg = DEBIAN_PACKAGES.get(name)
    where = " or ".join(os.path.join(r, folder_names(name)[0]) for r in roots()) or f"${ENV_VAR}"
    if pkg:
        return f"install it with `sudo apt-get install {pkg}` (files land in {where})"
    return f"put the files in {where}"


def missing_files(folder: str, name: str) -> list[str]:
    """The standard files of ``name`` that ``folder`` lacks (empty when all are there)."""
    if name in ("mnist", "fashion_mnist"):
        return [f + ".gz" for f in files.MNIST_FILES.values() if files.find_file(folder, f, name) is None]
    sub, train_names, test_name, meta_name = files.CIFAR_FILES[name]
    if os.path.isfile(os.path.join(folder, files.CIFAR_ARCHIVES[name])):
        return []
    wanted = [f"{sub}/{f}" for f in train_names + [test_name, meta_name]]
    return [w for w in wanted if not os.path.isfile(os.path.join(folder, w))]


def check_complete(folder: str, name: str) -> None:
    """Raise when a system folder for ``name`` exists but lacks some of its files.

    Raises:
      DatasetUnavailableError: naming the folder, the missing files and how to repair them.
    """
    missing = missing_files(folder, name)
    if missing:
        raise DatasetUnavailableError(
            f"{folder} is there but lacks {', '.join(missing)} of '{name}' (partial install): "
            f"{install_hint(name).replace('install it', 'reinstall it')}, or pass data_dir=DIR holding all the files.")
