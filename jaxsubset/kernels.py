"""Similarity kernels between per-example feature vectors, computed in row chunks.

Shared by CRAIG, GRAD-MATCH, k-center and the submodular (mutual-information) selectors.

Two kinds of inputs are supported everywhere:

- a feature matrix ``a (n, D)`` (embeddings, or materialized gradients), and
- factored last-layer gradients ``(e (n, C), h (n, d))``: the gradient of the
  cross-entropy w.r.t. a linear head ``W (C, d + 1)`` (bias last) is
  ``g = e ⊗ [h, 1]`` with ``e = softmax(z) - onehot(y)``, so that
  ``<g_i, g_j> = (e_i·e_j)(h_i·h_j + 1)`` is computed without ever forming ``g``
  (``n × C(d+1)`` floats) — see :func:`last_layer_grads` for the layout.

Every similarity is derived from inner products and squared norms, evaluated on
demand in blocks by a :class:`Similarity` operator, so no ``n × n × D`` tensor is
ever formed and an ``n × n`` matrix only when asked for (:meth:`Similarity.dense`).
Blocks are float32 NumPy arrays computed with BLAS.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

METRICS = ("euclidean", "cosine", "dot", "rbf")

# Bytes of one block of ``rows x n`` float32 similarities (at least 64 rows: large enough for BLAS).
# On benchmarks/matching.py 8 MiB blocks were no faster than 1 MiB and tripled the matrix-free CRAIG
# peak; 256 KiB halved the per-class matrix-free peak again at the same speed (whole pools are
# unchanged: 64 rows already pass 256 KiB from n = 1 024 on).
_BLOCK_BYTES = 2**18
# Bytes of one block of rows gathered from a sub-pool (``rows=``), so that selecting within a class
# needs ≈100 KiB temporaries instead of a copy of the class.
_GATHER_BYTES = 2**17
_GATHER_ITEMS = 64  # items per side of a sub-pool similarity sub-block
# ... but at least 1/16 of the sub-pool per gather, so that large classes are not walked in tiny
# steps (per-pick Gram columns of a 5 000-row class took 2x longer in 64-row gathers).
_GATHER_SHARE = 16


@jax.jit
def _last_layer_gram_block(e1, h1, e2, h2):
    return (e1 @ e2.T) * (h1 @ h2.T + 1.0)


def last_layer_gram(e1: Any, h1: Any, e2: Any | None = None, h2: Any | None = None, *,
                    chunk: int = 4096) -> np.ndarray:
    """Inner products of last-layer per-example gradients without materializing them.

    The last-layer gradient of example i is ``e_i ⊗ [h_i, 1]`` with
    ``e_i = softmax(z_i) - onehot(y_i)`` ``(C,)`` and ``h_i`` the penultimate
    embedding ``(d,)``, so ``<g_i, g_j> = (e_i·e_j)(h_i·h_j + 1)``.

    Args:
      e1: ``(n1, C)`` softmax-minus-onehot rows; h1: ``(n1, d)`` embeddings.
      e2, h2: ``(n2, C)``, ``(n2, d)``; default to ``e1, h1``.
      chunk: rows of the first argument processed per jitted call.

    Returns:
      float32 ``(n1, n2)`` Gram matrix.
    """
    e1 = np.asarray(e1, np.float32); h1 = np.asarray(h1, np.float32)
    e2 = e1 if e2 is None else np.asarray(e2, np.float32)
    h2 = h1 if h2 is None else np.asarray(h2, np.float32)
    if e1.shape[0] != h1.shape[0] or e2.shape[0] != h2.shape[0]:
        raise ValueError("e and h must have the same number of rows.")
    if e1.shape[1] != e2.shape[1] or h1.shape[1] != h2.shape[1]:
        raise ValueError(f"Dimension mismatch: e {e1.shape[1]} vs {e2.shape[1]}, h {h1.shape[1]} vs {h2.shape[1]}.")
    out = np.empty((e1.shape[0], e2.shape[0]), np.float32)
    E2, H2 = jnp.asarray(e2), jnp.asarray(h2)
    for s in range(0, e1.shape[0], chunk):
        out[s:s + chunk] = np.asarray(_last_layer_gram_block(jnp.asarray(e1[s:s + chunk]),
                                                             jnp.asarray(h1[s:s + chunk]), E2, H2))
    return out


# ----------------------------------------------------------------------------- input checks

def finite_matrix(x: Any, name: str, rows: np.ndarray | None = None) -> np.ndarray:
    """``x`` as a float32 ``(n, D)`` array; raises naming ``name`` if it is not 2-D or has NaN/inf rows.

    With ``rows`` (int indices) only those rows are checked (gathered in small blocks, so a
    sub-pool is validated without copying it); the whole array is still returned.
    """
    a = np.asarray(x, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got shape {a.shape}.")
    # chunked check: a 256 KiB boolean temporary at most (and a 128 KiB gather for a sub-pool)
    m = a.shape[0] if rows is None else rows.size
    step = max(1, 2**18 // max(a.shape[1], 1)) if rows is None else _gather_step(a.shape[1], 4, m)
    bad, top = [np.zeros(0, np.int64)], 0.0
    for s in range(0, m, step):
        block = _gather(a, rows, slice(s, s + step))
        ok = np.isfinite(block)
        bad.append(np.flatnonzero(~np.all(ok, axis=1)) + s)
        if block.size and not bad[-1].size:
            top = max(top, float(np.max(np.abs(block))))
    bad = np.concatenate(bad)
    if bad.size:
        where = bad if rows is None else rows[bad]
        raise ValueError(f"{name} contain NaN or inf in rows {where[:10].tolist()}"
                         f"{' ...' if bad.size > 10 else ''}; fix the model or drop those rows.")
    check_float32_range(top, a.shape[1], name)
    return a


FLOAT32_SAFE_NORM = 1e18
"""Largest row norm the float32 kernels accept: squared norms and sums of similarities stay below 1e38."""

FLOAT32_TINY = 1e-19
"""Smallest non-zero entry magnitude accepted: squares stay normal float32 numbers (> 1.2e-38)."""


def check_float32_range(max_abs: float, width: int, name: str) -> None:
    """Raise when entries of magnitude ``max_abs`` in rows of ``width`` would over- or underflow float32.

    Squared norms and inner products are formed in float32: rows with norms near 1.8e19
    overflow to inf (CRAIG weights then sum to ``k``, herding returns ``0..k-1``), and
    entries below about 1e-19 square to zero (GRAD-MATCH then picks nothing). Selectors are
    invariant to a common scale of the features, so rescaling is the fix.
    """
    bound = max_abs * np.sqrt(max(int(width), 1))
    if bound > FLOAT32_SAFE_NORM:
        raise ValueError(f"{name} are too large for float32 kernels (largest entry {max_abs:.3g}, row norms up "
                         f"to ~{bound:.3g} > {FLOAT32_SAFE_NORM:.0e}); rescale them, e.g. divide by their largest "
                         "norm (the selection does not depend on a common scale).")
    if 0.0 < max_abs < FLOAT32_TINY:
        raise ValueError(f"{name} are too small for float32 kernels (largest entry {max_abs:.3g} < "
                         f"{FLOAT32_TINY:.0e}: their squares underflow); rescale them, e.g. divide by their "
                         "largest norm (the selection does not depend on a common scale).")


def _gather(a: np.ndarray, rows: np.ndarray | None, idx: Any = None) -> np.ndarray:
    """``a[rows][idx]`` without forming ``a[rows]`` (``None`` = all; ``idx`` an index array or slice)."""
    if rows is None:
        return a if idx is None else a[idx]
    return a[rows if idx is None else rows[idx]]


def check_rows(rows: Any, n: int) -> np.ndarray | None:
    """``rows`` as unique in-range int64 indices into a pool of ``n`` (``None`` passes through)."""
    if rows is None:
        return None
    r = np.asarray(rows)
    if r.ndim != 1 or (r.size and not np.issubdtype(r.dtype, np.integer)):
        raise ValueError(f"rows must be a 1-D array of integer indices, got shape {r.shape} dtype {r.dtype}.")
    r = r.astype(np.int64, copy=False)
    if r.size and (r.min() < 0 or r.max() >= n):
        raise ValueError(f"rows must index the pool of {n} examples; got values in [{r.min()}, {r.max()}].")
    if np.unique(r).size != r.size:
        raise ValueError("rows must not repeat an index.")
    return r


def as_factors(factors: Any, name: str = "factors", rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate last-layer factors ``(e (n, C), h (n, d))`` and return them as float32 arrays.

    With ``rows`` only those rows are checked for NaN/inf (see :func:`finite_matrix`).
    """
    if not isinstance(factors, (tuple, list)) or len(factors) != 2:
        raise TypeError(f"{name} must be a pair (e (n, C), h (n, d)) of last-layer factors, "
                        f"got {type(factors).__name__}.")
    e0, h0 = np.asarray(factors[0]), np.asarray(factors[1])
    if e0.ndim == 2 and h0.ndim == 2 and e0.shape[0] != h0.shape[0]:
        raise ValueError(f"{name}: e has {e0.shape[0]} rows but h has {h0.shape[0]}; they must match.")
    rows = check_rows(rows, e0.shape[0]) if e0.ndim == 2 else rows
    e = finite_matrix(e0, f"{name}[0] (e)", rows)
    h = finite_matrix(h0, f"{name}[1] (h)", rows)
    return e, h


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"Unknown metric {metric!r}; choose one of {METRICS}.")
    return metric


