"""Where the time of a public ``grads.grad_norms`` call goes (MLP 784-256-256-10, batch 512): a profile.

Replays the stages of ``jaxsubset.grads.ghost.grad_norms`` one by one with the library's own
helpers (host checks, one flatten of the parameters, the cache lookup, chunk planning, the
dispatch of every chunk, fetching the results, the checks after the call) and reports the
calling thread's CPU time of each (``time.thread_time``: what the Python side costs, not
inflated by waiting for a core on a shared machine), then the wall and CPU time of the public
call, of its compiled part alone (the cached jitted chunk function on the same NumPy chunks,
results fetched) and of the jitted batched mean-loss gradient (a). New parameter values on
every call, as adaptive re-selection makes them. Not a unit test; keep it in step with
``grad_norms`` if that changes.

Usage::

    python benchmarks/per_sample_grads_breakdown.py [--rounds 300]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from per_sample_grads import FRESH, compiled_part_of_grad_norms, problem  # noqa: E402

from jaxsubset import grads  # noqa: E402
from jaxsubset.grads import _cache, _inputs, _params, chunking, cross_entropy  # noqa: E402
from jaxsubset.grads.ghost import default_rows  # noqa: E402


def stages(m, params, x_np, y_np, record) -> None:
    """One ``grad_norms(m.apply_fn, params, x_np, y_np)`` call, stage by stage (the same helpers, in order)."""
    t = time.thread_time_ns()

    def mark(name: str) -> None:
        nonlocal t
        now = time.thread_time_ns()
        record.setdefault(name, []).append(now - t)
        t = time.thread_time_ns()

    x, y = chunking.check_xy(x_np, y_np)
    _inputs.check_input_array(x)
    mark("host checks of x, y")
    flat = jax.tree_util.tree_flatten(params)
    chosen = _params.select_leaves(params, None, flat[0])
    mark("flatten params, select leaves")
    entry = _cache.compiled("grad_norms", m.apply_fn, params, (x, y), None, (tuple(chosen), False),
                            lambda f: None, flat=flat)
    mark("cache lookup (key from tree, shapes)")
    chunking.check_labels(y, entry.info["width"])
    mark("label range check")
    run = functools.partial(entry.run, flat[0])
    rows = chunking.cached_fit_rows(entry.rows, run, (x, y), default_rows())
    chunks = list(chunking.iter_chunks((x, y), batch_size=rows, place=False))
    mark("chunk planning")
    outs = [(run(*c), e - s) for s, e, c in chunks]
    mark("dispatch (jit call, NumPy in)")
    got = [[np.asarray(o)[:r] for o in jax.tree_util.tree_leaves(out)] for out, r in outs]
    mark("wait + fetch results")
    norms, ok = got[0] if len(got) == 1 else [np.concatenate(p) for p in zip(*got)]
    _inputs.raise_nonfinite_rows(ok, x)
    chunking.check_finite_rows(norms, "per-sample gradient norms")
    mark("checks after the call")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=300)
    a = p.parse_args(argv)
    m, shape, c, x_np, y_np, x, y, leaves, treedef = problem("mlp", 512)
    sets = [jax.tree_util.tree_map(lambda v, i=i: v * (1.0 + 0.01 * i), m.params) for i in range(FRESH)]
    nxt = itertools.cycle(sets).__next__
    grads.grad_norms(m.apply_fn, m.params, x_np, y_np)
    record: dict[str, list[int]] = {}
    for _ in range(20):
        stages(m, nxt(), x_np, y_np, {})
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    for _ in range(a.rounds):
        stages(m, nxt(), x_np, y_np, record)
    print(f"grad_norms, MLP 784-256-256-10, batch 512, {jax.default_backend()}, jax {jax.__version__}; "
          f"load average before {load}, after {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"calling thread's CPU time per stage, {a.rounds} calls (us):")
    print(f"  {'stage':40s} {'median':>8s} {'best':>8s}")
    for name, v in record.items():
        print(f"  {name:40s} {np.median(v) / 1e3:8.1f} {np.min(v) / 1e3:8.1f}")
    total = sum(np.median(v) for v in record.values()) / 1e3
    print(f"  {'sum of medians':40s} {total:8.1f}")

    def mean_loss(lv, xb, yb):
        return jnp.mean(cross_entropy(m.apply_fn(jax.tree_util.tree_unflatten(treedef, lv), xb), yb))

    batched = jax.jit(jax.grad(mean_loss))
    fns = {"(a) batched gradient": lambda: batched(leaves, x, y),
           "(g) public grad_norms": lambda: grads.grad_norms(m.apply_fn, nxt(), x_np, y_np),
           "(g0) its compiled part": compiled_part_of_grad_norms(m, x_np, y_np)}
    for f in fns.values():
        jax.block_until_ready(f())
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    main_cpu = {k: [] for k in fns}
    for r in range(a.rounds // 3):
        for k in (list(fns) if r % 2 else list(fns)[::-1]):
            t, c0, m0 = time.perf_counter(), time.process_time(), time.thread_time()
            jax.block_until_ready(fns[k]())
            wall[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - c0)
            main_cpu[k].append(time.thread_time() - m0)
    print(f"whole calls, {a.rounds // 3} interleaved rounds (ms): median / best")
    for k in fns:
        print(f"  {k:24s} wall {np.median(wall[k]) * 1e3:6.2f} / {np.min(wall[k]) * 1e3:6.2f}   process CPU "
              f"{np.median(cpu[k]) * 1e3:6.2f} / {np.min(cpu[k]) * 1e3:6.2f}   calling thread CPU "
              f"{np.median(main_cpu[k]) * 1e3:6.2f} / {np.min(main_cpu[k]) * 1e3:6.2f}")


if __name__ == "__main__":
    main()
