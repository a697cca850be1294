"""Targeted subset selection (TSS): SMI functions against random, uncertainty and BADGE selection.

Imbalanced setting: two classes are rare (10 % kept) in the labeled set E and the unlabeled pool U;
the target slice T holds held-out training examples of those classes. Each seed trains on E, each
strategy picks A ⊆ U (|A| = budget), the labels of A are revealed, and the model retrains from the
same initialization on E ∪ A. Reported: overall and targeted-class test accuracy before / after,
the gain, how many of A are target-class points, the selection time, and the paired difference of the
targeted-class gain to random (same seed, budget and training; 95 % interval). SMI runs on the poster's
features (last-layer gradients at θ_E with hypothesized labels, with and without a facility-location
diversity term γ·g(A)) beside embeddings. The CPU proxy runs an MLP on `digits` and a small CNN on
`mnist1d` (offline); `--config fmnist` runs an MLP on the full Fashion-MNIST (60 000 / 10 000) with two
rare classes; `--config gpu` runs MNIST (CNN) and CIFAR-10 (ResNet-18) from the standard files in
`--data-dir`.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

import dataclasses  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402

from jaxsubset import report  # noqa: E402
import numpy as np  # noqa: E402

# Published (Kothawade et al., "Submodular mutual information for targeted data subset selection"):
# SMI selection gives a ≈20–30 % gain in targeted-class accuracy after retraining, ≈12 % more than
# the other selection methods.
PUBLISHED_GAIN = "20–30"
PUBLISHED_MARGIN = 12.0


@dataclasses.dataclass(frozen=True)
class Spec:
    dataset: str
    model: str                      # a registered model name, or "cnn_small"
    rare: tuple[int, ...]
    budgets: tuple[int, ...]
    epochs: int
    lr: float
    optimizer: str = "adam"
    schedule: str = "cosine"
    labeled_fraction: float = 0.1
    rare_keep: float = 0.1
    query_per_class: int = 10
    pool_size: int | None = None
    batch_size: int = 64


CONFIGS = {
    "cpu": (Spec("digits", "mlp", (3, 8), (10, 25, 50), 30, 3e-3),
            Spec("mnist1d", "cnn_small", (3, 8), (50, 100, 200), 30, 3e-3, labeled_fraction=0.25)),
    # full Fashion-MNIST: classes 3 (dress) and 8 (bag) rare (10 % kept), E = 2 % of every class, a
    # 5 000-row uniform sample of the rest as U (the dense pool kernel of FLVMI and of the diversity term),
    # |T| = 20 per rare class
    "fmnist": (Spec("fashion_mnist", "mlp", (3, 8), (100, 300), 30, 1e-3, labeled_fraction=0.02,
                    query_per_class=20, pool_size=5000),),
    "gpu": (Spec("mnist", "cnn", (3, 8), (200, 500, 1000), 10, 1e-3, labeled_fraction=0.02,
                 query_per_class=50, pool_size=20000),
            Spec("cifar10", "resnet18", (3, 5), (500, 1000, 2000), 20, 0.05, optimizer="sgd", schedule="onecycle",
                 labeled_fraction=0.05, query_per_class=50, pool_size=20000)),
}
SMI = ("flqmi", "flvmi", "gcmi", "logdetmi")
BASELINES = ("random", "entropy", "least_confidence", "badge")
LABEL = {"cnn_small": "cnn (8-16-64)"}


def model_factory(spec: Spec, ds) -> Any:
    """``seed -> model`` (a name, or a fresh NNX module for the small CNN)."""
    if spec.model != "cnn_small":
        return lambda seed: spec.model
    from flax import nnx

    from jaxsubset.models import CNN

    return lambda seed: CNN(ds.input_shape, ds.num_classes, channels=(8, 16), hidden=64, rngs=nnx.Rngs(seed))


def use_compile_cache(path: str) -> None:
    """Persist compiled XLA programs: every retraining of the same size then skips compilation."""
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def smi_variants(features: str, grad_ablation: bool, diversity: float) -> list[tuple[str, float]]:
    """``(features, relative diversity weight ρ)`` of the SMI runs, each at every budget: the main features
    with ρ = 0; with ``grad_ablation`` also last-layer gradients at θ_E with hypothesized labels (or
    embeddings when those are the main features) and, for ``ρ > 0``, both feature kinds with the diversity term."""
    out = [(features, 0.0)]
    if grad_ablation:
        other = "last_layer_grads" if features != "last_layer_grads" else "embeddings"
        out.append((other, 0.0))
        if diversity > 0:
            out += [(features, diversity), (other, diversity)]
    return out


def arm_name(strategy: str, features: str, rho: float) -> str:
    """``random`` / ``flqmi[embeddings]`` / ``flqmi[last_layer_grads, γ]``: one label per compared arm."""
    if strategy not in SMI:
        return strategy
    return f"{strategy}[{features}{', γ' if rho > 0 else ''}]"


def run_dataset(spec: Spec, seeds: int, budgets: tuple[int, ...], strategies: tuple[str, ...], *,
                features: str, grad_ablation: bool, data_dir: str | None, progress: bool, eta: float,
                diversity_weight: float, diversity: float = 0.0) -> list[dict[str, Any]]:
    from jaxsubset import data, train
    from jaxsubset.data import make_targeted_setting
    from jaxsubset.workflows.tss import tss_round

    ds = data.load(spec.dataset, data_dir=data_dir)
    make = model_factory(spec, ds)
    train_kw = dict(epochs=spec.epochs, lr=spec.lr, optimizer=spec.optimizer, schedule=spec.schedule,
                    batch_size=spec.batch_size)
    rows = []
    for seed in range(seeds):
        st = make_targeted_setting(ds, spec.rare, rare_keep=spec.rare_keep, labeled_fraction=spec.labeled_fraction,
                                   query_per_class=spec.query_per_class, pool_size=spec.pool_size, seed=seed)
        t0 = time.perf_counter()
        init = train.fit(make(seed), st.labeled, seed=seed, progress=False, eval_every=spec.epochs, **train_kw)
        t_init = time.perf_counter() - t0
        runs = [(b, s, features, diversity_weight) for b in budgets for s in strategies if s not in SMI]
        for feat, rho in smi_variants(features, grad_ablation, diversity):
            # ρ > 0: γ = ρ·|T|/|U|, so that the pool facility location (a sum over |U| points) weighs like the
            # query term (a sum over |T| points); ρ = 0 keeps the --diversity-weight given (0 by default)
            g = rho * st.query_y.size / st.pool_y.size if rho > 0 else diversity_weight
            runs += [(b, s, feat, g) for b in budgets for s in strategies if s in SMI]
        for budget, strategy, feat, g in runs:
            r = tss_round(make(seed), st.labeled, st.pool_x, st.pool_y, st.query_x, st.query_y, budget,
                          strategy=strategy, features=feat, eta=eta, diversity_weight=g, seed=seed, initial=init,
                          progress=False, **train_kw)
            rows.append(dict(
                dataset=spec.dataset, model=LABEL.get(spec.model, spec.model), seed=seed, budget=budget,
                strategy=strategy, features=feat if strategy in SMI else "–",
                diversity_weight=g if strategy in SMI else 0.0, arm=arm_name(strategy, feat, g), epochs=spec.epochs,
                num_labeled=r["num_labeled"], num_pool=r["num_pool"],
                pool_target_rate=float(np.isin(st.pool_y, st.target_classes).mean()),
                target_classes=" ".join(map(str, st.target_classes)),
                overall_before=r["overall_before"], overall_after=r["overall_after"], overall_gain=r["overall_gain"],
                targeted_before=r["targeted_before"], targeted_after=r["targeted_after"],
                targeted_gain=r["targeted_gain"], selected_target=r["selected_target"],
                selection_time_s=r["selection_time_s"], kernel_time_s=r["kernel_time_s"],
                greedy_time_s=r["greedy_time_s"], train_time_s=r["train_time_s"], initial_fit_s=t_init))
            if progress:
                print(f"{spec.dataset} seed={seed} budget={budget} {arm_name(strategy, feat, g):<34} "
                      f"targeted {r['targeted_before']:.3f} -> {r['targeted_after']:.3f} "
                      f"(|A ∩ T-classes| = {r['selected_target']}), sel {r['selection_time_s']:.2f}s", flush=True)
    return rows


def differences(rows) -> list[dict[str, Any]]:
    """Paired differences of every arm's targeted-class gain to random (same data set, budget, seed)."""
    return report.paired_differences(rows, ["dataset", "budget"], method_key="arm", baseline="random",
                                     value="targeted_gain")


