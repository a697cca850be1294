"""Heuristic pruning strategies: Random, Loss, Loss-Grad (GraNd), EL2N, input-gradient norm.

(a) test accuracy versus pruning ratio (the highest-scoring examples are kept, per class);
(b) test accuracy versus the number of surrogate pre-training epochs before scoring;
(c) overlap ("repetition rate") between the methods' selections among the first and the last
    ranked samples (10 000 in the published MNIST study; 10 % of the ranking in the CPU proxy).
The published configuration is the 2-conv/2-dense CNN on MNIST and ResNet-18 on CIFAR-10
(`--config gpu`, files in `--data-dir`); the CPU proxy uses `digits` and `mnist1d` (offline).
"""

from __future__ import annotations

import itertools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import _common as C  # noqa: E402

from jaxsubset import budget_from_fraction, data, report, scoring, selectors, train  # noqa: E402

# name in the study -> (registered method keeping the hardest examples, quantity it ranks by)
STRATEGIES = {"Loss": ("loss_hard", "loss"), "Loss-Grad": ("grand_hard", "grad_norm"),
              "EL2N": ("el2n_hard", "el2n"), "Input-Grad": ("input_grad_hard", "input_grad_norm")}
# Published repetition rates on MNIST (%), first / last 10 000 ranked samples.
PUBLISHED_OVERLAP = {("Loss", "Loss-Grad"): (96.78, 95.01), ("Loss-Grad", "EL2N"): (96.45, 95.89),
                     ("Loss", "EL2N"): (97.68, 96.32)}
CONFIGS = {
    "cpu": ((("digits", "mlp"), ("mnist1d", "cnn")), 12, 3e-3, "adam", 3, 0.1),
    "gpu": ((("mnist", "cnn"), ("cifar10", "resnet18")), 12, 0.05, "sgd", 3, None),
}


def overlap(a: np.ndarray, b: np.ndarray, k: int, *, top: bool) -> float:
    """Fraction of common indices among the ``k`` highest (``top``) or lowest ranked of two scorings."""
    ra, rb = np.argsort(-a, kind="stable"), np.argsort(-b, kind="stable")
    sa, sb = (ra[:k], rb[:k]) if top else (ra[-k:], rb[-k:])
    return len(np.intersect1d(sa, sb)) / k


def render(summary) -> str:
    """The markdown tables of a summary (also used by make_results.py to rebuild RESULTS.md)."""
    sa = [s for s in summary if s["part"] == "a"]
    sb = [s for s in summary if s["part"] == "b"]
    sc = [s for s in summary if s["part"] == "c"]
    md = ["## (a) accuracy versus pruning ratio (hardest kept)", report.markdown_table(
        ["data set", "method", "pruned", "test acc. %", "scoring s", "selection s", "training s", "speed-up", "seeds"],
        [(s["dataset"], s["method"], f"{s['pruning_ratio']:.0%}", C.fmt(s["test_accuracy_mean"], s["test_accuracy_std"]),
          f"{s['scoring_time_s_mean']:.2f}", f"{s['selection_time_s_mean']:.3f}", f"{s['train_time_s_mean']:.2f}",
          f"{s['speedup_vs_full_mean']:.2f}×", s["n"]) for s in sa]),
          "", "## (b) accuracy versus surrogate epochs before scoring", report.markdown_table(
        ["data set", "strategy", "surrogate epochs", "test acc. %", "seeds"],
        [(s["dataset"], s["strategy"], s["score_epochs"], C.fmt(s["test_accuracy_mean"], s["test_accuracy_std"]),
          s["n"]) for s in sb]),
          "", "## (c) repetition rate of the selections (first / last ranked)", report.markdown_table(
        ["data set", "pair", "first % (ours)", "last % (ours)", "published MNIST first / last %"],
        [(s["dataset"], f"{s['a']} vs {s['b']}", C.fmt(s["first_mean"], s["first_std"]),
          C.fmt(s["last_mean"], s["last_std"]),
          "/".join(f"{v:.2f}" for v in PUBLISHED_OVERLAP.get((s["a"], s["b"]), ())) or "–") for s in sc])]
    return "\n".join(md)


