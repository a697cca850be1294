"""Heuristic pruning strategies: Random, Loss, Loss-Grad (GraNd), EL2N, input-gradient norm.

(a) test accuracy versus pruning ratio (the highest-scoring examples are kept, per class);
(b) test accuracy versus the number of surrogate pre-training epochs before scoring;
(c) overlap ("repetition rate") between the methods' selections among the first and the last
    ranked samples (10 000 in the published MNIST study; 10 % of the ranking in the CPU proxy).
The published configuration is the 2-conv/2-dense CNN on MNIST and ResNet-18 on CIFAR-10
(`--config gpu`, files in `--data-dir`); the CPU proxy uses `digits` and `mnist1d` (offline).

`--config fmnist` is the coverage-aware study on full Fashion-MNIST (MLP, batch 256): hardest-only
scores (EL2N, loss, AUM, forgetting), uncertainty (least confidence, entropy, margin), CCS, Moderate and
D2 against random at the same budget and training, with paired differences (95 % Student-t intervals
over seeds) and the total time of each method, surrogate included.
"""

from __future__ import annotations

import itertools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import _common as C  # noqa: E402

from jaxsubset import budget_from_fraction, data, report, selectors, train  # noqa: E402
from jaxsubset.workflows import quantities  # noqa: E402

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


# ---------------------------------------------------------------------------------------------------
# --config fmnist: coverage-aware selection on full Fashion-MNIST
FMNIST_DIR = "/usr/share/datasets/fashion-mnist"
# (row label, registered method); the hardest-only AUM / forgetting rows are registered below if absent
FMNIST_METHODS = ("random", "el2n_hard", "loss_hard", "aum_hard", "forgetting_hard", "uncertainty_least_confidence",
                  "uncertainty_entropy", "uncertainty_margin", "ccs", "ccs_el2n", "moderate", "d2")
# CCS / D2 against the hardest-only selection of the same score
SAME_SCORE = {"ccs": "aum_hard", "ccs_el2n": "el2n_hard", "ccs_forgetting": "forgetting_hard", "d2": "forgetting_hard"}


def _register_hardest() -> None:
    if "aum_hard" not in selectors.METHODS:
        selectors.register("aum_hard", selectors.top_k, needs=("aum",), largest=False,
                           description="lowest area under the margin (hardest, Pleiss 2020)")
    if "forgetting_hard" not in selectors.METHODS:
        selectors.register("forgetting_hard", selectors.top_k, needs=("forgetting",), largest=True,
                           description="most forgotten examples (Toneva 2019)")


class EpochEndDynamics:
    """AUM and forgetting from the logits on the whole training set at the end of every epoch.

    Used as ``fit``'s ``reselect`` callback with ``select_every=1`` (it returns the full data, so
    training is unchanged): at the start of epoch ``e >= 1`` the model is the one after epoch
    ``e - 1``; :meth:`finish` adds the final model. This is an epoch-end approximation of the papers'
    per-presentation statistics (one extra forward pass per epoch); ``fit(..., record_dynamics=True)``
    records them from the training steps themselves.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y, self.n = x, y, y.size
        self.margins, self.correct, self._f = [], [], None

    def _record(self, model) -> None:
        import jax

        if self._f is None:
            self._f = jax.jit(model.apply_fn)
        z = np.concatenate([np.asarray(self._f(model.params, self.x[s:s + 4096]))
                            for s in range(0, self.n, 4096)]).astype(np.float64)
        rows = np.arange(self.n)
        own = z[rows, self.y]
        z[rows, self.y] = -np.inf
        self.margins.append(own - z.max(axis=1))
        self.correct.append(self.margins[-1] > 0)

    def __call__(self, model, epoch: int):
        from jaxsubset import Subset

        if epoch >= 1:
            self._record(model)
        return Subset(np.arange(self.n), np.ones(self.n, np.float32))

    def finish(self, model) -> dict[str, np.ndarray]:
        """``{"aum": (n,), "forgetting": (n,)}``; never-learned examples get forgetting = #epochs (above any count)."""
        self._record(model)
        m = np.stack(self.margins)                  # (E, n)
        c = np.stack(self.correct)
        forgetting = (c[:-1] & ~c[1:]).sum(axis=0).astype(np.float64)
        forgetting[~c.any(axis=0)] = len(c)
        return {"aum": m.mean(axis=0), "forgetting": forgetting}


