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
