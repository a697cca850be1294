"""The default ``jaxsubset run`` (CNN + GEDA on digits) is wired as the README says, at tiny settings.

The data set is a quarter of digits (every 4th training row) so the CNN trains in about a second.
The reference for the GEDA arm is rebuilt from public calls: a surrogate CNN trained for
``score_epochs`` epochs (the pipeline seeds it with ``seed + 1000``), its per-sample gradient
norms from a loop of ``jax.grad``, and the exact per-class GEDA optimum on those norms.
"""

import json

import jax
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxsubset import budget_from_fraction, data, per_class_budget, train
from jaxsubset.workflows import run
from jaxsubset.cli import main
from jaxsubset.selectors import geda
from jaxsubset.selectors.geda.ecdf import geda_objective


@pytest.fixture
def quarter_digits(monkeypatch):
    real = data.load

    def load(name, **kw):
        ds = real(name, **kw)
        return ds.replace(x_train=ds.x_train[::4], y_train=ds.y_train[::4]) if name == "digits" else ds

    monkeypatch.setattr(data, "load", load)
    return load("digits")


def test_defaults_are_cnn_geda_digits():
    cfg = run.RunConfig()
    assert (cfg.dataset, cfg.model, cfg.method, cfg.fraction, cfg.seeds, cfg.score_epochs) == \
        ("digits", "cnn", "geda", 0.3, 3, 3)


def test_default_run_selects_geda_on_the_surrogate_gradient_norms(quarter_digits, tmp_path, capsys):
    ds = quarter_digits
    out = tmp_path / "run"
    assert main(["run", "--epochs", "1", "--seeds", "1", "--score-epochs", "1", "--no-progress",
                 "--out", str(out)]) == 0
    js = json.load(open(out / "results.json"))
    assert js["config"]["model"] == "cnn" and js["config"]["method"] == "geda"
    rows = {r["method"]: r for r in js["rows"]}
    budget = budget_from_fraction(0.3, ds.y_train.size)
    assert set(rows) == {"geda", "random", "full"}
    assert rows["geda"]["num_examples"] == rows["random"]["num_examples"] == budget
    assert rows["full"]["num_examples"] == ds.y_train.size == 360
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in rows.values())
    assert "| geda | 0.30 |" in capsys.readouterr().out

    # the GEDA arm: the exact per-class optimum on the surrogate's per-sample gradient norms
    sub, _ = run.select_subset("geda", ds, budget, model="cnn", seed=0, score_epochs=1)
    sur = train.fit("cnn", ds, epochs=1, batch_size=64, seed=1000, progress=False)
    m = sur.model
    g = jax.jit(jax.grad(lambda p, x1, y1: -jax.nn.log_softmax(m.apply_fn(p, x1[None])[0])[y1]))
    norms = np.array([np.linalg.norm(ravel_pytree(g(m.params, ds.x_train[i], ds.y_train[i]))[0])
                      for i in range(ds.y_train.size)])
    counts = np.bincount(ds.y_train[sub.indices], minlength=10)
    np.testing.assert_array_equal(counts, per_class_budget(ds.y_train, budget, 10))
    for c in range(10):
        rows_c = np.flatnonzero(ds.y_train == c)
        local = np.flatnonzero(np.isin(rows_c, sub.indices))
        best = geda(norms[rows_c], counts[c], solver="exact").info["objective"]
        assert geda_objective(norms[rows_c], local) == pytest.approx(best, rel=1e-3, abs=1e-6), c
