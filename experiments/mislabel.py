"""Mislabel study: learned values (differentiable facility-location layer) against score baselines.

10 % and 30 % of the training labels are flipped (`data.flip_labels`); a clean validation split
(10 % of the training rows, held out before flipping and excluded from every pool) is what the
learned selector validates on. Over >= 3 seeds it reports
(a) test accuracy of a model trained on the subset each method keeps (20-80 %, per class) against
    random, loss top-k (lowest loss kept), EL2N, GraNd, CRAIG and GEDA (those registered);
(b) precision / recall of the flipped labels among the lowest-valued points (the fraction inspected
    equals the noise rate, and twice it) and the area under the detection (ROC) curve, against the
    loss, EL2N and GraNd rankings (highest score = most suspicious);
(c) selection wall time: surrogate training, the method's per-example quantities, the selection.
The CPU configuration runs an MLP on `digits` and `mnist1d` (offline).
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import _common as C  # noqa: E402

from jaxsubset import budget_from_fraction, data, report, scoring, selectors, train  # noqa: E402
from jaxsubset.data.offline import stratified_split  # noqa: E402
from jaxsubset.selectors.learned import fit_selection_model  # noqa: E402


# accuracy baselines (kept only when registered) and the detection rankings (quantity, higher = suspicious)
METHODS = ("random", "loss_easy", "el2n_hard", "grand_hard", "craig", "geda", "learned")
DETECTORS = {"loss": "loss", "el2n": "el2n", "grand": "grad_norm"}
CONFIGS = {
    # name: (data sets and models, epochs, lr, surrogate epochs, learned epochs)
    "cpu": ((("digits", "mlp"), ("mnist1d", "mlp")), 15, 1e-3, 3, 6),
    "gpu": ((("mnist", "cnn"), ("cifar10", "resnet18")), 15, 1e-3, 3, 6),
}


def detection(suspicion: np.ndarray, flipped: np.ndarray, fractions) -> dict[str, float]:
    """Precision / recall among the ``f·n`` most suspicious rows for each ``f``, and ROC AUC."""
    n = suspicion.size
    pos = np.zeros(n, bool)
    pos[flipped] = True
    order = np.argsort(-suspicion, kind="stable")
    out = {}
    for name, f in fractions.items():
        m = max(1, int(round(f * n)))
        hits = int(pos[order[:m]].sum())
        out[f"precision_{name}"] = hits / m
        out[f"recall_{name}"] = hits / max(int(pos.sum()), 1)
    ranks = np.empty(n)
    ranks[np.argsort(suspicion, kind="stable")] = np.arange(1, n + 1)
    # average ranks of ties, for an exact Mann-Whitney AUC
    uniq, inv, counts = np.unique(suspicion, return_inverse=True, return_counts=True)
    if uniq.size < n:
        sums = np.bincount(inv, weights=ranks)
        ranks = (sums / counts)[inv]
    p, q = int(pos.sum()), n - int(pos.sum())
    out["auc"] = float((ranks[pos].sum() - p * (p + 1) / 2) / max(p * q, 1))
    return out


def recall_curve(suspicion: np.ndarray, flipped: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Recall of the flipped rows among the most suspicious ``grid·n`` rows."""
    pos = np.zeros(suspicion.size, bool)
    pos[flipped] = True
    hits = np.cumsum(pos[np.argsort(-suspicion, kind="stable")])
    idx = np.clip(np.round(grid * suspicion.size).astype(int) - 1, 0, suspicion.size - 1)
    return hits[idx] / max(int(pos.sum()), 1)