def attach_differences(summary, rows) -> None:
    """Add ``d_random_mean`` / ``_low`` / ``_high`` / ``_n`` (targeted-gain difference to random) to each record."""
    diffs = differences(rows)
    for s in summary:
        d = next((d for d in diffs if d["dataset"] == s["dataset"] and d["budget"] == s["budget"]
                  and d["arm"] == s["arm"]), None)
        nan = float("nan")
        s.update(d_random_mean=d["diff_mean"] if d else nan, d_random_low=d["ci_low"] if d else nan,
                 d_random_high=d["ci_high"] if d else nan, d_random_n=d["n"] if d else 0)


def render(summary, features: str = "embeddings") -> str:  # noqa: C901
    """The markdown tables of a summary (also used by make_results.py to rebuild RESULTS.md)."""
    table = []
    for s in summary:
        smi = s["strategy"] in SMI
        weight = float(s.get("diversity_weight") or 0.0)
        d = None
        if s.get("d_random_n"):
            d = dict(diff_mean=s["d_random_mean"], ci_low=s["d_random_low"], ci_high=s["d_random_high"],
                     n=s["d_random_n"])
        table.append((s["dataset"], s["model"], s["budget"], s["strategy"], s["features"],
                      f"{weight:.3g}" if smi else "–", report.fmt_diff(d) if d else "–",
                      C.fmt(s["overall_before_mean"], s["overall_before_std"], digits=1),
                      C.fmt(s["overall_after_mean"], s["overall_after_std"], digits=1),
                      C.fmt(s["targeted_before_mean"], s["targeted_before_std"], digits=1),
                      C.fmt(s["targeted_after_mean"], s["targeted_after_std"], digits=1),
                      f"{100 * s['targeted_gain_mean']:+.1f} ± {100 * s['targeted_gain_std']:.1f}",
                      PUBLISHED_GAIN if smi else "–", f"{s['selected_target_mean']:.1f}",
                      f"{s['selection_time_s_mean']:.3f}", s["n"]))
    md = report.markdown_table(["data set", "model", "budget", "strategy", "SMI features", "γ",
                                "targeted gain − random (pts) [95 % CI]", "overall before %",
                                "overall after %", "targeted before %", "targeted after %",
                                "targeted gain (pts)", "published gain (pts)", "|A| in target classes",
                                "selection s", "seeds"], table)
    # Best SMI gain minus best baseline gain per (data set, budget), main features only.
    margin_rows = []
    for (dsn, budget) in dict.fromkeys((s["dataset"], s["budget"]) for s in summary):
        grp = [s for s in summary if s["dataset"] == dsn and s["budget"] == budget
               and s["features"] in (features, "–") and not float(s.get("diversity_weight") or 0.0)]
        best_smi = max((s for s in grp if s["strategy"] in SMI), key=lambda s: s["targeted_gain_mean"], default=None)
        best_base = max((s for s in grp if s["strategy"] not in SMI), key=lambda s: s["targeted_gain_mean"],
                        default=None)
        if best_smi and best_base:
            margin_rows.append((dsn, budget, f"{best_smi['strategy']} {100 * best_smi['targeted_gain_mean']:+.1f}",
                                f"{best_base['strategy']} {100 * best_base['targeted_gain_mean']:+.1f}",
                                f"{100 * (best_smi['targeted_gain_mean'] - best_base['targeted_gain_mean']):+.1f}",
                                f"≈{PUBLISHED_MARGIN:.0f}"))
    if margin_rows:
        md += "\n\nBest SMI strategy versus best baseline (targeted-class gain, percentage points):\n\n"
        md += report.markdown_table(["data set", "budget", "best SMI", "best baseline", "SMI − baseline (ours)",
                                     "published"], margin_rows)
    return md


