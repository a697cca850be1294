"""Equal-compute protocol of experiments/_common.py: RS2 / RandomOnline, full data for the same wall time,
total time and sample-steps on every row, the accuracy-versus-time plot and table."""

import math
import os
import sys

import numpy as np
import pytest

from jaxsubset import data, per_class_budget, report, train

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments"))
import _common as C  # noqa: E402


def _tiny(n=240, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n // 3)
    x = rng.normal(size=(n, 6)).astype(np.float32) + y[:, None] * 0.8
    yt = np.repeat(np.arange(3), 20)
    xt = rng.normal(size=(60, 6)).astype(np.float32) + yt[:, None] * 0.8
    return data.from_arrays(x, y, xt, yt, name="tiny")


@pytest.mark.parametrize("budget", [1, 7, 30, 100, 240])
def test_rs2_epochs_are_stratified_distinct_and_cover_each_class_per_pass(budget):
    labels = np.array([0] * 50 + [1] * 130 + [2] * 60)
    per = per_class_budget(labels, budget, 3)
    seen = {c: [] for c in range(3)}
    for e in range(12):
        sub = C.rs2_subset(labels, budget, e, seed=3)
        idx = sub.indices
        assert len(idx) == budget and len(np.unique(idx)) == budget
        assert np.array_equal(np.bincount(labels[idx], minlength=3), per)
        assert np.all(sub.weights == 1)
        for c in range(3):
            seen[c].append(set(idx[labels[idx] == c].tolist()))
    for c in range(3):
        if per[c] == 0:
            continue
        m = math.ceil((labels == c).sum() / per[c])  # epochs per pass
        if m <= 12:
            union = set().union(*seen[c][:m])
            assert union == set(np.flatnonzero(labels == c).tolist())  # every row once per pass
            if per[c] * m == (labels == c).sum():  # exact partition: no row twice in a pass
                assert sum(len(s) for s in seen[c][:m]) == len(union)
    again = C.rs2_subset(labels, budget, 5, seed=3)
    assert np.array_equal(again.indices, C.rs2_subset(labels, budget, 5, seed=3).indices)
    if budget < 60:
        assert not np.array_equal(C.rs2_subset(labels, budget, 0, 3).indices, C.rs2_subset(labels, budget, 1, 3).indices)


def test_rs2_rejects_negative_epoch():
    with pytest.raises(ValueError, match="epoch"):
        C.rs2_subset(np.zeros(5, int), 2, -1, 0)


def test_rs2_through_fit_reselect_trains_on_each_epochs_draw():
    ds = _tiny()
    draw = lambda _m, e: C.rs2_subset(ds.y_train, 48, e, 0, num_classes=3)  # noqa: E731
    res = train.fit("mlp", ds, draw(None, 0), epochs=3, seed=0, progress=False, eval_every=3, batch_size=32,
                    schedule="onecycle", reselect=draw, select_every=1)
    sel = res.history["selections"]
    assert [s["epoch"] for s in sel] == [0, 1, 2] and res.history["num_examples"] == [48, 48, 48]
    for s in sel:
        assert s["indices"] == C.rs2_subset(ds.y_train, 48, s["epoch"], 0, num_classes=3).indices.tolist()
    # the onecycle schedule spans exactly the steps taken: epochs of 48 rows, not of the 240-row pool.
    # Re-selecting the same 48 rows every epoch must then train exactly like the fixed 48-row subset
    # (without subset=, fit would plan 240-row epochs and the losses would differ from epoch 1 on).
    fixed = train.fit("mlp", ds, draw(None, 0), epochs=3, seed=0, progress=False, eval_every=3, batch_size=32,
                      schedule="onecycle")
    same = train.fit("mlp", ds, draw(None, 0), epochs=3, seed=0, progress=False, eval_every=3, batch_size=32,
                     schedule="onecycle", reselect=lambda _m, e: draw(None, 0), select_every=1)
    assert same.history["train_loss"] == fixed.history["train_loss"]


@pytest.fixture(scope="module")
def grid():
    ds = _tiny()
    kw = dict(batch_size=32, lr=3e-3, optimizer="adam", schedule="constant")
    rows = C.run_grid(ds, "mlp", ["random"], [0.25], 2, epochs=2, score_epochs=1, train_kw=kw,
                      online_random=True, full_same_time=True)
    return ds, kw, rows


def test_every_row_has_total_time_and_sample_steps(grid):
    ds, _, rows = grid
    assert {r["method"] for r in rows} == {"full", "random", "random_online", "full_same_time"}
    for r in rows:
        assert r["total_time_s"] == pytest.approx(r["scoring_time_s"] + r["selection_time_s"] + r["train_time_s"])
        assert r["sample_steps"] == r["num_examples"] * r["epochs"]
    budget = 60  # 25 % of 240
    for r in rows:
        if r["method"] in ("random", "random_online"):
            assert r["num_examples"] == budget and r["sample_steps"] == budget * 2
    online = [r for r in rows if r["method"] == "random_online"]
    assert all(r["selection_time_s"] > 0 for r in online)


def test_full_same_time_matches_the_methods_wall_time(grid):
    ds, kw, rows = grid
    for seed in (0, 1):
        full = next(r for r in rows if r["method"] == "full" and r["seed"] == seed)
        t_epoch = full["train_time_s"] / full["epochs"]
        runs = {r["epochs"]: r for r in rows if r["method"] == "full_same_time" and r["seed"] == seed}
        for r in rows:
            if r["seed"] != seed or r["method"] not in ("random", "random_online"):
                continue
            k = min(max(math.floor(r["total_time_s"] / t_epoch + 1e-9), 1), 2)
            assert r["full_same_time_epochs"] == k
            assert r["full_same_time_accuracy"] == runs[k]["test_accuracy"]
            assert runs[k]["sample_steps"] == ds.y_train.size * k
    # the equal-time run is an ordinary deterministic fit of k epochs on all the data
    r = next(r for r in rows if r["method"] == "full_same_time" and r["seed"] == 0)
    again = train.fit("mlp", ds, epochs=r["epochs"], seed=0, progress=False, eval_every=r["epochs"], **kw)
    assert again.history["test_accuracy"][-1] == r["test_accuracy"]


def test_protocol_table_and_time_plot(grid, tmp_path):
    _, _, rows = grid
    md = C.render_protocol(rows)
    paired = report.paired_differences(rows, ["dataset", "fraction"])
    rec = next(p for p in paired if p["method"] == "random_online")
    line = next(l for l in md.splitlines() if "| random_online |" in l)
    assert report.fmt_diff(rec) in line and rec["verdict"] in line
    assert "| full_same_time |" not in md  # shown as a column, not a row
    series = C.time_series(rows)
    t, a, s, _ = series["full_same_time"]
    assert t == sorted(t) and len(t) == len({r["epochs"] for r in rows if r["method"] == "full_same_time"})
    ro = [r for r in rows if r["method"] == "random_online"]
    assert series["random_online"][0] == [pytest.approx(np.mean([r["total_time_s"] for r in ro]))]
    assert series["random_online"][1] == [pytest.approx(np.mean([r["test_accuracy"] for r in ro]))]
    png = tmp_path / "t.png"
    C.accuracy_vs_time_plot(str(png), rows, title="tiny")
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="No rows"):
        C.accuracy_vs_time_plot(str(png), rows, title="x", dataset="absent")