def fmnist_surrogate(ds, model: str, *, seed: int, epochs: int, train_kw: dict, needs) -> tuple[dict, float]:
    """Train the surrogate on all rows, recording dynamics; every quantity in ``needs``; wall seconds."""
    t0 = time.perf_counter()
    rec = EpochEndDynamics(ds.x_train, ds.y_train)
    res = train.fit(model, ds, epochs=epochs, seed=seed + 1000, progress=False, eval_every=epochs,
                    reselect=rec, select_every=1, **train_kw)
    q = rec.finish(res.model)
    rest = [n for n in needs if n not in q]
    q.update(quantities.compute(rest, res.model, ds.x_train, ds.y_train))
    return q, time.perf_counter() - t0


def fmnist_render(rows, summary, diffs, same) -> str:
    acc = {(s["method"], s["fraction"]): s for s in summary}
    dr = {(d["method"], d["fraction"]): d for d in diffs}
    ds_ = {(d["method"], d["fraction"]): d for d in same}
    r0 = rows[0]
    head = (f"Fashion-MNIST (60 000 train / 10 000 test), {r0['model'].upper()} 784-256-256-10, "
            f"{r0['epochs']} epochs per subset (Adam one-cycle, batch {r0['batch_size']}), surrogate "
            f"{r0['surrogate_epochs']} epochs on all rows; {max(r['seed'] for r in rows) + 1} seeds; device "
            f"{C.environment()['device']} (2 shared cores). AUM / forgetting: {r0['dynamics']}. "
            "Δ random / Δ same score: paired over seeds, mean [95 % t-interval], percentage points. "
            "total s = surrogate + scoring + selection + training (the surrogate is charged to every "
            "method that needs it).")
    tab = report.markdown_table(
        ["kept", "method", "test acc. %", "Δ random (pp)", "Δ hardest-only, same score (pp)", "total s", "seeds"],
        [(f"{s['fraction']:.0%}", s["method"], C.fmt(s["test_accuracy_mean"], s["test_accuracy_std"]),
          report.fmt_diff(dr[(s["method"], s["fraction"])]) if (s["method"], s["fraction"]) in dr else "–",
          (f"{report.fmt_diff(ds_[(s['method'], s['fraction'])])} vs {SAME_SCORE[s['method']]}"
           if (s["method"], s["fraction"]) in ds_ else "–"),
          f"{s['total_time_s_mean']:.1f}", s["n"]) for s in summary])
    return "\n".join(["## Coverage-aware selection on full Fashion-MNIST", "", head, "", tab])


def run_fmnist(args) -> int:
    """The ``--config fmnist`` study (see the module docstring)."""
    _register_hardest()
    fractions = args.fractions or [0.1, 0.2, 0.4]
    epochs = args.epochs or 10
    s_epochs = args.surrogate_epochs or 6
    seeds = args.seeds
    model = "mlp"
    train_kw = dict(batch_size=256, lr=3e-3, optimizer="adam", schedule="onecycle")
    methods = list(FMNIST_METHODS)
    if args.quick:
        fractions, epochs, s_epochs, seeds = [0.1], 1, 2, 1
    out = args.out if args.out != os.path.join(C.HERE, "results", "pruning_heuristics") else \
        os.path.join(C.HERE, "results", "pruning_heuristics", "fmnist")
    if args.combine:  # e.g. a 10-40 % run and an 80 % run of the same configuration
        rows, seen = [], set()
        for d in args.combine:
            for r in report.read_csv(os.path.join(d, "rows.csv")):
                key = (r["method"], r["fraction"], r["seed"])
                if key not in seen:  # each run trains its own (identical-seed) full-data baseline: keep one
                    seen.add(key)
                    rows.append(r)
        fmnist_write(out, rows, methods, args)
        return 0
    ds = data.load("fashion_mnist", data_dir=args.data_dir or FMNIST_DIR)
    if args.quick:  # a smoke run: 5 000 training rows
        import dataclasses

        ds = dataclasses.replace(ds, x_train=ds.x_train[:5000], y_train=ds.y_train[:5000])
    needs = sorted({q for m in methods for q in selectors.get(m).needs})
    n = ds.y_train.size
    rows = []
    base = dict(dataset="fashion_mnist", model=model, epochs=epochs, batch_size=train_kw["batch_size"],
                surrogate_epochs=s_epochs, dynamics="epoch-end logits of the surrogate (EpochEndDynamics)")
    for seed in range(seeds):
        t0 = time.perf_counter()
        if not args.skip_full:
            full = train.fit(model, ds, epochs=epochs, seed=seed, progress=False, eval_every=epochs, **train_kw)
            rows.append(dict(base, seed=seed, method="full", fraction=1.0, num_examples=n,
                             test_accuracy=full.history["test_accuracy"][-1], scoring_time_s=0.0,
                             selection_time_s=0.0, train_time_s=full.train_time_s,
                             fit_wall_s=time.perf_counter() - t0))
        q, t_score = fmnist_surrogate(ds, model, seed=seed, epochs=s_epochs, train_kw=train_kw, needs=needs)
        print(f"seed {seed}: surrogate + scoring {t_score:.1f} s", flush=True)
        for frac in fractions:
            budget = budget_from_fraction(frac, n)
            for method in methods:
                t0 = time.perf_counter()
                sub = selectors.select(method, ds.y_train, budget, q, seed=seed, num_classes=ds.num_classes)
                t_sel = time.perf_counter() - t0
                t0 = time.perf_counter()
                res = train.fit(model, ds, sub, epochs=epochs, seed=seed, progress=False, eval_every=epochs,
                                **train_kw)
                rows.append(dict(base, seed=seed, method=method, fraction=frac, num_examples=len(sub),
                                 test_accuracy=res.history["test_accuracy"][-1],
                                 scoring_time_s=t_score if selectors.get(method).needs else 0.0,
                                 selection_time_s=t_sel, train_time_s=res.train_time_s,
                                 fit_wall_s=time.perf_counter() - t0))
                print(f"  {frac:.0%} {method}: {rows[-1]['test_accuracy']:.4f} (select {t_sel:.2f} s)", flush=True)
        fmnist_write(out, rows, methods, args)  # after every seed, so that a stopped run keeps finished seeds
    return 0