def last_layer_grads(e: Any, h: Any) -> np.ndarray:
    """Materialize last-layer gradients ``g_i = vec(e_i ⊗ [h_i, 1])`` as ``(n, C·(d+1))`` float32.

    Row layout is C-major: ``g_i.reshape(C, d + 1)[c] = e_ic · [h_i, 1]`` (the head's
    weight rows followed by the bias in the last column). Only for small problems,
    tests and baselines — the selectors work on the factors directly.
    """
    e, h = as_factors((e, h))
    h1 = np.concatenate([h, np.ones((h.shape[0], 1), np.float32)], axis=1)
    return (e[:, :, None] * h1[:, None, :]).reshape(e.shape[0], -1)


def last_layer_mean_grad(e: Any, h: Any, rows: np.ndarray | None = None) -> np.ndarray:
    """Mean last-layer gradient ``(1/n) Σ_i e_i ⊗ [h_i, 1]`` as a ``(C·(d+1),)`` vector (over ``rows``)."""
    e, h = as_factors((e, h), rows=rows)
    m = e.shape[0] if rows is None else rows.size
    acc = np.zeros((e.shape[1], h.shape[1] + 1))
    step = _row_step(h.shape[1]) if rows is None else _gather_step(h.shape[1], 8, m)  # float64 blocks
    for s in range(0, m, step):
        eb = _gather(e, rows, slice(s, s + step)).astype(np.float64)
        acc[:, :-1] += eb.T @ _gather(h, rows, slice(s, s + step)).astype(np.float64)
        acc[:, -1] += eb.sum(0)
    return (acc / max(m, 1)).reshape(-1)


