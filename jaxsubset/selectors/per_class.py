"""Apply any selector class by class so that the subset keeps class proportions."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

import numpy as np

from jaxsubset.subset import Subset, per_class_budget


def accepts_keyword(fn: Callable[..., Any], name: str) -> bool:
    """True if ``fn`` names a ``name`` parameter (a ``**kwargs`` catch-all does not count)."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False



def per_class(selector: Callable[..., Subset], labels: Any, budget: int, *,
              arrays: Mapping[str, Any] | None = None, num_classes: int | None = None,
              seed: int = 0, **kwargs: Any) -> Subset:
    """Run ``selector`` inside every class and merge the per-class subsets.

    The budget is split with :func:`jaxsubset.per_class_budget` (proportional,
    largest remainder). For class ``c`` the selector is called as
    ``selector(*[a[rows_c] for a in arrays.values()], budget_c, **kwargs)`` where
    the positional arrays are the ``arrays`` mapping's values restricted to the
    class rows (e.g. ``{"scores": s}`` for score selectors, ``{"features": g}`` for
    CRAIG); with no ``arrays`` the selector is called as ``selector(n_c, budget_c,
    **kwargs)`` (e.g. ``random``). If the selector takes a ``seed`` keyword, class
    ``c`` receives ``seed + c`` so that classes draw independently yet deterministically.

    A selector with a ``rows`` parameter (CRAIG, GRAD-MATCH and their last-layer forms)
    is instead called as ``selector(*arrays.values(), budget_c, rows=rows_c, **kwargs)``:
    it reads the class's rows from the whole arrays itself, so no class copy is made
    (for last-layer factors of ResNet-18 size, a 1 000-example class copy is 2 MiB).

    Args:
      selector: a function returning a :class:`Subset` over its own (class-local) rows.
      labels: int array ``(n,)``.
      budget: total number of examples to keep.
      arrays: per-example arrays (leading axis ``n``) passed positionally.
      num_classes: number of classes (defaults to ``max(labels) + 1``).
      seed: base seed, forwarded as ``seed + c`` when the selector accepts ``seed``.

    Returns:
      A :class:`Subset` over the global rows, indices sorted; weights are the
      selectors' own; ``info["per_class"]`` holds each class's ``info``.
    """
    y = np.asarray(labels)
    arrays = dict(arrays or {})
    for k, a in arrays.items():
        if np.shape(a)[0] != y.shape[0]:
            raise ValueError(f"arrays[{k!r}] has {np.shape(a)[0]} rows but labels has {y.shape[0]}.")
    budgets = per_class_budget(y, budget, num_classes)
    takes_seed = accepts_keyword(selector, "seed")
    takes_rows = bool(arrays) and accepts_keyword(selector, "rows")
    idx_parts, w_parts, infos = [], [], {}
    for c, b in enumerate(budgets):
        rows = np.flatnonzero(y == c)
        if b == 0:
            continue
        kw = dict(kwargs)
        if takes_seed:
            kw["seed"] = seed + c
        if takes_rows:
            sub = selector(*arrays.values(), int(b), rows=rows, **kw)
        elif arrays:
            sub = selector(*[np.asarray(a)[rows] for a in arrays.values()], int(b), **kw)
        else:
            sub = selector(rows.size, int(b), **kw)
        sub.check_pool(rows.size)
        idx_parts.append(rows[sub.indices])
        w_parts.append(sub.weights)
        infos[c] = dict(sub.info)
    if not idx_parts:
        return Subset(np.zeros(0, np.int64), np.zeros(0, np.float32), {"per_class": infos})
    idx = np.concatenate(idx_parts)
    w = np.concatenate(w_parts)
    order = np.argsort(idx, kind="stable")
    return Subset(idx[order], w[order], {"per_class": infos})