def render(summary) -> str:
    sa = [s for s in summary if s["part"] == "a"]
    sb = [s for s in summary if s["part"] == "b"]
    sc = [s for s in summary if s["part"] == "c"]
    return "\n".join([
        "## (a) test accuracy of models trained on the kept subset (noisy labels)",
        report.markdown_table(
            ["data set", "flipped", "method", "kept", "test acc. %", "flipped in subset %", "seeds"],
            [(s["dataset"], f"{s['noise']:.0%}", s["method"], f"{s['fraction']:.0%}",
              C.fmt(s["test_accuracy_mean"], s["test_accuracy_std"]),
              C.fmt(s["flipped_kept_mean"], s["flipped_kept_std"], digits=1), s["n"]) for s in sa]),
        "", "## (b) detection of the flipped labels (lowest values / highest scores inspected first)",
        report.markdown_table(
            ["data set", "flipped", "ranking", "precision @ noise %", "recall @ 2×noise %", "ROC AUC", "seeds"],
            [(s["dataset"], f"{s['noise']:.0%}", s["ranking"],
              C.fmt(s["precision_noise_mean"], s["precision_noise_std"], digits=1),
              C.fmt(s["recall_twice_mean"], s["recall_twice_std"], digits=1),
              C.fmt(s["auc_mean"], s["auc_std"], scale=1.0, digits=3), s["n"]) for s in sb]),
        "", "## (c) selection wall time (s): surrogate + the method's quantities + selection "
            "(first seed includes compilation)",
        report.markdown_table(
            ["data set", "flipped", "method", "kept", "surrogate s", "quantities s", "selection s", "total s", "seeds"],
            [(s["dataset"], f"{s['noise']:.0%}", s["method"], f"{s['fraction']:.0%}", f"{s['surrogate_s_mean']:.2f}",
              f"{s['quantity_s_mean']:.2f}", f"{s['select_s_mean']:.3f}",
              f"{s['total_s_mean']:.2f} ± {s['total_s_std']:.2f}", s["n"]) for s in sc]),
    ])


