"""Result tables: mean ± std summaries, markdown/CSV/JSON writers and a bar plot."""

from __future__ import annotations

import csv
import json
import os
from typing import Any, Iterable, Sequence

import numpy as np


def summarize(rows: Sequence[dict[str, Any]], keys: Sequence[str], values: Sequence[str]) -> list[dict[str, Any]]:
    """Group ``rows`` by ``keys`` (first-seen order) and give mean/std/count of each of ``values``."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = []
    for g, rs in groups.items():
        rec = dict(zip(keys, g))
        rec["n"] = len(rs)
        for v in values:
            a = np.asarray([r[v] for r in rs], np.float64)
            rec[f"{v}_mean"] = float(a.mean())
            rec[f"{v}_std"] = float(a.std(ddof=1)) if a.size > 1 else 0.0
        out.append(rec)
    return out


def paired_differences(rows: Sequence[dict[str, Any]], keys: Sequence[str], *, method_key: str = "method",
                       baseline: str = "random", value: str = "test_accuracy", pair_key: str = "seed",
                       confidence: float = 0.95) -> list[dict[str, Any]]:
    """Paired differences ``value(method) - value(baseline)`` over matching ``pair_key`` (seeds).

    Rows are grouped by ``keys`` (which must not include ``method_key`` or ``pair_key``); within a
    group, every method is paired with ``baseline`` on the same ``pair_key`` (same seed, same budget,
    same training), and the mean difference gets a two-sided Student-t interval at ``confidence``.

    Returns one record per (group, method != baseline) with ``keys``, ``method_key``, ``baseline``,
    ``n`` (pairs), ``diff_mean``, ``diff_std``, ``ci_low``, ``ci_high`` (NaN when ``n < 2``) and
    ``verdict``: ``"better"`` / ``"worse"`` when the interval excludes 0, else ``"within noise"``.
    """
    from scipy import stats

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    groups: dict[tuple, dict[str, dict[Any, float]]] = {}
    for r in rows:
        g = groups.setdefault(tuple(r[k] for k in keys), {})
        g.setdefault(r[method_key], {})[r[pair_key]] = float(r[value])
    out = []
    for g, by_method in groups.items():
        base = by_method.get(baseline)
        if base is None:
            continue
        for m, vals in by_method.items():
            if m == baseline:
                continue
            common = sorted(set(vals) & set(base), key=str)
            d = np.asarray([vals[s] - base[s] for s in common], np.float64)
            rec = dict(zip(keys, g))
            rec.update({method_key: m, "baseline": baseline, "n": int(d.size)})
            if d.size == 0:
                continue
            mu = float(d.mean())
            sd = float(d.std(ddof=1)) if d.size > 1 else float("nan")
            if d.size > 1:
                half = float(stats.t.ppf(0.5 + confidence / 2, d.size - 1) * sd / np.sqrt(d.size))
                lo, hi = mu - half, mu + half
            else:
                lo = hi = float("nan")
            verdict = "better" if lo > 0 else "worse" if hi < 0 else "within noise"
            rec.update(diff_mean=mu, diff_std=sd, ci_low=lo, ci_high=hi, verdict=verdict)
            out.append(rec)
    return out


def fmt_diff(rec: dict[str, Any], scale: float = 100.0, digits: int = 2) -> str:
    """``+1.23 [0.45, 2.01]`` (scaled, e.g. to percentage points) for a :func:`paired_differences` record."""
    if not np.isfinite(rec.get("ci_low", float("nan"))):
        return f"{rec['diff_mean'] * scale:+.{digits}f} [n={rec['n']}]"
    return (f"{rec['diff_mean'] * scale:+.{digits}f} [{rec['ci_low'] * scale:+.{digits}f}, "
            f"{rec['ci_high'] * scale:+.{digits}f}]")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_csv(path: str, rows: Sequence[dict[str, Any]]) -> None:
    """Write dict rows (the union of their keys as columns)."""
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)


def _parse(v: str) -> Any:
    if v == "":
        return None
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(v, v)


def read_csv(path: str) -> list[dict[str, Any]]:
    """Read rows written by :func:`write_csv`, turning numeric cells back into int / float.

    Floats are written with ``repr`` precision, so values round-trip exactly.
    """
    with open(path, newline="") as f:
        return [{k: _parse(v) for k, v in r.items()} for r in csv.DictReader(f)]


def write_json(path: str, obj: Any) -> None:
    """Write ``obj`` as indented JSON (numpy scalars converted)."""
    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        raise TypeError(f"not JSON serializable: {type(o).__name__}")

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, default=default)


def bar_plot(path: str, labels: Sequence[str], means: Sequence[float], stds: Sequence[float], *,
             ylabel: str, title: str) -> None:
    """Save a bar chart with error bars as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(labels) + 1.5), 3.5))
    ax.bar(range(len(labels)), means, yerr=stds, capsize=4, color="#4C72B0")
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    lo = max(0.0, min(m - s for m, s in zip(means, stds)) - 0.05)
    ax.set_ylim(lo, min(1.0, max(m + s for m, s in zip(means, stds)) + 0.03))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