def main(argv=None) -> int:
    p = C.parser("pruning_heuristics", __doc__.splitlines()[0])
    p.add_argument("--config", choices=sorted(CONFIGS), default="cpu")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.2, 0.4, 0.6, 0.8], help="fractions pruned")
    p.add_argument("--score-epochs-grid", type=int, nargs="+", default=[0, 1, 3, 6])
    args = p.parse_args(argv)
    pairs, epochs, lr, opt, score_epochs, top_frac = CONFIGS[args.config]
    strategies = {k: v for k, v in STRATEGIES.items() if v[0] in selectors.METHODS}
    ratios, seeds, grid = args.ratios, args.seeds, args.score_epochs_grid
    if args.quick:
        pairs, epochs, ratios, seeds, score_epochs, grid = pairs[:1], 1, [0.5], 1, 1, [0, 1]
    train_kw = dict(batch_size=64, lr=lr, optimizer=opt, schedule="onecycle")
    progress = not args.no_progress
    methods = ["random"] + [m for m, _ in strategies.values()]
    rows_a, rows_b, rows_c = [], [], []
    for name, model in pairs:
        ds = data.load(name, data_dir=args.data_dir)
        n = ds.y_train.size
        # (a) accuracy versus pruning ratio
        for r in C.run_grid(ds, model, methods, [round(1 - x, 6) for x in ratios], seeds, epochs=epochs,
                            score_epochs=score_epochs, train_kw=train_kw, progress=progress):
            r["pruning_ratio"] = round(1 - r["fraction"], 6)
            rows_a.append(r)
        # (b) accuracy versus pre-training epochs before scoring, at the middle ratio
        ratio = ratios[len(ratios) // 2]
        budget = budget_from_fraction(1 - ratio, n)
        for seed in range(seeds):
            for se in grid:
                if se == 0:
                    from jaxsubset.models import create, to_pure
                    sur, t_sur = to_pure(create(model, ds.input_shape, ds.num_classes, seed=seed + 1000)), 0.0
                else:
                    sur, t_sur = C.score_model(ds, model, seed=seed, epochs=se, train_kw=train_kw, progress=progress)
                q = scoring.compute([v[1] for v in strategies.values()], sur, ds.x_train, ds.y_train)
                for label, (method, _) in strategies.items():
                    sub = selectors.select(method, ds.y_train, budget, q, seed=seed, num_classes=ds.num_classes)
                    res = train.fit(model, ds, sub, epochs=epochs, seed=seed, progress=progress, eval_every=epochs,
                                    **train_kw)
                    rows_b.append(dict(dataset=name, model=model, seed=seed, strategy=label, score_epochs=se,
                                       pruning_ratio=ratio, test_accuracy=res.history["test_accuracy"][-1]))
                # (c) overlap of rankings between strategies (same surrogate)
                if se == score_epochs or (se == grid[-1] and score_epochs not in grid):
                    k = max(1, int(round(top_frac * n))) if top_frac else min(10_000, n)
                    for (la, (_, qa)), (lb, (_, qb)) in itertools.combinations(strategies.items(), 2):
                        rows_c.append(dict(dataset=name, model=model, seed=seed, a=la, b=lb, k=k,
                                           first=overlap(q[qa], q[qb], k, top=True),
                                           last=overlap(q[qa], q[qb], k, top=False)))
    sa = report.summarize(rows_a, ["dataset", "method", "pruning_ratio"],
                          ["test_accuracy", "scoring_time_s", "selection_time_s", "train_time_s", "speedup_vs_full"])
    sb = report.summarize(rows_b, ["dataset", "strategy", "score_epochs"], ["test_accuracy"])
    sc = report.summarize(rows_c, ["dataset", "a", "b"], ["first", "last"])
    summary = [dict(x, part="a") for x in sa] + [dict(x, part="b") for x in sb] + [dict(x, part="c") for x in sc]
    md = render(summary)
    rows = [dict(r, part="a") for r in rows_a] + [dict(r, part="b") for r in rows_b] + [dict(r, part="c") for r in rows_c]
    C.write_outputs(args.out, "pruning_heuristics", rows, summary, md, vars(args))
    for name, _ in pairs:
        series = C.accuracy_series(sa, name, "method", methods, "pruning_ratio")
        C.line_plot(os.path.join(args.out, f"accuracy_vs_ratio_{name}.png"), series, xlabel="pruning ratio",
                    ylabel="test accuracy", title=f"pruning heuristics: {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
