"""Readers for the standard distribution files: gzipped IDX (MNIST family) and CIFAR pickles."""

from __future__ import annotations

import gzip
import os
import pickle
import tarfile
import zlib
from typing import Any

import numpy as np

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta"),
    "cifar100": ("cifar-100-python", ["train"], "test", "meta"),
}
CIFAR_ARCHIVES = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str) -> np.ndarray:
    """Parse an IDX file (optionally gzipped): magic ``0 0 dtype ndim``, big-endian dims, data."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (EOFError, OSError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path} is truncated or corrupt ({type(err).__name__}: {err}); delete it and "
                         "download it again.") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number).")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX data type 0x{code:02x}.")
    dims = np.frombuffer(raw, ">u4", count=ndim, offset=4).astype(np.int64)
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(dims)) * dtype.itemsize
    body = raw[4 + 4 * ndim:]
    if len(body) != expected:
        raise ValueError(f"{path}: header says {expected} bytes of data, file has {len(body)} "
                         "(truncated or corrupt download).")
    return np.frombuffer(body, dtype).reshape(tuple(dims)).astype(dtype.newbyteorder("="))


MNIST_SUBFOLDERS = {
    "mnist": ("mnist", "MNIST"),
    "fashion_mnist": ("fashion-mnist", "fashion_mnist", "FashionMNIST", "Fashion-MNIST"),
}
"""Subfolders of ``data_dir`` searched for each member of the MNIST family (they share file names)."""


def _is_fashion_folder(path: str) -> bool:
    base = os.path.basename(os.path.normpath(path)).lower().replace("-", "").replace("_", "")
    return base.startswith("fashion")


def find_file(data_dir: str, name: str, subdir: str | tuple[str, ...]) -> str | None:
    """Look for ``name`` or ``name.gz`` in ``data_dir`` and ``data_dir/subdir`` (one or several)."""
    subdirs = (subdir,) if isinstance(subdir, str) else tuple(subdir)
    for d in (data_dir, *(os.path.join(data_dir, s) for s in subdirs)):
        for cand in (name, name + ".gz"):
            p = os.path.join(d, cand)
            if os.path.isfile(p):
                return p
    return None


def mnist_family_dirs(data_dir: str, name: str) -> list[str]:
    """Folders that may hold ``name``'s IDX files, in search order.

    MNIST and Fashion-MNIST use the same four file names, so a folder's top level is
    only trusted for Fashion-MNIST when the folder is named like it (``fashion-mnist``,
    ``fashion_mnist``, ...), and only for MNIST when it is not; otherwise the data set's
    own subfolder (:data:`MNIST_SUBFOLDERS`) is searched.
    """
    top_ok = _is_fashion_folder(data_dir) == (name == "fashion_mnist")
    subs = [os.path.join(data_dir, s) for s in MNIST_SUBFOLDERS[name]]
    return ([data_dir] if top_ok else []) + subs


def _complete(folder: str) -> dict[str, str] | None:
    paths = {k: find_file(folder, f, ()) for k, f in MNIST_FILES.items()}
    return None if any(p is None for p in paths.values()) else paths


def read_mnist_family(data_dir: str, name: str) -> dict[str, np.ndarray] | None:
    """Read the four IDX files of MNIST / Fashion-MNIST, or ``None`` if any is missing.

    Raises ``ValueError`` when the files found belong to the other data set by their
    location (see :func:`mnist_family_dirs`): never returns MNIST for Fashion-MNIST.
    """
    paths = None
    for folder in mnist_family_dirs(data_dir, name):
        paths = _complete(folder)
        if paths is not None:
            break
    if paths is None:
        if _complete(data_dir) is not None:
            other = "MNIST" if name == "fashion_mnist" else "Fashion-MNIST"
            want = "fashion-mnist" if name == "fashion_mnist" else "mnist"
            raise ValueError(
                f"{data_dir} holds MNIST-family files at its top level, but by its name it is {other}'s "
                f"folder, and MNIST and Fashion-MNIST share file names. Put {name}'s four files in "
                f"{os.path.join(data_dir, want)}/ (or pass a data_dir named {want!r}).")
        return None
    arrays = {k: read_idx(p) for k, p in paths.items()}
    for split in ("train", "test"):
        if arrays[f"{split}_images"].shape[0] != arrays[f"{split}_labels"].shape[0]:
            raise ValueError(f"{name}: {split} images and labels differ in count.")
    return {
        "x_train": (arrays["train_images"].astype(np.float32) / 255.0)[..., None],
        "y_train": arrays["train_labels"].astype(np.int32),
        "x_test": (arrays["test_images"].astype(np.float32) / 255.0)[..., None],
        "y_test": arrays["test_labels"].astype(np.int32),
    }


def _unpickle(blob: bytes) -> dict[str, Any]:
    d = pickle.loads(blob, encoding="bytes")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def _cifar_arrays(batches: list[dict[str, Any]], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([np.asarray(b["data"], np.uint8).reshape(-1, 3, 32, 32) for b in batches])
    y = np.concatenate([np.asarray(b[label_key], np.int64) for b in batches])
    return x.transpose(0, 2, 3, 1).astype(np.float32) / 255.0, y.astype(np.int32)


def read_cifar(data_dir: str, name: str) -> dict[str, Any] | None:
    """Read the CIFAR python pickle batches (an extracted folder or the ``.tar.gz``), or ``None``."""
    folder, train_names, test_name, meta_name = CIFAR_FILES[name]
    label_key = "labels" if name == "cifar10" else "fine_labels"
    names_key = "label_names" if name == "cifar10" else "fine_label_names"
    blobs: dict[str, bytes] = {}
    base = os.path.join(data_dir, folder)
    wanted = train_names + [test_name, meta_name]
    origin: dict[str, str] = {}
    if all(os.path.isfile(os.path.join(base, f)) for f in wanted):
        for f in wanted:
            with open(os.path.join(base, f), "rb") as fh:
                blobs[f] = fh.read()
            origin[f] = os.path.join(base, f)
    else:
        archive = os.path.join(data_dir, CIFAR_ARCHIVES[name])
        if not os.path.isfile(archive):
            return None
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for f in wanted:
                    try:
                        member = tar.extractfile(f"{folder}/{f}")
                    except KeyError:
                        member = None
                    if member is None:
                        raise ValueError(f"{archive} lacks {folder}/{f}; delete it and download it again.")
                    blobs[f] = member.read()
                    origin[f] = f"{archive} ({folder}/{f})"
        except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
            raise ValueError(f"{archive} is truncated or corrupt ({type(err).__name__}: {err}); delete it and "
                             "download it again.") from err

    def load(f: str) -> dict[str, Any]:
        try:
            d = _unpickle(blobs[f])
            if not isinstance(d, dict):
                raise TypeError(f"a {type(d).__name__}, not a dict")
            return d
        except Exception as err:  # any unpickling failure means a damaged file
            raise ValueError(f"{origin[f]} is not a readable CIFAR batch ({type(err).__name__}: {err}); "
                             "delete it and download the data set again.") from err

    try:
        x_tr, y_tr = _cifar_arrays([load(f) for f in train_names], label_key)
        x_te, y_te = _cifar_arrays([load(test_name)], label_key)
        meta = load(meta_name)
        class_names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta[names_key])
    except (KeyError, ValueError) as err:
        if isinstance(err, ValueError) and "CIFAR batch" in str(err):
            raise
        raise ValueError(f"The CIFAR files under {data_dir} do not have the expected contents ({err}); "
                         "delete them and download the data set again.") from err
    return {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te, "class_names": class_names}


def expected_files(name: str) -> list[str]:
    """Human-readable list of the files ``load(name, data_dir=...)`` looks for."""
    if name == "fashion_mnist":
        return [f + ".gz" for f in MNIST_FILES.values()] + [
            "(in a data_dir named fashion-mnist, or in its fashion-mnist/ subfolder: MNIST uses the same names)"]
    if name == "mnist":
        return [f + ".gz" for f in MNIST_FILES.values()] + ["(in data_dir or its mnist/ subfolder)"]
    folder, train_names, test_name, meta_name = CIFAR_FILES[name]
    return [f"{folder}/{f}" for f in train_names + [test_name, meta_name]] + [f"(or {CIFAR_ARCHIVES[name]})"]
