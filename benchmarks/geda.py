"""GEDA selection time and objective per formulation and backend, with PuLP/CBC as the study's baseline.

Every row solves one instance (log-normal norms, seed fixed) and checks the objective of
the returned selection against the closed-form optimum (``solver="exact"``). Ratios are
computed from timings measured in this same run.

    python benchmarks/geda.py            # full run (about 2-3 minutes on 2 CPU cores)
    python benchmarks/geda.py --quick    # smoke run (seconds)

PuLP rows run only when ``pulp`` is importable (``pip install pulp``, the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from jaxsubset.selectors.geda import available_solvers, ecdf, geda


def _quiet_native_stdout():
    """Silence C++ banners (HiGHS prints one per solve) by pointing fd 1 at /dev/null; returns a restorer."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)

    def restore():
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
    return restore


def pulp_per_item(x: np.ndarray, k: int, num_nodes: int, time_limit_s: float):
    """The study's model (P) verbatim in PuLP, solved by PuLP's bundled CBC with default settings."""
    import pulp

    t0 = time.perf_counter()
    n = x.size
    lo, hi = float(x.min()), float(x.max())
    prob = pulp.LpProblem("geda", pulp.LpMinimize)
    delta = [pulp.LpVariable(f"d{i}", cat="Binary") for i in range(n)]
    z = [pulp.LpVariable(f"z{j}", lowBound=0) for j in range(1, num_nodes)]
    prob += pulp.lpSum(z)
    prob += pulp.lpSum(delta) == k
    for j in range(1, num_nodes):
        members = np.flatnonzero(x <= lo + j * (hi - lo) / num_nodes)
        e = pulp.LpAffineExpression({delta[i]: -1.0 / k for i in members}, constant=members.size / n)
        prob += z[j - 1] >= e
        prob += z[j - 1] >= -e
    code = prob.solve(pulp.PULP_CBC_CMD(msg=0, timeLimit=time_limit_s))
    elapsed = time.perf_counter() - t0
    chosen = np.flatnonzero(np.array([v.value() or 0.0 for v in delta]) > 0.5)
    return pulp.LpStatus[code], chosen, elapsed


def _gap(obj: float, best: float) -> str:
    if obj is None:
        return "-"
    if abs(obj - best) <= 1e-12 * max(1.0, abs(best)):
        return "yes"
    return f"no (+{(obj - best) / best:.1e} rel)" if best > 0 else f"no (+{obj - best:.1e})"