def fmnist_write(out: str, rows: list, methods: list, args) -> None:
    """Summaries, paired differences, table and plot of the ``--config fmnist`` rows so far."""
    for r in rows:
        r["total_time_s"] = r["scoring_time_s"] + r["selection_time_s"] + r["train_time_s"]
    sub_rows = [r for r in rows if r["method"] != "full"]
    summary = report.summarize(rows, ["method", "fraction"], ["test_accuracy", "total_time_s", "selection_time_s"])
    summary = sorted(summary, key=lambda s: (-s["fraction"] if s["method"] == "full" else s["fraction"],
                                             methods.index(s["method"]) if s["method"] in methods else -1))
    diffs = report.paired_differences(sub_rows, ["fraction"], baseline="random")
    same = []
    for m, hard in SAME_SCORE.items():
        if m in methods and hard in methods:
            same += [d for d in report.paired_differences([r for r in sub_rows if r["method"] in (m, hard)],
                                                          ["fraction"], baseline=hard) if d["method"] == m]
    md = fmnist_render(rows, summary, diffs, same)
    md += "\n\n## Paired differences (records)\n\n" + report.markdown_table(
        ["kept", "method", "baseline", "Δ mean (pp)", "95 % interval (pp)", "verdict", "pairs"],
        [(f"{d['fraction']:.0%}", d["method"], d["baseline"], f"{100 * d['diff_mean']:+.2f}",
          f"[{100 * d['ci_low']:+.2f}, {100 * d['ci_high']:+.2f}]", d["verdict"], d["n"]) for d in diffs + same])
    summ = [dict(s, part="summary") for s in summary] + [dict(d, part="paired") for d in diffs + same]
    C.write_outputs(out, "pruning_heuristics_fmnist", rows, summ, md, vars(args))
    series = {m: ([s["fraction"] for s in summary if s["method"] == m],
                  [s["test_accuracy_mean"] for s in summary if s["method"] == m],
                  [s["test_accuracy_std"] for s in summary if s["method"] == m]) for m in methods}
    C.line_plot(os.path.join(out, "accuracy_vs_fraction_fashion_mnist.png"), series, xlabel="fraction kept",
                ylabel="test accuracy", title="coverage-aware selection: Fashion-MNIST, MLP")


def main(argv=None) -> int:
    p = C.parser("pruning_heuristics", __doc__.splitlines()[0])
    p.add_argument("--config", choices=sorted(CONFIGS) + ["fmnist"], default="cpu")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.2, 0.4, 0.6, 0.8], help="fractions pruned")
    p.add_argument("--score-epochs-grid", type=int, nargs="+", default=[0, 1, 3, 6])
    p.add_argument("--fractions", type=float, nargs="+", default=None,
                   help="fmnist config: fractions kept (default 0.1 0.2 0.4)")
    p.add_argument("--epochs", type=int, default=None, help="fmnist config: training epochs of every subset")
    p.add_argument("--surrogate-epochs", type=int, default=None, help="fmnist config: surrogate epochs")
    p.add_argument("--skip-full", action="store_true",
                   help="fmnist config: no full-data baseline (e.g. a run to --combine with one that has it)")
    p.add_argument("--combine", nargs="+", default=None, metavar="DIR",
                   help="fmnist config: no training; merge the rows.csv of these output folders into --out")
    args = p.parse_args(argv)
    if args.config == "fmnist":
        return run_fmnist(args)
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
                q = quantities.compute([v[1] for v in strategies.values()], sur, ds.x_train, ds.y_train)
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
