"""GRAD-MATCH (Killamsetty et al. 2021): weighted subsets whose gradient sum matches a target.

Orthogonal matching pursuit picks examples ``S`` and weights ``w`` to minimize

    ‖Σ_{j∈S} w_j g_j - n·t‖² + λ̃‖w‖²,        w ≥ 0 (``nonneg=True``),

with ``t`` the target gradient (default the full-set mean gradient, so ``n·t = Σ_i g_i``;
a validation-set mean gradient for domain shift) and ``λ̃ = lam · mean_i ‖g_i‖²``. The
weights are on the "examples represented" scale of CRAIG (``Σ w ≈ n`` on a good match).
Each step adds the example most correlated with the residual, ``argmax_j <g_j, r>``, then
re-solves the (non-negative, ridge) least squares over ``S``.

Everything runs in Gram form (:mod:`jaxsubset.solvers.omp`): while they fit in 16 MiB, one Gram
column is cached per pick (``O(n·D)``, or ``O(n·(C+d))`` from last-layer factors); beyond that
the correlations are recomputed each step from the weighted sum ``Σ_{j∈S} w_j g_j`` (``O(n·D)``,
or ``O(n·C·d)`` from factors) — no per-step ``D × |S|`` least squares and no gradient vectors.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from jaxsubset.kernels import as_factors, as_operator, check_rows, last_layer_dot, last_layer_mean_grad, \
    last_layer_weighted_sum, rows_dot, weighted_row_sum
from jaxsubset.checks import as_features
from jaxsubset.selectors.fill import fill_to_budget
from jaxsubset.solvers.omp import GramColumns, MatrixFreeAtoms, omp
from jaxsubset.subset import Subset, check_budget


_COLUMN_CACHE_BYTES = 2**24  # Gram columns cached up to this size (k × n float32), matrix-free beyond


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
                         "jaxsubset.solvers.omp.omp for signed weights.")
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


__all__ = ["gradmatch", "gradmatch_last_layer", "gradmatch_batches", "gradmatch_batches_last_layer"]