def test_defaults_add_no_new_baselines():
    ds = _tiny(n=120)
    rows = C.run_grid(ds, "mlp", ["random"], [0.5], 1, epochs=1, score_epochs=1,
                      train_kw=dict(batch_size=32, schedule="constant"))
    assert [r["method"] for r in rows] == ["full", "random"]
    assert all("full_same_time_accuracy" not in r for r in rows)


def _make_results(monkeypatch):
    import importlib.util

    path = os.path.join(os.path.dirname(C.__file__), "make_results.py")
    spec = importlib.util.spec_from_file_location("make_results_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "ORDER", ("toy_exp", "absent_exp"))
    return mod


def test_results_page_has_a_fashion_section_with_claims_and_protocol(grid, tmp_path, monkeypatch):
    _, _, rows = grid
    mk = _make_results(monkeypatch)
    fm = [dict(r, dataset="fashion_mnist") for r in rows]
    summ = report.summarize(fm, ["dataset", "method", "fraction"], ["test_accuracy"])
    claims = [dict(claim="random_online beats random", published="+1.0", ours="+0.2", verdict="holds", why="toy")]
    C.write_outputs(str(tmp_path / "toy_exp_fashion_mnist"), "toy_exp", fm, summ, "TOY FM TABLE", {"seeds": 2},
                    claims=claims)
    C.write_outputs(str(tmp_path / "toy_exp"), "toy_exp", rows, report.summarize(
        rows, ["dataset", "method"], ["test_accuracy"]), "TOY PROXY TABLE", {"seeds": 2})
    page = mk.build(str(tmp_path))
    proxy, fashion = page.split("# Fashion-MNIST (full 60 000 / 10 000 split)")
    assert "TOY PROXY TABLE" in proxy and "TOY FM TABLE" not in proxy
    assert "## toy_exp on Fashion-MNIST" in fashion and "TOY FM TABLE" in fashion
    assert "| random_online beats random | +1.0 | +0.2 | holds | toy |" in fashion
    back = report.read_csv(str(tmp_path / "toy_exp_fashion_mnist" / "rows.csv"))
    assert C.render_protocol(back, keys=["dataset", "model", "fraction"]) in fashion
    assert "no committed results): `absent_exp`" in fashion
    with pytest.raises(ValueError, match="verdict"):
        C.write_outputs(str(tmp_path / "x"), "x", rows, summ, "", {}, claims=[{"claim": "c"}])


def test_results_page_tolerates_no_fashion_results(tmp_path, monkeypatch):
    mk = _make_results(monkeypatch)
    page = mk.build(str(tmp_path))
    assert "# Fashion-MNIST" in page and "`toy_exp`, `absent_exp`" in page


def test_protocol_table_refuses_to_mix_settings(grid):
    _, _, rows = grid
    two = [dict(r, noise=n) for r in rows for n in (0.1, 0.3)]
    with pytest.raises(ValueError, match="keys"):
        C.render_protocol(two)
    md = C.render_protocol(two, keys=("dataset", "noise", "fraction"))
    assert md.count("| random_online |") == 2
