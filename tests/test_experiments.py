"""Every experiment runs end to end offline with --quick; RESULTS.md shows the committed numbers."""

import importlib.util
import os
import sys

import pytest

from jaxsubset import report
from jaxsubset.cli import main as cli_main

EXP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")
sys.path.insert(0, EXP)


def _module(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXP, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


# pruning_heuristics (the cheapest) runs in every suite run; the other quick runs are smoke runs of the
# same plumbing (`pytest -m smoke`, CI's second command): together 39 s of CPU on 2 cores
QUICK = [n if n == "pruning_heuristics" else pytest.param(n, marks=pytest.mark.smoke)
         for n in ("geda_study", "pruning_heuristics", "targeted", "mislabel")
         if os.path.isfile(os.path.join(EXP, f"{n}.py"))]


@pytest.fixture
def small_digits(monkeypatch):  # the session's persistent XLA cache (conftest) serves the many equal fits
    """The quick runs on a quarter of digits (every 4th training row, every 3rd test row): the smoke run
    covers the same code in a fraction of the time; outputs are checked for content below."""
    from jaxsubset import data

    real = data.load

    def load(name, **kw):
        ds = real(name, **kw)
        if name != "digits":
            return ds
        return ds.replace(x_train=ds.x_train[::4], y_train=ds.y_train[::4], x_test=ds.x_test[::3],
                          y_test=ds.y_test[::3])

    monkeypatch.setattr(data, "load", load)


def _number(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


@pytest.mark.parametrize("name", QUICK)
def test_quick_run_writes_consistent_outputs(name, tmp_path, small_digits):
    import json

    import numpy as np

    out = tmp_path / name
    assert cli_main(["experiment", name, "--quick", "--no-progress", "--out", str(out)]) == 0
    for f in ("rows.csv", "summary.csv", "results.json", "table.md"):
        assert (out / f).stat().st_size > 0, f
    assert list(out.glob("*.png")), "no plot written"
    rows = report.read_csv(str(out / "rows.csv"))
    summary = report.read_csv(str(out / "summary.csv"))
    assert rows and summary
    assert {r["dataset"] for r in rows} == {"digits"}
    # value ranges: accuracies / rates in [0, 1], times >= 0, counts within the (quarter) training set
    for r in rows:
        for k, v in r.items():
            x = _number(v)
            if x is None:
                continue
            assert np.isfinite(x), (k, v)
            if "accuracy" in k or k.endswith(("_before", "_after", "_rate", "flipped_kept", "auc")) \
                    or k.startswith(("precision", "recall")) or k in ("first", "last"):
                assert 0.0 <= x <= 1.0, (k, v)
            if k.endswith("_s") or k in ("num_examples", "budget", "k"):
                assert x >= 0, (k, v)
            if k == "num_examples":
                assert x <= 360, (k, v)
    # every summary mean is the mean of its rows (a metric chosen per experiment, recomputed here)
    metric = next(m for m in ("test_accuracy", "targeted_after") if any(f"{m}_mean" in s for s in summary))
    for s in summary:
        if _number(s.get(f"{metric}_mean")) is None:
            continue
        # the grouping keys: columns the rows have too (a summary may add derived columns, e.g. paired CIs)
        keys = [k for k in s if not k.endswith(("_mean", "_std")) and k != "n" and s[k] not in ("", None)
                and k in rows[0]]
        same = lambda a, b: str(a) == str(b) or (_number(a) is not None and _number(a) == _number(b))
        vals = [_number(r[metric]) for r in rows if _number(r.get(metric)) is not None
                and all(same(r.get(k), s[k]) for k in keys)]
        assert len(vals) == int(float(s["n"])) and np.isclose(np.mean(vals), float(s[f"{metric}_mean"])), s
    if name in ("geda_study", "pruning_heuristics"):  # a full-data row and a random arm per seed
        methods = {r["method"] for r in rows if r.get("method")}
        assert {"full", "random"} <= methods
        assert all(int(float(r["num_examples"])) == 360 for r in rows if r.get("method") == "full")
    json.load(open(out / "results.json"))
    mod = _module(name)
    # the table is a pure function of the summary CSV (what RESULTS.md relies on)
    assert mod.render(summary) + "\n" == (out / "table.md").read_text()


def test_results_page_matches_committed_csvs():
    page = os.path.join(EXP, "RESULTS.md")
    make = _module("make_results")
    if not os.path.isfile(page):
        pytest.fail("experiments/RESULTS.md is missing; run python experiments/make_results.py")
    assert open(page).read() == make.build(), "RESULTS.md is stale: run python experiments/make_results.py"
    # and every committed summary is rendered into the page verbatim
    for name in make.ORDER:
        csv_path = os.path.join(EXP, "results", name, "summary.csv")
        if os.path.isfile(csv_path):
            assert _module(name).render(report.read_csv(csv_path)) in open(page).read()


def test_paired_differences_matches_scipy_ttest_interval():
    import numpy as np
    from scipy import stats

    from jaxsubset import report

    rng = np.random.default_rng(0)
    base = rng.normal(0.8, 0.02, size=5)
    other = base + rng.normal(0.01, 0.005, size=5)
    rows = [dict(method="random", seed=s, fraction=0.1, test_accuracy=b) for s, b in enumerate(base)]
    rows += [dict(method="geda", seed=s, fraction=0.1, test_accuracy=o) for s, o in enumerate(other)]
    rows += [dict(method="geda", seed=99, fraction=0.1, test_accuracy=0.0)]  # unpaired: ignored
    (rec,) = report.paired_differences(rows, ["fraction"])
    d = other - base
    res = stats.ttest_1samp(d, 0.0)
    lo, hi = res.confidence_interval(0.95)
    assert rec["n"] == 5 and rec["method"] == "geda"
    np.testing.assert_allclose([rec["diff_mean"], rec["ci_low"], rec["ci_high"]], [d.mean(), lo, hi], rtol=1e-10)
    assert rec["verdict"] == ("better" if lo > 0 else "worse" if hi < 0 else "within noise")
