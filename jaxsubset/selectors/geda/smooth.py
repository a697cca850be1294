"""GEDA with a kernel-smoothed ECDF (the study's "future work": a smoothed objective).

The empirical CDF ``F̂(t) = mean_i 1{x_i <= t}`` is replaced by the Gaussian-smoothed
``F̃(t) = mean_i Φ((t − x_i) / h)``. The objective keeps the study's composite
quadrature on ``N`` equal intervals between ``min`` and ``max`` (interior nodes only):

    minimize  Σ_j w_j |F̃_D(t_j) − (1/k) Σ_i δ_i Φ((t_j − x_i)/h)|,   Σ_i δ_i = k,  δ_i ∈ {0, 1}.

Unlike the plain ECDF, every example now contributes a *different* fraction to every
node, so the counts-per-bin reduction of :func:`jaxsubset.selectors.geda` no longer
applies: this is the per-item MILP with real coefficients, solved by an OR-Tools MIP
backend (CP-SAT needs integer coefficients). Its size grows with ``n·N``: use it for
per-class pools of up to a few thousand examples.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from scipy.special import ndtr

from jaxsubset.selectors.geda import ecdf
from jaxsubset.selectors.geda.selector import MIP_BACKENDS, mip_available, available_solvers
from jaxsubset.subset import Subset, check_budget


def silverman_bandwidth(x: np.ndarray) -> float:
    """Silverman's rule ``0.9 · min(σ, IQR/1.34) · n^(−1/5)`` (0 for a constant sample)."""
    x = np.asarray(x, np.float64)
    if x.size < 2:
        return 0.0
    iqr = np.subtract(*np.percentile(x, [75, 25]))
    spread = min(np.std(x, ddof=1), iqr / 1.34) or np.std(x, ddof=1)
    return float(0.9 * spread * x.size ** (-0.2))


def smoothed_terms(norms: Any, num_nodes: int, bandwidth: float | None, quadrature: str = "trapezoid"):
    """``(C (n, N−1) = Φ((t_j − x_i)/h), target (N−1,) = mean_i C_ij, weights (N−1,), h)``."""
    x = ecdf.as_norms(norms)
    ecdf.check_nodes(num_nodes, quadrature)
    if num_nodes is None:
        raise ValueError("geda_smoothed needs a finite num_nodes (the smoothed CDF has no exact W1 form here).")
    h = silverman_bandwidth(x) if bandwidth is None else float(bandwidth)
    if not np.isfinite(h) or h < 0:
        raise ValueError(f"bandwidth must be a finite number >= 0, got {bandwidth!r}.")
    lo, hi = float(x.min()), float(x.max())
    nodes, step = ecdf.interior_nodes(lo, hi, num_nodes)
    if h == 0 or hi == lo:
        C = (x[:, None] <= nodes[None, :]).astype(np.float64)
    else:
        C = ndtr((nodes[None, :] - x[:, None]) / h)
    j = np.arange(1, num_nodes)
    w = np.full(num_nodes - 1, step) if quadrature == "trapezoid" else np.where(j % 2, 4.0, 2.0) * step / 3.0
    return C, C.mean(axis=0), w, h


def smoothed_objective(norms: Any, indices: Any, *, num_nodes: int = 20, bandwidth: float | None = None,
                       quadrature: str = "trapezoid") -> float:
    """The smoothed GEDA objective of a subset (for tests and comparisons)."""
    C, target, w, _ = smoothed_terms(norms, num_nodes, bandwidth, quadrature)
    idx = np.asarray(indices, np.int64)
    if idx.size == 0:
        raise ValueError("the subset is empty.")
    return float(np.sum(w * np.abs(target - C[idx].mean(axis=0))))


