"""Name -> selection method, so the CLI and experiments pick up new selectors without edits.

The mechanics (:class:`Method`, :func:`register`, :func:`get`, :func:`select`) come first, then the
table of registered methods (one ``register(...)`` call each).

A method declares which per-example quantities it consumes (``needs``, names from
:data:`jaxsubset.workflows.quantities.QUANTITIES`, e.g. ``"loss"``, ``"grad_norm"``) and a
class-local selector ``fn``:

- with ``needs=()`` it is called as ``fn(n, budget, seed=...)``;
- otherwise as ``fn(*quantities_in_needs_order, budget, seed=...)`` where each
  quantity has leading axis ``n`` (restricted to one class when run per class);
  with ``pack=True`` the quantities come as one tuple, ``fn((q1, q2), budget, ...)``: e.g.
  ``("last_layer_e", "last_layer_h")`` as one :data:`~jaxsubset.kernels.features.Features` pair.

Methods are run per class by :func:`select` (keeping class proportions) unless
registered with ``per_class=False``. A method registered with ``validation=True``
(GLISTER) also scores against a validation set: :func:`select` forwards
``val_logits (m, C)``, ``val_h (m, d)`` and ``val_labels (m,)`` to it as keywords.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import numpy as np

from jaxsubset.checks import check_quantity
from jaxsubset.selectors.basic import random, top_k
from jaxsubset.selectors.ccs import ccs
from jaxsubset.selectors.coverage import herding, kcenter_greedy
from jaxsubset.selectors.craig import craig
from jaxsubset.selectors.d2 import d2
from jaxsubset.selectors.geda import geda, online_geda
from jaxsubset.selectors.glister import glister
from jaxsubset.selectors.gradmatch import gradmatch, gradmatch_batches
from jaxsubset.selectors.moderate import moderate
from jaxsubset.selectors.noise_filter import filter_random
from jaxsubset.selectors.per_class import accepts_keyword, per_class
from jaxsubset.selectors.ranking import evenly_spaced, quantile_random
from jaxsubset.selectors.uncertainty import uncertainty
from jaxsubset.subset import Subset
from jaxsubset.types import DYNAMICS


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
    pack: bool = False

    def __call__(self, *arrays: Any, budget: int, seed: int = 0, rows: Any = None,
                 options: Mapping[str, Any] | None = None) -> Subset:
        """Run on ``arrays`` (or, with ``rows``, on their sub-pool ``rows``; indices are positions in it);
        ``options`` are extra keywords for the method (e.g. the validation set)."""
        kw = {**self.kwargs, **(options or {})}
        if accepts_keyword(self.fn, "seed"):
            kw["seed"] = seed
        if self.needs:
            if rows is not None:
                if accepts_keyword(self.fn, "rows"):
                    kw["rows"] = rows
                else:
                    arrays = tuple(np.asarray(a)[rows] for a in arrays)
            return self.fn(*((tuple(arrays),) if self.pack else arrays), budget, **kw)
        return self.fn(arrays[0] if arrays else 0, budget, **kw)


METHODS: dict[str, Method] = {}


def register(name: str, fn: Callable[..., Subset], *, needs: tuple[str, ...] = (), description: str = "",
             per_class: bool = True, validation: bool = False, pack: bool = False, **kwargs: Any) -> Method:
    """Register ``fn`` under ``name`` (fixed keyword arguments in ``kwargs``) and return the Method."""
    if name in METHODS:
        raise ValueError(f"A method named {name!r} is already registered.")
    m = Method(name, fn, tuple(needs), description, per_class, dict(kwargs), bool(validation), bool(pack))
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


# ----------------------------------------------------------------------------- the registered methods

register("random", random, description="uniform random (per class)")
register("loss_hard", top_k, needs=("loss",), description="highest loss of a surrogate model", largest=True)
register("loss_easy", top_k, needs=("loss",), description="lowest loss of a surrogate model", largest=False)
register("el2n_hard", top_k, needs=("el2n",), description="highest EL2N score (Paul et al. 2021)", largest=True)
register("el2n_easy", top_k, needs=("el2n",), description="lowest EL2N score", largest=False)
register("grand_hard", top_k, needs=("grad_norm",), description="largest gradient norm (GraNd)", largest=True)
register("grand_easy", top_k, needs=("grad_norm",), description="smallest gradient norm", largest=False)
register("input_grad_hard", top_k, needs=("input_grad_norm",), description="largest input-gradient norm",
         largest=True)
register("input_grad_easy", top_k, needs=("input_grad_norm",), description="smallest input-gradient norm",
         largest=False)
register("evenly_spaced", evenly_spaced, needs=("grad_norm",),
         description="evenly spaced ranks of the gradient norm (GEDA study)")
register("quantile_random", quantile_random, needs=("grad_norm",),
         description="random within gradient-norm quartiles (GEDA study)")
register("geda", geda, needs=("grad_norm",),
         description="gradient-norm ECDF matching: MILP (binned, N=5 trapezoid) solved by OR-Tools CP-SAT")
register("geda_random", geda, needs=("grad_norm",), rule="random",
         description="GEDA (N=5 trapezoid) with a seeded stratified random draw inside each bin")
register("geda_solver", geda, needs=("grad_norm",), rule="solver",
         description="GEDA (N=5 trapezoid) taking the last rows of each bin in data order, as the study's MILP solver did")
register("geda_w1", geda, needs=("grad_norm",),
         description="GEDA with the exact 1-Wasserstein objective (closed-form optimum)", num_nodes=None)
register("online_geda", online_geda, needs=("grad_norm", "grads"),
         description="GEDA subset weighted by regularized gradient matching (GEDA study, Alg. 6.1)")
LAST_LAYER = ("last_layer_e", "last_layer_h")  # closed-form factors of the head's per-sample gradients
register("craig", craig, needs=LAST_LAYER, pack=True,
         description="CRAIG: facility location on last-layer gradients, cluster-size weights (Mirzasoleiman 2020)")
register("gradmatch", gradmatch, needs=LAST_LAYER, pack=True,
         description="GRAD-MATCH: OMP with non-negative weights matching the mean last-layer gradient")
register("gradmatch_pb", gradmatch_batches, needs=LAST_LAYER, pack=True, batch_size=32,
         description="per-batch GRAD-MATCH (CORDS's GRAD-MATCH-PB): OMP over mini-batches of 32 on last-layer gradients")
register("glister", glister, needs=LAST_LAYER, pack=True, per_class=False, validation=True,
         description="GLISTER: greedy one-step lookahead on a validation loss, last-layer Taylor (Killamsetty "
                     "2021); needs a validation set")
register("herding", herding, needs=LAST_LAYER, pack=True, description="herding on last-layer gradients")
register("kcenter", kcenter_greedy, needs=LAST_LAYER, pack=True, description="greedy k-center on last-layer gradients")
register("craig_grads", craig, needs=("grads",),
         description="CRAIG on the 'grads' features (adaptive: last-layer, full or projected gradients)")
register("craig_stochastic", craig, needs=("grads",), description="CRAIG with stochastic greedy",
         optimizer="stochastic")
register("gradmatch_grads", gradmatch, needs=("grads",), description="GRAD-MATCH on the 'grads' features")
register("learned", top_k, needs=("learned_value",), largest=True,
         description="learned values through a differentiable facility-location LP layer (Das et al. 2021)")
# uncertainty (DeepCore) from one surrogate's softmax; coverage-aware selection (CCS, Moderate, D2)
for _kind in ("least_confidence", "entropy", "margin"):
    register(f"uncertainty_{_kind}", uncertainty, needs=("probs",), kind=_kind,
             description=f"most uncertain by {_kind.replace('_', ' ')} of a surrogate's softmax (DeepCore)")
register("ccs", ccs, needs=("aum",), hard="low",
         description="CCS on AUM: drop the hardest beta, stratified sampling, sparsest strata first (Zheng 2023)")
register("ccs_el2n", ccs, needs=("el2n",), hard="high", description="CCS on the EL2N score")
register("ccs_forgetting", ccs, needs=("forgetting",), hard="high", description="CCS on forgetting counts")
register("moderate", moderate, needs=("embedding",),
         description="Moderate coreset: embedding distance to the class centre closest to the median (Xia 2023)")
register("d2", d2, needs=("embedding", "forgetting"), k=5, beta=None,
         description="D2 pruning: forgetting scores passed over a kNN graph of embeddings (Maharana 2024)")
register("d2_el2n", d2, needs=("embedding", "el2n"), k=5, beta=None, description="D2 pruning on the EL2N score")
# filter-then-sample with a noise estimate (noise_rate (n,): each row's class's estimated rate, valuation.noise)
register("learned_filter", filter_random, needs=("learned_value", "noise_rate"), drop="low",
         description="drop the estimated noise rate of lowest learned values per class, then random (issue 18)")
register("loss_filter", filter_random, needs=("loss", "noise_rate"), drop="high",
         description="drop the estimated noise rate of highest surrogate losses per class, then random")
register("knn_shapley", top_k, needs=("knn_shapley",), largest=True,
         description="highest KNN-Shapley values on surrogate embeddings (Jia et al. 2019)")
