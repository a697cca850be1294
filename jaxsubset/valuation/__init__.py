"""Data valuation: per-example values (higher = more valuable), each a training procedure or a
nearest-neighbour game, not a selector (rank them with ``selectors.top_k``)."""

from jaxsubset.valuation.knn_shapley import knn_shapley, knn_shapley_quantity, knn_shapley_self, knn_shapley_sorted
from jaxsubset.valuation.learned import fit_selection_model, learned_value_quantity, learned_values

__all__ = ["knn_shapley", "knn_shapley_self", "knn_shapley_sorted", "knn_shapley_quantity", "fit_selection_model",
           "learned_values", "learned_value_quantity"]
