"""The GEDA comparison: random, random over quartiles, evenly spaced, GEDA (+ CRAIG, GRAD-MATCH).

Per-class selection at 20/40/60/80 % of the training set, training with a one-cycle schedule and
batch 64, >= 3 seeds. The published configuration is ResNet-18 for 12 epochs on CIFAR-10/100
(`--config gpu`, needs the CIFAR files in `--data-dir`); the CPU proxy runs the CNN on `digits`
and `mnist1d` (`--config cpu`, the default, offline).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

import dataclasses  # noqa: E402

from jaxsubset import data, report, selectors  # noqa: E402
from jaxsubset.models import create, to_pure  # noqa: E402
from jaxsubset.models.weights import load_params  # noqa: E402

# Published top-1 (%) at 80 / 60 / 40 / 20 % (ResNet-18, ImageNet-pretrained, 12 epochs).
PUBLISHED = {
    ("cifar10", "geda"): {0.8: 87.14, 0.6: 84.55, 0.4: 81.10, 0.2: 72.91},
    ("cifar10", "evenly_spaced"): {0.8: 86.18, 0.6: 84.65, 0.4: 80.86, 0.2: 68.35},
    ("cifar10", "quantile_random"): {0.8: 83.75, 0.6: 82.11, 0.4: 76.89, 0.2: 69.66},
    ("cifar10", "random"): {0.8: 83.24, 0.6: 80.46, 0.4: 76.61, 0.2: 68.81},
    ("cifar100", "geda"): {0.8: 64.83, 0.6: 59.51, 0.4: 51.50, 0.2: 39.28},
    ("cifar100", "random"): {0.8: 55.74, 0.6: 50.55, 0.4: 43.81, 0.2: 33.22},
    ("cifar10", "full"): {1.0: 95.95}, ("cifar100", "full"): {1.0: 81.11},
}
PUBLISHED_SCRATCH_FULL = {"cifar10": 86.23, "cifar100": 66.08}

CONFIGS = {
    # name: (datasets, model, epochs, lr, optimizer, score_epochs)
    "cpu": ((("digits", "mlp"), ("mnist1d", "cnn")), 12, 3e-3, "adam", 3),
    "gpu": ((("cifar10", "resnet18"), ("cifar100", "resnet18")), 12, 0.05, "sgd", 1),
}
METHODS = ("random", "quantile_random", "evenly_spaced", "geda", "craig", "gradmatch")


def render(summary) -> str:
    """The markdown table of a summary (also used by make_results.py to rebuild RESULTS.md)."""
    table = []
    for s in summary:
        pub = PUBLISHED.get((s["dataset"], s["method"]), {}).get(s["fraction"])
        if s["method"] == "full" and s["init"] == "scratch":
            pub = PUBLISHED_SCRATCH_FULL.get(s["dataset"])
        table.append((s["dataset"], f"{s['model']} ({s['init']})", s["method"], f"{s['fraction']:.0%}",
                      C.fmt(s["test_accuracy_mean"], s["test_accuracy_std"]), "–" if pub is None else f"{pub:.2f}",
                      f"{s['scoring_time_s_mean']:.2f}", f"{s['selection_time_s_mean']:.3f}",
                      f"{s['train_time_s_mean']:.2f}", f"{s['speedup_vs_full_mean']:.2f}×", s["n"]))
    md = report.markdown_table(["data set", "model", "method", "kept", "test acc. % (ours)", "published %",
                                "scoring s", "selection s", "training s", "speed-up vs full", "seeds"], table)
    return md


def main(argv=None) -> int:
    p = C.parser("geda_study", __doc__.splitlines()[0])
    p.add_argument("--config", choices=sorted(CONFIGS), default="cpu")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.2, 0.4, 0.6, 0.8])
    p.add_argument("--pretrained", default=None,
                   help="ImageNet-pretrained ResNet-18 weights (.npz of parameter paths) for --config gpu; "
                        "from scratch otherwise")
    args = p.parse_args(argv)
    pairs, epochs, lr, opt, score_epochs = CONFIGS[args.config]
    methods = [m for m in METHODS if m in selectors.METHODS]
    fractions, seeds = args.fractions, args.seeds
    if args.quick:
        pairs, epochs, fractions, seeds, score_epochs = pairs[:1], 1, [0.4], 1, 1
    train_kw = dict(batch_size=64, lr=lr, optimizer=opt, schedule="onecycle")
    rows = []
    for name, model in pairs:
        ds = data.load(name, data_dir=args.data_dir)
        init = None
        if args.pretrained:  # the same pretrained start for every seed; the seed still sets batch order
            def init(seed, ds=ds, model=model):
                m = to_pure(create(model, ds.input_shape, ds.num_classes, seed=seed))
                return dataclasses.replace(m, params=load_params(m.params, args.pretrained))
        rows += C.run_grid(ds, model, methods, fractions, seeds, epochs=epochs, score_epochs=score_epochs,
                           train_kw=train_kw, progress=not args.no_progress, init=init,
                           extra={"init": "pretrained" if args.pretrained else "scratch", "epochs": epochs})
    summary = report.summarize(rows, ["dataset", "model", "init", "method", "fraction"],
                               ["test_accuracy", "scoring_time_s", "selection_time_s", "train_time_s",
                                "speedup_vs_full"])
    md = render(summary)
    C.write_outputs(args.out, "geda_study", rows, summary, md, vars(args))
    for name, model in pairs:
        series = C.accuracy_series(summary, name, "method", methods, "fraction")
        C.line_plot(os.path.join(args.out, f"accuracy_{name}.png"), series, xlabel="fraction kept",
                    ylabel="test accuracy", title=f"GEDA study proxy: {name} ({model}, {epochs} epochs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
