"""CRAIG and GRAD-MATCH selection: closed-form last-layer kernels vs materialized gradients.

Synthetic ResNet-18-sized last-layer factors (C classes, d-dim embeddings): per example
``e = softmax(z) - onehot(y)`` and ``h = relu(N(0, 1))``; the last-layer gradient
``e ⊗ [h, 1]`` has ``C·(d+1)`` entries (5130 for C=10, d=512). Both methods run per
class (the default of CRAIG and GRAD-MATCH in CORDS) with a 10% budget.

Implementations compared, same greedy / OMP objective:

- ``jaxsubset``: :func:`craig` / :func:`gradmatch` on the factors ``(e, h)``
  (similarities / Gram columns from ``(e·e')(h·h'+1)``, Gram-form OMP); CRAIG holds the
  similarity matrix of pools up to ``dense_limit`` and also runs matrix-free
  (``dense_limit=0``: similarity rows recomputed in ≈1 MiB blocks);
- ``dense-gemm``: the per-class gradient matrix is materialized, the ``n_c × n_c``
  Euclidean distances come from BLAS (``|a|² + |b|² - 2ab``), then the same lazy greedy;
  GRAD-MATCH projects ``A r`` and re-solves NNLS on the ``D × |S|`` matrix every step
  (``scipy.optimize.nnls``), as CORDS's OMP does;
- ``cords-broadcast``: like ``dense-gemm`` but distances are computed the way CORDS's
  ``CRAIGStrategy.distance`` does it, by broadcasting a ``B × B × D`` difference tensor
  per pair of mini-batches (``--broadcast-batch``);
- ``apricot``: ``apricot-select``'s lazy facility location on the same (shifted)
  similarity matrices, if it is importable (greedy time only).

Peak memory is the growth of the process's peak resident set (``VmHWM`` after
``/proc/self/clear_refs``) over its size before the call, so BLAS buffers count; the
inputs ``(e, h)`` exist before every call and are not counted. It is measured in a forked
child with glibc's mmap threshold fixed at 128 KiB; time is measured afterwards in the
parent with the default allocator (see :func:`measure`).

    python benchmarks/matching.py --quick
    python benchmarks/matching.py                 # n = 10 000 and 50 000 (baselines at 10 000 only)
"""

from __future__ import annotations