def _row_step(width: int, itemsize: int = 8) -> int:
    """Rows per block so that a ``rows × width`` block of ``itemsize``-byte floats stays near ``_BLOCK_BYTES``."""
    return max(1, _BLOCK_BYTES // (itemsize * max(width, 1)))


def _gather_step(width: int, itemsize: int = 8, pool: int = 0) -> int:
    """Rows per gathered (fancy-indexed) block: ``rows × width`` floats near 128 KiB, or 1/16 of a
    sub-pool of ``pool`` rows if that is more."""
    return max(1, _GATHER_BYTES // (itemsize * max(width, 1)), pool // _GATHER_SHARE)


def last_layer_dot(e: np.ndarray, h: np.ndarray, v: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """``<g_i, v>`` for every factored gradient ``g_i = e_i ⊗ [h_i, 1]``, as float64 ``(n,)``.

    ``v`` is a gradient-space vector ``(C·(d+1),)`` (layout of :func:`last_layer_grads`)
    or matrix ``(C, d+1)``; costs ``O(n·C·d)`` and no gradient is materialized
    (temporaries: small row blocks). With ``rows``, only those examples, in that order.
    """
    C, d = e.shape[1], h.shape[1]
    V = np.asarray(v, np.float64).reshape(C, d + 1)
    Wt = V[:, :d].T.astype(np.float32)
    m = e.shape[0] if rows is None else rows.size
    out = np.empty(m)
    step = _row_step(C) if rows is None else _gather_step(d, 4, m)
    for s in range(0, m, step):
        sl = slice(s, s + step)
        hv = (_gather(h, rows, sl) @ Wt).astype(np.float64)
        hv += V[:, d]
        out[sl] = np.einsum("nc,nc->n", _gather(e, rows, sl), hv)
    return out


def last_layer_weighted_sum(e: np.ndarray, h: np.ndarray, rows: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``Σ_s w_s e_{rows_s} ⊗ [h_{rows_s}, 1]`` as a float64 ``(C, d + 1)`` matrix (small gathered row blocks)."""
    C, d = e.shape[1], h.shape[1]
    out = np.zeros((C, d + 1))
    rows = np.asarray(rows, np.int64)
    w = np.asarray(w, np.float64)
    step = _gather_step(d)
    for s in range(0, rows.size, step):
        r = rows[s:s + step]
        ew = e[r].astype(np.float64) * w[s:s + step, None]
        out[:, :d] += ew.T @ h[r].astype(np.float64)
        out[:, d] += ew.sum(0)
    return out


def rows_dot(a: np.ndarray, v: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """``a[rows] @ v`` in float64 for a float32 ``a (n, D)``, converting small row blocks at a time
    (no float64 copy of ``a``; a float64 ``a`` is multiplied directly)."""
    v = np.asarray(v, np.float64)
    if rows is None and a.dtype == np.float64:
        return a @ v
    m = a.shape[0] if rows is None else rows.size
    out = np.empty(m)
    step = _row_step(a.shape[1]) if rows is None else _gather_step(a.shape[1], 8, m)
    for s in range(0, m, step):
        out[s:s + step] = _gather(a, rows, slice(s, s + step)).astype(np.float64) @ v
    return out


def weighted_row_sum(a: np.ndarray, rows: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``Σ_s w_s a_{rows_s}`` in float64 ``(D,)`` (small gathered row blocks)."""
    out = np.zeros(a.shape[1])
    rows = np.asarray(rows, np.int64)
    w = np.asarray(w, np.float64)
    step = _gather_step(a.shape[1])
    for s in range(0, rows.size, step):
        out += w[s:s + step] @ a[rows[s:s + step]].astype(np.float64)
    return out


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


def default_chunk(ncols: int) -> int:
    """Rows per block so that a ``rows x ncols`` float32 block stays around 256 KiB (at least 64 rows)."""
    return int(max(64, min(1 << 16, _BLOCK_BYTES // (4 * max(ncols, 1)))))


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
        b = max(_GATHER_ITEMS, rows.size // _GATHER_SHARE)
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
                             (A[r[s:s + _GATHER_ITEMS]] for s in range(0, r.size, _GATHER_ITEMS))] or [np.zeros(0, np.float32)])
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
                             for i in (r[s:s + _GATHER_ITEMS] for s in range(0, r.size, _GATHER_ITEMS))] or [np.zeros(0, np.float32)])
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
           "last_layer_gram", "last_layer_grads", "last_layer_mean_grad", "last_layer_dot", "last_layer_weighted_sum",
           "rows_dot", "weighted_row_sum", "as_factors", "check_rows",
           "as_operator", "default_chunk", "finite_matrix"]
