"""Shared plumbing for the experiment scripts: arguments, surrogate scoring, output files."""

from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Any, Sequence

import jax
import numpy as np

from jaxsubset import report

HERE = os.path.dirname(os.path.abspath(__file__))


def parser(name: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"experiments/{name}.py", description=description)
    p.add_argument("--quick", action="store_true", help="tiny smoke run (CI): 1 seed, 1-2 epochs, few settings")
    p.add_argument("--out", default=os.path.join(HERE, "results", name), help="output folder")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--data-dir", default=None, help="folder with MNIST / CIFAR files for the GPU configuration")
    p.add_argument("--no-progress", action="store_true")
    return p


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    dev = jax.devices()[0]
    return {"device": f"{dev.platform}:{getattr(dev, 'device_kind', '')}", "num_devices": jax.device_count(),
            "jax": jax.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "date": time.strftime("%Y-%m-%d")}


def write_outputs(out: str, name: str, rows: Sequence[dict[str, Any]], summary: Sequence[dict[str, Any]],
                  markdown: str, config: dict[str, Any]) -> None:
    """Write ``rows.csv``, ``summary.csv``, ``results.json`` and ``table.md`` under ``out``."""
    os.makedirs(out, exist_ok=True)
    report.write_csv(os.path.join(out, "rows.csv"), rows)
    report.write_csv(os.path.join(out, "summary.csv"), summary)
    report.write_json(os.path.join(out, "results.json"), {"experiment": name, "config": config,
                                                          "environment": environment(), "rows": list(rows),
                                                          "summary": list(summary)})
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(markdown + "\n")
    print(markdown)
    print(f"wrote {out}/rows.csv, summary.csv, results.json, table.md")


def line_plot(path: str, series: dict[str, tuple[Sequence[float], Sequence[float], Sequence[float]]], *,
              xlabel: str, ylabel: str, title: str) -> None:
    """One line with error bars per series ``name -> (x, mean, std)``; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, (x, m, s) in series.items():
        ax.errorbar(x, m, yerr=s, marker="o", capsize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def accuracy_series(summary: Sequence[dict[str, Any]], dataset: str, key: str, names: Sequence[str],
                    x: str) -> dict[str, tuple[list, list, list]]:
    """``name -> (x values, mean accuracy, std)`` of the summary rows of ``dataset``, for line_plot."""
    series = {}
    for name in names:
        ss = [s for s in summary if s["dataset"] == dataset and s[key] == name]
        series[name] = ([s[x] for s in ss], [s["test_accuracy_mean"] for s in ss], [s["test_accuracy_std"] for s in ss])
    return series


def fmt(mean: float, std: float, scale: float = 100.0, digits: int = 2) -> str:
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def speedup(full_time: float, sel_time: float, train_time: float) -> float:
    """End-to-end speed-up of subset training (selection included) over full-data training."""
    return full_time / max(sel_time + train_time, 1e-9)


def mean(xs: Sequence[float]) -> float:
    return float(np.mean(xs))


def score_model(ds, model: Any, *, seed: int, epochs: int, train_kw: dict[str, Any], progress: bool):
    """Train the scoring surrogate for ``epochs`` epochs on the full data; returns (PureModel, seconds)."""
    from jaxsubset import train

    t0 = time.perf_counter()
    res = train.fit(model(seed + 1000) if callable(model) else model, ds, epochs=epochs, seed=seed + 1000, progress=progress, eval_every=epochs, **train_kw)
    return res.model, time.perf_counter() - t0


def run_grid(ds, model: str, methods: Sequence[str], fractions: Sequence[float], seeds: int, *, epochs: int,
             score_epochs: int, train_kw: dict[str, Any], progress: bool = False,
             extra: dict[str, Any] | None = None, init: Any = None, score_models: int = 1) -> list[dict[str, Any]]:
    """Accuracy of every (seed, method, fraction) subset plus a full-data baseline per seed.

    For each seed a surrogate is trained for ``score_epochs`` epochs, the quantities the
    methods need are computed once from it (``scoring_time_s``), each method selects per
    class (``selection_time_s``), and a fresh model trains ``epochs`` epochs on the subset.
    ``init(seed)`` returns the model to start from (a name, NNX module or PureModel, e.g.
    pretrained weights); by default the model named ``model`` initialized from the seed.
    ``score_epochs=0`` scores at that initial model itself and every arm of the seed then
    trains from those same parameters; ``score_models=K`` averages scalar scores (EL2N,
    loss, ...) over K surrogates (see :mod:`jaxsubset.surrogate`).
    """
    from jaxsubset import budget_from_fraction, selectors, surrogate, train

    rows = []
    needs = sorted({q for m in methods for q in selectors.get(m).needs})
    init = init or (lambda seed: model)
    for seed in range(seeds):
        base = dict(extra or {}, dataset=ds.name, model=model, seed=seed)
        quantities, start, t_score = surrogate.score(needs, init(seed), ds, seed=seed, score_epochs=score_epochs,
                                                     score_models=score_models, train_kw=train_kw,
                                                     progress=progress, init=init)
        full = train.fit(start, ds, epochs=epochs, seed=seed, progress=progress, eval_every=epochs, **train_kw)
        rows.append(dict(base, method="full", fraction=1.0, num_examples=ds.y_train.size,
                         test_accuracy=full.history["test_accuracy"][-1], scoring_time_s=0.0,
                         selection_time_s=0.0, train_time_s=full.train_time_s))
        for frac in fractions:
            budget = budget_from_fraction(frac, ds.y_train.size)
            for method in methods:
                t0 = time.perf_counter()
                sub = selectors.select(method, ds.y_train, budget, quantities, seed=seed, num_classes=ds.num_classes)
                t_sel = time.perf_counter() - t0
                res = train.fit(start, ds, sub, epochs=epochs, seed=seed, progress=progress, eval_every=epochs,
                                **train_kw)
                t_scr = t_score if selectors.get(method).needs else 0.0
                rows.append(dict(base, method=method, fraction=frac, num_examples=len(sub),
                                 test_accuracy=res.history["test_accuracy"][-1], scoring_time_s=t_scr,
                                 selection_time_s=t_sel, train_time_s=res.train_time_s))
    full_t = {r["seed"]: r["train_time_s"] for r in rows if r["method"] == "full"}
    for r in rows:
        # equal-compute bookkeeping: what the whole method cost, surrogate and selection included
        r["total_time_s"] = r["scoring_time_s"] + r["selection_time_s"] + r["train_time_s"]
        r["sample_steps"] = int(r["num_examples"]) * int(epochs)
        r["speedup_vs_full"] = speedup(full_t[r["seed"]], r["scoring_time_s"] + r["selection_time_s"],
                                       r["train_time_s"])
    return rows
