"""Per-example quantities over a pure pair ``(apply_fn, params)``.

``apply_fn(params, x_batch) -> logits``; every function is chunked over the data set
and jitted, and returns arrays in the data set's row order.
"""

from jaxsubset.grads.scores import cross_entropy, el2n, losses

__all__ = ["cross_entropy", "losses", "el2n"]
