"""Mislabel study: learned values (selection network through a convex facility-location layer) against data-valuation baselines.

Part of the training labels (10 % and 30 %) is flipped (`data.flip_labels`). A clean, stratified
validation split (held out before flipping, excluded from the pool) is what the validation-based
values (learned values, KNN-Shapley) score against. Per seed, one MLP surrogate is trained for
`surrogate_epochs` epochs on the noisy pool; every method starts from it, so all rankings are at the
same number of training epochs:

- loss / EL2N / GraNd of the surrogate (highest = most suspicious), and its training dynamics recorded
  while it trained (`fit(record_dynamics=True)`): mean loss over training, forgetting, AUM (low = suspicious);
- KNN-Shapley (Jia et al. 2019, k = 10) on the surrogate's penultimate embeddings against the
  validation split (lowest = most suspicious);
- learned values: `fit_selection_model` from the surrogate, one short alternating pass (selection
  network trained through the layer on mini-batches while the model takes small steps), read out
  for every point (lowest = most suspicious). `learned` rewards the sign of the first-order change
  of the loss of each point's 10 nearest validation points (last layer, `target="local"`); the
  selection network also sees the agreement of each label with those neighbours; the layer's budget is 1 - the estimated
  noise rate (`valuation.noise.noise_rates` from the features' forward pass, clipped to [0.5, 0.9]); the
  surrogate's θ stays fixed (`lr=0`). `learned_first_order` (optional subset) rewards the first-order
  change itself, with the layer's budget at the kept fraction; `learned_cover` (optional subset) reads the
  same selection network out through the layer at the kept fraction (`readout="selection"`: how often
  the facility-location layer keeps a point in random mini-batches, costs and coverage together); these two
  optional subsets never get the dynamics inputs.

Reported: (b) the area under the ROC curve of each ranking for the flipped labels and the seconds
each method took (surrogate + its own quantities); (a) test accuracy after training a fresh model on
the top 50 % (per class) by learned value, on the 50 % with the lowest loss, on a random 50 %, and
on the coverage-keeping filters `learned_filter` / `loss_filter` (registry selectors; per class, drop the estimated
noise rate of rows with the lowest learned value / highest loss, then a random 50 % of the pool from
the rest), with paired differences over seeds (95 % Student-t interval). Before the timed seeds,
one untimed pass compiles every method (timings are of second calls, as a user repeating them).
"""

from __future__ import annotations

import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import _common as C  # noqa: E402

from jaxsubset import budget_from_fraction, data, report, selectors, train  # noqa: E402
from jaxsubset.workflows.quantities import compute  # noqa: E402
from jaxsubset.data.offline import stratified_split  # noqa: E402
from jaxsubset.valuation.learned import fit_selection_model  # noqa: E402
from jaxsubset.valuation import knn_shapley_quantity  # noqa: E402
from jaxsubset.valuation.noise import noise_rates  # noqa: E402

DETECTORS = {"loss": "loss", "el2n": "el2n", "grand": "grad_norm"}     # higher = more suspicious
DYNAMICS_RANKINGS = {"loss_mean": 1.0, "forgetting": 1.0, "aum": -1.0}  # recorded while training the surrogate
SUBSETS = ("random", "loss_easy", "knn_shapley", "learned", "learned_first_order", "learned_filter", "loss_filter",
           "learned_cover")
