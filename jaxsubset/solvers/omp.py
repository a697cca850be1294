"""Orthogonal matching pursuit and non-negative least squares in Gram form (GRAD-MATCH's solver).

:func:`omp` sees the atoms only through inner products: ``<a_i, b>`` for every atom and the target
``b``, and Gram columns ``<a_i, a_j>`` (cached per pick, :class:`GramColumns`) or correlations
with a weighted atom sum recomputed each step (:class:`MatrixFreeAtoms`, no ``O(n·k)`` memory).
Each step adds the atom most correlated with the residual and re-solves the (non-negative, ridge)
least squares on the ``|S| × |S|`` Gram with a packed, incrementally extended Cholesky factor
(:class:`GramSolver`) inside a warm-started Lawson–Hanson active set (:func:`nnls_gram`).
Memory is ``O(k²)`` (plus ``O(n·k)`` with cached columns).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from scipy.linalg.blas import dtpsv

from jaxsubset.kernels import rows_dot

# ----------------------------------------------------------------------------- least squares on a Gram

class GramSolver:
    """Solves ``Q[P, P] z = c[P]`` for a changing index set ``P`` with one packed Cholesky factor.

    Row ``i`` of the factor ``L`` depends only on ``P[:i + 1]``, so the rows of the longest
    common prefix with the previous ``P`` are kept and only the rest are recomputed, one
    triangular solve each: appending an index (every OMP step) costs ``O(m²)`` and dropping
    one (a Lawson–Hanson step) recomputes the rows after it. ``L``'s rows are stored packed
    (``m(m+1)/2`` float64, i.e. ``Lᵀ`` in BLAS's upper packed layout) in one buffer, so
    growing ``P`` never copies the factor.
    """

    def __init__(self, capacity: int = 0) -> None:
        self.ap = np.zeros(max(capacity, 1) * (max(capacity, 1) + 1) // 2)
        self.idx = np.zeros(0, np.int64)

    def solve(self, Q: np.ndarray, c: np.ndarray, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, np.int64)
        if not self._factor(Q, idx):  # singular: minimum-norm least squares
            return np.linalg.lstsq(Q[np.ix_(idx, idx)].astype(np.float64), c[idx], rcond=None)[0]
        m = idx.size
        y = dtpsv(m, self.ap, np.asarray(c[idx], np.float64), trans=1)  # L y = c  (L = Uᵀ)
        return dtpsv(m, self.ap, y, trans=0)                              # Lᵀ z = y

    def _factor(self, Q: np.ndarray, idx: np.ndarray) -> bool:
        m = idx.size
        if self.ap.size < m * (m + 1) // 2:
            grown = np.zeros(2 * m * (2 * m + 1) // 2)
            grown[:self.ap.size] = self.ap
            self.ap = grown
        pre = min(self.idx.size, m)
        differ = np.flatnonzero(self.idx[:pre] != idx[:pre])
        start = int(differ[0]) if differ.size else pre
        for i in range(start, m):
            j = idx[i]
            l = dtpsv(i, self.ap, np.asarray(Q[idx[:i], j], np.float64), trans=1) if i else np.zeros(0)
            qjj = float(Q[j, j])
            d2 = qjj - float(l @ l)
            if not d2 > 1e-12 * max(qjj, 1e-300):
                self.idx = idx[:i].copy()
                return False
            off = i * (i + 1) // 2
            self.ap[off:off + i] = l
            self.ap[off + i] = np.sqrt(d2)
        self.idx = idx.copy()
        return True


def nnls_gram(Q: np.ndarray, c: np.ndarray, x0: np.ndarray | None = None, *, solver: GramSolver | None = None,
              tol: float = 1e-10, max_iter: int | None = None) -> np.ndarray:
    """``argmin_{x ≥ 0} ½ xᵀQx - cᵀx`` for a positive semi-definite ``Q (m, m)`` (Lawson–Hanson).

    Equivalent to non-negative least squares ``min ‖Ax - b‖`` with ``Q = AᵀA``, ``c = Aᵀb``.
    ``x0`` (``≥ 0``) warm-starts the active set.
    """
    m = c.size
    x = np.zeros(m) if x0 is None else np.maximum(np.asarray(x0, np.float64), 0.0)
    P = x > 0
    solver = solver or GramSolver()
    max_iter = 3 * m + 10 if max_iter is None else max_iter
    scale = max(float(np.abs(c).max(initial=0.0)), 1e-300)

    def on_passive(x: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        for _ in range(m + 1):
            idx = np.flatnonzero(P)
            if idx.size == 0:
                return np.zeros(m), P
            z = np.zeros(m)
            z[idx] = solver.solve(Q, c, idx)
            neg = P & (z <= 0)
            if not neg.any():
                return z, P
            alpha = np.min(x[neg] / (x[neg] - z[neg]))
            x = x + alpha * (z - x)
            P = P & (x > 1e-15 * max(x.max(initial=0.0), 1e-300))
            x[~P] = 0.0
        return x, P

    for _ in range(max_iter + 1):
        if P.any():
            x, P = on_passive(x, P)
        grad = c - rows_dot(Q, x)
        cand = ~P & (grad > tol * scale)
        if not cand.any():
            break
        P = P.copy()
        P[int(np.argmax(np.where(cand, grad, -np.inf)))] = True
    return x


# ----------------------------------------------------------------------------- orthogonal matching pursuit

class GramColumns:
    """Atoms seen through their Gram columns; keeps one ``(n,)`` float32 column per pick.

    Memory ``O(n·k)``; refitting the correlations after step ``t`` costs ``O(n·t)``.
    ``gram_column(j)`` returns the ``(n,)`` inner products ``<a_i, a_j>``.
    """

    def __init__(self, gram_column: Callable[[int], np.ndarray], n: int, k: int):
        self._column = gram_column
        self._cols = np.empty((k, n), np.float32)
        self._t = 0

    def add(self, picks: np.ndarray) -> np.ndarray:
        """Append the last of ``picks`` (the picks so far); return ``<a_s, a_j>`` for every pick ``s``."""
        j, t = int(picks[-1]), self._t
        self._cols[t] = self._column(j)
        self._t += 1
        return 0.5 * (self._cols[:t + 1, j].astype(np.float64) + self._cols[t, picks])  # symmetrized

    def fitted(self, picks: np.ndarray, w: np.ndarray) -> np.ndarray:
        """``(n,)`` float64 ``<a_i, Σ_s w_s a_s>`` over the picks."""
        return (w.astype(np.float32) @ self._cols[:self._t]).astype(np.float64)


class MatrixFreeAtoms:
    """Atoms reached through an operator and a weighted sum, without storing Gram columns.

    ``gram(picks, j)`` gives ``<a_s, a_j>`` for the picks; the correlations with the fit
    come from the weighted atom sum ``v = Σ_s w_s a_s`` (``combine``) and one pass over
    the pool (``dot(v) = (<a_i, v>)_i``), ``O(n·D)`` per refit (``O(n·C·d)`` for
    last-layer factors) and ``O(D)`` memory.
    """

    def __init__(self, gram: Callable[[np.ndarray, int], np.ndarray],
                 combine: Callable[[np.ndarray, np.ndarray], np.ndarray], dot: Callable[[np.ndarray], np.ndarray]):
        self._gram, self._combine, self._dot = gram, combine, dot

    def add(self, picks: np.ndarray) -> np.ndarray:
        return np.asarray(self._gram(picks, int(picks[-1])), np.float64)

    def fitted(self, picks: np.ndarray, w: np.ndarray) -> np.ndarray:
        return self._dot(self._combine(picks, w))


def omp(atoms: Any, corr: np.ndarray, target_sq: float, budget: int, *, ridge: float = 0.0,
        nonneg: bool = True, tol: float = 1e-4, atom_sq_norms: np.ndarray | None = None) -> dict:
    """Orthogonal matching pursuit in Gram form.

    Args:
      atoms: a :class:`GramColumns` or :class:`MatrixFreeAtoms`, or a function
        ``j -> (n,)`` returning the inner products ``<a_i, a_j>`` of every atom with atom
        ``j`` (wrapped in :class:`GramColumns`).
      corr: ``(n,)`` inner products ``<a_i, b>`` of every atom with the target ``b``.
      target_sq: ``‖b‖²``.
      budget: largest number of atoms ``k``.
      ridge: ``λ̃ ≥ 0`` added to the Gram diagonal.
      nonneg: non-negative weights (pick by largest positive correlation) or free weights
        (pick by largest absolute correlation).
      tol: stop once the residual norm is ``≤ tol·‖b‖``, or no atom's normalized correlation
        with the residual exceeds it.
      atom_sq_norms: ``(n,)`` ``‖a_i‖²`` (for the stopping test; computed from nothing else).

    Returns:
      dict with ``order`` (int64 picks), ``weights`` (float64, aligned with ``order``),
      ``residual`` (relative residual norm after each pick) and ``stop`` (reason).
      Memory is ``O(k²)`` for the picks' Gram (float32) and its Cholesky factor
      (float64), plus ``O(n·k)`` with :class:`GramColumns`.
    """
    c = np.asarray(corr, np.float64)
    n = c.size
    k = min(int(budget), n)
    if callable(atoms) and not isinstance(atoms, (GramColumns, MatrixFreeAtoms)):
        atoms = GramColumns(atoms, n, k)
    bnorm = float(np.sqrt(max(target_sq, 0.0)))
    norms = np.sqrt(np.maximum(np.asarray(atom_sq_norms, np.float64), 0.0)) if atom_sq_norms is not None \
        else np.ones(n)
    inv_norms = np.divide(1.0, norms, out=np.zeros(n), where=norms > 0)
    Q = np.zeros((k, k), np.float32)  # Gram of the picks (+ ridge), grown one row per step
    order = np.zeros(k, np.int64)
    chosen = np.zeros(n, bool)
    w = np.zeros(0)
    p = c.copy()
    residuals: list[float] = []
    solver = GramSolver(k)
    stop = "budget"
    t = -1
    if bnorm == 0.0:
        return dict(order=np.zeros(0, np.int64), weights=np.zeros(0), residual=np.zeros(0), stop="zero target")
    for t in range(k):
        score = (p if nonneg else np.abs(p)) * inv_norms
        score[chosen] = -np.inf
        j = int(np.argmax(score))
        if not score[j] > tol * bnorm:
            stop = "no example correlates with the residual"
            t -= 1
            break
        order[t] = j
        chosen[j] = True
        S = order[:t + 1]
        q = atoms.add(S)
        Q[t, :t + 1] = q
        Q[:t + 1, t] = q
        Q[t, t] += ridge
        Qt = Q[:t + 1, :t + 1]
        cS = c[S]
        if nonneg:
            w = nnls_gram(Qt, cS, np.append(w, 0.0), solver=solver)
        else:
            w = solver.solve(Qt, cS, np.arange(t + 1))
        p = c - atoms.fitted(S, w)
        res2 = target_sq - 2.0 * (w @ cS) + w @ rows_dot(Qt, w) - ridge * (w @ w)
        residuals.append(float(np.sqrt(max(res2, 0.0))) / bnorm)
        if residuals[-1] <= tol:
            stop = "matched"
            break
    return dict(order=order[:t + 1].copy(), weights=np.asarray(w, np.float64),
                residual=np.asarray(residuals), stop=stop)


__all__ = ["omp", "nnls_gram", "GramSolver", "GramColumns", "MatrixFreeAtoms"]
