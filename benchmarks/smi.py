"""Selection time of the SMI selectors versus pool size, with kernel time reported separately.

Data: a Gaussian mixture (``--clusters`` centers in ``--dim`` dimensions); the query set is
``--queries`` fresh points of cluster 0, so "on-target" (the fraction of picks from cluster 0)
checks that the selection is meaningful. Each configuration runs twice: the first call
includes JIT compilation, the second is the warm time reported.

Optionally compares greedy picks and time with ``submodlib-py`` (if it imports) on the same
kernels; its Python API converts kernels to lists, so FLVMI / LogDetMI (``n × n`` kernels)
are compared only up to ``--submodlib-max-n``.

  python benchmarks/smi.py --quick
  python benchmarks/smi.py --sizes 10000 50000 --budget 100
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import numpy as np

from jaxsubset.selectors.smi import FUNCTIONS, smi, smi_similarity


def mixture(n: int, dim: int, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim)) * 1.5
    y = rng.integers(0, clusters, n)
    return (centers[y] + rng.normal(size=(n, dim))).astype(np.float32), y, centers


def timed(fn, *a, **k):
    t = time.perf_counter()
    out = fn(*a, **k)
    jax.block_until_ready(out) if isinstance(out, jax.Array) else None
    return out, time.perf_counter() - t


def submodlib_run(function: str, pool: np.ndarray, query: np.ndarray, budget: int, eta: float):
    """Greedy picks and seconds of submodlib on our kernels, or None if it is unavailable."""
    try:
        import submodlib  # noqa: F401
        from submodlib import (FacilityLocationMutualInformationFunction as FL1,
                               FacilityLocationVariantMutualInformationFunction as FL2,
                               GraphCutMutualInformationFunction as GC,
                               LogDeterminantMutualInformationFunction as LD)
    except Exception:  # not installed, or its compiled extension fails to load
        return None
    n, q = pool.shape[0], query.shape[0]
    pq = smi_similarity(pool, query).astype(np.float64)
    if function == "flqmi":
        f = FL2(n, q, query_sijs=pq, queryDiversityEta=eta)
    elif function == "gcmi":
        f = GC(n, q, query_sijs=pq)           # submodlib's GCMI is our graph_cut_weight = 0.5
    else:
        s = smi_similarity(pool).astype(np.float64)
        if function == "flvmi":
            f = FL1(n, q, data_sijs=s, query_sijs=pq, magnificationEta=eta)
        else:
            f = LD(n, q, 1.0, data_sijs=s, query_sijs=pq, query_query_sijs=smi_similarity(query).astype(np.float64),
                   magnificationEta=eta)
    t = time.perf_counter()
    out = f.maximize(budget, optimizer="LazyGreedy" if function != "logdetmi" else "NaiveGreedy",
                     stopIfZeroGain=False, stopIfNegativeGain=False, show_progress=False)
    return [int(i) for i, _ in out], time.perf_counter() - t


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10000, 50000])
    p.add_argument("--functions", nargs="+", default=list(FUNCTIONS), choices=FUNCTIONS)
    p.add_argument("--budget", type=int, default=100)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--clusters", type=int, default=10)
    p.add_argument("--eta", type=float, default=1.0)
    p.add_argument("--flvmi-max-n", type=int, default=20000,
                   help="skip FLVMI above this pool size (lazy greedy with on-the-fly kernel columns: "
                        "about 4 minutes at n=50k on 2 CPU cores)")
    p.add_argument("--submodlib-max-n", type=int, default=5000,
                   help="largest pool for the submodlib comparison of n x n-kernel functions")
    p.add_argument("--no-submodlib", action="store_true")
    p.add_argument("--quick", action="store_true", help="smoke run: n=2000, budget 20, 20 queries")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.quick:
        a.sizes, a.budget, a.queries = [2000], 20, 20

    print(f"# SMI selection benchmark: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"JAX {jax.__version__} on {jax.devices()[0].platform}; d={a.dim}, q={a.queries}, budget={a.budget}, "
          f"{a.clusters} clusters, eta={a.eta}")
    rows = []
    for n in a.sizes:
        x, y, centers = mixture(n, a.dim, a.clusters, a.seed)
        rng = np.random.default_rng(a.seed + 1)
        query = (centers[0] + rng.normal(size=(a.queries, a.dim))).astype(np.float32)
        # Kernel time alone: pool x query, and pool x pool in row blocks (only the timing is kept).
        smi_similarity(x, query)                                  # compile for these shapes
        _, t_pq = timed(smi_similarity, x, query)
        t_pp = float("nan")
        if n <= 20000:
            smi_similarity(x[:4096], x)
            _, t_pp = timed(smi_similarity, x)
        rows.append((n, "kernel n x q", "", f"{t_pq:.3f}", "", "", "", "", ""))
        rows.append((n, "kernel n x n", "", f"{t_pp:.3f}" if t_pp == t_pp else "skipped", "", "", "", "", ""))
        for fn in a.functions:
            if fn == "flvmi" and n > a.flvmi_max_n:
                rows.append((n, fn, "lazy", "", "skipped (--flvmi-max-n)", "", "", "", ""))
                continue
            t = time.perf_counter()
            smi(x, query, a.budget, function=fn, eta=a.eta)
            cold = time.perf_counter() - t
            sub = smi(x, query, a.budget, function=fn, eta=a.eta)
            info = sub.info
            on_target = float(np.mean(y[sub.indices] == 0))
            cmp_t, same = "", ""
            if not a.no_submodlib and (fn in ("flqmi", "gcmi") or n <= a.submodlib_max_n):
                res = submodlib_run(fn, x, query, a.budget, a.eta)
                if res is None:
                    cmp_t, same = "n/a", "n/a"
                else:
                    order, secs = res
                    cmp_t = f"{secs:.3f}"
                    same = f"{np.mean(np.isin(order, info['order'])):.2f}"
            rows.append((n, fn, info["optimizer"], f"{info['kernel_seconds']:.3f}", f"{info['select_seconds']:.3f}",
                         f"{cold:.3f}", f"{on_target:.2f}", cmp_t, same))
    head = ("n", "function", "optimizer", "kernel s", "select s", "first call s", "on-target",
            "submodlib s", "same picks")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(str(v).ljust(w) for v, w in zip(r, widths)) + " |"
    print(line(head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))


if __name__ == "__main__":
    main()