def geda_smoothed(norms: Any, budget: int, *, num_nodes: int = 20, bandwidth: float | None = None,
                  quadrature: str = "trapezoid", solver: str = "cbc", time_limit_s: float | None = None) -> Subset:
    """GEDA on a Gaussian-smoothed ECDF, solved exactly as a per-item MILP.

    Args:
      norms: ``(n,)`` finite, non-negative gradient norms.
      budget: examples to keep.
      num_nodes: quadrature intervals ``N`` (interior nodes ``N − 1``).
      bandwidth: kernel width ``h`` in norm units; ``None`` = Silverman's rule; 0 = the
        plain ECDF (then this equals :func:`geda` with ``formulation="per_item"``).
      quadrature: ``"trapezoid"`` or ``"simpson"``.
      solver: a ``pywraplp`` MIP backend (``"cbc"``, ``"scip"``, ``"highs"``, ...).
      time_limit_s: solver time limit; a limit with no feasible point raises.

    Returns:
      A :class:`Subset` with ``info``: ``status``, ``objective`` (recomputed from the
      indices), ``bound``, ``solve_time_s``, ``bandwidth``, ``num_nodes``, ``solver``.
    """
    from ortools.linear_solver import pywraplp

    t0 = time.perf_counter()
    x = ecdf.as_norms(norms)
    budget = check_budget(budget, x.size)
    name = str(solver).lower()
    if name not in MIP_BACKENDS or not mip_available(name):
        mip = [s for s in available_solvers() if s not in ("exact", "cp-sat")]
        raise ValueError(f"geda_smoothed needs a MIP backend (real coefficients); choose one of {mip}.")
    if time_limit_s is not None and not (np.isfinite(time_limit_s) and time_limit_s > 0):
        raise ValueError(f"time_limit_s must be a positive number of seconds or None, got {time_limit_s!r}.")
    C, target, w, h = smoothed_terms(x, num_nodes, bandwidth, quadrature)
    meta = dict(method="geda_smoothed", solver=name, num_nodes=num_nodes, bandwidth=h, quadrature=quadrature)
    if budget == 0:
        return Subset.unweighted(np.zeros(0, np.int64), status="TRIVIAL", objective=None, bound=None,
                                 solve_time_s=0.0, **meta)
    mip = pywraplp.Solver.CreateSolver(MIP_BACKENDS[name][0])
    delta = [mip.BoolVar(f"d{i}") for i in range(x.size)]
    mip.Add(mip.Sum(delta) == budget)
    inf = mip.infinity()
    obj = mip.Objective()
    # Scale by k so that the constraint rows hold C_ij and k·target_j: z_j >= ±(k·F̃_D − Σ δ_i C_ij).
    for j in range(target.size):
        z = mip.NumVar(0, inf, f"z{j}")
        obj.SetCoefficient(z, float(w[j]) / budget)
        up = mip.Constraint(float(budget * target[j]), inf)
        lo = mip.Constraint(-float(budget * target[j]), inf)
        up.SetCoefficient(z, 1.0)
        lo.SetCoefficient(z, 1.0)
        for i in np.flatnonzero(C[:, j] > 1e-12):
            up.SetCoefficient(delta[i], float(C[i, j]))
            lo.SetCoefficient(delta[i], -float(C[i, j]))
    obj.SetMinimization()
    params = pywraplp.MPSolverParameters()
    params.SetDoubleParam(params.RELATIVE_MIP_GAP, 0.0)
    params.SetDoubleParam(params.PRIMAL_TOLERANCE, 1e-9)
    if time_limit_s is not None:
        mip.SetTimeLimit(max(1, int(round(1000 * time_limit_s))))
    code = mip.Solve(params)
    status = {pywraplp.Solver.OPTIMAL: "OPTIMAL", pywraplp.Solver.FEASIBLE: "FEASIBLE"}.get(code)
    if status is None:
        raise RuntimeError(f"geda_smoothed: the {name} solver found no feasible selection (code {code})"
                           + (f" within {time_limit_s} s; raise time_limit_s" if time_limit_s else "") + ".")
    chosen = np.flatnonzero([v.solution_value() > 0.5 for v in delta])
    if chosen.size != budget:
        raise RuntimeError(f"geda_smoothed: solver returned {chosen.size} items for a budget of {budget}.")
    value = float(np.sum(w * np.abs(target - C[chosen].mean(axis=0))))
    bound = float(obj.BestBound()) if status == "FEASIBLE" else value
    return Subset.unweighted(chosen, status=status, objective=value, bound=min(bound, value),
                             solve_time_s=mip.wall_time() / 1000.0, total_time_s=time.perf_counter() - t0, **meta)