import argparse
import os
import sys


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: n=1000, d=128, no apricot")
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000], help="pool sizes n")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--dim", type=int, default=512, help="embedding dimension d")
    p.add_argument("--fraction", type=float, default=0.1, help="budget as a fraction of n")
    p.add_argument("--baseline-max-n", type=int, default=10_000, help="skip dense baselines above this n")
    p.add_argument("--broadcast-batch", type=int, default=64, help="CORDS mini-batch size for distances")
    p.add_argument("--no-broadcast", action="store_true", help="skip the CORDS broadcast baseline")
    p.add_argument("--whole-pool-broadcast", action="store_true",
                   help="with --whole-pool, also run the CORDS broadcast baseline (≈10 min at n = 10 000)")
    p.add_argument("--no-apricot", action="store_true", help="skip the apricot-select comparison")
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS threads for every implementation (default 1: on a small shared machine "
                        "multithreaded BLAS spins and slows the many small products of the greedy steps)")
    p.add_argument("--whole-pool", action="store_true",
                   help="select over the whole pool instead of per class (the CORDS broadcast baseline only "
                        "with --whole-pool-broadcast; the GRAD-MATCH baseline stopped after "
                        "--omp-baseline-seconds)")
    p.add_argument("--omp-baseline-seconds", type=float, default=240.0,
                   help="with --whole-pool, stop the dense GRAD-MATCH baseline after this long (its time and "
                        "memory are then lower bounds; 0 skips it)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.quick:  # apricot's per-call overhead (~2-3 s per class) would dominate a smoke run
        a.sizes, a.dim, a.no_apricot = [1000], 128, True
    return a


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None and ARGS.threads:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import ctypes  # noqa: E402
import gc  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402
import scipy.optimize  # noqa: E402

from jaxsubset.kernels import materialize_last_layer  # noqa: E402
from jaxsubset.selectors.craig import craig_last_layer  # noqa: E402
from jaxsubset.selectors.facility import facility_location  # noqa: E402
from jaxsubset.selectors.gradmatch import gradmatch_last_layer  # noqa: E402
from jaxsubset.selectors.per_class import per_class  # noqa: E402
from jaxsubset.subset import Subset, per_class_budget  # noqa: E402

LAM = 1e-3  # GRAD-MATCH ridge, relative to the mean squared gradient norm (jaxsubset's default)
TOL = 1e-4


# ----------------------------------------------------------------------------- measurement

def _fix_malloc() -> None:
    """Make glibc return every large block to the OS on free, so peak RSS deltas are per call."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD: fixed, no dynamic growth
    except (OSError, AttributeError):
        pass


def _trim_malloc() -> None:
    """Return free heap memory to the OS (glibc ``malloc_trim``)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmHWM", "VmRSS")):
                k, v = line.split(":")
                out[k] = int(v.split()[0]) * 1024
    return out


def _peak_rss_growth(fn, *args, **kwargs) -> int:
    """Peak resident-set growth of one call of ``fn`` (this process; large blocks freed at once)."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS to the current RSS
    before = _status()["VmRSS"]
    fn(*args, **kwargs)
    return _status()["VmHWM"] - before


def measure(fn, *args, warmup=None, **kwargs):
    """Run ``fn``; return (result, seconds, peak extra bytes).

    Memory is measured in a forked child that makes glibc return every block over
    128 KiB to the OS on free (``M_MMAP_THRESHOLD``), runs the call once to fault in the
    code pages it touches (a forked child maps shared libraries lazily; ``warmup``, a
    cheaper call with the same code path, may stand in), trims the heap, and then
    measures the peak RSS growth of a second call: that is this call's own memory.
    The time is measured afterwards in this process with the default allocator (a fixed
    128 KiB threshold makes every such allocation page-fault afresh and slowed block-wise
    code up to 2×, which users do not see).
    """
    gc.collect()
    _trim_malloc()  # free heap pages left resident by earlier calls would hide the child's allocations
    try:
        rfd, wfd = os.pipe()
        pid = os.fork()
    except (AttributeError, OSError):
        pid = None
    if pid == 0:  # child: memory only
        os.close(rfd)
        try:
            _fix_malloc()
            (warmup or (lambda: fn(*args, **kwargs)))()
            gc.collect()
            _trim_malloc()
            peak = _peak_rss_growth(fn, *args, **kwargs)
        except BaseException:  # noqa: BLE001 — report "unknown" rather than hang the parent
            peak = -1
        os.write(wfd, str(peak).encode())
        os._exit(0)
    peak = None
    if pid is not None:
        os.close(wfd)
        with os.fdopen(rfd) as f:
            txt = f.read()
        os.waitpid(pid, 0)
        peak = int(txt) if txt.strip().lstrip("-").isdigit() and int(txt) >= 0 else None
    if peak is None:  # no fork or no /proc: count NumPy allocations only
        tracemalloc.start()
        fn(*args, **kwargs)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    gc.collect()
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    sec = time.perf_counter() - t
    return out, sec, max(peak, 0)


# ----------------------------------------------------------------------------- data

def make_factors(n: int, C: int, d: int, seed: int):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % C
    z = rng.standard_normal((n, C), dtype=np.float32) * 2.0
    z[np.arange(n), y] += 3.0  # a partly trained classifier
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(n), y] -= 1.0
    h = np.maximum(rng.standard_normal((n, d), dtype=np.float32), 0.0)
    return p.astype(np.float32), h, y


# ----------------------------------------------------------------------------- baselines

def _distances_gemm(g: np.ndarray) -> np.ndarray:
    sq = np.einsum("nd,nd->n", g, g)
    d2 = g @ g.T
    d2 *= -2.0
    d2 += sq[:, None]
    d2 += sq[None, :]
    np.maximum(d2, 0.0, out=d2)
    return np.sqrt(d2, out=d2)


def _distances_broadcast(g: np.ndarray, batch: int) -> np.ndarray:
    n = g.shape[0]
    out = np.empty((n, n), np.float32)
    for i in range(0, n, batch):
        x = g[i:i + batch]
        for j in range(0, n, batch):
            y = g[j:j + batch]
            out[i:i + batch, j:j + batch] = np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(2))
    return out


def craig_dense(e: np.ndarray, h: np.ndarray, budget: int, *, distances: str, batch: int = 64) -> Subset:
    """CRAIG on materialized gradients with a dense distance matrix (then the same lazy greedy)."""
    g = materialize_last_layer(e, h)
    D = _distances_gemm(g) if distances == "gemm" else _distances_broadcast(g, batch)
    del g
    S = D.max() - D
    del D
    res = facility_location(S, budget, optimizer="lazy")
    w = np.bincount(res.assignment, minlength=budget).astype(np.float32)
    order = np.argsort(res.order)
    return Subset(res.order[order], w[order], {"order": res.order})


def gradmatch_dense(e: np.ndarray, h: np.ndarray, budget: int, max_seconds: float | None = None) -> Subset:
    """OMP on materialized gradients: projections A r and NNLS on the D x |S| matrix each step.

    ``max_seconds`` stops the pursuit early (``info["truncated"]``): its time and memory are
    then lower bounds of a full run's.
    """
    t0 = time.perf_counter()
    A = materialize_last_layer(e, h).astype(np.float64)
    n, D = A.shape
    b = A.sum(0)
    sq = np.einsum("nd,nd->n", A, A)
    ridge = np.sqrt(LAM * sq.mean())
    inv = np.divide(1.0, np.sqrt(sq), out=np.zeros(n), where=sq > 0)
    bnorm = np.linalg.norm(b)
    r, S, w = b.copy(), [], np.zeros(0)
    for _ in range(budget):
        score = (A @ r) * inv
        score[S] = -np.inf
        j = int(np.argmax(score))
        if not score[j] > TOL * bnorm:
            break
        S.append(j)
        M = np.vstack([A[S].T, ridge * np.eye(len(S))])  # ridge as extra rows
        w = scipy.optimize.nnls(M, np.concatenate([b, np.zeros(len(S))]))[0]
        r = b - A[S].T @ w
        if np.linalg.norm(r) <= TOL * bnorm:
            break
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds and len(S) < budget:
            break
    idx = np.asarray(S, np.int64)
    order = np.argsort(idx)
    return Subset(idx[order], w[order].astype(np.float32), {"order": idx, "truncated": len(S) < budget})


WHOLE_POOL = False


def run_per_class(fn, e, h, y, budget, **kw) -> Subset:
    if WHOLE_POOL:
        return fn(e, h, budget, **kw)
    return per_class(fn, y, budget, arrays={"e": e, "h": h}, **kw)


def apricot_vs_ours(e, h, y, budget, C):
    """Lazy facility-location greedy only, on identical per-class similarity matrices."""
    from apricot import FacilityLocationSelection
    from jaxsubset.kernels import similarity

    FacilityLocationSelection(2, metric="precomputed", optimizer="lazy", verbose=False).fit(
        np.eye(4, dtype=np.float32))  # numba warm-up
    budgets = per_class_budget(y, budget, C)
    t_ap = t_us = 0.0
    same = 0
    for c in range(C):
        rows = np.flatnonzero(y == c)
        S = similarity((e[rows], h[rows]), metric="euclidean")
        S -= S.min()
        t = time.perf_counter()
        ap = FacilityLocationSelection(int(budgets[c]), metric="precomputed", optimizer="lazy",
                                       verbose=False).fit(S)
        t_ap += time.perf_counter() - t
        t = time.perf_counter()
        us = facility_location(S, int(budgets[c]), optimizer="lazy")
        t_us += time.perf_counter() - t
        same += int(np.array_equal(np.asarray(ap.ranking), us.order))
    return t_ap, t_us, same


# ----------------------------------------------------------------------------- main

def overlap(a: Subset, b: Subset) -> float:
    return len(np.intersect1d(a.indices, b.indices)) / max(len(a), 1)


def main(args: argparse.Namespace) -> None:
    global WHOLE_POOL
    WHOLE_POOL = args.whole_pool
    rows = []
    print(f"C={args.classes} d={args.dim} (gradient dim {args.classes * (args.dim + 1)}), budget "
          f"{args.fraction:.0%} {'of the whole pool' if WHOLE_POOL else 'per class'}, "
          f"BLAS threads {args.threads or 'default'}", flush=True)
    for n in args.sizes:
        e, h, y = make_factors(n, args.classes, args.dim, args.seed)
        budget = int(round(args.fraction * n))
        # ---- CRAIG
        ours, t, m = measure(run_per_class, craig_last_layer, e, h, y, budget)
        rows.append((n, "CRAIG", "jaxsubset (factors)", t, m, None))
        ref_t, ref_m = t, m
        # the similarity matrix would fit; also show the matrix-free mode (dense_limit=0)
        free, t, m = measure(run_per_class, craig_last_layer, e, h, y, budget, dense_limit=0)
        rows.append((n, "CRAIG", "jaxsubset (factors, matrix-free)", t, m, overlap(ours, free), ref_t, ref_m))
        free_t, free_m = t, m
        if n <= args.baseline_max_n:
            base, t, m = measure(run_per_class, craig_dense, e, h, y, budget, distances="gemm")
            rows.append((n, "CRAIG", "dense-gemm", t, m, overlap(ours, base), ref_t, ref_m))
            rows.append((n, "CRAIG", "  the same vs jaxsubset matrix-free", t, m, None, free_t, free_m))
            if not args.no_broadcast and (not WHOLE_POOL or args.whole_pool_broadcast):
                sl = slice(0, 2 * args.broadcast_batch)  # the same code path on a 128-row pool
                base, t, m = measure(run_per_class, craig_dense, e, h, y, budget, distances="broadcast",
                                     batch=args.broadcast_batch,
                                     warmup=lambda: craig_dense(e[sl], h[sl], 8, distances="broadcast",
                                                                batch=args.broadcast_batch))
                rows.append((n, "CRAIG", f"cords-broadcast (B={args.broadcast_batch})", t, m,
                             overlap(ours, base), ref_t, ref_m))
                rows.append((n, "CRAIG", "  the same vs jaxsubset matrix-free", t, m, None, free_t, free_m))
        print(f"n={n}: CRAIG done", flush=True)
        # ---- GRAD-MATCH
        ours_g, t, m = measure(run_per_class, gradmatch_last_layer, e, h, y, budget, lam=LAM, tol=TOL)
        rows.append((n, "GRAD-MATCH", "jaxsubset (factors)", t, m, None))
        ref_t, ref_m = t, m
        if WHOLE_POOL:
            free_g, t, m = measure(run_per_class, gradmatch_last_layer, e, h, y, budget, lam=LAM, tol=TOL,
                                   matrix_free=not ours_g.info["matrix_free"])
            rows.append((n, "GRAD-MATCH", "jaxsubset (factors, "
                         f"{'matrix-free' if free_g.info['matrix_free'] else 'Gram columns'})", t, m,
                         overlap(ours_g, free_g), ref_t, ref_m))
        if n <= args.baseline_max_n and not WHOLE_POOL:
            base, t, m = measure(run_per_class, gradmatch_dense, e, h, y, budget)
            rows.append((n, "GRAD-MATCH", "dense (CORDS OMP)", t, m, overlap(ours_g, base), ref_t, ref_m))
        elif n <= args.baseline_max_n and args.omp_baseline_seconds > 0:
            # whole pool: NNLS on D x |S| for |S| up to k takes far longer; stop it and report lower bounds
            base, t, m = measure(run_per_class, gradmatch_dense, e, h, y, budget,
                                 max_seconds=args.omp_baseline_seconds,
                                 warmup=lambda: gradmatch_dense(e, h, budget, max_seconds=5.0))
            s_ = len(base.info["order"])
            same = np.mean(base.info["order"] == ours_g.info["order"][:s_]) if s_ else 0.0
            label = (f"dense (CORDS OMP), stopped at pick {s_}/{budget}: time and memory are lower bounds"
                     if base.info["truncated"] else "dense (CORDS OMP)")
            rows.append((n, "GRAD-MATCH", label, t, m, same, ref_t, ref_m))
        print(f"n={n}: GRAD-MATCH done", flush=True)
        # ---- apricot
        if not args.no_apricot and n <= args.baseline_max_n and not WHOLE_POOL:
            try:
                t_ap, t_us, same = apricot_vs_ours(e, h, y, budget, args.classes)
                rows.append((n, "FL greedy", f"apricot lazy ({same}/{args.classes} classes same picks)",
                             t_ap, None, None, t_us, None))
                rows.append((n, "FL greedy", "jaxsubset lazy (same matrices)", t_us, None, None))
            except ImportError:
                print("apricot-select not installed; skipping that comparison", flush=True)
    print()
    print("| n | method | implementation | time (s) | peak extra memory (MiB) | time / ours | memory / ours "
          "| same picks |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        n, meth, impl, t, m, ov = r[:6]
        rt = f"{t / r[6]:.1f}×" if len(r) > 6 and r[6] else ""
        rm = f"{m / max(r[7], 1):.1f}×" if len(r) > 7 and r[7] is not None and m is not None else ""
        mm = f"{m / 2**20:.1f}" if m is not None else ""
        print(f"| {n} | {meth} | {impl} | {t:.2f} | {mm} | {rt} | {rm} | "
              f"{'' if ov is None else f'{ov:.0%}'} |")


if __name__ == "__main__":
    sys.exit(main(ARGS))
