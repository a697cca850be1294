"""The similarity operator between per-example feature vectors, and the metric table.

A :class:`Similarity` evaluates similarities on demand in blocks, from inner products and squared
norms of a feature matrix ``a (n, D)`` or of factored last-layer gradients ``(e, h)``
(:mod:`jaxsubset.kernels.last_layer`), so no ``n × n × D`` tensor is ever formed and an ``n × n``
matrix only when asked for (:meth:`Similarity.dense`). Blocks are float32 NumPy arrays from BLAS.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

import numpy as np

from jaxsubset.kernels.blocks import GATHER_ITEMS, GATHER_SHARE, check_rows, default_chunk, finite_matrix, \
    weighted_row_sum
from jaxsubset.kernels.features import Features, check_features, is_factored
from jaxsubset.kernels.last_layer import last_layer_mean_grad

METRICS = {
    "dot": "<a, b>",
    "cosine": "<a, b> / (|a| |b|) in [-1, 1] (0 when either vector is zero)",
    "shifted_cosine": "(1 + cosine) / 2 in [0, 1]: non-negative and positive semi-definite (SMI's default)",
    "euclidean": "-|a - b|, a negated distance (CRAIG's default: facility location shifts it to max d - d)",
    "rbf": "exp(-gamma |a - b|²)",
}
"""The one metric table: each name means this kernel in every selector (NumPy blocks here, JAX blocks in
:mod:`jaxsubset.kernels.device`); ``<·,·>`` is the inner product of the (possibly factored) vectors."""


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"Unknown metric {metric!r}; choose one of {list(METRICS)}.")
    return metric

# ----------------------------------------------------------------------------- the operator

@dataclasses.dataclass(frozen=True, eq=False)
class Similarity:
    """A pairwise similarity between ``n1`` row items and ``n2`` column items, evaluated in blocks.

    Build it with :func:`similarity_op` (features or last-layer factors) or :func:`precomputed` (a given
    matrix). Metrics: :data:`METRICS`.

    When the row and column items are the same set, self-pairs are exact
    (distance 0, cosine 1) despite float32 rounding.

    Attributes:
      shape: ``(n1, n2)``.
      metric: one of :data:`METRICS`, or ``"precomputed"``.
      gamma: the RBF inverse squared length scale (``None`` for other metrics).
      symmetric: whether row and column items are the same set.
    """

    shape: tuple[int, int]
    metric: str
    gamma: float | None
    symmetric: bool
    _inner: Callable[[np.ndarray | None, np.ndarray | None], np.ndarray] = dataclasses.field(repr=False)
    _sq1: np.ndarray | None = dataclasses.field(default=None, repr=False)
    _sq2: np.ndarray | None = dataclasses.field(default=None, repr=False)
    matrix: np.ndarray | None = dataclasses.field(default=None, repr=False)
    """The dense ``(n1, n2)`` matrix for :func:`precomputed` operators (fast row access), else ``None``."""

    def block(self, rows: Any = None, cols: Any = None) -> np.ndarray:
        """Similarities ``(len(rows), len(cols))`` float32; ``None`` means all rows / columns.

        ``rows``/``cols`` are int index arrays (or ``slice``s) into the row / column items.
        """
        r = _as_index(rows, self.shape[0], "rows")
        c = _as_index(cols, self.shape[1], "cols")
        out = self._inner(r, c)
        if self.metric in ("dot", "precomputed"):
            return out
        sq1 = self._sq1 if r is None else self._sq1[r]
        sq2 = self._sq2 if c is None else self._sq2[c]
        if self.metric in ("cosine", "shifted_cosine"):
            inv1 = _safe_inv_sqrt(sq1)
            inv2 = _safe_inv_sqrt(sq2)
            out *= inv1[:, None]
            out *= inv2[None, :]
            np.clip(out, -1.0, 1.0, out=out)
        else:  # squared distance = |a|² + |b|² - 2<a,b>, clipped at 0
            out *= -2.0
            out += sq1[:, None]
            out += sq2[None, :]
            np.maximum(out, 0.0, out=out)
            if self.metric == "euclidean":
                np.sqrt(out, out=out)
                np.negative(out, out=out)
            else:
                out *= -self.gamma
                np.exp(out, out=out)
        if self.symmetric:
            self._fix_self_pairs(out, r, c, sq1)
        if self.metric == "shifted_cosine":
            out += 1.0
            out *= 0.5
        return out

    def _fix_self_pairs(self, out: np.ndarray, r: np.ndarray | None, c: np.ndarray | None,
                        sq1: np.ndarray) -> None:
        ri = np.arange(self.shape[0]) if r is None else r
        ci = np.arange(self.shape[1]) if c is None else c
        _, pr, pc = np.intersect1d(ri, ci, assume_unique=True, return_indices=True)
        if not pr.size:
            return
        if self.metric == "euclidean":
            out[pr, pc] = 0.0
        elif self.metric == "rbf":
            out[pr, pc] = 1.0
        else:  # cosine: 1 for non-zero vectors
            out[pr, pc] = np.where(sq1[pr] > 0, 1.0, 0.0)

    @property
    def row_sq_norms(self) -> np.ndarray | None:
        """Squared norms ``(n1,)`` of the row items (``None`` for a precomputed matrix)."""
        return self._sq1

    def rows(self, idx: Any) -> np.ndarray:
        """Similarities of row items ``idx`` to all column items, ``(len(idx), n2)``."""
        return self.block(idx, None)

    def row_chunks(self, chunk: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, block)`` with ``block = S[start:start + chunk]`` over all rows."""
        chunk = chunk or default_chunk(self.shape[1])
        for s in range(0, self.shape[0], chunk):
            yield s, self.block(np.arange(s, min(s + chunk, self.shape[0])), None)

    def dense(self, chunk: int | None = None) -> np.ndarray:
        """The full ``(n1, n2)`` float32 matrix, filled block by block (small blocks: ~256 KiB temporaries)."""
        out = np.empty(self.shape, np.float32)
        chunk = chunk or default_chunk(self.shape[1])
        for s, b in self.row_chunks(chunk):
            out[s:s + b.shape[0]] = b
        return out


