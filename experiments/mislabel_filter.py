"""Learned values as a filter: drop the lowest-valued points, then keep a random 50 % of the rest, vs random 50 %.

Follow-up of experiments/mislabel.py (same pool, clean validation split, surrogate, learned-values
settings and training): the top 50 % by learned value is a clean but *easy* subset and loses to a
random 50 % at 30 % noise. Here the learned values only remove the suspected mislabelled points: the
fraction dropped per class is the surrogate's training disagreement rate (share of pool rows whose
label differs from the surrogate's prediction, a data-driven noise estimate, capped so that the
budget stays reachable), and the budget is filled uniformly at random from the rest.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import _common as C  # noqa: E402
import mislabel as M  # noqa: E402

from jaxsubset import budget_from_fraction, data, report, selectors, train  # noqa: E402
from jaxsubset.data.offline import stratified_split  # noqa: E402
from jaxsubset.valuation.learned import fit_selection_model  # noqa: E402


def main(argv=None) -> int:
    p = C.parser("mislabel_filter", __doc__.splitlines()[0])
    p.add_argument("--noise", type=float, default=0.3)
    p.add_argument("--fraction", type=float, default=0.5)
    args = p.parse_args(argv)
    dname, model, n_val, sur_epochs, epochs, learned_kw = M.CONFIGS["quick" if args.quick else "fmnist"]
    if args.quick:
        args.seeds = 1
    train_kw = dict(batch_size=256, lr=1e-3, optimizer="adam", schedule="cosine")
    data_dir = args.data_dir or (M.DEFAULT_DATA_DIR if dname == "fashion_mnist" else None)
    full = data.load(dname, data_dir=data_dir) if data_dir else data.load(dname)
    pool_idx, val_idx = stratified_split(full.y_train, n_val / full.y_train.size, seed=0)
    val = (full.x_train[val_idx], full.y_train[val_idx])
    clean = full.replace(x_train=full.x_train[pool_idx], y_train=full.y_train[pool_idx])
    n = clean.y_train.size
    rows = []
    for seed in range(args.seeds):
        ds, flipped = data.flip_labels(clean, args.noise, seed=seed)
        is_flipped = np.zeros(n, bool)
        is_flipped[flipped] = True
        sur, _ = C.score_model(ds, model, seed=seed, epochs=sur_epochs, train_kw=train_kw, progress=False)
        pred = np.concatenate([np.asarray(jnp.argmax(sur.apply_fn(sur.params, jnp.asarray(ds.x_train[s:s + 4096])), -1))
                               for s in range(0, n, 4096)])
        drop = min(float(np.mean(pred != ds.y_train)), 1.0 - args.fraction)
        t0 = time.perf_counter()
        kw = {k: v for k, v in learned_kw.items() if k != "dynamics"}     # no dynamics recorded here
        if kw.get("budget_fraction") == "auto":
            kw["budget_fraction"] = float(np.clip(1.0 - drop, 0.5, 0.9))
        values = fit_selection_model(sur, ds.x_train, ds.y_train, num_classes=ds.num_classes, seed=seed,
                                     validation=val, **kw).values
        t_l = time.perf_counter() - t0
        budget = budget_from_fraction(args.fraction, n)
        subs = {"random": selectors.select("random", ds.y_train, budget, seed=seed, num_classes=ds.num_classes),
                "learned_filter": selectors.select("learned_filter", ds.y_train, budget,
                                                   {"learned_value": values, "noise_rate": np.full(n, drop)},
                                                   seed=seed, num_classes=ds.num_classes)}
        for method, sub in subs.items():
            res = train.fit(model, ds, sub, epochs=epochs, seed=seed, progress=False, eval_every=epochs, **train_kw)
            rows.append(dict(dataset=dname, noise=args.noise, fraction=args.fraction, seed=seed, method=method,
                             test_accuracy=res.history["test_accuracy"][-1], dropped=drop, learned_s=t_l,
                             flipped_kept=float(is_flipped[sub.indices].mean())))
            print(rows[-1], flush=True)
    diffs = report.paired_differences(rows, ["dataset", "noise", "fraction"], baseline="random")
    summary = report.summarize(rows, ["dataset", "noise", "method", "fraction"],
                               ["test_accuracy", "flipped_kept", "dropped"])
    md = "\n".join([
        report.markdown_table(["method", "test acc. %", "flipped in subset %", "dropped before sampling", "seeds"],
                              [(s["method"], C.fmt(s["test_accuracy_mean"], s["test_accuracy_std"]),
                                C.fmt(s["flipped_kept_mean"], s["flipped_kept_std"], digits=1),
                                f"{s['dropped_mean']:.1%}", s["n"]) for s in summary]),
        "", report.markdown_table(["method", "vs", "difference (points, 95 % interval)", "verdict"],
                                  [(d["method"], d["baseline"], report.fmt_diff(d), d["verdict"]) for d in diffs])])
    C.write_outputs(args.out, "mislabel_filter", rows, summary + diffs, md,
                    dict(vars(args), learned=learned_kw, epochs=epochs, surrogate_epochs=sur_epochs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
