"""The `Dataset` container and its validation."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import numpy as np

from jaxsubset.subset import check_num_classes, infer_num_classes


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A classification data set held as numpy arrays.

    The inputs are held as read-only float32 copies (an array that is already read-only
    float32, such as another data set's, is shared rather than copied), so editing the
    arrays a data set was built from never changes it.

    Attributes:
      x_train: float32 ``(n, ...)``; images are NHWC in ``[0, 1]``, signals ``(n, L, C)``.
      y_train: int32 ``(n,)`` labels in ``[0, num_classes)``.
      x_test: float32 ``(m, ...)`` with the same per-example shape as ``x_train``.
      y_test: int32 ``(m,)``.
      num_classes: number of classes ``C``.
      class_names: ``C`` human-readable names.
      name: the data set's name.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]
    name: str

    def __post_init__(self) -> None:
        if isinstance(self.num_classes, (bool, np.bool_)) or not isinstance(self.num_classes, (int, np.integer)):
            raise TypeError(f"num_classes must be an integer, got {self.num_classes!r}.")
        if int(self.num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}.")
        for split in ("train", "test"):
            x = np.asarray(getattr(self, f"x_{split}"))
            y = np.asarray(getattr(self, f"y_{split}"))
            if y.ndim != 1:
                raise ValueError(f"y_{split} must be 1-D (n,), got shape {y.shape}.")
            if x.ndim < 2:
                raise ValueError(f"x_{split} must have shape (n, features...), got {x.shape}.")
            if x.shape[0] != y.shape[0]:
                raise ValueError(f"x_{split} has {x.shape[0]} rows but y_{split} has {y.shape[0]}; "
                                 "they must have the same length.")
            if x.shape[0] == 0:
                raise ValueError(f"x_{split} has no rows; a data set needs at least one {split} example.")
            if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.number):
                raise TypeError(f"y_{split} must hold integer class ids, got dtype {y.dtype}.")
            if not np.issubdtype(y.dtype, np.integer):
                if not np.all(np.isfinite(y)) or not np.all(np.mod(y, 1) == 0):
                    raise ValueError(f"y_{split} must hold integer class ids.")
            # range check before the int32 cast, which would wrap 2**32 + 1 to 1
            if y.min() < 0 or y.max() >= self.num_classes:
                raise ValueError(f"y_{split} must lie in [0, {self.num_classes}); found "
                                 f"[{y.min():.0f}, {y.max():.0f}]. Fix the labels or num_classes.")
            # a read-only copy: the data set must not change when the caller edits its arrays afterwards;
            # an array that is already read-only float32 (e.g. from another Dataset, via replace) is kept
            if x.dtype != np.float32 or x.flags.writeable:
                x = np.array(x, dtype=np.float32, copy=True)
                x.flags.writeable = False
            bad = np.flatnonzero(~np.all(np.isfinite(x.reshape(x.shape[0], -1)), axis=1))
            if bad.size:
                raise ValueError(f"x_{split} contains NaN or inf in rows {bad[:10].tolist()}; "
                                 "clean or drop those rows before building the data set.")
            y = y.astype(np.int32)
            object.__setattr__(self, f"x_{split}", x)
            object.__setattr__(self, f"y_{split}", y)
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"train and test examples differ in shape: {self.x_train.shape[1:]} vs "
                             f"{self.x_test.shape[1:]}.")
        names = tuple(str(c) for c in self.class_names)
        if len(names) != self.num_classes:
            raise ValueError(f"class_names has {len(names)} entries but num_classes is {self.num_classes}.")
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "num_classes", int(self.num_classes))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-example shape of the inputs."""
        return tuple(self.x_train.shape[1:])

    def replace(self, **changes: Any) -> "Dataset":
        """A copy with some fields replaced (validated again)."""
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={self.x_train.shape}, test={self.x_test.shape}, "
                f"num_classes={self.num_classes})")


def from_arrays(x_train: Any, y_train: Any, x_test: Any, y_test: Any, *, num_classes: int | None = None,
                class_names: Sequence[str] | None = None, name: str = "arrays") -> Dataset:
    """Wrap user arrays as a validated :class:`Dataset`.

    ``num_classes`` defaults to ``max(label) + 1`` over both splits; ``class_names``
    to ``"0", "1", ...``. Inputs are cast to float32 and labels to int32; nothing is
    rescaled or clipped.
    """
    y_train = np.asarray(y_train)
    y_test = np.asarray(y_test)
    if num_classes is None:
        both = np.concatenate([y_train.reshape(-1), y_test.reshape(-1)])
        if both.size == 0:
            raise ValueError("Cannot infer num_classes from empty label arrays; pass num_classes.")
        num_classes = infer_num_classes(both, what="the labels")
    check_num_classes(num_classes)
    if class_names is None:
        class_names = [str(i) for i in range(num_classes)]
    return Dataset(np.asarray(x_train), y_train, np.asarray(x_test), y_test, int(num_classes),
                   tuple(class_names), name)


def load_npz(path: str) -> Dataset:
    """Load a data set saved with keys ``x_train, y_train, x_test, y_test`` (optional
    ``class_names``, ``num_classes``) by ``numpy.savez``."""
    import zipfile

    if not os.path.isfile(path):
        raise FileNotFoundError(f"No .npz data set at {path}; check the path (a file saved with x_train, "
                                "y_train, x_test, y_test).")
    try:
        f = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a readable .npz file ({type(err).__name__}: {err}); save it with "
                         "numpy.savez (or jaxsubset.data.save_npz).") from err
    if not hasattr(f, "files"):  # np.load gave a plain array (.npy content)
        raise ValueError(f"{path} holds a single array, not an .npz archive with x_train, y_train, x_test, y_test.")
    with f:
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in f.files]
        if missing:
            raise ValueError(f"{path} lacks arrays {missing}; save x_train, y_train, x_test, y_test.")
        names = [str(s) for s in f["class_names"]] if "class_names" in f.files else None
        nc = int(f["num_classes"]) if "num_classes" in f.files else (len(names) if names else None)
        return from_arrays(f["x_train"], f["y_train"], f["x_test"], f["y_test"], num_classes=nc,
                           class_names=names, name=os.path.splitext(os.path.basename(path))[0])


def save_npz(ds: Dataset, path: str) -> None:
    """Save a :class:`Dataset` in the format :func:`load_npz` reads."""
    np.savez_compressed(path, x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test,
                        num_classes=ds.num_classes, class_names=np.array(ds.class_names))