def _as_index(idx: Any, n: int, name: str) -> np.ndarray | None:
    if idx is None:
        return None
    if isinstance(idx, slice):
        return np.arange(n)[idx]
    a = np.asarray(idx)
    if a.ndim != 1:
        a = a.reshape(-1)
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must be integer indices, got dtype {a.dtype}.")
    a = a.astype(np.int64, copy=False)
    if a.size and (a.min() < 0 or a.max() >= n):
        raise IndexError(f"{name} index out of range [0, {n}).")
    return a


def _safe_inv_sqrt(sq: np.ndarray) -> np.ndarray:
    out = np.zeros_like(sq)
    pos = sq > 0
    out[pos] = 1.0 / np.sqrt(sq[pos])
    return out


def rbf_gamma(gamma: float | None, mean_sq_dev: float) -> float:
    """RBF ``gamma`` validated (positive, finite), or if None one over ``2·mean|a - ā|²`` (``mean_sq_dev``: about
    the mean squared pairwise distance)."""
    if gamma is None:
        return 1.0 / (2.0 * mean_sq_dev) if mean_sq_dev > 0 else 1.0
    g = float(gamma)
    if not np.isfinite(g) or g <= 0:
        raise ValueError(f"gamma must be a positive finite number, got {gamma!r}.")
    return g