def main(argv=None) -> int:
    from jaxsubset import report

    p = C.parser("targeted", __doc__.splitlines()[0])
    p.add_argument("--config", choices=sorted(CONFIGS), default="cpu")
    p.add_argument("--strategies", nargs="+", default=list(SMI + BASELINES), choices=list(SMI + BASELINES))
    p.add_argument("--features", default="embeddings", choices=["embeddings", "last_layer_grads", "logit_grads"],
                   help="features of the SMI kernels (main grid)")
    p.add_argument("--no-grad-ablation", action="store_true",
                   help="skip the SMI runs on the other features (hypothesized-label last-layer gradients at θ_E) "
                        "and with the diversity term")
    p.add_argument("--budgets", type=int, nargs="+", default=None, help="override the configuration's budgets")
    p.add_argument("--eta", type=float, default=1.0)
    p.add_argument("--diversity-weight", type=float, default=0.0,
                   help="diversity weight γ of the main SMI runs (the library's diversity_weight)")
    p.add_argument("--diversity", type=float, default=1.0,
                   help="relative weight ρ of the facility-location diversity runs: γ = ρ·|T|/|U| (0: none)")
    p.add_argument("--compile-cache", default=None,
                   help="folder for JAX's persistent compilation cache (default: a temporary folder for this run)")
    args = p.parse_args(argv)
    if args.diversity_weight < 0 or args.diversity < 0:
        p.error("--diversity-weight and --diversity must be >= 0")
    if args.config == "fmnist":
        args.data_dir = args.data_dir or "/usr/share/datasets/fashion-mnist"
        if args.out == os.path.join(C.HERE, "results", "targeted"):
            args.out = os.path.join(C.HERE, "results", "targeted_fmnist")
    tmp = None
    if args.compile_cache is None and not args.quick:  # (quick runs leave JAX's process-wide config alone)
        tmp = args.compile_cache = tempfile.mkdtemp(prefix="jaxsubset_cc_")
    if args.compile_cache is not None:
        use_compile_cache(args.compile_cache)
    specs, seeds, strategies = CONFIGS[args.config], args.seeds, tuple(args.strategies)
    if args.budgets:
        specs = tuple(dataclasses.replace(sp, budgets=tuple(args.budgets)) for sp in specs)
    if args.quick:
        specs = (dataclasses.replace(specs[0], budgets=specs[0].budgets[1:2], epochs=10),)
        seeds = 1
    t_start = time.perf_counter()
    rows = []
    try:
        for spec in specs:
            rows += run_dataset(spec, seeds, spec.budgets, strategies, features=args.features,
                                grad_ablation=not (args.quick or args.no_grad_ablation), data_dir=args.data_dir,
                                progress=not args.no_progress, eta=args.eta, diversity_weight=args.diversity_weight,
                                diversity=args.diversity)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    total = time.perf_counter() - t_start

    metrics = ["overall_before", "overall_after", "overall_gain", "targeted_before", "targeted_after",
               "targeted_gain", "selected_target", "selection_time_s", "train_time_s"]
    summary = report.summarize(rows, ["dataset", "model", "budget", "strategy", "features", "diversity_weight", "arm"], metrics)
    attach_differences(summary, rows)
    md = render(summary, features=args.features)
    print(f"Total run time: {total:.0f} s ({C.environment()['device']}).")
    C.write_outputs(args.out, "targeted", rows, summary, md, dict(vars(args), total_time_s=total))
    report.write_csv(os.path.join(args.out, "differences.csv"), differences(rows))
    for spec in specs:
        series = {}
        for st in strategies:
            ss = [s for s in summary if s["dataset"] == spec.dataset and s["strategy"] == st
                  and s["features"] in (args.features, "–") and s["diversity_weight"] == (args.diversity_weight if st in SMI else 0.0)]
            series[st] = ([s["budget"] for s in ss], [s["targeted_after_mean"] for s in ss],
                          [s["targeted_after_std"] for s in ss])
        before = [s for s in summary if s["dataset"] == spec.dataset]
        if before:
            b = sorted({s["budget"] for s in before})
            series["before (E only)"] = (b, [before[0]["targeted_before_mean"]] * len(b),
                                         [before[0]["targeted_before_std"]] * len(b))
        C.line_plot(os.path.join(args.out, f"targeted_{spec.dataset}.png"), series, xlabel="budget |A|",
                    ylabel="targeted-class test accuracy",
                    title=f"TSS: {spec.dataset} ({LABEL.get(spec.model, spec.model)}, classes "
                          f"{', '.join(map(str, spec.rare))} rare)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
