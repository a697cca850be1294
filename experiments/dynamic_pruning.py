"""Dynamic data pruning during training: full data vs InfoBatch vs RandomOnline / RS2 at the same saving.

InfoBatch (Qin et al., ICLR 2024) at r = 0.3, 0.5, 0.7 (anneal 0.125, the paper's default) against
RandomOnline (a fresh random subset each epoch) at the fraction of sample-steps each InfoBatch run
used (same seed), and RS2 without replacement at InfoBatch(0.5)'s fraction (RS2 can only use
1/ceil(1/fraction) of the data per epoch). Every arm trains the same model from the same
initialization with the same schedule, spread over the steps it takes (see ``fit(dynamic=...)``).
Reported: test accuracy, saved sample-steps, saved training wall time (compiled programs are cached,
so no arm pays compilation), paired differences with a 95 % Student-t interval against full data
and against RandomOnline at the same sample-steps.

Data: Fashion-MNIST (full: 60 000 / 10 000, MLP 784-256-256-10, batch 256; pass --data-dir, default
/usr/share/datasets/fashion-mnist) and the CPU proxy `digits` (MLP, batch 64).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import _common as C  # noqa: E402

from jaxsubset import data, report, train  # noqa: E402
from jaxsubset.train import RS2, InfoBatch, RandomOnline  # noqa: E402

# data set -> (model, epochs, batch size, lr)
CONFIGS = {"digits": ("mlp", 20, 64, 3e-3), "fashion_mnist": ("mlp", 15, 256, 1e-3)}
RATIOS = (0.3, 0.5, 0.7)


def run_dataset(name: str, ds, seeds: int, ratios, *, epochs: int, model: str, batch_size: int, lr: float,
                progress: bool) -> list[dict]:
    n = ds.y_train.size
    kw = dict(epochs=epochs, batch_size=batch_size, lr=lr, optimizer="adam", schedule="cosine", progress=progress,
              eval_every=epochs)
    train.fit(model, ds, epochs=1, batch_size=batch_size, lr=lr, progress=False)  # compile outside the timings
    rows = []

    def run(arm: str, family: str, seed: int, policy, setting: float) -> dict:
        res = train.fit(model, ds, seed=seed, dynamic=policy, **kw)
        row = dict(dataset=name, method=arm, family=family, setting=setting, seed=seed,
                   test_accuracy=res.history["test_accuracy"][-1], sample_steps=res.sample_steps,
                   step_fraction=res.sample_steps / (n * epochs), train_time_s=res.train_time_s,
                   compile_time_s=res.compile_time_s)
        rows.append(row)
        print(f"  {name} seed {seed} {arm:>20s}: acc {row['test_accuracy']:.4f}, steps {row['step_fraction']:.3f}, "
              f"train {row['train_time_s']:.1f} s", flush=True)
        return row

    for seed in range(seeds):
        full = run("full", "full", seed, None, 1.0)
        for r in ratios:
            ib = run(f"infobatch_r{r}", "InfoBatch", seed, InfoBatch(ratio=r), r)
            frac = ib["step_fraction"]
            run(f"random_online_r{r}", "RandomOnline", seed, RandomOnline(frac), r)
            if r == 0.5 or len(ratios) == 1:
                run(f"rs2_r{r}", "RS2", seed, RS2(frac), r)
        for row in rows:
            if row["seed"] == seed:
                row["saved_steps"] = 1 - row["step_fraction"]
                row["saved_time"] = 1 - row["train_time_s"] / full["train_time_s"]
    return rows


def render(summary) -> str:
    """The markdown tables from the summary rows (arms, and paired differences as ``kind`` rows)."""
    arms = [s for s in summary if s["kind"] == "arm"]
    vs_full = [s for s in summary if s["kind"] == "vs_full"]
    vs_ro = [s for s in summary if s["kind"] == "vs_random_online"]
    dev = arms[0]["device"] if arms else "?"
    md = [f"Measured on {dev}; training wall time only (dynamic pruning has no scoring or selection step; "
          "compiled programs cached, so no arm pays compilation); means ± std over seeds.", "",
          report.markdown_table(
              ["data set", "arm", "test acc. %", "sample-steps used", "saved steps", "saved wall time", "train s",
               "seeds"],
              [(s["dataset"], s["method"], C.fmt(s["test_accuracy_mean"], s["test_accuracy_std"]),
                f"{s['step_fraction_mean']:.3f}", f"{s['saved_steps_mean']:.1%}", f"{s['saved_time_mean']:.1%}",
                f"{s['train_time_s_mean']:.1f}", s["n"]) for s in arms]),
          "", "Paired differences of test accuracy (percentage points, 95 % Student-t interval over seeds) "
          "against full data:", "",
          report.markdown_table(["data set", "arm", "Δ vs full", "verdict"],
                                [(d["dataset"], d["method"], report.fmt_diff(d), d["verdict"]) for d in vs_full]),
          "", "InfoBatch against RandomOnline at the same sample-steps (same seed):", "",
          report.markdown_table(["data set", "r", "Δ InfoBatch − RandomOnline", "verdict"],
                                [(d["dataset"], d["setting"], report.fmt_diff(d), d["verdict"]) for d in vs_ro])]
    return "\n".join(md)


def finish(rows, out: str, config: dict) -> None:
    """Summary, paired differences, tables and plots from the per-run rows."""
    metrics = ["test_accuracy", "sample_steps", "step_fraction", "saved_steps", "saved_time", "train_time_s"]
    device = C.environment()["device"]
    summary = [dict(s, kind="arm", device=device)
               for s in report.summarize(rows, ["dataset", "method", "family", "setting"], metrics)]
    summary += [dict(d, kind="vs_full") for d in report.paired_differences(rows, ["dataset"], baseline="full")]
    pair_rows = [dict(r, method=r["family"]) for r in rows if r["family"] in ("InfoBatch", "RandomOnline")]
    summary += [dict(d, kind="vs_random_online")
                for d in report.paired_differences(pair_rows, ["dataset", "setting"], baseline="RandomOnline")]
    C.write_outputs(out, "dynamic_pruning", rows, summary, render(summary), config)
    arms = [s for s in summary if s["kind"] == "arm"]
    for name in sorted({r["dataset"] for r in rows}):
        series = {}
        for fam in ("full", "InfoBatch", "RandomOnline", "RS2"):
            ss = sorted((s for s in arms if s["dataset"] == name and s["family"] == fam),
                        key=lambda s: s["train_time_s_mean"])
            if ss:
                series[fam] = ([s["train_time_s_mean"] for s in ss], [s["test_accuracy_mean"] for s in ss],
                               [s["test_accuracy_std"] for s in ss])
        C.line_plot(os.path.join(out, f"accuracy_vs_time_{name}.png"), series, xlabel="training wall time (s)",
                    ylabel="test accuracy", title=f"dynamic pruning, {name} (MLP)")


def main(argv=None) -> int:
    p = C.parser("dynamic_pruning", __doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["digits", "fashion_mnist"], choices=sorted(CONFIGS))
    p.add_argument("--fashion-epochs", type=int, default=CONFIGS["fashion_mnist"][1])
    p.add_argument("--from-rows", action="store_true", help="rebuild the outputs from OUT/rows.csv")
    args = p.parse_args(argv)
    if args.from_rows:
        import json

        with open(os.path.join(args.out, "results.json")) as f:
            config = json.load(f)["config"]
        finish(report.read_csv(os.path.join(args.out, "rows.csv")), args.out, config)
        return 0
    seeds, ratios = args.seeds, RATIOS
    if args.quick:
        seeds, ratios = 1, (0.5,)
    data_dir = args.data_dir or "/usr/share/datasets/fashion-mnist"
    rows = []
    for name in args.datasets:
        if args.quick and name != "digits":
            continue
        model, epochs, bs, lr = CONFIGS[name]
        epochs = 4 if args.quick else (args.fashion_epochs if name == "fashion_mnist" else epochs)
        ds = data.load(name, data_dir=data_dir) if name == "fashion_mnist" else data.load(name)
        rows += run_dataset(name, ds, seeds, ratios, epochs=epochs, model=model, batch_size=bs, lr=lr,
                            progress=not args.no_progress)
    finish(rows, args.out, dict(vars(args), configs=CONFIGS, ratios=list(ratios), seeds=seeds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
