"""TensorFlow Datasets access that fails fast when the network is unreachable."""

from __future__ import annotations

import concurrent.futures
import os
import socket
from typing import Any

import numpy as np

# The host TFDS downloads prepared data and sources from; only probed, never hard-failed on.
_PROBE = ("storage.googleapis.com", 443)


class DatasetUnavailableError(RuntimeError):
    """A data set is neither on disk nor reachable; the message says how to get it."""


def network_reachable(host: str = _PROBE[0], port: int = _PROBE[1], timeout_s: float = 3.0) -> bool:
    """True if a TCP connection to ``host:port`` opens within ``timeout_s`` (DNS included)."""
    def probe() -> bool:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                return True
        except OSError:
            return False

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(probe).result(timeout=timeout_s + 0.5)
    except concurrent.futures.TimeoutError:
        return False  # e.g. a resolver stuck retrying; the worker thread is abandoned
    finally:
        pool.shutdown(wait=False)


def _prepared_dir(name: str, data_dir: str | None) -> bool:
    root = data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")
    return os.path.isdir(os.path.join(root, name))


def _to_numpy(source: Any) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for i in range(len(source)):
        ex = source[i]
        xs.append(np.asarray(ex["image"]))
        ys.append(int(ex["label"]))
    return np.stack(xs), np.asarray(ys, np.int32)


def load_tfds(name: str, data_dir: str | None, message: str) -> dict[str, Any]:
    """Read ``name`` through TFDS: a prepared data dir first, else download where reachable.

    Raises:
      DatasetUnavailableError: with ``message`` appended, within seconds, when the data set
        is not prepared locally and the network (or TensorFlow, needed to prepare) is missing.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:  # pragma: no cover - tfds is a dependency
        raise DatasetUnavailableError(f"tensorflow-datasets is not importable ({err}). {message}") from err
    if not _prepared_dir(name, data_dir):
        if not network_reachable():
            raise DatasetUnavailableError(f"'{name}' is not on disk and the network is unreachable. {message}")
        try:
            import tensorflow  # noqa: F401  (TFDS needs TensorFlow to prepare a data set)
        except ImportError:
            raise DatasetUnavailableError(
                f"'{name}' is not prepared and preparing it needs TensorFlow: "
                f"pip install 'jaxsubset[tfds]'. {message}") from None
    try:
        sources = tfds.data_source(name, data_dir=data_dir, split=["train", "test"],
                                   download=not _prepared_dir(name, data_dir))
        (x_tr, y_tr), (x_te, y_te) = (_to_numpy(s) for s in sources)
        info = tfds.builder(name, data_dir=data_dir).info
        class_names = tuple(info.features["label"].names)
    except DatasetUnavailableError:
        raise
    except Exception as err:
        raise DatasetUnavailableError(f"TFDS could not provide '{name}': {err}. {message}") from err
    return {"x_train": x_tr.astype(np.float32) / 255.0, "y_train": y_tr,
            "x_test": x_te.astype(np.float32) / 255.0, "y_test": y_te, "class_names": class_names}
