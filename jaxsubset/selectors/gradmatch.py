"""GRAD-MATCH (Killamsetty et al. 2021): weighted subsets whose gradient sum matches a target.

Orthogonal matching pursuit picks examples ``S`` and weights ``w`` to minimize

    ‖Σ_{j∈S} w_j g_j - n·t‖² + λ̃‖w‖²,        w ≥ 0 (``nonneg=True``),

with ``t`` the target gradient (default the full-set mean gradient, so ``n·t = Σ_i g_i``;
a validation-set mean gradient for domain shift) and ``λ̃ = lam · mean_i ‖g_i‖²``. The
weights are on the "examples represented" scale of CRAIG (``Σ w ≈ n`` on a good match).
Each step adds the example most correlated with the residual, ``argmax_j <g_j, r>``, then
re-solves the (non-negative, ridge) least squares over ``S``.

Everything runs in Gram form: ``<g_i, r> = <g_i, n·t> - Σ_{j∈S} w_j <g_i, g_j>``. While
they fit in 16 MiB, one Gram column is cached per pick (``O(n·D)`` to compute, or
``O(n·(C+d))`` from last-layer factors); beyond that the correlations are recomputed each
step from the weighted sum ``Σ_{j∈S} w_j g_j`` (``O(n·D)``, or ``O(n·C·d)`` from factors, no
``O(n·k)`` memory). The least squares is solved on the ``|S| × |S|`` Gram (float32) with a
packed, incrementally extended Cholesky factor inside a warm-started Lawson–Hanson active
set — no per-step ``D × |S|`` least-squares problem and, for last-layer gradients, no
gradient vectors. Memory is ``O(k²)`` (plus ``O(n·k)`` with cached columns).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
from scipy.linalg.blas import dtpsv

from jaxsubset.kernels import as_factors, as_operator, check_rows, last_layer_dot, last_layer_mean_grad, \
    last_layer_weighted_sum, rows_dot, weighted_row_sum
from jaxsubset.selectors._checks import as_features
from jaxsubset.selectors.fill import fill_to_budget
from jaxsubset.subset import Subset, check_budget


_COLUMN_CACHE_BYTES = 2**24  # Gram columns cached up to this size (k × n float32), matrix-free beyond

# ----------------------------------------------------------------------------- least squares on a Gram

class _GramSolver:
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


def nnls_gram(Q: np.ndarray, c: np.ndarray, x0: np.ndarray | None = None, *, solver: _GramSolver | None = None,
              tol: float = 1e-10, max_iter: int | None = None) -> np.ndarray:
    """``argmin_{x ≥ 0} ½ xᵀQx - cᵀx`` for a positive semi-definite ``Q (m, m)`` (Lawson–Hanson).

    Equivalent to non-negative least squares ``min ‖Ax - b‖`` with ``Q = AᵀA``, ``c = Aᵀb``.
    ``x0`` (``≥ 0``) warm-starts the active set.
    """
    m = c.size
    x = np.zeros(m) if x0 is None else np.maximum(np.asarray(x0, np.float64), 0.0)
    P = x > 0
    solver = solver or _GramSolver()
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
    solver = _GramSolver(k)
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


# ----------------------------------------------------------------------------- selectors

def _problem(grads: Any | None, factors: Any | None, target: Any | None, scale: float | None,
             rows: Any = None):
    """Operator (dot metric), correlations with ``b = scale·t``, ``‖b‖²``, squared atom norms, and the
    matrix-free ``(combine, dot)`` pair of :class:`MatrixFreeAtoms` — over the sub-pool ``rows``."""
    if (grads is None) == (factors is None):
        raise ValueError("Pass exactly one of grads (n, D) or factors=(e, h).")
    if factors is not None:
        r = None if rows is None or np.ndim(factors[0]) != 2 else check_rows(rows, np.shape(factors[0])[0])
        e, h = as_factors(factors, rows=r)
        op = as_operator(None, (e, h), metric="dot", rows=r)
        dim = e.shape[1] * (h.shape[1] + 1)
        t = last_layer_mean_grad(e, h, r) if target is None else \
            _as_target(target, dim, (e.shape[1], h.shape[1] + 1))
        b = (op.shape[0] if scale is None else scale) * t
        corr = last_layer_dot(e, h, b, r)
        combine = lambda S, w: last_layer_weighted_sum(e, h, _compose(r, S), w)  # noqa: E731
        dot = lambda v: last_layer_dot(e, h, v, r)  # noqa: E731
    else:
        A = np.asarray(grads, np.float32)
        r = None if rows is None or A.ndim != 2 else check_rows(rows, A.shape[0])
        op = as_operator(A, None, metric="dot", name="grads", rows=r)
        m = op.shape[0]
        t = weighted_row_sum(A, _compose(r, np.arange(m)), np.full(m, 1.0 / max(m, 1))) if target is None \
            else _as_target(target, A.shape[1], None)
        b = (m if scale is None else scale) * t
        corr = rows_dot(A, b, r)
        combine = lambda S, w: weighted_row_sum(A, _compose(r, S), w)  # noqa: E731
        dot = lambda v: rows_dot(A, v, r)  # noqa: E731
    return op, corr, float(b @ b), op.row_sq_norms.astype(np.float64), (combine, dot)


def _compose(rows: np.ndarray | None, idx: np.ndarray) -> np.ndarray:
    return idx if rows is None else rows[idx]


def _atoms(op: Any, pair: tuple, n: int, k: int, matrix_free: bool | None) -> GramColumns | MatrixFreeAtoms:
    """Gram columns while they take at most 16 MiB (or as ``matrix_free`` says), else matrix-free."""
    if matrix_free is None:
        matrix_free = 4 * n * k > _COLUMN_CACHE_BYTES
    if matrix_free:
        def gram(S: np.ndarray, j: int) -> np.ndarray:  # 256 picks per block: no (k, d) gather
            return np.concatenate([op.block(S[s:s + 256], [j])[:, 0] for s in range(0, S.size, 256)])
        return MatrixFreeAtoms(gram, *pair)
    return GramColumns(lambda j: op.rows([j])[0], n, k)


def _as_target(target: Any, dim: int, matrix_shape: tuple[int, int] | None) -> np.ndarray:
    t = np.asarray(target, np.float64)
    if matrix_shape is not None and t.shape == matrix_shape:
        t = t.reshape(-1)
    if t.shape != (dim,):
        want = f"({dim},)" + (f" or {matrix_shape}" if matrix_shape else "")
        raise ValueError(f"target has shape {t.shape}, but the gradients have dimension {dim}; pass a "
                         f"gradient of shape {want}.")
    if not np.all(np.isfinite(t)):
        raise ValueError("target contains NaN or inf.")
    return t


def _check_lam(lam: float) -> float:
    lam = float(lam)
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"lam must be a finite number >= 0, got {lam!r}.")
    return lam


def gradmatch(grads: Any | None, budget: int, *, target: Any | None = None, lam: float = 1e-3,
              nonneg: bool = True, factors: Any | None = None, tol: float = 1e-4,
              matrix_free: bool | None = None, rows: Any = None, fill: bool = True, seed: int = 0) -> Subset:
    """GRAD-MATCH: pick ``budget`` examples and weights matching ``n × target``.

    Args:
      grads: ``(n, D)`` per-example gradients; ``None`` when ``factors`` is given.
      budget: largest number of examples ``k`` (``0 <= k <= n``).
      target: gradient ``(D,)`` to match on the mean scale (default: the mean of
        ``grads``; e.g. a validation-set mean gradient). With ``factors`` it may also be
        a ``(C, d + 1)`` matrix (head weights, bias last).
      lam: ridge on the weights, relative to the mean squared gradient norm.
      nonneg: must be True here (a :class:`Subset` holds non-negative weights); signed
        weights are available from :func:`omp` with ``nonneg=False``.
      factors: last-layer factors ``(e (n, C), h (n, d))`` instead of ``grads``.
      tol: relative residual at which the pursuit stops early.
      matrix_free: recompute the correlations with the residual from the weighted sum of
        the picked gradients each step (``O(n·D)``, or ``O(n·C·d)`` from factors, and no
        ``O(n·k)`` memory) instead of caching one Gram column per pick; ``None`` (default)
        caches while the ``k × n`` float32 columns take at most 16 MiB. Same picks either way
        up to float32 rounding of near-ties.
      rows: int indices of a sub-pool to select from (e.g. one class; :func:`per_class`
        passes them): works on ``grads[rows]`` / the factors' rows without copying them;
        the returned indices are positions in ``rows``.
      fill: when the pursuit stops early (target matched to ``tol``, or nothing
        correlates with the residual), add the remainder uniformly at random from the
        unselected examples with weight 1, as CORDS does (default), so exactly ``budget``
        examples come back; ``False`` returns the pursuit's picks only.
      seed: seed of the fill draw.

    Returns:
      A :class:`Subset` (sorted indices; weights ``≥ 0``, a picked example may get
      weight 0). ``info["stop"]`` says why the pursuit ended, ``info["order"]`` and
      ``info["residual"]`` trace it, ``info["filled"]`` counts the rows added at random
      (with ``fill=False`` there may be fewer than ``budget`` rows and ``filled`` is 0).
    """
    if not nonneg:
        raise ValueError("Subset weights must be non-negative; use nonneg=True, or call "
                         "jaxsubset.selectors.gradmatch.omp for signed weights.")
    lam = _check_lam(lam)
    t0 = time.perf_counter()
    op, corr, bb, sq, pair = _problem(grads, factors, target, None, rows)
    n = op.shape[0]
    k = _check_fill_budget(budget, n, fill)
    ridge = lam * float(sq.mean()) if n else 0.0
    atoms = _atoms(op, pair, n, k, matrix_free)
    res = omp(atoms, corr, bb, k, ridge=ridge, nonneg=True, tol=tol, atom_sq_norms=sq)
    idx, w, filled = res["order"], np.maximum(res["weights"], 0.0), 0
    if fill:
        idx, w, filled = fill_to_budget(idx, w, n, k, seed=seed)
    return _to_subset(res, idx, w, "gradmatch", lam, t0, factored=factors is not None,
                      matrix_free=isinstance(atoms, MatrixFreeAtoms), filled=filled)


def _check_fill_budget(budget: int, n: int, fill: bool) -> int:
    """``check_budget``, with an error that names ``fill`` when the pool is smaller than the budget."""
    if fill and isinstance(budget, (int, np.integer)) and not isinstance(budget, bool) and budget > n:
        raise ValueError(f"budget={int(budget)} is larger than the pool of {n} examples, and fill=True asks for "
                         f"exactly the budget; lower the budget to at most {n}.")
    return check_budget(budget, n)


def _to_subset(res: dict, idx: np.ndarray, w: np.ndarray, method: str, lam: float, t0: float, **extra: Any) -> Subset:
    sort = np.argsort(idx, kind="stable")
    info = dict(method=method, order=res["order"], residual=res["residual"], stop=res["stop"], lam=lam,
                seconds=time.perf_counter() - t0, **extra)
    return Subset(idx[sort], w[sort].astype(np.float32), info)


def gradmatch_last_layer(e: Any, h: Any, budget: int, *, rows: Any = None, **kwargs: Any) -> Subset:
    """:func:`gradmatch` on last-layer factors ``e (n, C)``, ``h (n, d)`` (registry-friendly form)."""
    return gradmatch(None, budget, factors=(e, h), rows=rows, **kwargs)


def gradmatch_batches(grads: Any | None, budget: int, *, batch_size: int, target: Any | None = None,
                      lam: float = 1e-3, factors: Any | None = None, seed: int = 0, tol: float = 1e-4,
                      fill: bool = True) -> Subset:
    """Per-batch GRAD-MATCH: choose whole mini-batches whose weighted gradient sums match the target.

    The pool is shuffled (``seed``) and cut into ``⌈n / batch_size⌉`` mini-batches; each
    batch is one atom, its gradient sum ``Σ_{i∈b} g_i``. OMP picks
    ``⌊budget / batch_size⌋`` batches and non-negative weights ``w_b`` so that
    ``Σ_b w_b Σ_{i∈b} g_i ≈ n·t``; every example of batch ``b`` gets weight ``w_b``.

    Args:
      grads / factors / target / lam / tol: as in :func:`gradmatch`.
      budget: largest number of examples (must allow at least one batch).
      batch_size: examples per mini-batch (the last batch may be smaller).
      seed: seed of the shuffle that forms the batches (and of the fill draw).
      fill: top the chosen batches up to exactly ``budget`` examples with unselected rows
        drawn uniformly at random, weight 1 (as :func:`gradmatch`); ``False``: batches only.

    Returns:
      A :class:`Subset` of the examples of the chosen batches (plus the filled rows);
      ``info["batches"]`` lists each chosen batch's example indices in pick order and
      ``info["filled"]`` counts the filled rows.
    """
    lam = _check_lam(lam)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    t0 = time.perf_counter()
    if (grads is None) == (factors is None):
        raise ValueError("Pass exactly one of grads (n, D) or factors=(e, h).")
    if factors is not None:
        e, h = as_factors(factors)
        n = e.shape[0]
    else:
        A = as_features(grads, name="grads")
        n = A.shape[0]
    _check_fill_budget(budget, n, fill)
    kb = int(budget) // int(batch_size)
    if kb == 0 and budget > 0:
        raise ValueError(f"budget={budget} is smaller than one batch of {batch_size}; lower batch_size or "
                         "raise the budget.")
    perm = np.random.default_rng(seed).permutation(n)
    starts = np.arange(0, n, batch_size)
    batches = [perm[s:s + batch_size] for s in starts]
    if factors is not None:
        h1 = np.concatenate([h, np.ones((n, 1), np.float32)], axis=1)
        atoms = np.stack([(e[b].T @ h1[b]).reshape(-1) for b in batches]) if n else np.zeros((0, 0), np.float32)
        t = last_layer_mean_grad(e, h) if target is None else _as_target(target, atoms.shape[1],
                                                                         (e.shape[1], h.shape[1] + 1))
    else:
        atoms = np.add.reduceat(A[perm], starts, axis=0) if n else np.zeros((0, A.shape[1]), np.float32)
        t = A.mean(0, dtype=np.float64) if target is None else _as_target(target, A.shape[1], None)
    op, corr, bb, sq, pair = _problem(atoms, None, t, float(n))
    ridge = lam * float(sq.mean()) if sq.size else 0.0
    kb = min(kb, len(batches))
    res = omp(_atoms(op, pair, len(batches), kb, None), corr, bb, kb, ridge=ridge, nonneg=True, tol=tol,
              atom_sq_norms=sq)
    chosen = [batches[j] for j in res["order"]]
    idx = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
    w = np.concatenate([np.full(b.size, max(wb, 0.0)) for b, wb in zip(chosen, res["weights"])]) \
        if chosen else np.zeros(0)
    filled = 0
    if fill:
        idx, w, filled = fill_to_budget(idx, w, n, int(budget), seed=seed + 1)
    return _to_subset(res, idx, w, "gradmatch_batches", lam, t0, factored=factors is not None,
                      batch_size=int(batch_size), batches=chosen, filled=filled)


def gradmatch_batches_last_layer(e: Any, h: Any, budget: int, *, batch_size: int = 32, seed: int = 0,
                                 **kwargs: Any) -> Subset:
    """:func:`gradmatch_batches` on last-layer factors ``e (n, C)``, ``h (n, d)`` (registry-friendly form).

    A pool smaller than one batch (e.g. a tiny class) uses batches of ``budget`` rows instead.
    """
    size = max(1, min(int(batch_size), int(budget))) if budget else int(batch_size)
    return gradmatch_batches(None, budget, batch_size=size, factors=(e, h), seed=seed, **kwargs)


__all__ = ["gradmatch", "gradmatch_last_layer", "gradmatch_batches", "gradmatch_batches_last_layer", "omp", "nnls_gram", "GramColumns",
           "MatrixFreeAtoms"]
