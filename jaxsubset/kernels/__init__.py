"""Kernels between per-example feature vectors: a feature matrix ``(n, D)`` or last-layer factors ``(e, h)``.

- :mod:`~jaxsubset.kernels.similarity`: the blocked :class:`Similarity` operator and the metric table;
- :mod:`~jaxsubset.kernels.last_layer`: factored last-layer gradient algebra ``e ⊗ [h, 1]``;
- :mod:`~jaxsubset.kernels.blocks`: block sizes, blocked row sums / products and input checks.
"""

from jaxsubset.kernels.blocks import (FLOAT32_SAFE_NORM, FLOAT32_TINY, check_float32_range, check_rows, default_chunk,
                                      finite_matrix, rows_dot, weighted_row_sum)
from jaxsubset.kernels.last_layer import (as_factors, last_layer_dot, last_layer_gram, last_layer_mean_grad,
                                          last_layer_weighted_sum, materialize_last_layer)
from jaxsubset.kernels.similarity import (METRICS, Similarity, as_operator, last_layer_similarity_op, precomputed,
                                          similarity, similarity_op)

__all__ = ["METRICS", "Similarity", "similarity", "similarity_op", "last_layer_similarity_op", "precomputed",
           "as_operator", "last_layer_gram", "materialize_last_layer", "last_layer_mean_grad", "last_layer_dot",
           "last_layer_weighted_sum", "as_factors", "rows_dot", "weighted_row_sum", "check_rows", "default_chunk",
           "finite_matrix", "check_float32_range", "FLOAT32_SAFE_NORM", "FLOAT32_TINY"]
