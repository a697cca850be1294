"""Name -> selection method, so the CLI and experiments pick up new selectors without edits.

A method declares which per-example quantities it consumes (``needs``, names from
:data:`jaxsubset.workflows.quantities.QUANTITIES`, e.g. ``"loss"``, ``"grad_norm"``) and a
class-local selector ``fn``:

- with ``needs=()`` it is called as ``fn(n, budget, seed=...)``;
- otherwise as ``fn(*quantities_in_needs_order, budget, seed=...)`` where each
  quantity has leading axis ``n`` (restricted to one class when run per class).

Methods are run per class by :func:`select` (keeping class proportions) unless
registered with ``per_class=False``. A method registered with ``validation=True``
(GLISTER) also scores against a validation set: :func:`select` forwards
``val_logits (m, C)``, ``val_h (m, d)`` and ``val_labels (m,)`` to it as keywords.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import numpy as np

from jaxsubset.selectors._checks import accepts_keyword, accepts_seed, check_quantity
from jaxsubset.subset import Subset


@dataclasses.dataclass(frozen=True)
class Method:
    """A registered selection method (see the module docstring for the calling convention)."""

    name: str
    fn: Callable[..., Subset]
    needs: tuple[str, ...] = ()
    description: str = ""
    per_class: bool = True
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    validation: bool = False

    def __call__(self, *arrays: Any, budget: int, seed: int = 0, rows: Any = None,
                 options: Mapping[str, Any] | None = None) -> Subset:
        """Run on ``arrays`` (or, with ``rows``, on their sub-pool ``rows``; indices are positions in it);
        ``options`` are extra keywords for the method (e.g. the validation set)."""
        kw = {**self.kwargs, **(options or {})}
        if accepts_seed(self.fn):
            kw["seed"] = seed
        if self.needs:
            if rows is not None:
                if accepts_keyword(self.fn, "rows"):
                    kw["rows"] = rows
                else:
                    arrays = tuple(np.asarray(a)[rows] for a in arrays)
            return self.fn(*arrays, budget, **kw)
        return self.fn(arrays[0] if arrays else 0, budget, **kw)


METHODS: dict[str, Method] = {}
# Training-dynamics quantities: recorded during the surrogate's training, not computed from a final model.
DYNAMICS = frozenset({"forgetting", "aum", "loss_mean", "loss_var", "el2n_mean", "el2n_var"})


def register(name: str, fn: Callable[..., Subset], *, needs: tuple[str, ...] = (), description: str = "",
             per_class: bool = True, validation: bool = False, **kwargs: Any) -> Method:
    """Register ``fn`` under ``name`` (fixed keyword arguments in ``kwargs``) and return the Method."""
    if name in METHODS:
        raise ValueError(f"A method named {name!r} is already registered.")
    m = Method(name, fn, tuple(needs), description, per_class, dict(kwargs), bool(validation))
    METHODS[name] = m
    return m


def get(name: str) -> Method:
    """The method registered as ``name``; unknown names raise with the list of valid ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"Unknown selection method {name!r}; choose one of {sorted(METHODS)}.") from None


def select(name: str, labels: Any, budget: int, quantities: Mapping[str, Any] | None = None, *,
           seed: int = 0, num_classes: int | None = None,
           validation: Mapping[str, Any] | None = None) -> Subset:
    """Run method ``name`` on the pool described by ``labels`` ``(n,)`` and ``quantities``.

    Args:
      name: registered method name.
      labels: int array ``(n,)`` (used to keep class proportions).
      budget: number of examples to keep.
      quantities: mapping quantity name -> array with leading axis ``n``; must hold
        every name in the method's ``needs``.
      seed: seed for randomized methods.
      validation: for methods registered with ``validation=True``: ``{"val_logits": (m, C),
        "val_h": (m, d), "val_labels": (m,)}`` of a held-out set at the current parameters
        (see :func:`jaxsubset.data.holdout`).
    """
    from jaxsubset.selectors.per_class import per_class

    method = get(name)
    quantities = dict(quantities or {})
    missing = [q for q in method.needs if q not in quantities]
    if missing:
        dyn = [q for q in missing if q in DYNAMICS]
        how = ("record them while training the surrogate: train.fit(..., record_dynamics=True) and pass its "
               "quantities" if dyn else "compute them with jaxsubset.workflows.quantities.compute(...) first")
        raise ValueError(f"Method {name!r} needs quantities {missing}; {how}.")
    options = None
    if method.validation:
        want = ("val_logits", "val_h", "val_labels")
        if validation is None or any(k not in validation for k in want):
            raise ValueError(f"Method {name!r} scores against a validation set: pass validation={{'val_logits': "
                             "(m, C), 'val_h': (m, d), 'val_labels': (m,)} computed on held-out rows "
                             "(jaxsubset.data.holdout splits them off; fit(..., validation=(x_val, y_val)) "
                             "does this for adaptive training).")
        options = {k: validation[k] for k in want}
    y = np.asarray(labels)
    arrays = {q: quantities[q] for q in method.needs}
    for q, a in arrays.items():  # up front, so a NaN is refused even in a class that gets no budget
        check_quantity(a, q, y.shape[0] if y.ndim == 1 else None)

    def local(*args: Any, seed: int = 0, rows: Any = None) -> Subset:
        *arrs, b = args
        return method(*arrs, budget=b, seed=seed, rows=rows, options=options)

    if method.per_class:
        sub = per_class(local, y, budget, arrays=arrays if arrays else None, num_classes=num_classes, seed=seed)
    else:
        sub = local(*(arrays.values() if arrays else [y.size]), budget, seed=seed)
    return Subset(sub.indices, sub.weights, {**sub.info, "method": name})
