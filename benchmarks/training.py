"""`train.fit` as a user calls it: compile once, and what recording dynamics / dynamic pruning cost.

Rows (each is the public ``fit`` call, timed side by side in one process):

1. compile: the first fit (empty program cache) vs a second fit of the same shapes with another
   seed, and a third on a subset of another size with another epoch count (``compile_time_s``,
   and the whole call's wall time).
2. ``record_dynamics=True`` vs off: training time (``train_time_s``, compiled programs cached),
   median over ``--repeats`` interleaved pairs; target <= 1.10x.
3. the pruning bookkeeping: ``InfoBatch(ratio=0)`` (loss table updated each step, plan drawn each
   epoch, nothing pruned) vs plain training, same steps, median over interleaved pairs.

  python benchmarks/training.py                       # Fashion-MNIST MLP, batch 256
  python benchmarks/training.py --dataset digits --model cnn --batch-size 64
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from jaxsubset import data, train
from jaxsubset.subset import Subset


def timed_fit(*a, **k):
    t = time.perf_counter()
    res = train.fit(*a, **k)
    return res, time.perf_counter() - t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--model", default="mlp")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="digits MLP, 1 repeat")
    args = p.parse_args(argv)
    if args.quick:
        args.dataset, args.repeats, args.batch_size = "digits", 1, 64
    ds = data.load(args.dataset, data_dir=args.data_dir) if args.dataset == "fashion_mnist" else data.load(args.dataset)
    n = ds.y_train.size
    kw = dict(epochs=args.epochs, batch_size=args.batch_size, progress=False, eval_every=args.epochs)
    print(f"# fit benchmark: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.1f}; {args.dataset} (n={n}), {args.model}, batch {args.batch_size}, "
          f"{args.epochs} epochs")
    rows = []
    train.clear_fit_cache()
    first, w1 = timed_fit(args.model, ds, seed=0, **kw)
    second, w2 = timed_fit(args.model, ds, seed=1, **kw)
    sub = Subset.unweighted(np.arange(0, n, 3))
    third, w3 = timed_fit(args.model, ds, sub, seed=2, **dict(kw, epochs=args.epochs + 1))
    rows.append(("first fit", f"{first.compile_time_s:.2f}", f"{w1:.2f}", ""))
    rows.append(("second fit, same shapes, new seed", f"{second.compile_time_s:.3f}", f"{w2:.2f}",
                 f"compile {second.compile_time_s / first.compile_time_s:.1%} of the first"))
    rows.append(("third fit, subset n/3, epochs+1", f"{third.compile_time_s:.3f}", f"{w3:.2f}",
                 f"compile {third.compile_time_s / first.compile_time_s:.1%} of the first"))
    for label, extra in (("record_dynamics=True", dict(record_dynamics=True)),
                         ("InfoBatch(ratio=0) bookkeeping", dict(dynamic=train.InfoBatch(ratio=0.0)))):
        timed_fit(args.model, ds, seed=0, **dict(kw, epochs=1), **extra)  # compile outside the timings
        base, other = [], []
        for r in range(args.repeats):
            base.append(train.fit(args.model, ds, seed=r, **kw).train_time_s)
            other.append(train.fit(args.model, ds, seed=r, **kw, **extra).train_time_s)
        b, o = float(np.median(base)), float(np.median(other))
        rows.append((f"{label} vs plain (train s, median of {args.repeats})", "", f"{o:.2f} vs {b:.2f}",
                     f"{o / b:.3f}x"))
    head = ("fit call", "compile s", "wall s", "ratio")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