DEFAULT_SUBSETS = ("random", "loss_easy", "learned", "learned_filter", "loss_filter")   # trained on, at `fraction`
CONFIGS = {
    # name: (data set, model, validation rows, surrogate epochs, training epochs, learned settings);
    # budget_fraction "noise": 1 - the estimated noise rate, clipped to [0.5, 0.9]; lr=0: values for the
    # surrogate's fixed θ; dynamics: feed the surrogate's recorded training dynamics to the selection network
    # round 6 (the library's defaults since then, spelled out): local_probe reward, probe input, 3 networks x 150 steps
    "fmnist": ("fashion_mnist", "mlp", 2000, 2, 6,
               dict(epochs=1, steps_per_epoch=150, batch_size=64, budget_fraction="noise", epsilon=1.0, iterations=3,
                    neighbours=10, target="local_probe", lr=0.0, dynamics=False, probe=True, members=3)),
    # round 3's settings (the round-3 tables): local reward, no probe, one network of 300 steps
    "fmnist_round3": ("fashion_mnist", "mlp", 2000, 2, 6,
                      dict(epochs=1, steps_per_epoch=300, batch_size=64, budget_fraction="noise", epsilon=1.0,
                           iterations=5, neighbours=10, target="local", lr=0.0, dynamics=False, members=1,
                           probe=False)),
    # round 4 (detection only: --config fmnist_probe --train-noise 0.99 --no-knn): + the linear probe's label loss
    # as an input (fitted on the clean validation embeddings), three selection networks averaged
    "fmnist_probe": ("fashion_mnist", "mlp", 2000, 2, 6,
                     dict(epochs=1, steps_per_epoch=300, batch_size=64, budget_fraction="noise", epsilon=1.0,
                          iterations=5, neighbours=10, target="local", lr=0.0, dynamics=False, probe=True, members=3)),
    "fmnist_probe1": ("fashion_mnist", "mlp", 2000, 2, 6,      # the same with one selection network
                      dict(epochs=1, steps_per_epoch=300, batch_size=64, budget_fraction="noise", epsilon=1.0,
                           iterations=5, neighbours=10, target="local", lr=0.0, dynamics=False, probe=True)),
    "quick": ("digits", "mlp", 200, 2, 2, dict(epochs=1, steps_per_epoch=20, batch_size=32, budget_fraction="noise",
                                               epsilon=1.0, iterations=10, neighbours=10, target="local", lr=0.0,
                                               dynamics=True)),
}
DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"


def auroc(suspicion: np.ndarray, flipped: np.ndarray) -> float:
    """Area under the ROC curve of ``suspicion`` for the rows ``flipped`` (Mann-Whitney, ties averaged)."""
    n = suspicion.size
    pos = np.zeros(n, bool)
    pos[flipped] = True
    uniq, inv, counts = np.unique(suspicion, return_inverse=True, return_counts=True)
    ranks = np.empty(n)
    ranks[np.argsort(suspicion, kind="stable")] = np.arange(1, n + 1)
    if uniq.size < n:
        ranks = (np.bincount(inv, weights=ranks) / counts)[inv]
    p, q = int(pos.sum()), n - int(pos.sum())
    return float((ranks[pos].sum() - p * (p + 1) / 2) / max(p * q, 1))


