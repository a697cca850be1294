"""GEDA: keep the examples whose gradient-norm ECDF best matches the whole pool's, via a MILP.

The GEDA study selects, inside each class, ``k`` examples minimizing
``integral |F_D(t) - F_X(t)| dt`` (empirical CDFs of all norms ``D`` and of the chosen
``X``), discretized by the trapezoidal rule on ``N`` equal intervals of ``[min D, max D]``,
and solves the MILP

    (P)  minimize sum_j Z_j   s.t.  +-(mean_i c_ij - (1/k) sum_i delta_i c_ij) <= Z_j,
         sum_i delta_i = k,  delta_i in {0, 1},  c_ij = 1{x_i <= t_j},

over the ``N - 1`` interior nodes ``t_j``. This module builds (P) for OR-Tools in two
formulations:

* ``"binned"`` (default): only the number of chosen items between consecutive nodes
  enters (P), so one integer count per bin (bounded by the bin size) replaces the ``n``
  binaries. Exact, and the model has ``O(N)`` variables whatever ``n`` is. Which items
  are taken inside a bin is then decided by ``rule`` (see
  :func:`jaxsubset.selectors.geda.ecdf.pick_in_bins`).
* ``"per_item"``: (P) verbatim, one binary per example (the study's model); the solver
  picks the items.

Both are scaled to integers: with ``g = gcd(n, k)``, ``n' = n / g`` and ``k' = k / g``,
``|a_j / n - S_j / k| = g |a_j k' - S_j n'| / (n k)`` and the quadrature weights are
integer multiples of one unit, so the model's objective is an exact integer (CP-SAT
needs this; the MIP backends then distinguish solutions by at least 1, far above their
tolerances). The reported ``objective`` is always recomputed exactly from the selection.
``solver="exact"`` uses the closed-form optimum of :func:`ecdf.exact_counts` instead
of a solver (see :mod:`jaxsubset.selectors.geda.ecdf` for the proof).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from jaxsubset.selectors.geda import ecdf
from jaxsubset.subset import Subset, check_budget

FORMULATIONS = ("binned", "per_item")
AUTO_EXACT_NODES = 64
"""With ``solver="auto"`` and the binned formulation, more nodes than this use the closed form."""
MAX_SOLVER_NODES = 1000
"""More nodes than this need ``time_limit_s`` with a MILP solver (else a ``ValueError``)."""
# Our name -> pywraplp's CreateSolver id and MPSolver problem type (None: probe by creating).
MIP_BACKENDS = {
    "cbc": ("CBC", "CBC_MIXED_INTEGER_PROGRAMMING"),
    "scip": ("SCIP", "SCIP_MIXED_INTEGER_PROGRAMMING"),
    "highs": ("HIGHS", None),
    "gurobi": ("GUROBI", "GUROBI_MIXED_INTEGER_PROGRAMMING"),
    "cplex": ("CPLEX", "CPLEX_MIXED_INTEGER_PROGRAMMING"),
    "xpress": ("XPRESS", "XPRESS_MIXED_INTEGER_PROGRAMMING"),
    "glpk": ("GLPK", "GLPK_MIXED_INTEGER_PROGRAMMING"),
}


def mip_available(name: str) -> bool:
    from ortools.linear_solver import pywraplp

    create_id, problem_type = MIP_BACKENDS[name]
    if problem_type is not None:
        return bool(pywraplp.Solver.SupportsProblemType(getattr(pywraplp.Solver, problem_type)))
    return pywraplp.Solver.CreateSolver(create_id) is not None


def available_solvers() -> tuple[str, ...]:
    """Solver names :func:`geda` accepts with this OR-Tools build (``"exact"`` needs none)."""
    return ("exact", "cp-sat") + tuple(name for name in MIP_BACKENDS if mip_available(name))


def _canonical_solver(solver: str, num_nodes: int | None) -> str:
    if not isinstance(solver, str):
        raise TypeError(f"solver must be a string, got {solver!r}.")
    name = solver.strip().lower().replace("_", "-")
    name = {"cpsat": "cp-sat", "sat": "cp-sat"}.get(name, name)
    if name == "auto":
        return "exact" if num_nodes is None else "cp-sat"
    if name in ("exact", "cp-sat") or (name in MIP_BACKENDS and mip_available(name)):
        return name
    raise ValueError(f"Unknown or unavailable solver {solver!r}; this OR-Tools build offers "
                     f"{list(available_solvers())} (or 'auto').")


def geda(norms: Any, budget: int, *, num_nodes: int | None = 5, formulation: str = "binned",
         solver: str = "auto", time_limit_s: float | None = None, rule: str = "evenly_spaced",
         quadrature: str = "trapezoid", hull_cuts: bool = True, num_workers: int = 1,
         seed: int = 0) -> Subset:
    """Select ``budget`` examples whose norm ECDF best matches the ECDF of all ``norms``.

    Args:
      norms: float array ``(n,)`` of finite, non-negative per-example gradient norms.
      budget: number of examples to keep, ``0 <= budget <= n``.
      num_nodes: number ``N`` of equal quadrature intervals on ``[min, max]`` (the study
        uses 5); ``None`` minimizes the exact L1 distance between the two ECDFs (the
        1-Wasserstein distance), with one bin per distinct norm.
      formulation: ``"binned"`` (count per bin, default) or ``"per_item"`` (the study's
        model verbatim, one binary per example; slow beyond tens of thousands).
      solver: ``"auto"`` (``"cp-sat"``, or ``"exact"`` when ``num_nodes`` is None or, for the
        binned formulation, above ``AUTO_EXACT_NODES`` = 64: same optimum, no solver),
        ``"cp-sat"``, a MIP backend of ``pywraplp`` (``"cbc"``, ``"scip"``, ``"highs"``, ...
        as built; see :func:`available_solvers`), or ``"exact"`` (closed form, no solver).
      time_limit_s: wall-clock limit for the solver, None for none. A limit reached with
        a feasible but unproven solution returns it with ``info["status"] == "FEASIBLE"``;
        one reached with none raises ``RuntimeError``.
      rule: which items to take inside a bin for the binned formulations (every rule
        keeps the optimal per-bin counts, so the objective never depends on it):
        ``"evenly_spaced"`` (default: evenly spaced ranks by norm, ties by lower index;
        this makes ``geda`` nearly the same subset as the ``evenly_spaced`` selector, which
        is itself GEDA-optimal), ``"random"`` (seeded stratified random draw inside every
        bin), ``"solver"`` (the highest row indices of every bin, i.e. data order: what a
        MIP solver picks on the study's per-item model, deterministic), ``"lowest"`` or
        ``"highest"`` (smallest / largest norms). Ignored by ``"per_item"``, where the
        solver itself picks the items.
      quadrature: ``"trapezoid"`` (the study) or ``"simpson"`` (even ``num_nodes``).
      hull_cuts: add to the binned model, for every node, the valid inequality
        ``Z_j >= r_j + (n' - 2 r_j)(S_j - q_j)`` (with ``a_j k' = q_j n' + r_j``): the chord
        of ``|a_j k' - n' S|`` between the integers ``q_j`` and ``q_j + 1``. It keeps the
        same optimum and makes the LP relaxation integral, so branch and bound closes at
        the root (without it MIP backends branch for seconds at ``N = 50``).
      num_workers: CP-SAT search workers (1 keeps it deterministic).
      seed: seed of the ``"random"`` rule.

    Returns:
      A :class:`Subset` with sorted indices ``(budget,)``, unit weights and ``info``:
      ``status`` (``"OPTIMAL"`` / ``"FEASIBLE"``), ``objective`` (the quadrature of
      ``|F_D - F_X|`` recomputed exactly from the selection, in norm units), ``bound``
      (the solver's lower bound on it), ``solve_time_s`` (the solver's own time),
      ``total_time_s``, ``solver``, ``formulation``, ``num_nodes``, ``quadrature``, ``rule``.
    """
    t0 = time.perf_counter()
    x = ecdf.as_norms(norms)
    budget = check_budget(budget, x.size)
    ecdf.check_nodes(num_nodes, quadrature)
    if formulation not in FORMULATIONS:
        raise ValueError(f"Unknown formulation {formulation!r}; choose one of {list(FORMULATIONS)}.")
    if rule not in ecdf.RULES:
        raise ValueError(f"Unknown within-bin rule {rule!r}; choose one of {list(ecdf.RULES)}.")
    if time_limit_s is not None and not (np.isfinite(time_limit_s) and time_limit_s > 0):
        raise ValueError(f"time_limit_s must be a positive number of seconds or None, got {time_limit_s!r}.")
    if int(num_workers) < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}.")
    name = _canonical_solver(solver, num_nodes)
    if name != "exact" and num_nodes is not None and num_nodes > AUTO_EXACT_NODES:
        if formulation == "binned" and isinstance(solver, str) and solver.strip().lower() == "auto":
            name = "exact"  # the closed form is the binned MILP's optimum; CP-SAT slows down with the nodes
        elif num_nodes > MAX_SOLVER_NODES and time_limit_s is None:
            raise ValueError(f"num_nodes={num_nodes} with solver {name!r} and no time limit can run for minutes "
                             f"(1 000 nodes: ~6 s with CP-SAT); use solver='exact' (closed-form optimum of the "
                             f"binned formulation), num_nodes <= {MAX_SOLVER_NODES}, or set time_limit_s.")
    if name == "cp-sat" and num_nodes is None:
        raise ValueError("CP-SAT needs integer objective weights, but num_nodes=None weighs by the gaps "
                         "between distinct norms; use solver='exact' (or 'auto') or a MIP backend.")
    if name == "exact" and formulation != "binned":
        raise ValueError("solver='exact' solves the binned formulation; use formulation='binned'.")
    hull_cuts = bool(hull_cuts) and formulation == "binned"
    meta = dict(method="geda", solver=name, formulation=formulation, num_nodes=num_nodes, hull_cuts=hull_cuts,
                quadrature=quadrature, rule="solver" if formulation == "per_item" else rule)
    if budget == 0:
        return Subset.unweighted(np.zeros(0, np.int64), status="TRIVIAL", objective=None, bound=None,
                                 solve_time_s=0.0, total_time_s=time.perf_counter() - t0, **meta)
    problem = ecdf.build(x, num_nodes, quadrature)
    if name == "exact":
        ts = time.perf_counter()
        counts = ecdf.exact_counts(problem, budget)
        solve_time = time.perf_counter() - ts
        status, chosen, bound = "OPTIMAL", None, None
    elif name == "cp-sat":
        status, counts, chosen, scaled_obj, scaled_bound, solve_time = _solve_cpsat(
            problem, budget, formulation, time_limit_s, int(num_workers), bool(hull_cuts))
    else:
        status, counts, chosen, scaled_obj, scaled_bound, solve_time = _solve_mip(
            problem, budget, formulation, name, time_limit_s, bool(hull_cuts))
    if counts.sum() != budget or np.any(counts < 0) or np.any(counts > problem.sizes):
        raise RuntimeError(f"GEDA: solver {name!r} returned an infeasible selection (counts {counts.tolist()[:20]}); "
                           "try another solver.")
    obj = ecdf.objective(problem, counts, budget)
    extra = {}
    if name != "exact":
        factor = _scaling(problem, budget)[3]
        bound = factor * scaled_bound
        if status == "OPTIMAL" and abs(factor * scaled_obj - obj) > 1e-7 * max(abs(obj), factor):
            # The solver's value disagrees with the exact recomputation (tolerances): do not claim optimality.
            status, extra = "FEASIBLE", {"note": f"solver objective {factor * scaled_obj!r} != exact {obj!r}"}
    else:
        bound = obj
    if chosen is None:
        chosen = ecdf.pick_in_bins(problem, counts, rule, seed)
    return Subset.unweighted(chosen, status=status, objective=obj, bound=float(min(bound, obj)),
                             solve_time_s=float(solve_time), total_time_s=time.perf_counter() - t0,
                             **meta, **extra)


def _scaling(problem: ecdf.BinnedProblem, budget: int) -> tuple[int, int, np.ndarray, float]:
    """``(n', k', integer-or-relative weights, factor)``: objective = factor * model objective."""
    n, k = problem.n, int(budget)
    g = math.gcd(n, k)
    if problem.int_weights is not None:
        return n // g, k // g, problem.int_weights, problem.unit * g / (n * k)
    w_max = float(problem.weights.max()) if problem.weights.size else 1.0
    w_max = w_max if w_max > 0 else 1.0
    return n // g, k // g, problem.weights / w_max, w_max * g / (n * k)


def _solve_cpsat(problem: ecdf.BinnedProblem, budget: int, formulation: str,
                 time_limit_s: float | None, num_workers: int, hull_cuts: bool):
    from ortools.sat.python import cp_model

    n_s, k_s, w, _ = _scaling(problem, budget)
    a = problem.prefix
    z_max = max(n_s * budget, int(a.max() if a.size else 0) * k_s)
    if z_max * max(1, int(np.sum(w))) >= 2**62:
        raise ValueError("This GEDA instance's integer objective overflows CP-SAT's int64; "
                         "use solver='exact' or a MIP backend.")
    model = cp_model.CpModel()
    prefixes, bins = _prefix_exprs(model, problem, budget, formulation, cp_model)
    z = [model.new_int_var(0, z_max, f"z{j}") for j in range(a.size)]
    for j, s_j in enumerate(prefixes):
        e = int(a[j]) * k_s - n_s * s_j
        model.add(z[j] >= e)
        model.add(z[j] >= -e)
        if hull_cuts:
            q, r = divmod(int(a[j]) * k_s, n_s)
            model.add(z[j] >= r + (n_s - 2 * r) * (s_j - q))
    if z:  # num_nodes=1 has no interior node: every selection is optimal
        model.minimize(cp_model.LinearExpr.weighted_sum(z, [int(wj) for wj in w]))
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = num_workers
    if time_limit_s is not None:
        solver.parameters.max_time_in_seconds = float(time_limit_s)
    code = solver.solve(model)
    status = {cp_model.OPTIMAL: "OPTIMAL", cp_model.FEASIBLE: "FEASIBLE"}.get(code)
    if status is None:
        _no_solution(solver.status_name(code), time_limit_s, formulation)
    counts, chosen = _read_back(problem, formulation, bins, solver.value)
    bound = solver.best_objective_bound if status == "FEASIBLE" else solver.objective_value
    return status, counts, chosen, float(solver.objective_value), float(bound), float(solver.wall_time)


def _solve_mip(problem: ecdf.BinnedProblem, budget: int, formulation: str, name: str,
               time_limit_s: float | None, hull_cuts: bool):
    from ortools.linear_solver import pywraplp

    solver = pywraplp.Solver.CreateSolver(MIP_BACKENDS[name][0])
    if solver is None:  # pragma: no cover - guarded by _canonical_solver
        raise ValueError(f"Solver {name!r} is not available; choose one of {list(available_solvers())}.")
    n_s, k_s, w, _ = _scaling(problem, budget)
    a = problem.prefix
    inf = solver.infinity()
    if formulation == "binned":
        c = [solver.IntVar(0, int(s), f"c{b}") for b, s in enumerate(problem.sizes)]
        solver.Add(solver.Sum(c) == budget)
        groups = None
    else:
        delta = [solver.BoolVar(f"d{i}") for i in range(problem.n)]
        total = solver.Constraint(budget, budget)
        for v in delta:
            total.SetCoefficient(v, 1)
        groups = delta
    objective = solver.Objective()
    for j in range(a.size):
        zj = solver.NumVar(0, inf, f"z{j}")
        objective.SetCoefficient(zj, float(w[j]))
        # z_j >= +-(a_j k' - n' S_j)  <=>  z_j + n' S_j >= a_j k'  and  z_j - n' S_j >= -a_j k'
        up = solver.Constraint(float(a[j] * k_s), inf)
        lo = solver.Constraint(-float(a[j] * k_s), inf)
        up.SetCoefficient(zj, 1)
        lo.SetCoefficient(zj, 1)
        members = c[:j + 1] if formulation == "binned" else [delta[i] for i in problem.order[:a[j]]]
        for v in members:   # per_item: c_ij = 1{x_i <= t_j}, one coefficient per example (verbatim)
            up.SetCoefficient(v, float(n_s))
            lo.SetCoefficient(v, -float(n_s))
        if hull_cuts:       # z_j - (n' - 2r)(S_j - q) >= r
            q, r = divmod(int(a[j]) * k_s, n_s)
            cut = solver.Constraint(float(r - (n_s - 2 * r) * q), inf)
            cut.SetCoefficient(zj, 1)
            for v in members:
                cut.SetCoefficient(v, -float(n_s - 2 * r))
    objective.SetMinimization()
    params = pywraplp.MPSolverParameters()
    params.SetDoubleParam(params.RELATIVE_MIP_GAP, 0.0)
    params.SetDoubleParam(params.PRIMAL_TOLERANCE, 1e-9)
    if name == "scip":
        solver.SetSolverSpecificParametersAsString("limits/gap = 0\nlimits/absgap = 0\n")
    if time_limit_s is not None:
        solver.SetTimeLimit(max(1, int(round(1000 * time_limit_s))))
    code = solver.Solve(params)
    status = {pywraplp.Solver.OPTIMAL: "OPTIMAL", pywraplp.Solver.FEASIBLE: "FEASIBLE"}.get(code)
    if status is None:
        _no_solution({2: "INFEASIBLE", 3: "UNBOUNDED", 4: "ABNORMAL", 5: "MODEL_INVALID",
                      6: "NOT_SOLVED"}.get(code, str(code)), time_limit_s, formulation)
    value = lambda v: v.solution_value()  # noqa: E731
    counts, chosen = _read_back(problem, formulation, c if groups is None else groups, value)
    bound = objective.BestBound() if status == "FEASIBLE" else objective.Value()
    return status, counts, chosen, float(objective.Value()), float(bound), solver.wall_time() / 1000.0


def _prefix_exprs(model, problem: ecdf.BinnedProblem, budget: int, formulation: str, cp_model):
    """CP-SAT: the prefix sums ``S_j`` ``(B - 1,)`` as expressions, and the decision variables."""
    a = problem.prefix
    if formulation == "binned":
        c = [model.new_int_var(0, int(s), f"c{b}") for b, s in enumerate(problem.sizes)]
        model.add(sum(c) == budget)
        return [cp_model.LinearExpr.sum(c[:j + 1]) for j in range(a.size)], c
    delta = [model.new_bool_var(f"d{i}") for i in range(problem.n)]
    model.add(cp_model.LinearExpr.sum(delta) == budget)
    by_rank = [delta[i] for i in problem.order]
    return [cp_model.LinearExpr.sum(by_rank[:int(a[j])]) for j in range(a.size)], delta


def _read_back(problem: ecdf.BinnedProblem, formulation: str, variables, value):
    """``(counts (B,), chosen indices or None)`` from the solver's values."""
    vals = np.rint(np.array([value(v) for v in variables], dtype=np.float64)).astype(np.int64)
    if formulation == "binned":
        return vals, None
    chosen = np.flatnonzero(vals == 1)
    return ecdf.counts_of(problem, chosen), chosen


def _no_solution(status: str, time_limit_s: float | None, formulation: str) -> None:
    if time_limit_s is not None and status not in ("INFEASIBLE", "MODEL_INVALID", "UNBOUNDED"):
        advice = ("raise the time limit or use formulation='binned'" if formulation != "binned" else
                  "raise the time limit or use solver='exact' (the binned model's closed-form optimum)")
        raise RuntimeError(f"GEDA: the solver found no feasible selection within time_limit_s={time_limit_s} "
                           f"(status {status}); {advice}.")
    raise RuntimeError(f"GEDA: the solver ended with status {status} and no selection; this model is always "
                       "feasible, so this is a solver failure: try another solver.")