def _row(rows, **kw):
    rows.append(kw)
    cols = ["n", "N", "frac", "solver", "form", "status", "optimal", "objective", "time_s"]
    line = " | ".join(str(kw.get(c, "")) for c in cols)
    print(f"| {line} |", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[5_000, 50_000, 1_000_000])
    p.add_argument("--nodes", type=int, nargs="+", default=[5, 50])
    p.add_argument("--fractions", type=float, nargs="+", default=[0.2, 0.8])
    p.add_argument("--solvers", nargs="+", default=None, help="binned backends (default: all available)")
    p.add_argument("--per-item", nargs="*", default=["5000:5", "5000:50", "50000:5"],
                   help="n:N cases for the per-item model with OR-Tools (first fraction only)")
    p.add_argument("--pulp", nargs="*", default=["5000:5", "50000:5"],
                   help="n:N cases for PuLP/CBC on the per-item model (first fraction only)")
    p.add_argument("--pulp-time-limit", type=float, default=120.0)
    p.add_argument("--time-limit", type=float, default=60.0, help="OR-Tools limit for per-item/ablation rows")
    p.add_argument("--variants-n", type=int, default=50_000, help="n for the quadrature/W1 comparison")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    a = p.parse_args(argv)
    if a.quick:
        a.sizes, a.per_item, a.pulp, a.variants_n = [1_000, 5_000], ["1000:5"], ["1000:5"], 5_000
        a.pulp_time_limit, a.time_limit = 20.0, 20.0
    solvers = a.solvers or [s for s in available_solvers() if s != "exact"]
    try:
        import pulp  # noqa: F401
        have_pulp = True
    except ImportError:
        have_pulp = False

    rng = np.random.default_rng(a.seed)
    data = {n: rng.lognormal(mean=0.0, sigma=1.0, size=n) for n in sorted(set(
        a.sizes + [int(c.split(":")[0]) for c in a.per_item + a.pulp] + [a.variants_n]))}
    restore = _quiet_native_stdout()
    try:
        geda(data[min(data)], 3, solver="cp-sat")      # warm-up: imports and first-call costs
    finally:
        restore()

    def run(x, k, **kw):
        restore = _quiet_native_stdout()
        try:
            return geda(x, k, **kw)
        finally:
            restore()

    rows: list[dict] = []
    print("\n## Binned formulation (default) per backend; time_s = whole geda() call\n")
    print("| n | N | frac | solver | form | status | optimal | objective | time_s |")
    print("|---|---|---|---|---|---|---|---|---|")
    best = {}
    for n in a.sizes:
        for N in a.nodes:
            for frac in a.fractions:
                k = max(1, int(round(frac * n)))
                ex = run(data[n], k, num_nodes=N, solver="exact")
                best[n, N, frac] = ex.info["objective"]
                _row(rows, n=n, N=N, frac=frac, solver="exact (closed form)", form="binned", status="OPTIMAL",
                     optimal="yes", objective=f"{ex.info['objective']:.6g}", time_s=f"{ex.info['total_time_s']:.3f}",
                     t=ex.info["total_time_s"])
                for s in solvers:
                    sub = run(data[n], k, num_nodes=N, solver=s)
                    _row(rows, n=n, N=N, frac=frac, solver=s, form="binned", status=sub.info["status"],
                         optimal=_gap(sub.info["objective"], best[n, N, frac]),
                         objective=f"{sub.info['objective']:.6g}", time_s=f"{sub.info['total_time_s']:.3f}",
                         t=sub.info["total_time_s"])

    print("\n## Per-item model (the study's MILP verbatim)\n")
    print("| n | N | frac | solver | form | status | optimal | objective | time_s |")
    print("|---|---|---|---|---|---|---|---|---|")
    frac = a.fractions[0]
    for case in a.per_item:
        n, N = (int(v) for v in case.split(":"))
        k = max(1, int(round(frac * n)))
        opt = best.get((n, N, frac)) or run(data[n], k, num_nodes=N, solver="exact").info["objective"]
        best[n, N, frac] = opt
        for s in [s for s in ("cp-sat", "cbc") if s in solvers]:
            try:
                sub = run(data[n], k, num_nodes=N, solver=s, formulation="per_item", time_limit_s=a.time_limit)
                _row(rows, n=n, N=N, frac=frac, solver=s, form="per_item", status=sub.info["status"],
                     optimal=_gap(sub.info["objective"], opt), objective=f"{sub.info['objective']:.6g}",
                     time_s=f"{sub.info['total_time_s']:.3f}", t=sub.info["total_time_s"])
            except RuntimeError as err:
                _row(rows, n=n, N=N, frac=frac, solver=s, form="per_item", status=f"none ({err.__class__.__name__})",
                     optimal="-", objective="-", time_s=f">{a.time_limit}")
    if have_pulp:
        for case in a.pulp:
            n, N = (int(v) for v in case.split(":"))
            k = max(1, int(round(frac * n)))
            opt = best.get((n, N, frac)) or run(data[n], k, num_nodes=N, solver="exact").info["objective"]
            best[n, N, frac] = opt
            status, chosen, elapsed = pulp_per_item(data[n], k, N, a.pulp_time_limit)
            obj = ecdf.geda_objective(data[n], chosen, num_nodes=N) if chosen.size == k else None
            _row(rows, n=n, N=N, frac=frac, solver="PuLP/CBC", form="per_item", status=status,
                 optimal=_gap(obj, opt) if obj is not None else f"infeasible ({chosen.size} picked)",
                 objective=f"{obj:.6g}" if obj is not None else "-", time_s=f"{elapsed:.3f}", t=elapsed)
    else:
        print("(PuLP not installed: `pip install pulp` to add the study's PuLP/CBC baseline)")

    print("\n## Ablation: binned model without the hull cuts (time limit applies)\n")
    print("| n | N | frac | solver | form | status | optimal | objective | time_s |")
    print("|---|---|---|---|---|---|---|---|---|")
    n_ab = a.variants_n
    k = max(1, int(round(frac * n_ab)))
    opt = best.get((n_ab, 50, frac)) or run(data[n_ab], k, num_nodes=50, solver="exact").info["objective"]
    for s in [s for s in ("cp-sat", "cbc") if s in solvers]:
        try:
            sub = run(data[n_ab], k, num_nodes=50, solver=s, hull_cuts=False, time_limit_s=a.time_limit)
            _row(rows, n=n_ab, N=50, frac=frac, solver=s, form="binned, no cuts", status=sub.info["status"],
                 optimal=_gap(sub.info["objective"], opt), objective=f"{sub.info['objective']:.6g}",
                 time_s=f"{sub.info['total_time_s']:.3f}")
        except RuntimeError as err:
            _row(rows, n=n_ab, N=50, frac=frac, solver=s, form="binned, no cuts", status=f"none ({err})",
                 optimal="-", objective="-", time_s=f">{a.time_limit}")

    from scipy.stats import wasserstein_distance
    print(f"\n## Quadrature variants (n={n_ab}): own objective, and the exact W1 of the selection to the pool\n")
    print("| frac | variant | solver | own objective | W1(selection, pool) | time_s |")
    print("|---|---|---|---|---|---|")
    x = data[n_ab]
    for frac_v in a.fractions:
        k = max(1, int(round(frac_v * n_ab)))
        rnd = np.sort(np.random.default_rng(a.seed).choice(n_ab, size=k, replace=False))
        print(f"| {frac_v} | uniform random subset | - | - | {wasserstein_distance(x, x[rnd]):.4g} | - |")
        for label, kw in [("trapezoid N=5 (study)", dict(num_nodes=5)), ("trapezoid N=50", dict(num_nodes=50)),
                          ("simpson N=6", dict(num_nodes=6, quadrature="simpson")),
                          ("simpson N=50", dict(num_nodes=50, quadrature="simpson")),
                          ("exact W1 (num_nodes=None)", dict(num_nodes=None))]:
            sub = run(x, k, **kw)
            w1 = wasserstein_distance(x, x[sub.indices])
            print(f"| {frac_v} | {label} | {sub.info['solver']} | {sub.info['objective']:.4g} | {w1:.4g} "
                  f"| {sub.info['total_time_s']:.3f} |", flush=True)

    print("\n## Ratios (same run)\n")
    default = {(r["n"], r["N"], r["frac"]): r for r in rows if r["form"] == "binned" and r["solver"] == "cp-sat"}
    for r in rows:
        if r["solver"] in ("PuLP/CBC", "cbc", "cp-sat") and r["form"] == "per_item" and "t" in r:
            d = default.get((r["n"], r["N"], r["frac"]))
            if d is not None:
                print(f"- n={r['n']}, N={r['N']}, frac={r['frac']}: default (binned, cp-sat) {d['t']:.3f} s "
                      f"[optimal: {d['optimal']}] vs {r['solver']} per-item {r['t']:.2f} s [optimal: {r['optimal']}]"
                      f" -> {r['t'] / d['t']:.0f}x faster")
    big = [r for r in default.values() if r["n"] == max(a.sizes)]
    if big:
        print(f"- n={max(a.sizes)}: default binned cp-sat, slowest case {max(r['t'] for r in big):.3f} s, "
              f"all optimal: {all(r['optimal'] == 'yes' for r in big)}")


if __name__ == "__main__":
    main()