def main(argv=None) -> int:
    p = C.parser("mislabel", __doc__.splitlines()[0])
    p.add_argument("--config", choices=sorted(CONFIGS), default="cpu")
    p.add_argument("--datasets", nargs="+", default=None, help="subset of the configuration's data sets")
    p.add_argument("--noise", type=float, nargs="+", default=[0.1, 0.3])
    p.add_argument("--fractions", type=float, nargs="+", default=[0.2, 0.4, 0.6, 0.8])
    p.add_argument("--methods", nargs="+", default=None, help=f"default: the registered ones of {list(METHODS)}")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--learned-epochs", type=int, default=None)
    p.add_argument("--readout", choices=("cost", "selection"), default="cost")
    args = p.parse_args(argv)
    pairs, epochs, lr, score_epochs, learned_epochs = CONFIGS[args.config]
    if args.datasets:
        pairs = tuple(pm for pm in pairs if pm[0] in args.datasets)
    methods = [m for m in (args.methods or METHODS) if m in selectors.METHODS]
    noises, fractions, seeds = args.noise, args.fractions, args.seeds
    if args.quick:
        pairs, noises, fractions, seeds = pairs[:1], [0.3], [0.4], 1
        epochs, score_epochs, learned_epochs = 3, 2, 2
        methods = [m for m in methods if m in ("random", "loss_easy", "learned")]
    epochs = args.epochs or epochs
    learned_epochs = args.learned_epochs or learned_epochs
    train_kw = dict(batch_size=64, lr=lr, optimizer="adam", schedule="cosine")
    progress = not args.no_progress
    needs = sorted({q for m in methods for q in selectors.get(m).needs} - {"learned_value"}
                   | set(DETECTORS.values()))
    rows_a, rows_b, rows_c, curves = [], [], [], {}
    grid = np.linspace(0.05, 1.0, 20)
    t_frac = min(fractions, key=lambda f: (abs(f - 0.5), f))    # the fraction whose selection is timed
    for name, model in pairs:
        full = data.load(name, data_dir=args.data_dir)
        pool_idx, val_idx = stratified_split(full.y_train, 0.1, seed=0)      # clean validation split
        val = (full.x_train[val_idx], full.y_train[val_idx])
        clean = full.replace(x_train=full.x_train[pool_idx], y_train=full.y_train[pool_idx])
        n = clean.y_train.size
        for noise in noises:
            for seed in range(seeds):
                ds, flipped = data.flip_labels(clean, noise, seed=seed)
                is_flipped = np.zeros(n, bool)
                is_flipped[flipped] = True
                base = dict(dataset=name, model=model, noise=noise, seed=seed)
                # surrogate on the noisy pool, then each quantity timed on its own
                sur, t_sur = C.score_model(ds, model, seed=seed, epochs=score_epochs, train_kw=train_kw,
                                           progress=progress)
                quantities, t_q = {}, {}
                for q in needs:
                    t0 = time.perf_counter()
                    quantities.update(scoring.compute([q], sur, ds.x_train, ds.y_train))
                    t_q[q] = time.perf_counter() - t0
                t0 = time.perf_counter()
                fitted = fit_selection_model(sur, ds.x_train, ds.y_train, num_classes=ds.num_classes,
                                             budget_fraction=0.5, epochs=learned_epochs, seed=seed,
                                             validation=val, readout=args.readout, progress=progress)
                t_q["learned_value"] = time.perf_counter() - t0
                quantities["learned_value"] = fitted.values
                # (b) detection
                rankings = {k: quantities[q] for k, q in DETECTORS.items()}
                rankings["learned"] = -fitted.values
                for rname, susp in rankings.items():
                    det = detection(susp, flipped, {"noise": noise, "twice": min(1.0, 2 * noise)})
                    rows_b.append(dict(base, ranking=rname, **det))
                    curves.setdefault((name, noise, rname), []).append(recall_curve(susp, flipped, grid))
                # (a) accuracy and (c) timing
                for frac in fractions:
                    budget = budget_from_fraction(frac, n)
                    for method in methods:
                        t0 = time.perf_counter()
                        sub = selectors.select(method, ds.y_train, budget, quantities, seed=seed,
                                               num_classes=ds.num_classes)
                        t_sel = time.perf_counter() - t0
                        res = train.fit(model, ds, sub, epochs=epochs, seed=seed, progress=progress,
                                        eval_every=epochs, **train_kw)
                        rows_a.append(dict(base, method=method, fraction=frac, num_examples=len(sub),
                                           test_accuracy=res.history["test_accuracy"][-1],
                                           flipped_kept=float(is_flipped[sub.indices].mean())))
                        if frac == t_frac:
                            mq = selectors.get(method).needs
                            tq = sum(t_q[q] for q in mq)
                            ts = t_sur if mq else 0.0
                            rows_c.append(dict(base, method=method, fraction=frac, surrogate_s=ts, quantity_s=tq,
                                               select_s=t_sel, total_s=ts + tq + t_sel))
    sa = report.summarize(rows_a, ["dataset", "noise", "method", "fraction"], ["test_accuracy", "flipped_kept"])
    sb = report.summarize(rows_b, ["dataset", "noise", "ranking"],
                          ["precision_noise", "recall_noise", "precision_twice", "recall_twice", "auc"])
    sc = report.summarize(rows_c, ["dataset", "noise", "method", "fraction"],
                          ["surrogate_s", "quantity_s", "select_s", "total_s"])
    summary = [dict(x, part="a") for x in sa] + [dict(x, part="b") for x in sb] + [dict(x, part="c") for x in sc]
    rows = ([dict(r, part="a") for r in rows_a] + [dict(r, part="b") for r in rows_b]
            + [dict(r, part="c") for r in rows_c])
    config = dict(vars(args), epochs=epochs, learned_epochs=learned_epochs, score_epochs=score_epochs,
                  methods=methods, validation="10 % of the training rows, clean, held out before flipping")
    C.write_outputs(args.out, "mislabel", rows, summary, render(summary), config)
    for name, _ in pairs:
        for noise in noises:
            series = {}
            for m in methods:
                ss = [s for s in sa if s["dataset"] == name and s["noise"] == noise and s["method"] == m]
                series[m] = ([s["fraction"] for s in ss], [s["test_accuracy_mean"] for s in ss],
                             [s["test_accuracy_std"] for s in ss])
            tag = f"{name}_noise{int(round(noise * 100))}"
            C.line_plot(os.path.join(args.out, f"accuracy_{tag}.png"), series, xlabel="fraction kept",
                        ylabel="test accuracy", title=f"{name}, {noise:.0%} labels flipped")
            det = {r: (grid.tolist(), np.mean(curves[(name, noise, r)], 0).tolist(),
                       np.std(curves[(name, noise, r)], 0).tolist()) for r in list(DETECTORS) + ["learned"]}
            C.line_plot(os.path.join(args.out, f"detection_{tag}.png"), det, xlabel="fraction inspected",
                        ylabel="recall of flipped labels", title=f"detection: {name}, {noise:.0%} flipped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
