"""Name -> per-example quantity computed from a model, for methods that declare ``needs``.

Each entry is ``fn(model: PureModel, x (n, ...), y (n,), *, batch_size) -> array (n, ...)``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np

from jaxsubset import grads
from jaxsubset.models.pure import PureModel

Quantity = Callable[..., np.ndarray]

QUANTITIES: dict[str, Quantity] = {
    "loss": lambda m, x, y, *, batch_size=1024: grads.losses(m.apply_fn, m.params, x, y, batch_size=batch_size),
    "el2n": lambda m, x, y, *, batch_size=1024: grads.el2n((m.apply_fn, m.params), x, y, batch_size=batch_size),
}


def register_quantity(name: str, fn: Quantity) -> None:
    """Add a quantity ``fn(model, x, y, *, batch_size) -> (n, ...)`` under ``name``."""
    if name in QUANTITIES:
        raise ValueError(f"A quantity named {name!r} is already registered.")
    QUANTITIES[name] = fn


def compute(names: Iterable[str], model: PureModel, x: Any, y: Any, *, batch_size: int = 1024) -> dict[str, np.ndarray]:
    """Compute the named quantities for every example; unknown names list the valid ones."""
    out = {}
    for name in names:
        if name not in QUANTITIES:
            raise ValueError(f"Unknown quantity {name!r}; choose one of {sorted(QUANTITIES)}.")
        out[name] = np.asarray(QUANTITIES[name](model, x, y, batch_size=batch_size))
    return out
