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


QUICK = [n for n in ("geda_study", "pruning_heuristics", "targeted", "mislabel")
         if os.path.isfile(os.path.join(EXP, f"{n}.py"))]


@pytest.mark.parametrize("name", QUICK)
def test_quick_run_writes_all_outputs(name, tmp_path):
    out = tmp_path / name
    assert cli_main(["experiment", name, "--quick", "--no-progress", "--out", str(out)]) == 0
    for f in ("rows.csv", "summary.csv", "results.json", "table.md"):
        assert (out / f).stat().st_size > 0, f
    assert list(out.glob("*.png")), "no plot written"
    summary = report.read_csv(str(out / "summary.csv"))
    assert summary
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
