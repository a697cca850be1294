"""Data valuation baselines (per-example values; higher = more valuable)."""

from jaxsubset.valuation.knn_shapley import knn_shapley, knn_shapley_quantity, knn_shapley_self, knn_shapley_sorted

__all__ = ["knn_shapley", "knn_shapley_self", "knn_shapley_sorted", "knn_shapley_quantity"]
