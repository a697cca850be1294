"""Beyond one host's memory: scoring throughput from a memmap, peak RSS vs n, GreeDi at 10⁶.

Three measurements, each in a fresh child process (so peak RSS is the call's own):

1. **Throughput.** ``loss`` + ``el2n`` of the MLP 784-256-256-10 on ``n`` synthetic 28×28
   images: ``quantities.compute`` on an in-memory float32 array (the user's in-memory call) vs
   ``workflows.score_pass`` reading a uint8 ``.npy`` memmap (scaled by 1/255 per chunk) and
   writing the score shard. Both are timed a second time in the same process (compiled).
2. **Peak RSS** of the scoring pass from a memmap at ``n = 10⁵`` and ``n = 10⁶``.
3. **GreeDi** (euclidean, ``d = 64``, Gaussian-blob features):
   (:func:`jaxsubset.selectors.partitioned_facility_location`) at ``n = 10⁶, k = 10⁴``: time and
   peak RSS; and at ``n = 10⁵`` its objective against the full lazy greedy's (same baseline).
4. **Facility location on a kNN graph** (:func:`jaxsubset.selectors.knn_facility_location`,
   ``--only facility``): time, CPU time and peak RSS at ``n = 10⁶, d = 64, k = 10⁴``; at
   ``n = 10⁵, k = 10³`` its dense objective against the dense lazy greedy's (saved once as a JSON
   reference, ``--reference``), and a random subset's. Prints one ``SUMMARY`` line.

``python benchmarks/scale.py`` (full sizes; the dense reference alone takes ~15 CPU-minutes) or
``--quick``; ``--only facility --threads 1`` for the selection target on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def _child(task: str, threads: int | None = None, **kw) -> dict:
    """Run ``task`` in a fresh interpreter; returns its JSON result plus ``peak_rss_mib``."""
    code = f"import sys, json; sys.path.insert(0, {HERE!r}); import scale; print('RESULT' + json.dumps(scale.{task}(**{kw!r})))"
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{task} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_images(path: str, n: int, seed: int = 0) -> None:
    """A uint8 ``(n, 28, 28)`` .npy of synthetic images, written in blocks (never all in memory)."""
    from numpy.lib.format import open_memmap

    if os.path.exists(path) and np.load(path, mmap_mode="r").shape == (n, 28, 28):
        return
    rng = np.random.default_rng(seed)
    out = open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 28, 28))
    for s in range(0, n, 50_000):
        out[s:s + 50_000] = rng.integers(0, 256, size=(min(50_000, n - s), 28, 28), dtype=np.uint8)
    out.flush()
    del out


def _labels(n: int) -> np.ndarray:
    return (np.arange(n) * 7919 % 10).astype(np.int64)


def throughput(path: str, n: int) -> dict:
    from jaxsubset.workflows import quantities
    from jaxsubset.data.sources import as_source
    from jaxsubset.models import create, to_pure
    from jaxsubset.workflows import score_pass

    m = to_pure(create("mlp", (28, 28), 10, seed=0))
    y = _labels(n)
    x = np.load(path)[:n].astype(np.float32) / np.float32(255.0)
    src = as_source(np.load(path, mmap_mode="r")[:n], transform=lambda b: b / np.float32(255.0))
    res = {}
    for rep in range(2):
        t0 = time.perf_counter()
        ref = quantities.compute(["loss", "el2n"], m, x, y)
        res["in_memory_s"] = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            score_pass(m, src, y, ["loss", "el2n"], os.path.join(d, "s"), chunk_rows=8192)
            res["memmap_pass_s"] = time.perf_counter() - t0
            from jaxsubset.workflows import load_scores

            got = load_scores(os.path.join(d, "s"))
        res["max_abs_diff"] = float(max(np.abs(got[q] - ref[q]).max() for q in ref))
    res["ratio_throughput"] = res["in_memory_s"] / res["memmap_pass_s"]
    return res


def rss_pass(path: str, n: int) -> dict:
    from jaxsubset.data.sources import as_source
    from jaxsubset.models import create, to_pure
    from jaxsubset.workflows import score_pass

    m = to_pure(create("mlp", (28, 28), 10, seed=0))
    src = as_source(np.load(path, mmap_mode="r")[:n], transform=lambda b: b / np.float32(255.0))
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        score_pass(m, src, _labels(n), ["loss", "el2n"], os.path.join(d, "s"), chunk_rows=8192)
        dt = time.perf_counter() - t0
    return {"n": n, "time_s": dt, "peak_rss_mib": _peak_mib()}


def blobs(n: int, d: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(1000, d)).astype(np.float32)
    x = np.empty((n, d), np.float32)
    for s in range(0, n, 100_000):
        b = min(100_000, n - s)
        x[s:s + b] = centres[rng.integers(0, 1000, b)] + rng.normal(size=(b, d)).astype(np.float32)
    return x


def greedi(n: int, k: int, partitions: int, compare_full: bool) -> dict:
    from jaxsubset.kernels import similarity_op
    from jaxsubset.selectors import facility_location, partitioned_facility_location
    from jaxsubset.selectors.partitioned import coverage_value

    x = blobs(n)
    base_rss = _peak_mib()
    res = {"n": n, "k": k, "partitions": partitions}
    if compare_full:
        t0 = time.perf_counter()
        full = facility_location(similarity_op(x), k, lazy_batch=32)
        res["full_s"] = time.perf_counter() - t0
        res["full_objective"] = full.value
        b = full.baseline
    else:
        b = None
    t0 = time.perf_counter()
    sub = partitioned_facility_location(x, k, partitions=partitions, baseline=b, seed=0)
    res["greedi_s"] = time.perf_counter() - t0
    res["greedi_objective"] = sub.info["objective"]
    res["union_size"] = sub.info["union_size"]
    res["stage1_s"], res["stage2_s"] = sub.info["stage1_s"], sub.info["stage2_s"]
    if compare_full:
        res["objective_ratio"] = sub.info["objective"] / full.value
        rand = np.random.default_rng(0).choice(n, k, replace=False)
        res["random_ratio"] = coverage_value(similarity_op(x[rand], x), np.arange(k), b) / full.value
    res["features_mib"] = x.nbytes / 2**20
    res["peak_rss_mib"] = _peak_mib()
    res["peak_rss_before_selection_mib"] = base_rss
    return res


def full_greedy(n: int, k: int, out: str) -> dict:
    """The reference: the dense lazy greedy (``facility_location``, lazy_batch=32) on ``blobs(n)``; saved to ``out``."""
    from jaxsubset.kernels import similarity_op
    from jaxsubset.selectors import facility_location

    x = blobs(n)
    load0 = os.getloadavg()[0]
    c0, t0 = time.process_time(), time.perf_counter()
    full = facility_location(similarity_op(x), k, lazy_batch=32)
    res = {"n": n, "k": k, "order": full.order.tolist(), "baseline": full.baseline, "objective": full.value,
           "evaluations": full.evaluations, "time_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
           "load_avg": [load0, os.getloadavg()[0]], "peak_rss_mib": _peak_mib()}
    with open(out, "w") as f:
        json.dump(res, f)
    return res


def knn_facility(n: int, k: int, reference: str | None = None) -> dict:
    """``knn_facility_location(blobs(n), k)``: time, CPU time, peak RSS; objective against ``reference``.

    With a reference (a :func:`full_greedy` JSON at the same ``n, k``) the dense objectives of the
    reference's picks, ours and a random subset are computed with the reference's baseline (the
    dense minimum similarity) from every point's exactly nearest pick.
    """
    from jaxsubset.selectors.knn_facility import knn_facility_location, nearest_pick

    import threading

    x = blobs(n)
    res = {"n": n, "k": k, "features_mib": x.nbytes / 2**20, "peak_rss_before_selection_mib": _peak_mib()}
    load0 = os.getloadavg()[0]
    trace, stop = [], threading.Event()

    def sample():  # resident set every 0.2 s: when the peak happens
        page = os.sysconf("SC_PAGE_SIZE")
        while not stop.wait(0.2):
            with open("/proc/self/statm") as f:
                trace.append((time.perf_counter() - t0, int(f.read().split()[1]) * page / 2**20))

    c0, t0 = time.process_time(), time.perf_counter()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    sub = knn_facility_location(x, k)
    res["time_s"], res["cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    stop.set()
    res["peak_rss_mib"] = _peak_mib()
    if trace:
        at, mib = max(trace, key=lambda p: p[1])
        res["sampled_peak_rss_mib"], res["sampled_peak_at_s"] = mib, at
    res["load_avg"] = [load0, os.getloadavg()[0]]
    res.update({key: sub.info[key] for key in ("k_neighbors", "graph", "evaluations", "graph_s", "greedy_s", "assign_s",
                                                 "graph_cpu_s", "greedy_cpu_s", "assign_cpu_s",
                                                 "graph_objective", "objective", "baseline", "mean_distance")})
    rand = np.random.default_rng(0).choice(n, k, replace=False)
    d_rand = nearest_pick(x, rand)[0]
    res["random_mean_distance"] = float(d_rand.mean(dtype=np.float64))
    if reference:
        with open(reference) as f:
            ref = json.load(f)
        if (ref["n"], ref["k"]) != (n, k):
            raise ValueError(f"reference {reference} is for n={ref['n']}, k={ref['k']}, not n={n}, k={k}.")
        b = ref["baseline"]
        d_ref = nearest_pick(x, np.asarray(ref["order"]))[0]
        d_sub = nearest_pick(x, sub.indices)[0]
        dense = {name: float(np.maximum(-d.astype(np.float64) - b, 0.0).sum())
                 for name, d in (("reference", d_ref), ("knn", d_sub), ("random", d_rand))}
        res.update(reference_time_s=ref["time_s"], reference_cpu_s=ref.get("cpu_s"), reference_load_avg=ref.get("load_avg"),
                   reference_objective=ref["objective"], reference_objective_recomputed=dense["reference"],
                   reference_mean_distance=float(d_ref.mean(dtype=np.float64)),
                   objective_ratio=dense["knn"] / dense["reference"], random_ratio=dense["random"] / dense["reference"])
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", choices=["throughput", "rss", "greedi", "facility"], nargs="*", default=None,
                   help="facility: kNN-graph facility location at n=10^6, k=10^4 and against the dense lazy "
                        "greedy at n=10^5, k=10^3 (one-line summary)")
    p.add_argument("--reference", default=None, help="facility: JSON of the dense lazy greedy at the small size "
                   "(written there if missing; computing it takes ~15 CPU-minutes at n=10^5); default "
                   "benchmarks/scale_full_greedy_100000_1000.json (the committed run; delete it to re-measure)")
    p.add_argument("--threads", type=int, default=None, help="BLAS/OpenMP threads of the child processes")
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "jaxsubset_scale"))
    args = p.parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    q = args.quick
    n_big, n_small = (20_000, 2_000) if q else (1_000_000, 100_000)
    path = os.path.join(args.workdir, f"images_{n_big}.npy")
    only = set(args.only or ["throughput", "rss", "greedi", "facility"])
    results = {}
    if only & {"throughput", "rss"}:
        make_images(path, n_big)
    if "throughput" in only:
        results["throughput"] = _child("throughput", path=path, n=n_small)
        print("throughput", results["throughput"], flush=True)
    if "rss" in only:
        results["rss"] = [_child("rss_pass", path=path, n=n) for n in (n_small, n_big)]
        results["rss_ratio"] = results["rss"][1]["peak_rss_mib"] / results["rss"][0]["peak_rss_mib"]
        print("rss", results["rss"], "ratio", results["rss_ratio"], flush=True)
    if "greedi" in only:
        kk = 100 if q else 1000
        results["greedi_vs_full"] = _child("greedi", n=n_small, k=kk, partitions=10, compare_full=True)
        print("greedi_vs_full", results["greedi_vs_full"], flush=True)
        results["greedi_1e6"] = _child("greedi", n=n_big, k=n_big // 100, partitions=50, compare_full=False)
        print("greedi_big", results["greedi_1e6"], flush=True)
    if "facility" in only:
        ks, kb = (100, 1000) if q else (1000, 10_000)
        ref = args.reference or os.path.join(args.workdir if q else HERE, f"scale_full_greedy_{n_small}_{ks}.json")
        if not os.path.exists(ref):
            results["full_greedy"] = {key: v for key, v in _child("full_greedy", args.threads, n=n_small, k=ks,
                                                                   out=ref).items() if key != "order"}
            print("full_greedy", results["full_greedy"], flush=True)
        small = results["facility_small"] = _child("knn_facility", args.threads, n=n_small, k=ks, reference=ref)
        print("facility_small", small, flush=True)
        big = results["facility_big"] = _child("knn_facility", args.threads, n=n_big, k=kb)
        print("facility_big", big, flush=True)
        print(f"SUMMARY facility n={n_big} k={kb}: {big['time_s']:.0f} s wall ({big['cpu_s']:.0f} s CPU), peak RSS "
              f"{big['peak_rss_mib']:.0f} MiB, load {big['load_avg'][0]:.1f}->{big['load_avg'][1]:.1f} | n={n_small} "
              f"k={ks}: objective {small['objective_ratio']:.4f} of the dense lazy greedy (random "
              f"{small['random_ratio']:.4f}; mean distance {small['mean_distance']:.3f} vs "
              f"{small['reference_mean_distance']:.3f}, random {small['random_mean_distance']:.3f}), "
              f"{small['time_s']:.1f} s vs {small['reference_time_s']:.1f} s (dense lazy greedy)", flush=True)
    import jax

    results["device"] = str(jax.devices()[0])
    results["cpus"] = os.cpu_count()
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
