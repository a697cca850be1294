"""Exact Shapley values of a K-nearest-neighbour classifier in closed form (Jia et al., VLDB 2019).

For one test point ``(x_t, y_t)`` sort the ``N`` training points by distance to ``x_t``,
nearest first: ``α_1, …, α_N`` (ties by lower index). The utility of a subset ``S`` is the
unweighted KNN likelihood of the correct label,
``U(S) = (1/K) Σ_{r=1}^{min(K, |S|)} 1[y_{α_r(S)} = y_t]`` (``U(∅) = 0``), and its Shapley
values satisfy the recursion

    s_{α_N} = 1[y_{α_N} = y_t] · min(K, N) / (K N)   (= 1[·] / N for K <= N),
    s_{α_i} = s_{α_{i+1}} + (1[y_{α_i} = y_t] - 1[y_{α_{i+1}} = y_t]) / K · min(K, i) / i ,

which unrolls into one reversed cumulative sum (``O(N log N)`` per test point for the sort).
The value of a training point is the mean over the test points. A point whose label
disagrees with the test points near it gets a negative value, so low values flag likely
mislabelled points.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxsubset import grads
from jaxsubset.checks import as_features, check_labelled_sets


def _check(train_emb: Any, train_labels: Any, test_emb: Any, test_labels: Any, k: int):
    if np.shape(train_emb)[:1] == (0,):
        raise ValueError("KNN-Shapley needs at least one training and one test point.")
    return check_labelled_sets(train_emb, train_labels, test_emb, test_labels, k, names=("training", "test"),
                               what="KNN-Shapley")


def knn_shapley_sorted(match: np.ndarray, k: int) -> np.ndarray:
    """Shapley values ``(m, N)`` in sorted order from ``match (m, N)``: 1 where the ``i``-th nearest
    training point of test point ``t`` carries ``t``'s label (the recursion above, vectorized)."""
    m = np.asarray(match, np.float64)
    n = m.shape[1]
    i = np.arange(1, n, dtype=np.float64)                                 # positions 1..N-1
    step = (m[:, :-1] - m[:, 1:]) * (np.minimum(k, i) / (k * i))          # s_i - s_{i+1}
    tail = np.cumsum(step[:, ::-1], axis=1)[:, ::-1]                      # Σ_{j >= i} (s_j - s_{j+1})
    last = m[:, -1:] * (min(k, n) / (k * n))                               # 1[·]/N when K <= N
    return np.concatenate([last + tail, last], axis=1)


def knn_shapley(train_emb: Any, train_labels: Any, test_emb: Any, test_labels: Any, *, k: int = 10,
                chunk: int = 256) -> np.ndarray:
    """KNN-Shapley value ``(n,)`` (float64) of every training point against a labelled test set.

    Args:
      train_emb: ``(n, d)`` embeddings of the training points (e.g. a surrogate's penultimate layer).
      train_labels: int ``(n,)``.
      test_emb: ``(m, d)`` embeddings of a (clean) validation set.
      test_labels: int ``(m,)``.
      k: neighbours of the KNN classifier.
      chunk: test points per distance block (memory ``chunk · n``).

    Returns:
      The mean over test points of the exact Shapley value; they sum to
      ``mean_t U(all)`` (efficiency). Higher = more valuable.
    """
    xt, yt, xs, ys, k = _check(train_emb, train_labels, test_emb, test_labels, k)
    xt64, xs64 = xt.astype(np.float64), xs.astype(np.float64)
    sq = np.sum(xt64 * xt64, axis=1)
    total = np.zeros(xt.shape[0], np.float64)
    for s in range(0, xs.shape[0], int(chunk)):
        q = xs64[s:s + chunk]
        d = sq[None, :] - 2.0 * q @ xt64.T            # + |q|², constant per row: does not change the order
        order = np.argsort(d, axis=1, kind="stable")
        match = (yt[order] == ys[s:s + chunk, None])
        vals = knn_shapley_sorted(match, k)
        total += np.bincount(order.ravel(), weights=vals.ravel(), minlength=total.size)   # rows are permutations
    return total / xs.shape[0]


def knn_shapley_self(emb: Any, labels: Any, *, k: int = 10, num_test: int = 2000, seed: int = 0,
                     chunk: int = 256) -> np.ndarray:
    """KNN-Shapley values ``(n,)`` with (up to) ``num_test`` training points as the test set, each
    valuing the *other* points (the test point itself is left out of its own neighbour set).

    For when no clean validation set exists: the test labels are then as noisy as the training
    labels, so prefer :func:`knn_shapley` with a clean validation set when one is available.
    """
    x = as_features(emb, name="embeddings")
    y = np.asarray(labels)
    n = x.shape[0]
    if n < 2:
        raise ValueError("knn_shapley_self needs at least two points (one to value, one as test).")
    tests = np.sort(np.random.default_rng(seed).choice(n, min(int(num_test), n), replace=False))
    x64 = x.astype(np.float64)
    sq = np.sum(x64 * x64, axis=1)
    total = np.zeros(n, np.float64)
    for s in range(0, tests.size, int(chunk)):
        t = tests[s:s + chunk]
        d = sq[None, :] - 2.0 * x64[t] @ x64.T
        d[np.arange(t.size), t] = np.inf                # the test point is not its own neighbour
        order = np.argsort(d, axis=1, kind="stable")[:, :-1]
        match = (y[order] == y[t, None])
        total += np.bincount(order.ravel(), weights=knn_shapley_sorted(match, k).ravel(), minlength=n)
    return total / tests.size


def knn_shapley_quantity(model: Any, x: Any, y: Any, *, batch_size: int = 1024, k: int = 10,
                         validation: tuple[Any, Any] | None = None) -> np.ndarray:
    """Scoring-registry adapter ``fn(model, x, y, *, batch_size) -> (n,)``: KNN-Shapley on the
    surrogate's penultimate-layer embeddings, against ``validation = (x_val, y_val)`` when given,
    else against 2 000 training points (:func:`knn_shapley_self`)."""
    if model.apply_with_embedding is None:
        raise ValueError("knn_shapley needs a model with an embedding (apply_with_embedding).")
    _, h = grads.last_layer_factors(model.apply_with_embedding, model.params, x, y, batch_size=batch_size)
    if validation is None:
        return knn_shapley_self(h, y, k=k)
    xv, yv = validation
    _, hv = grads.last_layer_factors(model.apply_with_embedding, model.params, xv, yv, batch_size=batch_size)
    return knn_shapley(h, y, hv, yv, k=k)


__all__ = ["knn_shapley", "knn_shapley_self", "knn_shapley_sorted", "knn_shapley_quantity"]