def _subpool_inner(pair: Callable[[np.ndarray, np.ndarray], np.ndarray], rows: np.ndarray,
                   ) -> Callable[[np.ndarray | None, np.ndarray | None], np.ndarray]:
    """An ``inner(r, c)`` over the sub-pool ``rows`` that gathers max(64, |rows|/16) items per side at a time.

    ``pair(gi, gj)`` returns the float32 inner products between pool items ``gi`` and ``gj``
    (global indices); the sub-pool's features are never copied as a whole.
    """
    def inner(r: np.ndarray | None, c: np.ndarray | None) -> np.ndarray:
        gr = rows if r is None else rows[r]
        gc = rows if c is None else rows[c]
        b = max(GATHER_ITEMS, rows.size // GATHER_SHARE)
        if gr.size <= b and gc.size <= b:
            return pair(gr, gc)
        out = np.empty((gr.size, gc.size), np.float32)
        for i in range(0, gr.size, b):
            for j in range(0, gc.size, b):
                out[i:i + b, j:j + b] = pair(gr[i:i + b], gc[j:j + b])
        return out

    return inner


def _sq_norms(x: np.ndarray, h: np.ndarray | None) -> np.ndarray:
    sq = np.einsum("nd,nd->n", x, x)
    return sq if h is None else sq * (np.einsum("nd,nd->n", h, h) + 1.0)


def similarity_op(a: Features, b: Features | None = None, *, metric: str = "euclidean",
                  gamma: float | None = None, names: tuple[str, str] = ("a", "b"),
                  rows: Any = None) -> Similarity:
    """A :class:`Similarity` between the examples of ``a`` and ``b`` (default ``a``).

    ``a``/``b`` are :data:`~jaxsubset.kernels.features.Features`: feature matrices ``(n, D)``, or
    last-layer factors ``(e, h)`` whose inner products ``(e_i·e_j)(h_i·h_j + 1)`` and squared norms
    ``|e_i|²(|h_i|² + 1)`` cost ``O(rows·cols·(C + d))`` per block, no gradient vector formed.

    Args:
      a, b: finite features of the same kind and dimensions.
      metric: a name of :data:`METRICS`.
      gamma: RBF ``exp(-gamma |a-b|²)`` scale; default ``1 / (2·mean_i |a_i - ā|²)``
        (about one over the mean squared pairwise distance of ``a``).
      names: how error messages call ``a`` and ``b``.
      rows: int indices of a sub-pool of ``a`` (self-similarity only, ``b=None``): the
        operator is over those examples without copying them (blocks gather what they need).
    """
    _check_metric(metric)
    if rows is not None:
        if b is not None:
            raise ValueError("rows restricts a self-similarity; pass b=None with rows.")
        first = a[0] if is_factored(a) else a
        r = check_rows(rows, np.shape(first)[0]) if np.ndim(first) == 2 else rows
        x, h = check_features(a, names[0], r)
        sq = np.concatenate([_sq_norms(x[i], None if h is None else h[i]) for i in
                             (r[s:s + GATHER_ITEMS] for s in range(0, r.size, GATHER_ITEMS))] or [np.zeros(0, np.float32)])
        g = None
        if metric == "rbf":
            mean = weighted_row_sum(x, r, np.full(r.size, 1.0 / max(r.size, 1))) if h is None else \
                last_layer_mean_grad(x, h, r)
            g = rbf_gamma(gamma, float(np.mean(sq) - np.sum(mean ** 2)) if r.size else 0.0)
        return Similarity((r.size, r.size), metric, g, True, _subpool_inner(_pair(x, h, x, h), r), sq, sq)
    x1, h1 = check_features(a, names[0])
    x2, h2 = (x1, h1) if b is None else check_features(b, names[1])
    d1, d2 = ((x.shape[1],) if h is None else (x.shape[1], h.shape[1]) for x, h in ((x1, h1), (x2, h2)))
    if d1 != d2:
        raise ValueError(f"{names[0]} has dimensions {d1} but {names[1]} has {d2} (columns of a matrix, (C, d) of "
                         "factors); they must match.")
    sq1 = _sq_norms(x1, h1)
    sq2 = sq1 if b is None else _sq_norms(x2, h2)
    g = None
    if metric == "rbf":
        mean = x1.mean(0, dtype=np.float64) if h1 is None else last_layer_mean_grad(x1, h1)
        g = rbf_gamma(gamma, float(np.mean(sq1) - np.sum(mean ** 2)) if len(x1) else 0.0)
    pair = _pair(x1, h1, x2, h2)
    return Similarity((x1.shape[0], x2.shape[0]), metric, g, b is None,
                      lambda r, c: pair(slice(None) if r is None else r, slice(None) if c is None else c), sq1, sq2)


def _pair(x1: np.ndarray, h1: np.ndarray | None, x2: np.ndarray, h2: np.ndarray | None):
    """``(i, j) -> `` float32 inner products between items ``i`` of set 1 and ``j`` of set 2."""
    def pair(i: Any, j: Any) -> np.ndarray:
        out = x1[i] @ x2[j].T
        if h1 is not None:
            hh = h1[i] @ h2[j].T
            hh += 1.0
            out *= hh
        return out

    return pair


def precomputed(matrix: Any) -> Similarity:
    """Wrap a finite similarity matrix ``(n1, n2)`` (larger = more similar) as a :class:`Similarity`."""
    S = finite_matrix(matrix, "similarity matrix")

    def inner(r: np.ndarray | None, c: np.ndarray | None) -> np.ndarray:
        if r is None and c is None:
            return S.copy()
        if c is None:
            return S[r]
        if r is None:
            return S[:, c]
        return S[np.ix_(r, c)]

    return Similarity(S.shape, "precomputed", None, False, inner, matrix=S)


def similarity(a: Features, b: Features | None = None, *, metric: str = "euclidean", gamma: float | None = None,
               chunk: int | None = None) -> np.ndarray:
    """Dense pairwise similarity ``(n1, n2)`` float32 between the examples of ``a`` and ``b`` (features or
    factor pairs, see :func:`similarity_op`), computed ``chunk`` rows at a time."""
    return similarity_op(a, b, metric=metric, gamma=gamma).dense(chunk)


__all__ = ["METRICS", "Similarity", "similarity", "similarity_op", "precomputed", "rbf_gamma"]
