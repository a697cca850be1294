"""jaxsubset: pick the training examples worth keeping, with per-sample gradients in JAX."""

from jaxsubset.subset import Subset, budget_from_fraction, check_budget, per_class_budget

__version__ = "0.1.0"

__all__ = ["Subset", "per_class_budget", "check_budget", "budget_from_fraction", "__version__"]
