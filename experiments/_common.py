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
                  markdown: str, config: dict[str, Any], *, claims: Sequence[dict[str, str]] | None = None) -> None:
    """Write ``rows.csv``, ``summary.csv``, ``results.json`` and ``table.md`` under ``out``.

    ``claims``: optional records ``{"claim", "published", "ours", "verdict", "why"}`` (the seed
    paper's figure beside ours, verdict ``holds`` / ``does not hold`` / ``cannot be tested here``);
    stored in ``results.json`` and shown by ``make_results.py`` in the Fashion-MNIST part.
    """
    os.makedirs(out, exist_ok=True)
    report.write_csv(os.path.join(out, "rows.csv"), rows)
    report.write_csv(os.path.join(out, "summary.csv"), summary)
    meta = {"experiment": name, "config": config, "environment": environment(), "rows": list(rows),
            "summary": list(summary)}
    if claims:
        bad = [c for c in claims if not {"claim", "verdict"} <= set(c)]
        if bad:
            raise ValueError(f"each claim needs at least 'claim' and 'verdict' keys; got {bad[:2]}")
        meta["claims"] = [dict(c) for c in claims]
    report.write_json(os.path.join(out, "results.json"), meta)
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


def rs2_subset(labels: np.ndarray, budget: int, epoch: int, seed: int, *, num_classes: int | None = None):
    """RandomOnline / RS2 without replacement: the random subset of ``epoch``, stratified by class.

    Class ``c`` gets ``b_c`` rows per epoch (:func:`jaxsubset.per_class_budget`). Its rows are
    shuffled once per pass (``m_c = ceil(n_c / b_c)`` epochs, a fresh permutation per pass and
    ``seed``); epoch ``e`` takes chunk ``e mod m_c`` of pass ``e // m_c``, the last chunk topped
    up from the start of the same permutation. So every row is seen once per pass before any is
    seen again, at the per-epoch cost of a fixed subset of ``budget`` rows.

    Args:
      labels: int ``(n,)`` class ids.
      budget: rows per epoch, ``1 <= budget <= n``.
      epoch: epoch number ``>= 0``.
      seed: draws the permutations.
      num_classes: ``C`` (default ``max(labels) + 1``).
    Returns:
      an unweighted :class:`jaxsubset.Subset` of ``budget`` sorted indices.
    """
    from jaxsubset import Subset, per_class_budget

    labels = np.asarray(labels)
    if int(epoch) < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}.")
    per = per_class_budget(labels, int(budget), num_classes)
    picked = []
    for c, b in enumerate(int(x) for x in per):
        if b == 0:
            continue
        rows = np.flatnonzero(labels == c)
        m = -(-rows.size // b)
        p, j = divmod(int(epoch), m)
        perm = np.random.default_rng([int(seed), c, p]).permutation(rows)
        chunk = perm[j * b:(j + 1) * b]
        picked += [chunk, perm[:b - chunk.size]]
    return Subset.unweighted(np.sort(np.concatenate(picked)), method="random_online")


def run_grid(ds, model: str, methods: Sequence[str], fractions: Sequence[float], seeds: int, *, epochs: int,
             score_epochs: int, train_kw: dict[str, Any], progress: bool = False,
             extra: dict[str, Any] | None = None, init: Any = None, online_random: bool = False,
             full_same_time: bool = False,
             score_models: int = 1) -> list[dict[str, Any]]:
    """Accuracy of every (seed, method, fraction) subset plus a full-data baseline per seed.

    For each seed a surrogate is trained for ``score_epochs`` epochs, the quantities the
    methods need are computed once from it (``scoring_time_s``), each method selects per
    class (``selection_time_s``), and a fresh model trains ``epochs`` epochs on the subset.
    ``init(seed)`` returns the model to start from (a name, NNX module or PureModel, e.g.
    pretrained weights); by default the model named ``model`` initialized from the seed.
    ``score_epochs=0`` scores at that initial model itself and every arm of the seed then
    trains from those same parameters; ``score_models=K`` averages scalar scores (EL2N,
    loss, ...) over K surrogates (see :mod:`jaxsubset.workflows.surrogate`).

    Equal-compute protocol (every row): ``total_time_s`` = surrogate training (compilation
    included) + scoring + selection + training (compilation excluded), ``epochs`` trained,
    ``sample_steps`` = examples processed in training (Σ over epochs of the active subset size),
    ``speedup_vs_full`` against the seed's full-data training time. Optional baselines:

    Args:
      online_random: also add ``method="random_online"`` rows per fraction: a stratified random
        subset of the same budget re-drawn every epoch without replacement (RS2,
        :func:`rs2_subset`), through ``train.fit(reselect=..., select_every=1)``; its
        ``selection_time_s`` is the time of all draws. Same per-epoch cost as any subset.
      full_same_time: add ``full_same_time_epochs`` / ``full_same_time_accuracy`` /
        ``full_same_time_s`` to every subset row: full data trained for
        ``k = clamp(floor(total_time_s / t_epoch), 1, epochs)`` epochs (its own schedule), where
        ``t_epoch`` is the seed's full-data training time per epoch, i.e. the most full-data
        epochs that fit in the method's whole wall time. Each distinct ``k`` trains once per seed
        and also gives a ``method="full_same_time"`` row (``fraction=1.0``, ``epochs=k``).
    """
    from jaxsubset import budget_from_fraction, selectors, train
    from jaxsubset.workflows import surrogate

    rows = []
    needs = sorted({q for m in methods for q in selectors.get(m).needs})
    init = init or (lambda seed: model)
    for seed in range(seeds):
        base = dict(extra or {}, dataset=ds.name, model=model, seed=seed)
        quantities, start, t_score = surrogate.score(needs, init(seed), ds, seed=seed, score_epochs=score_epochs,
                                                     score_models=score_models, train_kw=train_kw,
                                                     progress=progress, init=init)
        full = train.fit(start, ds, epochs=epochs, seed=seed, progress=progress, eval_every=epochs, **train_kw)
        rows.append(dict(base, method="full", fraction=1.0, num_examples=ds.y_train.size, epochs=epochs,
                         test_accuracy=full.history["test_accuracy"][-1], scoring_time_s=0.0,
                         selection_time_s=0.0, train_time_s=full.train_time_s,
                         sample_steps=int(sum(full.history["num_examples"]))))
        seed_rows = []
        for frac in fractions:
            budget = budget_from_fraction(frac, ds.y_train.size)
            for method in methods:
                t0 = time.perf_counter()
                sub = selectors.select(method, ds.y_train, budget, quantities, seed=seed, num_classes=ds.num_classes)
                t_sel = time.perf_counter() - t0
                res = train.fit(start, ds, sub, epochs=epochs, seed=seed, progress=progress, eval_every=epochs,
                                **train_kw)
                t_scr = t_score if selectors.get(method).needs else 0.0
                seed_rows.append(dict(base, method=method, fraction=frac, num_examples=len(sub), epochs=epochs,
                                      test_accuracy=res.history["test_accuracy"][-1], scoring_time_s=t_scr,
                                      selection_time_s=t_sel, train_time_s=res.train_time_s,
                                      sample_steps=int(sum(res.history["num_examples"]))))
            if online_random:
                draw = lambda _m, e, b=budget, s=seed: rs2_subset(ds.y_train, b, e, s, num_classes=ds.num_classes)
                # subset= sizes the learning-rate schedule to budget-row epochs (without it, fit plans
                # full-data epochs); the epoch-0 draw itself comes from reselect
                res = train.fit(start, ds, draw(None, 0), epochs=epochs, seed=seed, progress=progress,
                                eval_every=epochs, reselect=draw, select_every=1, **train_kw)
                seed_rows.append(dict(base, method="random_online", fraction=frac, num_examples=budget,
                                      epochs=epochs, test_accuracy=res.history["test_accuracy"][-1],
                                      scoring_time_s=0.0,
                                      selection_time_s=float(sum(x["time_s"] for x in res.history["selections"])),
                                      train_time_s=res.train_time_s,
                                      sample_steps=int(sum(res.history["num_examples"]))))
        for r in seed_rows:
            r["total_time_s"] = r["scoring_time_s"] + r["selection_time_s"] + r["train_time_s"]
        if full_same_time:
            t_epoch = full.train_time_s / epochs
            runs: dict[int, Any] = {epochs: full}  # k == epochs is the full-data run itself
            for r in seed_rows:
                k = int(min(max(np.floor(r["total_time_s"] / max(t_epoch, 1e-12) + 1e-9), 1), epochs))
                if k not in runs:
                    runs[k] = train.fit(start, ds, epochs=k, seed=seed, progress=progress, eval_every=k,
                                        **train_kw)
                r.update(full_same_time_epochs=k, full_same_time_accuracy=runs[k].history["test_accuracy"][-1],
                         full_same_time_s=runs[k].train_time_s)
            for k in sorted(set(r["full_same_time_epochs"] for r in seed_rows)):
                seed_rows.append(dict(base, method="full_same_time", fraction=1.0, num_examples=ds.y_train.size,
                                      epochs=k, test_accuracy=runs[k].history["test_accuracy"][-1],
                                      scoring_time_s=0.0, selection_time_s=0.0, train_time_s=runs[k].train_time_s,
                                      sample_steps=int(sum(runs[k].history["num_examples"]))))
        rows += seed_rows
    full_t = {r["seed"]: r["train_time_s"] for r in rows if r["method"] == "full"}
    for r in rows:
        # equal-compute bookkeeping: what the whole method cost, surrogate and selection included
        r["total_time_s"] = r["scoring_time_s"] + r["selection_time_s"] + r["train_time_s"]
        r["speedup_vs_full"] = speedup(full_t[r["seed"]], r["scoring_time_s"] + r["selection_time_s"],
                                       r["train_time_s"])
    return rows


def time_series(rows: Sequence[dict[str, Any]], *, dataset: str | None = None, method_key: str = "method"
                ) -> dict[str, tuple[list[float], list[float], list[float], list[float]]]:
    """``method -> (mean total time s, mean accuracy, accuracy std, time std)``, one point per setting.

    A setting is a (fraction, epochs) pair of :func:`run_grid` rows (of ``dataset`` when given),
    averaged over seeds; points are sorted by time. For :func:`accuracy_vs_time_plot`.
    """
    groups: dict[str, dict[tuple, list[dict[str, Any]]]] = {}
    for r in rows:
        if dataset is not None and r.get("dataset") != dataset:
            continue
        key = (r.get("fraction"), r.get("epochs"))
        groups.setdefault(str(r[method_key]), {}).setdefault(key, []).append(r)
    out = {}
    for m, by in groups.items():
        pts = []
        for rs in by.values():
            t = np.asarray([r["total_time_s"] for r in rs], np.float64)
            a = np.asarray([r["test_accuracy"] for r in rs], np.float64)
            pts.append((t.mean(), a.mean(), a.std(ddof=1) if a.size > 1 else 0.0, t.std(ddof=1) if t.size > 1 else 0.0))
        pts.sort()
        out[m] = tuple(list(map(float, c)) for c in zip(*pts))
    return out


def accuracy_vs_time_plot(path: str, rows: Sequence[dict[str, Any]], *, title: str, dataset: str | None = None,
                          method_key: str = "method") -> None:
    """Test accuracy against total wall time (surrogate + scoring + selection + training), one line per
    method, error bars = std over seeds in both directions; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = time_series(rows, dataset=dataset, method_key=method_key)
    if not series:
        raise ValueError(f"No rows to plot (dataset={dataset!r}).")
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for name, (t, m, s, ts) in series.items():
        style = dict(marker="*", markersize=11, linestyle="none") if name == "full" else dict(marker="o")
        ax.errorbar(t, m, yerr=s, xerr=ts, capsize=2, label=name, **style)
    ax.set_xscale("log")
    ax.set_xlabel("total wall time per run, s (surrogate + scoring + selection + training; log)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def render_protocol(rows: Sequence[dict[str, Any]], *, keys: Sequence[str] = ("dataset", "fraction"),
                    baseline: str = "random") -> str:
    """Markdown equal-compute table from :func:`run_grid` rows: per (``keys``, method) accuracy mean ± std,
    paired difference to ``baseline`` with its 95 % interval, total time, sample-steps, and (when
    present) full data trained for the same wall time."""
    rows = [r for r in rows if r["method"] != "full_same_time"]  # shown as a column of the subset rows
    seen: set[tuple] = set()
    for r in rows:
        key = tuple(r.get(k) for k in keys) + (r["method"], r["seed"])
        if key in seen:
            raise ValueError(f"Several rows share {dict(zip(list(keys) + ['method', 'seed'], key))}: add the "
                             "column that tells them apart to keys (e.g. a noise level), or pairs would mix.")
        seen.add(key)
    summ = report.summarize(rows, list(keys) + ["method"], ["test_accuracy", "total_time_s", "sample_steps"])
    same = {tuple(s[k] for k in keys) + (s["method"],): s for s in report.summarize(
        [r for r in rows if "full_same_time_accuracy" in r], list(keys) + ["method"], ["full_same_time_accuracy"])}
    paired = {tuple(p[k] for k in keys) + (p["method"],): p
              for p in report.paired_differences(rows, list(keys), baseline=baseline)}
    header = list(keys) + ["method", "test acc. %", f"Δ vs {baseline} [95 % CI]", "verdict", "total s",
                           "sample-steps", "full data, same time %", "seeds"]
    body = []
    for s in summ:
        p = paired.get(tuple(s[k] for k in keys) + (s["method"],))
        f = same.get(tuple(s[k] for k in keys) + (s["method"],))
        fst = fmt(f["full_same_time_accuracy_mean"], f["full_same_time_accuracy_std"]) if f else "–"
        body.append([s[k] for k in keys] + [s["method"], fmt(s["test_accuracy_mean"], s["test_accuracy_std"]),
                     report.fmt_diff(p) if p else "–", p["verdict"] if p else "–",
                     f"{s['total_time_s_mean']:.1f}", f"{s['sample_steps_mean']:.3g}", fst, s["n"]])
    return report.markdown_table(header, body)


