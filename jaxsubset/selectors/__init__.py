"""Selectors: pure functions ``(arrays, budget, ...) -> Subset``, and the method registry."""

from jaxsubset.selectors.basic import random, top_k
from jaxsubset.selectors.per_class import per_class
from jaxsubset.selectors.registry import METHODS, Method, get, register, select

register("random", random, description="uniform random (per class)")
register("loss_hard", top_k, needs=("loss",), description="highest loss of a surrogate model", largest=True)
register("loss_easy", top_k, needs=("loss",), description="lowest loss of a surrogate model", largest=False)
register("el2n_hard", top_k, needs=("el2n",), description="highest EL2N score (Paul et al. 2021)", largest=True)
register("el2n_easy", top_k, needs=("el2n",), description="lowest EL2N score", largest=False)

__all__ = ["random", "top_k", "per_class", "METHODS", "Method", "get", "register", "select"]