def predict(model, x: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Predicted classes ``(n,)`` of ``model`` on ``x``."""
    fn = _jit_predict(model.apply_fn)
    return np.concatenate([np.asarray(fn(model.params, jnp.asarray(x[s:s + chunk])))
                           for s in range(0, x.shape[0], chunk)]).astype(np.int32)


@functools.lru_cache(maxsize=4)
def _jit_predict(apply_fn):
    return jax.jit(lambda p, xb: jnp.argmax(apply_fn(p, xb), -1))


DYNAMICS_FEATURES = ("loss_mean", "loss_var", "forgetting", "aum")


def surrogate(ds, model, seed: int, epochs: int, train_kw, progress: bool):
    """The scoring surrogate trained ``epochs`` epochs on the noisy pool, recording its training dynamics
    (one forward pass per step, ~1.07x the plain training cost): ``(PureModel, dynamics dict, seconds)``."""
    t0 = time.perf_counter()
    res = train.fit(model, ds, epochs=epochs, seed=seed + 1000, progress=progress, eval_every=epochs,
                    record_dynamics=True, **train_kw)
    return res.model, res.history["dynamics"], time.perf_counter() - t0


def dynamics_features(dynamics) -> np.ndarray:
    """float32 ``(n, 4)``: the surrogate's loss mean / variance over training, forgetting count, AUM."""
    return np.stack([np.asarray(dynamics[k], np.float32) for k in DYNAMICS_FEATURES], axis=1)


def detection(ds, val, model, seed, sur_epochs, train_kw, learned_kw, progress, with_knn=True):
    """Surrogate, noise estimate and every ranking of one seed: ``(sur, t_sur, values, secs, rho, fitted)``.

    ``values[name]``: higher = more suspicious; ``secs[name]``: seconds of the method after the surrogate
    (the noise estimate, from the forward pass of the learned features, sets the learned layer's budget and
    the filters' drop). The surrogate records its
    training dynamics (charged to every method alike); ``loss_mean`` / ``forgetting`` / ``aum`` rank by them."""
    sur, dynamics, t_sur = surrogate(ds, model, seed, sur_epochs, train_kw, progress)
    values, secs = {}, {}
    for rname, q in DETECTORS.items():
        t0 = time.perf_counter()
        values[rname] = compute([q], sur, ds.x_train, ds.y_train)[q]
        secs[rname] = time.perf_counter() - t0
    for rname, sign in DYNAMICS_RANKINGS.items():      # already recorded: no further pass
        values[rname], secs[rname] = sign * np.asarray(dynamics[rname], np.float64), 0.0
    if with_knn:
        t0 = time.perf_counter()
        values["knn_shapley"] = -knn_shapley_quantity(sur, ds.x_train, ds.y_train, validation=val, k=10)
        secs["knn_shapley"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    kw = dict(learned_kw)
    if kw.pop("dynamics", False):
        kw["point_features"] = dynamics_features(dynamics)
    fitted = fit_selection_model(sur, ds.x_train, ds.y_train, num_classes=ds.num_classes, seed=seed,
                                 validation=val, progress=progress, **kw)
    secs["learned"] = time.perf_counter() - t0
    values["learned"] = -fitted.values
    rho = fitted.history["noise_rates"]
    return sur, t_sur, values, secs, rho, fitted


def render(summary) -> str:
    sb = [s for s in summary if s["part"] == "b"]
    sa = [s for s in summary if s["part"] == "a"]
    sd = [s for s in summary if s["part"] == "d"]
    se = [s for s in summary if s["part"] == "e"]
    return "\n".join([
        "## (b) detection of the flipped labels: ROC AUC, and seconds per method (surrogate + its quantities)",
        report.markdown_table(
            ["data set", "flipped", "estimated", "ranking", "ROC AUC", "seconds", "× loss time", "seeds"],
            [(s["dataset"], f"{s['noise']:.0%}", f"{s['noise_estimate_mean']:.1%}", s["ranking"],
              C.fmt(s["auc_mean"], s["auc_std"], scale=1.0, digits=4),
              f"{s['seconds_mean']:.2f} ± {s['seconds_std']:.2f}", f"{s['time_ratio_mean']:.2f}", s["n"])
             for s in sb]),
        "", "Paired differences in ROC AUC against the loss ranking of the same surrogate (95 % interval over seeds; "
            "the issue's detection target is learned ≥ loss):",
        report.markdown_table(
            ["data set", "flipped", "ranking", "− loss", "verdict", "pairs"],
            [(s["dataset"], f"{s['noise']:.0%}", s["ranking"], report.fmt_diff(s, scale=1.0, digits=4), s["verdict"],
              s["n"]) for s in se]),
        "", "## (a) test accuracy after training on the kept subset (noisy labels)",
        report.markdown_table(
            ["data set", "flipped", "method", "kept", "test acc. %", "flipped in subset %",
             "hard clean kept %", "class max/min", "seeds"],
            [(s["dataset"], f"{s['noise']:.0%}", s["method"], f"{s['fraction']:.0%}",
              C.fmt(s["test_accuracy_mean"], s["test_accuracy_std"]),
              C.fmt(s["flipped_kept_mean"], s["flipped_kept_std"], digits=1),
              C.fmt(s.get("clean_hard_kept_mean", np.nan), s.get("clean_hard_kept_std", np.nan), digits=1),
              f"{s.get('class_imbalance_mean', np.nan):.2f}", s["n"]) for s in sa]),
        "", "hard clean kept: share of the hardest half of the clean rows (by surrogate loss) in the subset.",
        "", "Paired differences in test accuracy (percentage points, 95 % interval over seeds):",
        report.markdown_table(
            ["data set", "flipped", "method", "baseline", "difference", "verdict", "pairs"],
            [(s["dataset"], f"{s['noise']:.0%}", s["method"], s["baseline"], report.fmt_diff(s), s["verdict"], s["n"])
             for s in sd]),
    ])


def main(argv=None) -> int:
    p = C.parser("mislabel", __doc__.splitlines()[0])
    p.add_argument("--config", choices=sorted(CONFIGS), default="fmnist")
    p.add_argument("--noise", type=float, nargs="+", default=[0.1, 0.3])
    p.add_argument("--fraction", type=float, default=0.5, help="fraction kept for the accuracy part")
    p.add_argument("--train-noise", type=float, nargs="+", default=[0.3], help="noise levels of the accuracy part")
    p.add_argument("--subsets", nargs="+", choices=SUBSETS, default=list(DEFAULT_SUBSETS), help="subsets trained on")
    p.add_argument("--no-knn", action="store_true", help="skip KNN-Shapley (the slowest baseline)")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed compilation pass")
    args = p.parse_args(argv)
    if args.quick:
        args.config, args.noise, args.train_noise, args.seeds = "quick", [0.3], [0.3], 1
    dname, model, n_val, sur_epochs, epochs, learned_kw = CONFIGS[args.config]
    train_kw = dict(batch_size=256, lr=1e-3, optimizer="adam", schedule="cosine")
    progress = not args.no_progress
    data_dir = args.data_dir or (DEFAULT_DATA_DIR if dname == "fashion_mnist" else None)
    full = data.load(dname, data_dir=data_dir) if data_dir else data.load(dname)
    pool_idx, val_idx = stratified_split(full.y_train, n_val / full.y_train.size, seed=0)    # clean validation
    val = (full.x_train[val_idx], full.y_train[val_idx])
    clean = full.replace(x_train=full.x_train[pool_idx], y_train=full.y_train[pool_idx])
    n = clean.y_train.size
    subsets = tuple(args.subsets)
    with_knn = not args.no_knn
    if not (args.no_warmup or args.quick):   # compile every method once (untimed): seconds of second calls
        ds, _ = data.flip_labels(clean, args.noise[0], seed=10_000)
        detection(ds, val, model, 10_000, sur_epochs, train_kw, learned_kw, False, with_knn)
    rows_a, rows_b = [], []
    for noise in args.noise:
        for seed in range(args.seeds):
            ds, flipped = data.flip_labels(clean, noise, seed=seed)
            is_flipped = np.zeros(n, bool)
            is_flipped[flipped] = True
            base = dict(dataset=dname, model=model, noise=noise, seed=seed)
            sur, t_sur, values, secs, rho, fitted = detection(ds, val, model, seed, sur_epochs, train_kw, learned_kw,
                                                              progress, with_knn)
            for rname, susp in values.items():
                s = t_sur + secs[rname]
                rows_b.append(dict(base, ranking=rname, auc=auroc(susp, flipped), seconds=s,
                                   time_ratio=s / (t_sur + secs["loss"]), noise_estimate=float(np.mean(rho))))
            print(f"noise {noise} seed {seed}: surrogate {t_sur:.1f} s, learned phases "
                  + ", ".join(f"{k} {v:.2f} s" for k, v in fitted.history["phase_s"].items()), flush=True)
            if noise not in args.train_noise:
                print(f"noise {noise} seed {seed}: " + ", ".join(f"{r['ranking']} {r['auc']:.4f} ({r['seconds']:.1f} s)"
                                                                for r in rows_b if r["noise"] == noise
                                                                and r["seed"] == seed), flush=True)
                _write(args, dname, val_idx.size, n, sur_epochs, epochs, learned_kw, train_kw, rows_a, rows_b)
                continue
            budget = budget_from_fraction(args.fraction, n)
            plain_kw = {k: v for k, v in learned_kw.items() if k != "dynamics"}    # fit_selection_model's own
            if "learned_first_order" in subsets:
                t0 = time.perf_counter()
                fo = fit_selection_model(sur, ds.x_train, ds.y_train, num_classes=ds.num_classes, seed=seed,
                                         validation=val, progress=progress,
                                         **dict(plain_kw, target="first_order", budget_fraction=args.fraction))
                s = t_sur + time.perf_counter() - t0
                rows_b.append(dict(base, ranking="learned_first_order", auc=auroc(-fo.values, flipped), seconds=s,
                                   time_ratio=s / (t_sur + secs["loss"]), noise_estimate=float(np.mean(rho))))
            if "learned_cover" in subsets:    # the same selection network read out through the layer at `fraction`
                t0 = time.perf_counter()
                cov = fit_selection_model(sur, ds.x_train, ds.y_train, num_classes=ds.num_classes, seed=seed,
                                          validation=val, progress=progress, readout="selection",
                                          readout_fraction=args.fraction, **plain_kw)
                s = t_sur + time.perf_counter() - t0
                rows_b.append(dict(base, ranking="learned_cover", auc=auroc(-cov.values, flipped), seconds=s,
                                   time_ratio=s / (t_sur + secs["loss"]), noise_estimate=float(np.mean(rho))))
            quantities = {"loss": values["loss"], "learned_value": fitted.values, "noise_rate": rho[ds.y_train]}
            if "knn_shapley" in values:
                quantities["knn_shapley"] = -values["knn_shapley"]
            for method in subsets:
                if method == "learned_cover":
                    sub = selectors.select("learned", ds.y_train, budget, {"learned_value": cov.values}, seed=seed,
                                           num_classes=ds.num_classes)
                elif method == "learned_first_order":
                    sub = selectors.select("learned", ds.y_train, budget, {"learned_value": fo.values}, seed=seed,
                                           num_classes=ds.num_classes)
                else:
                    sub = selectors.select(method, ds.y_train, budget, quantities, seed=seed,
                                           num_classes=ds.num_classes)
                res = train.fit(model, ds, sub, epochs=epochs, seed=seed, progress=progress, eval_every=epochs,
                                **train_kw)
                rows_a.append(dict(base, method=method, fraction=args.fraction, num_examples=len(sub),
                                   test_accuracy=res.history["test_accuracy"][-1],
                                   flipped_kept=float(is_flipped[sub.indices].mean()),
                                   clean_hard_kept=_hard_share(values["loss"], is_flipped, sub.indices),
                                   class_imbalance=_imbalance(ds.y_train[sub.indices], ds.num_classes)))
            print(f"noise {noise} seed {seed}: " + ", ".join(f"{r['ranking']} {r['auc']:.4f} ({r['seconds']:.1f} s)"
                                                            for r in rows_b if r["noise"] == noise
                                                            and r["seed"] == seed)
                  + " | " + ", ".join(f"{r['method']} {r['test_accuracy']:.4f}" for r in rows_a
                                      if r["noise"] == noise and r["seed"] == seed), flush=True)
            _write(args, dname, val_idx.size, n, sur_epochs, epochs, learned_kw, train_kw, rows_a, rows_b)
    return 0


def _hard_share(loss: np.ndarray, is_flipped: np.ndarray, kept: np.ndarray) -> float:
    """Share of the hardest half of the *clean* rows (by surrogate loss) that ``kept`` contains."""
    clean = np.flatnonzero(~is_flipped)
    hard = clean[loss[clean] >= np.median(loss[clean])]
    return float(np.isin(hard, kept).mean())


def _imbalance(labels: np.ndarray, num_classes: int) -> float:
    """Largest over smallest class count of a subset."""
    counts = np.bincount(labels, minlength=num_classes)
    return float(counts.max() / max(counts.min(), 1))


def _write(args, dname, n_val, n, sur_epochs, epochs, learned_kw, train_kw, rows_a, rows_b) -> None:
    """Write the outputs of the cells finished so far (rows, summary, table, plots)."""
    sb = report.summarize(rows_b, ["dataset", "noise", "ranking"], ["auc", "seconds", "time_ratio", "noise_estimate"])
    sa = report.summarize(rows_a, ["dataset", "noise", "method", "fraction"],
                          ["test_accuracy", "flipped_kept", "clean_hard_kept", "class_imbalance"])
    sd = (report.paired_differences(rows_a, ["dataset", "noise", "fraction"], baseline="random")
          + [d for d in report.paired_differences(rows_a, ["dataset", "noise", "fraction"], baseline="loss_easy")
             if d["method"] != "random"]
          + [d for d in report.paired_differences(rows_a, ["dataset", "noise", "fraction"], baseline="loss_filter")
             if d["method"] == "learned_filter"])
    se = report.paired_differences(rows_b, ["dataset", "noise"], method_key="ranking", baseline="loss", value="auc")
    summary = ([dict(x, part="b") for x in sb] + [dict(x, part="a") for x in sa] + [dict(x, part="d") for x in sd]
               + [dict(x, part="e") for x in se])
    rows = [dict(r, part="b") for r in rows_b] + [dict(r, part="a") for r in rows_a]
    config = dict(vars(args), surrogate_epochs=sur_epochs, epochs=epochs, learned=learned_kw, train=train_kw,
                  validation=f"{n_val} clean training rows (stratified), held out before flipping",
                  pool=int(n))
    C.write_outputs(args.out, "mislabel", rows, summary, render(summary), config)
    for noise in sorted({s["noise"] for s in sb}):
        rk = [s for s in sb if s["noise"] == noise]
        report.bar_plot(os.path.join(args.out, f"auroc_noise{int(round(noise * 100))}.png"), [s["ranking"] for s in rk],
                        [s["auc_mean"] for s in rk], [s["auc_std"] for s in rk], ylabel="ROC AUC (flipped)",
                        title=f"{dname}: {noise:.0%} flipped, {args.seeds} seeds")


if __name__ == "__main__":
    raise SystemExit(main())
