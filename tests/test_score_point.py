"""Scoring at θ₀ (score_epochs=0) and averaging scalar scores over several surrogates."""

import os
import sys

import jax
import numpy as np
import pytest

from jaxsubset import data, grads, train
from jaxsubset.workflows import quantities, run, surrogate
from jaxsubset.models import create, to_pure

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "experiments"))


@pytest.fixture(scope="module")
def small():
    ds = data.load("digits")
    keep = np.arange(200)
    return ds.replace(x_train=ds.x_train[keep], y_train=ds.y_train[keep], x_test=ds.x_test[:100],
                      y_test=ds.y_test[:100])


def _same_params(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def test_score_epochs_zero_scores_the_run_s_own_initial_model(small):
    q, start, _ = surrogate.score(["grad_norm", "el2n"], "mlp", small, seed=3, score_epochs=0)
    init = to_pure(create("mlp", small.input_shape, small.num_classes, seed=3))   # what fit("mlp", seed=3) starts at
    assert _same_params(start.params, init.params)
    ref = grads.grad_norms(init.apply_fn, init.params, small.x_train, small.y_train)
    np.testing.assert_allclose(q["grad_norm"], ref, rtol=1e-5)
    np.testing.assert_allclose(q["el2n"], grads.el2n((init.apply_fn, init.params), small.x_train, small.y_train),
                               rtol=1e-5)


def test_pretrained_model_is_scored_as_given(small):
    pre = to_pure(create("mlp", small.input_shape, small.num_classes, seed=7))   # any user-supplied parameters
    q, start, _ = surrogate.score(["loss"], pre, small, seed=0, score_epochs=0)
    assert start is pre
    np.testing.assert_allclose(q["loss"], grads.losses(pre.apply_fn, pre.params, small.x_train, small.y_train),
                               rtol=1e-5)


def test_select_subset_at_theta0_is_top_k_of_initial_norms(small):
    start = to_pure(create("mlp", small.input_shape, small.num_classes, seed=1))
    sub, _ = run.select_subset("grand_hard", small, 60, model=start, seed=1, score_epochs=0)
    norms = grads.grad_norms(start.apply_fn, start.params, small.x_train, small.y_train)
    for c in range(small.num_classes):     # per class: the largest initial gradient norms
        rows = np.flatnonzero(small.y_train == c)
        chosen = np.intersect1d(sub.indices, rows)
        if chosen.size:
            assert norms[chosen].min() >= np.sort(norms[rows])[::-1][chosen.size - 1] - 1e-6


def test_score_models_averages_el2n_over_surrogates(small):
    kw = dict(batch_size=64)
    q, start, _ = surrogate.score(["el2n", "last_layer_e", "last_layer_h"], "mlp", small, seed=0, score_epochs=1,
                                  score_models=2, train_kw=kw)
    assert start == "mlp"
    surs = [train.fit("mlp", small, epochs=1, seed=1000 + j, progress=False, eval_every=1, **kw).model
            for j in range(2)]
    ref = grads.el2n([(m.apply_fn, m.params) for m in surs], small.x_train, small.y_train)
    np.testing.assert_allclose(q["el2n"], ref, rtol=1e-4, atol=1e-6)
    one = quantities.compute(["el2n"], surs[0], small.x_train, small.y_train)["el2n"]
    assert not np.allclose(q["el2n"], one)                        # really averaged, not the first model
    e0 = quantities.compute(["last_layer_e"], surs[0], small.x_train, small.y_train)["last_layer_e"]
    np.testing.assert_allclose(q["last_layer_e"], e0, rtol=1e-5)  # features: the first surrogate


def test_bad_scoring_settings(small):
    with pytest.raises(ValueError, match="score_epochs must be >= 0"):
        surrogate.score(["loss"], "mlp", small, seed=0, score_epochs=-1)
    with pytest.raises(ValueError, match="score_models=2"):
        surrogate.score(["loss"], "mlp", small, seed=0, score_epochs=0, score_models=2)
    with pytest.raises(ValueError, match="score_models must be >= 1"):
        surrogate.check_scoring(1, 0)
    with pytest.raises(ValueError, match="score_epochs must be >= 0"):
        run.compare(run.RunConfig(dataset="digits", model="mlp", method="geda", score_epochs=-1),
                         small)
    import _common
    with pytest.raises(ValueError, match="score_epochs must be >= 0"):
        _common.run_grid(small, "mlp", ["geda"], [0.5], 1, epochs=1, score_epochs=-2, train_kw={})


def test_run_grid_at_theta0_trains_from_the_scored_parameters(small):
    import _common
    rows = _common.run_grid(small, "mlp", ["grand_hard"], [0.5], 1, epochs=1, score_epochs=0,
                            train_kw=dict(batch_size=64))
    assert {r["method"] for r in rows} == {"full", "grand_hard"}
    full = next(r for r in rows if r["method"] == "full")
    ref = train.fit("mlp", small, epochs=1, batch_size=64, seed=0, progress=False)
    assert full["test_accuracy"] == pytest.approx(ref.history["test_accuracy"][-1], abs=1e-6)
    assert all(r["num_examples"] == 100 for r in rows if r["method"] != "full")
    # the full-data arm trained from the scored θ₀ equals training the named model from the seed
