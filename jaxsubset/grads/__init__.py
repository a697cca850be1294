"""Per-example quantities over a pure pair ``(apply_fn, params)``.

``apply_fn(params, x_batch) -> logits``; every function is chunked over the data set
(``batch_size`` rows at a time), jitted, optionally data-parallel over a ``mesh``, and
returns numpy arrays in the data set's row order.

- ``losses``, ``el2n``: forward-only scores.
- ``per_sample_grads``: exact ``jit(vmap(grad))``, restricted with ``wrt`` and/or
  sketched to ``project_dim`` by a seeded Johnson–Lindenstrauss projection.
- ``last_layer_grads`` / ``last_layer_factors``: the linear head's gradients in closed form.
- ``grad_norms``: ``||∇θ ℓ_i||`` by ghost norms (``describe_grad_norms`` shows the path per layer).
- ``input_grad_norms``: ``||∂ℓ_i/∂x_i||``.
- ``gram``: ``<g_i, g_j>`` (closed form for the last layer).

Compiled chunk functions are cached (``_cache``: at most 64 entries, weakly keyed on
the model function): a second call with the same model function, parameter shapes,
input shapes, options and mesh compiles nothing, whatever the parameter values.
``clear_cache()``, ``cache_info()``, ``set_cache_size(n)`` manage the cache.
"""

from jaxsubset.grads._cache import cache_info, clear_cache, set_cache_size
from jaxsubset.grads.chunking import check_xy, chunked_map
from jaxsubset.grads._params import leaf_names, select_leaves
from jaxsubset.grads.ghost import describe_grad_norms, grad_norms
from jaxsubset.grads.gram import gram
from jaxsubset.grads.input_grads import input_grad_norms
from jaxsubset.grads.last_layer import last_layer_factors, last_layer_grads
from jaxsubset.grads.per_sample import per_sample_grads
from jaxsubset.grads.projection import project, projection_matrix
from jaxsubset.grads.scores import cross_entropy, el2n, losses
from jaxsubset.grads.sharding import data_mesh

__all__ = [
    "cross_entropy", "losses", "el2n",
    "per_sample_grads", "last_layer_grads", "last_layer_factors",
    "grad_norms", "describe_grad_norms", "input_grad_norms", "gram",
    "project", "projection_matrix", "leaf_names", "select_leaves",
    "data_mesh", "check_xy", "chunked_map",
    "clear_cache", "cache_info", "set_cache_size",
]
