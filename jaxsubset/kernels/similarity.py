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
from jaxsubset.kernels.last_layer import as_factors, last_layer_mean_grad

METRICS = ("euclidean", "cosine", "dot", "rbf")


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"Unknown metric {metric!r}; choose one of {METRICS}.")
    return metric

# ----------------------------------------------------------------------------- the operator

@dataclasses.dataclass(frozen=True, eq=False)
class Similarity:
    """A pairwise similarity between ``n1`` row items and ``n2`` column items, evaluated in blocks.

    Build it with :func:`similarity_op` (feature vectors), :func:`last_layer_similarity_op`
    (factored last-layer gradients) or :func:`precomputed` (a given matrix). Metrics,
    with ``<·,·>`` the inner product of the (possibly factored) vectors:

    - ``"dot"``: ``<a, b>``;
    - ``"cosine"``: ``<a, b> / (|a| |b|)`` (0 when either vector is zero);
    - ``"euclidean"``: ``-|a - b|`` (a negated distance: larger is more similar;
      facility location subtracts the minimum so that CRAIG's ``max d - d`` follows);
    - ``"rbf"``: ``exp(-gamma |a - b|²)``.

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
        if self.metric == "cosine":
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

    def transpose(self) -> "Similarity":
        """The operator with rows and columns swapped (every metric here is symmetric in its arguments)."""
        inner = self._inner
        return dataclasses.replace(self, shape=(self.shape[1], self.shape[0]), _sq1=self._sq2, _sq2=self._sq1,
                                   _inner=lambda r, c: np.ascontiguousarray(inner(c, r).T),
                                   matrix=None if self.matrix is None else self.matrix.T)


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


def _take(a: np.ndarray, idx: np.ndarray | None) -> np.ndarray:
    return a if idx is None else a[idx]


def _rbf_gamma(gamma: float | None, mean_sq_dev: float) -> float:
    """Default RBF ``gamma``: one over the mean squared pairwise distance ``2·mean|a - ā|²``."""
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


def similarity_op(a: Any, b: Any | None = None, *, metric: str = "euclidean",
                  gamma: float | None = None, names: tuple[str, str] = ("a", "b"),
                  rows: Any = None) -> Similarity:
    """A :class:`Similarity` between the rows of ``a (n1, D)`` and ``b (n2, D)`` (default ``a``).

    Args:
      a, b: finite feature matrices with the same number of columns.
      metric: ``"euclidean"`` (negated distance), ``"cosine"``, ``"dot"`` or ``"rbf"``.
      gamma: RBF ``exp(-gamma |a-b|²)`` scale; default ``1 / (2·mean_i |a_i - ā|²)``
        (about one over the mean squared pairwise distance of ``a``).
      names: how error messages call ``a`` and ``b``.
      rows: int indices of a sub-pool of ``a`` (self-similarity only, ``b=None``): the
        operator is over ``a[rows]`` without copying it (blocks gather what they need).
    """
    _check_metric(metric)
    if rows is not None:
        if b is not None:
            raise ValueError("rows restricts a self-similarity; pass b=None with rows.")
        A = np.asarray(a)
        if A.ndim != 2:
            raise ValueError(f"{names[0]} must be a 2-D array, got shape {A.shape}.")
        r = check_rows(rows, A.shape[0])
        A = finite_matrix(A, names[0], r)
        sq = np.concatenate([np.einsum("nd,nd->n", x, x) for x in
                             (A[r[s:s + GATHER_ITEMS]] for s in range(0, r.size, GATHER_ITEMS))] or [np.zeros(0, np.float32)])
        g = None
        if metric == "rbf":
            mean = weighted_row_sum(A, r, np.full(r.size, 1.0 / max(r.size, 1)))
            g = _rbf_gamma(gamma, float(np.mean(sq) - np.sum(mean ** 2)) if r.size else 0.0)
        return Similarity((r.size, r.size), metric, g, True, _subpool_inner(lambda i, j: A[i] @ A[j].T, r), sq, sq)
    A = finite_matrix(a, names[0])
    B = A if b is None else finite_matrix(b, names[1])
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"{names[0]} has {A.shape[1]} columns but {names[1]} has {B.shape[1]}; they must match.")
    sq1 = np.einsum("nd,nd->n", A, A)
    sq2 = sq1 if b is None else np.einsum("nd,nd->n", B, B)
    g = None
    if metric == "rbf":
        g = _rbf_gamma(gamma, float(np.mean(sq1) - np.sum(A.mean(0, dtype=np.float64) ** 2)) if len(A) else 0.0)

    def inner(r: np.ndarray | None, c: np.ndarray | None) -> np.ndarray:
        return _take(A, r) @ _take(B, c).T

    return Similarity((A.shape[0], B.shape[0]), metric, g, b is None, inner, sq1, sq2)


def last_layer_similarity_op(e: Any, h: Any, e2: Any | None = None, h2: Any | None = None, *,
                             metric: str = "euclidean", gamma: float | None = None,
                             rows: Any = None) -> Similarity:
    """A :class:`Similarity` between factored last-layer gradients ``e ⊗ [h, 1]``.

    Inner products are ``(e_i·e_j)(h_i·h_j + 1)`` and squared norms
    ``|e_i|²(|h_i|² + 1)``: each block costs ``O(rows·cols·(C + d))`` instead of
    ``O(rows·cols·C·d)`` and no gradient vector is formed.

    Args:
      e, h: ``(n1, C)`` and ``(n1, d)``; e2, h2: ``(n2, C)``, ``(n2, d)`` (default ``e, h``).
      metric, gamma: as in :func:`similarity_op` (gamma's default uses the mean gradient).
      rows: int indices of a sub-pool (self-similarity only): the operator is over those
        examples without copying their factors (blocks gather what they need).
    """
    _check_metric(metric)
    if rows is not None:
        if e2 is not None or h2 is not None:
            raise ValueError("rows restricts a self-similarity; pass e2=h2=None with rows.")
        r = check_rows(rows, np.shape(e)[0]) if np.ndim(e) == 2 else rows
        E, H = as_factors((e, h), "(e, h)", rows=r)
        sq = np.concatenate([np.einsum("nc,nc->n", E[i], E[i]) * (np.einsum("nd,nd->n", H[i], H[i]) + 1.0)
                             for i in (r[s:s + GATHER_ITEMS] for s in range(0, r.size, GATHER_ITEMS))] or [np.zeros(0, np.float32)])
        g = None
        if metric == "rbf":
            dev = float(np.mean(sq) - np.sum(last_layer_mean_grad(E, H, r) ** 2)) if r.size else 0.0
            g = _rbf_gamma(gamma, dev)

        def pair(i: np.ndarray, j: np.ndarray) -> np.ndarray:
            out = E[i] @ E[j].T
            hh = H[i] @ H[j].T
            hh += 1.0
            out *= hh
            return out

        return Similarity((r.size, r.size), metric, g, True, _subpool_inner(pair, r), sq, sq)
    E1, H1 = as_factors((e, h), "(e, h)")
    if (e2 is None) != (h2 is None):
        raise ValueError("Pass both e2 and h2, or neither.")
    E2, H2 = (E1, H1) if e2 is None else as_factors((e2, h2), "(e2, h2)")
    if E1.shape[1] != E2.shape[1] or H1.shape[1] != H2.shape[1]:
        raise ValueError(f"Dimension mismatch: e {E1.shape[1]} vs {E2.shape[1]}, h {H1.shape[1]} vs {H2.shape[1]}.")
    sq1 = np.einsum("nc,nc->n", E1, E1) * (np.einsum("nd,nd->n", H1, H1) + 1.0)
    sq2 = sq1 if e2 is None else np.einsum("nc,nc->n", E2, E2) * (np.einsum("nd,nd->n", H2, H2) + 1.0)
    g = None
    if metric == "rbf":
        dev = float(np.mean(sq1) - np.sum(last_layer_mean_grad(E1, H1) ** 2)) if len(E1) else 0.0
        g = _rbf_gamma(gamma, dev)

    def inner(r: np.ndarray | None, c: np.ndarray | None) -> np.ndarray:
        out = _take(E1, r) @ _take(E2, c).T
        hh = _take(H1, r) @ _take(H2, c).T
        hh += 1.0
        out *= hh
        return out

    return Similarity((E1.shape[0], E2.shape[0]), metric, g, e2 is None, inner, sq1, sq2)


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


def similarity(a: Any, b: Any | None = None, *, metric: str = "euclidean", gamma: float | None = None,
               chunk: int | None = None) -> np.ndarray:
    """Dense pairwise similarity ``(n1, n2)`` float32 between rows of ``a`` and ``b``.

    ``a``/``b`` are feature matrices ``(n, D)`` or last-layer factor pairs ``(e, h)``
    (then the similarity is between the gradients ``e ⊗ [h, 1]``). Computed ``chunk``
    rows at a time (never an ``n × n × D`` tensor). See :class:`Similarity` for the metrics.
    """
    if isinstance(a, (tuple, list)):
        e2, h2 = (None, None) if b is None else as_factors(b, "b")
        op = last_layer_similarity_op(*as_factors(a, "a"), e2, h2, metric=metric, gamma=gamma)
    else:
        op = similarity_op(a, b, metric=metric, gamma=gamma)
    return op.dense(chunk)


def as_operator(features: Any | None, factors: Any | None, *, metric: str, gamma: float | None = None,
                name: str = "features", rows: Any = None) -> Similarity:
    """A self-similarity operator from exactly one of ``features (n, D)`` or ``factors (e, h)``
    (over the sub-pool ``rows`` when given)."""
    if (features is None) == (factors is None):
        raise ValueError(f"Pass exactly one of {name} (n, D) or factors=(e, h).")
    if factors is not None:
        if not isinstance(factors, (tuple, list)) or len(factors) != 2:
            as_factors(factors)  # raises the standard message
        return last_layer_similarity_op(factors[0], factors[1], metric=metric, gamma=gamma, rows=rows)
    return similarity_op(features, metric=metric, gamma=gamma, names=(name, name), rows=rows)


__all__ = ["METRICS", "Similarity", "similarity", "similarity_op", "last_layer_similarity_op", "precomputed",
           "as_operator"]
