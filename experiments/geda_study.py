"""The GEDA comparison: every within-bin rule, θ₀ vs surrogate scoring, online GEDA, GEDA-warm-started GRAD-MATCH.

Per class at 10 / 20 / 40 % of the training set (Fashion-MNIST, `--config fmnist`, the default: full
60 000 / 10 000, MLP, batch 256) or 20 / 40 % (`--config cpu`: `digits` and `mnist1d` proxies), >= 3 seeds.
Arms (all at the same budget, trained the same number of epochs from the run's own initial parameters):
random; random over norm quartiles; evenly spaced norm ranks; GEDA with each within-bin rule (`geda-evenly`,
`geda-random`, `geda-solver`); evenly spaced and GEDA-random scored at θ₀ (the initial parameters that are
then trained, as the study scores its network at epoch 0) instead of a 1-epoch surrogate; online GEDA
(GEDA subset with gradient-matching weights, the study's Alg. 6.1); and adaptive GRAD-MATCH (re-selected
every R epochs on the current model's last-layer gradients) warm-started on a random or on a GEDA subset
(the study's §6.3). Every row's `total_time_s` = scoring (surrogate training included) + selection + training.
Paired differences (same seed, budget and training) to random and to evenly spaced, with 95 % intervals.
The published configuration is an ImageNet-pretrained ResNet-18 on CIFAR-10/100 (`--config gpu`).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

import numpy as np  # noqa: E402

from jaxsubset import budget_from_fraction, data, report, selectors, train  # noqa: E402
from jaxsubset.workflows import surrogate  # noqa: E402
from jaxsubset.workflows.adaptive import fit_adaptive  # noqa: E402
from jaxsubset.models import create, to_pure  # noqa: E402
from jaxsubset.models.weights import load_params  # noqa: E402
from jaxsubset.train.loop import as_pure  # noqa: E402

# Published top-1 (%) at 80 / 60 / 40 / 20 % (ResNet-18, ImageNet-pretrained, 12 epochs).
PUBLISHED = {
    ("cifar10", "geda-solver"): {0.8: 87.14, 0.6: 84.55, 0.4: 81.10, 0.2: 72.91},
    ("cifar10", "evenly_spaced"): {0.8: 86.18, 0.6: 84.65, 0.4: 80.86, 0.2: 68.35},
    ("cifar10", "quantile_random"): {0.8: 83.75, 0.6: 82.11, 0.4: 76.89, 0.2: 69.66},
    ("cifar10", "random"): {0.8: 83.24, 0.6: 80.46, 0.4: 76.61, 0.2: 68.81},
    ("cifar100", "geda-solver"): {0.8: 64.83, 0.6: 59.51, 0.4: 51.50, 0.2: 39.28},
    ("cifar100", "random"): {0.8: 55.74, 0.6: 50.55, 0.4: 43.81, 0.2: 33.22},
    ("cifar10", "full"): {1.0: 95.95}, ("cifar100", "full"): {1.0: 81.11},
}
PUBLISHED_SCRATCH_FULL = {"cifar10": 86.23, "cifar100": 66.08}


@dataclasses.dataclass(frozen=True)
class Config:
    pairs: tuple            # ((data set, model), ...)
    epochs: int
    lr: float
    optimizer: str
    batch_size: int
    score_epochs: int       # surrogate epochs (the θ₀ arms use 0)
    fractions: tuple
    select_every: int       # R of the adaptive arms
    warm_epochs: int        # κ of the adaptive arms
    adaptive: str = "gradmatch"  # the adaptive arms' selector ("gradmatch_pb": per-batch, for large pools)


CONFIGS = {
    # per-example GRAD-MATCH re-selection takes minutes per class at 6 000 rows on 2 cores: per-batch here
    "fmnist": Config((("fashion_mnist", "mlp"),), 5, 1e-3, "adam", 256, 1, (0.1, 0.2, 0.4), 2, 1,
                     adaptive="gradmatch_pb"),
    "cpu": Config((("digits", "mlp"), ("mnist1d", "mlp")), 12, 3e-3, "adam", 64, 1, (0.2,), 4, 4),
    "gpu": Config((("cifar10", "resnet18"), ("cifar100", "resnet18")), 12, 0.05, "sgd", 64, 1,
                  (0.2, 0.4, 0.6, 0.8), 3, 3),
}

# label -> (registered method, scoring point); scoring None: needs no scores
STATIC = {
    "random": ("random", None),
    "quantile_random": ("quantile_random", "surrogate"),
    "evenly_spaced": ("evenly_spaced", "surrogate"),
    "geda-evenly": ("geda", "surrogate"),
    "geda-random": ("geda_random", "surrogate"),
    "geda-solver": ("geda_solver", "surrogate"),
    "online_geda": ("online_geda", "surrogate"),
    "evenly_spaced@θ0": ("evenly_spaced", "theta0"),
    "geda-random@θ0": ("geda_random", "theta0"),
}
# adaptive GRAD-MATCH: label -> the warm-start subset (a STATIC label)
ADAPTIVE = {"gradmatch-adaptive(random warm)": "random", "gradmatch-adaptive(GEDA warm)": "geda-random@θ0"}
ARMS = tuple(STATIC) + tuple(ADAPTIVE)


def run_seed(ds, model, cfg: Config, seed: int, arms, init=None, progress=False, log=print):
    """All arms of one seed on ``ds``; one row per (arm, fraction) plus the full-data row."""
    train_kw = dict(batch_size=cfg.batch_size, lr=cfg.lr, optimizer=cfg.optimizer, schedule="cosine")
    start_model = init(seed) if init else model
    needs_s = sorted({q for a in arms if a in STATIC and STATIC[a][1] == "surrogate"
                      for q in selectors.get(STATIC[a][0]).needs})
    needs_0 = sorted({q for a in list(arms) + [ADAPTIVE[x] for x in arms if x in ADAPTIVE]
                      if a in STATIC and STATIC[a][1] == "theta0" for q in selectors.get(STATIC[a][0]).needs})
    q0, start, t0_score = surrogate.score(needs_0, start_model, ds, seed=seed, score_epochs=0)
    start = as_pure(start, ds, seed)
    qs, _, ts_score = surrogate.score(needs_s, start_model, ds, seed=seed, score_epochs=cfg.score_epochs,
                                      train_kw=train_kw, progress=progress,
                                      init=(lambda s: init(s)) if init else None)
    log(f"  seed {seed}: θ0 scoring {t0_score:.1f}s, surrogate scoring {ts_score:.1f}s")
    base = dict(dataset=ds.name, model=model, seed=seed, epochs=cfg.epochs, adaptive_selector=cfg.adaptive,
                select_every=cfg.select_every, warm_epochs=cfg.warm_epochs)
    fit_kw = dict(epochs=cfg.epochs, seed=seed, progress=progress, eval_every=cfg.epochs, **train_kw)
    t = time.perf_counter()
    full = train.fit(start, ds, **fit_kw)
    rows = [dict(base, method="full", scoring="none", fraction=1.0, num_examples=ds.y_train.size,
                 test_accuracy=full.history["test_accuracy"][-1], scoring_time_s=0.0, selection_time_s=0.0,
                 train_time_s=full.train_time_s, wall_s=time.perf_counter() - t)]
    for frac in cfg.fractions:
        budget = budget_from_fraction(frac, ds.y_train.size)
        subsets = {}

        def static(label):
            if label not in subsets:
                method, point = STATIC[label]
                q, t_score = {"surrogate": (qs, ts_score), "theta0": (q0, t0_score)}.get(point, ({}, 0.0))
                t = time.perf_counter()
                sub = selectors.select(method, ds.y_train, budget, q, seed=seed, num_classes=ds.num_classes)
                subsets[label] = (sub, t_score, time.perf_counter() - t, point or "none")
            return subsets[label]

        for label in arms:
            t = time.perf_counter()
            if label in STATIC:
                sub, t_score, t_sel, point = static(label)
                res = train.fit(start, ds, sub, **fit_kw)
                n_ex = len(sub)
            else:
                warm, t_score, t_sel, point = static(ADAPTIVE[label])
                res = fit_adaptive(start, ds, cfg.adaptive, budget, select_every=cfg.select_every,
                                   warm_start_epochs=cfg.warm_epochs, warm_start_subset=warm, scores="last_layer",
                                   **fit_kw)
                t_sel += sum(s["time_s"] for s in res.history["selections"])
                n_ex = int(np.mean(res.history["num_examples"]))
            rows.append(dict(base, method=label, scoring=point, fraction=frac, num_examples=n_ex,
                             test_accuracy=res.history["test_accuracy"][-1], scoring_time_s=t_score,
                             selection_time_s=t_sel, train_time_s=res.train_time_s, wall_s=time.perf_counter() - t))
            log(f"  seed {seed} {frac:.0%} {label}: {rows[-1]['test_accuracy']:.4f} "
                f"({rows[-1]['wall_s']:.1f}s wall)")
    for r in rows:
        r["total_time_s"] = r["scoring_time_s"] + r["selection_time_s"] + r["train_time_s"]
        r["sample_steps"] = int(r["num_examples"]) * int(cfg.epochs)
    return rows


# the arm each arm is also compared with (besides random and evenly spaced), for the claims below
REF = {"geda-random@θ0": "geda-random", "evenly_spaced@θ0": "evenly_spaced", "online_geda": "geda-evenly",
       "gradmatch-adaptive(GEDA warm)": "gradmatch-adaptive(random warm)"}
COMPARISONS = (("random", lambda m: "random"), ("even", lambda m: "evenly_spaced"), ("ref", lambda m: REF.get(m)))


def attach_differences(summary, rows):
    """Add to every summary record the paired differences (same data set, fraction and seed) of its
    arm to random (``d_random_*``), to evenly spaced (``d_even_*``) and to ``REF[arm]`` (``d_ref_*``):
    ``_mean``, ``_low``, ``_high`` (95 % Student-t interval; NaN below 2 seeds) and ``_n``."""
    for s in summary:
        s["ref"] = REF.get(s["method"], "")
        for key, base_of in COMPARISONS:
            base = base_of(s["method"])
            d = None
            if base and base != s["method"] and s["method"] != "full":
                sel = [r for r in rows if r["dataset"] == s["dataset"] and r["fraction"] == s["fraction"]
                       and r["method"] in (s["method"], base)]
                d = next(iter(report.paired_differences(sel, ["dataset", "fraction"], baseline=base)), None)
            nan = float("nan")
            s.update({f"d_{key}_mean": d["diff_mean"] if d else nan, f"d_{key}_low": d["ci_low"] if d else nan,
                      f"d_{key}_high": d["ci_high"] if d else nan, f"d_{key}_n": d["n"] if d else 0})
    return summary


def _fmt(s, key):
    n = s.get(f"d_{key}_n") or 0
    if not n:
        return "–"
    return report.fmt_diff(dict(diff_mean=s[f"d_{key}_mean"], ci_low=s[f"d_{key}_low"], ci_high=s[f"d_{key}_high"],
                                n=n))


CLAIMS = (  # (claim, arm, comparison key, kind: "better" / "no_worse" / "differs")
    ("GEDA beats random (CIFAR-10 +4.1 pts at 20 %, CIFAR-100 +6.1)", "geda-solver", "random", "better"),
    ("GEDA beats its evenly spaced baseline (CIFAR-10 +4.6 pts at 20 %)", "geda-solver", "even", "better"),
    ("GEDA-random (stratified random in the optimal bins) beats evenly spaced", "geda-random", "even", "better"),
    ("GEDA with the default evenly spaced within-bin rule differs from evenly spaced (our finding predicts not)",
     "geda-evenly", "even", "differs"),
    ("evenly spaced beats random (CIFAR-10 +0.2 to +2.9 pts at 40-80 %)", "evenly_spaced", "random", "better"),
    ("random over quartiles beats random (CIFAR-10 +0.3 to +1.7 pts)", "quantile_random", "random", "better"),
    ("GEDA scored at θ₀ (the study's scoring point) beats random", "geda-random@θ0", "random", "better"),
    ("θ₀ scores serve GEDA no worse than a 1-epoch surrogate's", "geda-random@θ0", "ref", "no_worse"),
    ("online GEDA (gradient-matching weights, Alg. 6.1) beats GEDA's unit weights", "online_geda", "ref", "better"),
    ("a GEDA warm start helps adaptive GRAD-MATCH (§6.3)", "gradmatch-adaptive(GEDA warm)", "ref", "better"),
)


def _verdict(kind: str, total: int, single: int, better: int, worse: int) -> str:
    if total == 0:
        return "cannot be tested here (arm not run)"
    if single:
        return "cannot be decided (fewer than 2 seeds)"
    if kind == "no_worse":
        return ("holds (never worse beyond noise" + (f"; better in {better} of {total})" if better else ")")
                if worse == 0 else f"does not hold (worse in {worse} of {total} settings)")
    if kind == "differs":
        return (f"holds (better in {better}, worse in {worse} of {total} settings)" if better + worse
                else "does not hold here (no difference beyond noise in any setting)")
    if better == total:
        return "holds"
    if better > 0 and worse == 0:
        return f"holds in {better} of {total} settings, within noise elsewhere"
    if worse > 0 and better == 0:
        return f"does not hold (worse in {worse} of {total} settings, within noise elsewhere)"
    if better == 0:
        return "does not hold here (no difference beyond noise in any setting)"
    return f"mixed ({better} better, {worse} worse of {total} settings)"


def verdicts(summary) -> str:
    """One line per published claim: holds / does not hold / cannot be tested here, with the numbers."""
    names = {"random": "random", "even": "evenly_spaced"}
    lines = []
    for claim, arm, key, kind in CLAIMS:
        recs = [s for s in summary if s["method"] == arm and (s.get(f"d_{key}_n") or 0) > 0]
        single = sum(s[f"d_{key}_n"] < 2 for s in recs)
        better = sum(s[f"d_{key}_low"] > 0 for s in recs)
        worse = sum(s[f"d_{key}_high"] < 0 for s in recs)
        parts = [f"{s['dataset']} {s['fraction']:.0%}: {_fmt(s, key)}" for s in recs]
        base = names.get(key) or REF.get(arm, "?")
        lines.append(f"- **{claim}** ({arm} − {base}, pts [95 % CI]): "
                     f"{_verdict(kind, len(recs), single, better, worse)}. " + "; ".join(parts))
    lines.append("- **The published magnitudes (ImageNet-pretrained ResNet-18 on CIFAR-10/100)**: cannot be tested "
                 "here (no GPU, no CIFAR files and no pretrained weights in this environment); `--config gpu` runs them.")
    return "\n".join(lines)


def render(summary) -> str:
    """The markdown table and verdicts of a summary (also used by make_results.py to rebuild RESULTS.md)."""
    table = []
    for s in summary:
        pub = PUBLISHED.get((s["dataset"], s["method"]), {}).get(s["fraction"])
        if s["method"] == "full" and s.get("init") == "scratch":
            pub = PUBLISHED_SCRATCH_FULL.get(s["dataset"])
        ref = f"{_fmt(s, 'ref')} vs {s['ref']}" if s.get("ref") else "–"
        table.append((s["dataset"], s["model"], s["method"], s.get("scoring", ""), f"{s['fraction']:.0%}",
                      C.fmt(s["test_accuracy_mean"], s["test_accuracy_std"]), _fmt(s, "random"), _fmt(s, "even"),
                      ref, "–" if pub is None else f"{pub:.2f}", f"{s['scoring_time_s_mean']:.1f}",
                      f"{s['selection_time_s_mean']:.2f}", f"{s['train_time_s_mean']:.1f}",
                      f"{s['total_time_s_mean']:.1f}", s["n"]))
    md = report.markdown_table(["data set", "model", "method", "scored at", "kept", "test acc. %",
                                "Δ vs random (pts) [95 % CI]", "Δ vs evenly spaced", "Δ vs reference arm",
                                "published %", "scoring s", "selection s", "training s", "total s", "seeds"], table)
    return md + "\n\nVerdicts on the published claims (95 % intervals over seeds, paired by seed):\n\n" + verdicts(summary)


def main(argv=None) -> int:
    p = C.parser("geda_study", __doc__.splitlines()[0])
    p.add_argument("--config", nargs="+", choices=sorted(CONFIGS), default=["fmnist", "cpu"],
                   help="one or more configurations, run one after the other into one table")
    p.add_argument("--fractions", type=float, nargs="+", default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--pretrained", default=None,
                   help="ImageNet-pretrained ResNet-18 weights (.npz of parameter paths) for --config gpu; "
                        "from scratch otherwise")
    args = p.parse_args(argv)
    cfgs = []
    for name in args.config:
        cfg = CONFIGS[name]
        if args.fractions:
            cfg = dataclasses.replace(cfg, fractions=tuple(args.fractions))
        if args.epochs:
            cfg = dataclasses.replace(cfg, epochs=args.epochs)
        cfgs.append((name, cfg))
    seeds = args.seeds
    if args.quick:
        cfgs = [("cpu", dataclasses.replace(CONFIGS["cpu"], pairs=(("digits", "mlp"),), epochs=2, fractions=(0.4,),
                                            select_every=1, warm_epochs=1))]
        seeds = 1
    rows, plots = [], []
    t_all = time.perf_counter()
    for cname, cfg in cfgs:
        data_dir = args.data_dir or ("/usr/share/datasets/fashion-mnist" if cname == "fmnist" else None)
        for name, model in cfg.pairs:
            ds = data.load(name, data_dir=data_dir)
            init = None
            if args.pretrained:  # the same pretrained start for every seed; the seed still sets batch order
                def init(seed, ds=ds, model=model):
                    m = to_pure(create(model, ds.input_shape, ds.num_classes, seed=seed))
                    return dataclasses.replace(m, params=load_params(m.params, args.pretrained))
            print(f"{name} ({model}): n={ds.y_train.size}, {cfg.epochs} epochs, fractions {cfg.fractions}",
                  flush=True)
            plots.append((name, model, cfg.epochs))
            for seed in range(seeds):
                rows += run_seed(ds, model, cfg, seed, args.arms, init=init, progress=not args.no_progress,
                                 log=lambda s: print(s, flush=True))
                for r in rows:
                    r.setdefault("init", "pretrained" if args.pretrained else "scratch")
                    r.setdefault("config", cname)
                report.write_csv(os.path.join(args.out + ".partial", "rows.csv"), rows)  # survives an interruption
    summary = report.summarize(rows, ["dataset", "model", "init", "method", "scoring", "fraction"],
                               ["test_accuracy", "scoring_time_s", "selection_time_s", "train_time_s",
                                "total_time_s", "num_examples"])
    attach_differences(summary, rows)
    md = render(summary)
    config = dict(vars(args), configs={n: dataclasses.asdict(c) for n, c in cfgs}, seeds=seeds,
                  wall_s=time.perf_counter() - t_all, config=" + ".join(n for n, _ in cfgs))
    C.write_outputs(args.out, "geda_study", rows, summary, md, config)
    shutil.rmtree(args.out + ".partial", ignore_errors=True)
    for name, model, epochs in plots:
        series = C.accuracy_series(summary, name, "method", [a for a in args.arms if a in STATIC], "fraction")
        C.line_plot(os.path.join(args.out, f"accuracy_{name}.png"), series, xlabel="fraction kept",
                    ylabel="test accuracy", title=f"GEDA study: {name} ({model}, {epochs} epochs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
