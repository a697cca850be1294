"""Beyond one host's memory: scoring throughput from a memmap, peak RSS vs n, GreeDi at 10⁶.

Three measurements, each in a fresh child process (so peak RSS is the call's own):

1. **Throughput.** ``loss`` + ``el2n`` of the MLP 784-256-256-10 on ``n`` synthetic 28×28
   images: ``quantities.compute`` on an in-memory float32 array (the user's in-memory call) vs
   ``workflows.score_pass`` reading a uint8 ``.npy`` memmap (scaled by 1/255 per chunk) and
   writing the score shard. Both are timed a second time in the same process (compiled).
2. **Peak RSS** of the scoring pass from a memmap at ``n = 10⁵`` and ``n = 10⁶``.
3. **Facility location** (euclidean, ``d = 64``, Gaussian-blob features): GreeDi
   (:func:`jaxsubset.selectors.partitioned_facility_location`) at ``n = 10⁶, k = 10⁴``: time and
   peak RSS; and at ``n = 10⁵`` its objective against the full lazy greedy's (same baseline).

``python benchmarks/scale.py`` (full sizes, ~15-25 min on 2 CPU cores) or ``--quick``.
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


def _child(task: str, **kw) -> dict:
    """Run ``task`` in a fresh interpreter; returns its JSON result plus ``peak_rss_mib``."""
    code = f"import sys, json; sys.path.insert(0, {HERE!r}); import scale; print('RESULT' + json.dumps(scale.{task}(**{kw!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", choices=["throughput", "rss", "greedi"], nargs="*", default=None)
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "jaxsubset_scale"))
    args = p.parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    q = args.quick
    n_big, n_small = (20_000, 2_000) if q else (1_000_000, 100_000)
    path = os.path.join(args.workdir, f"images_{n_big}.npy")
    only = set(args.only or ["throughput", "rss", "greedi"])
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
    import jax

    results["device"] = str(jax.devices()[0])
    results["cpus"] = os.cpu_count()
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
