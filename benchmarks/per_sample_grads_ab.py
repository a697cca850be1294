"""Old against new ``jaxsubset.grads`` in one process: a public call of each, interleaved (not a unit test).

On a shared machine two benchmark processes run minutes apart see different loads; here
both versions run in the same process, alternating call by call, on the same data and the
same fresh parameter values. The old version is a copy of an earlier tree whose package is
renamed ``jaxsubset_base``::

    mkdir -p /tmp/old && git archive <commit> jaxsubset | tar -x -C /tmp/old
    mv /tmp/old/jaxsubset /tmp/old/jaxsubset_base
    find /tmp/old -name '*.py' -exec sed -i 's/\\bjaxsubset\\b/jaxsubset_base/g' {} +
    python benchmarks/per_sample_grads_ab.py --old /tmp/old --model mlp --fn grad_norms --rounds 150
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from per_sample_grads import FRESH, problem  # noqa: E402

from jaxsubset import grads  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--old", required=True, help="folder holding the renamed package jaxsubset_base")
    p.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    p.add_argument("--batch", type=int, default=None, help="default: 512 (MLP), 256 (CNN)")
    p.add_argument("--fn", default="grad_norms", help="a public jaxsubset.grads function")
    p.add_argument("--rounds", type=int, default=150)
    a = p.parse_args(argv)
    sys.path.insert(0, a.old)
    old = importlib.import_module("jaxsubset_base.grads")
    batch = a.batch or (512 if a.model == "mlp" else 256)
    m, shape, c, x_np, y_np, *_ = problem(a.model, batch)
    sets = [jax.tree_util.tree_map(lambda v, i=i: v * (1.0 + 0.01 * i), m.params) for i in range(FRESH)]
    nxt = itertools.cycle(sets).__next__
    fns = {"old": lambda: getattr(old, a.fn)(m.apply_fn, nxt(), x_np, y_np),
           "new": lambda: getattr(grads, a.fn)(m.apply_fn, nxt(), x_np, y_np)}
    for f in fns.values():
        f()
        f()
    same = [getattr(mod, a.fn)(m.apply_fn, sets[0], x_np, y_np) for mod in (old, grads)]
    np.testing.assert_allclose(same[1], same[0], rtol=1e-4, atol=1e-5)  # both compute the same thing
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    for r in range(a.rounds):
        for k in (list(fns) if r % 2 else list(fns)[::-1]):
            t, c0 = time.perf_counter(), time.process_time()
            fns[k]()
            wall[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - c0)
    print(f"{a.model} batch {batch}, {a.fn}, {a.rounds} interleaved rounds; load average before {load}, "
          f"after {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for k in fns:
        print(f"  {k}: wall best {np.min(wall[k]) * 1e3:.1f} ms, median {np.median(wall[k]) * 1e3:.1f} ms | "
              f"process CPU best {np.min(cpu[k]) * 1e3:.1f} ms, median {np.median(cpu[k]) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
