"""Adaptive selection's wiring (`workflows/adaptive.py`), found by mutation testing (issue 23).

A 8-6-3 MLP on 18 rows: every quantity the callback hands a method is compared with the direct
`grads` call, every selection with the direct `selectors.select` call (seed ``seed + epoch``), every
refusal with its user-visible message, and `fit_adaptive`'s call of `fit` (recorded, not run) with
the arguments it was given.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
from flax import nnx

from jaxsubset import data, grads, selectors
from jaxsubset.models import MLP, to_pure
from jaxsubset.subset import Subset
from jaxsubset.workflows import adaptive, quantities
from jaxsubset.workflows.adaptive import compute_quantities, fit_adaptive, make_reselect, validation_quantities


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(1)
    y = np.arange(18) % 3
    x = (rng.normal(size=(18, 8)) + y[:, None]).astype(np.float32)
    ds = data.from_arrays(x, y, x[:6], y[:6], num_classes=3)
    model = to_pure(MLP(8, 3, hidden=(6,), rngs=nnx.Rngs(2)))
    xv = (rng.normal(size=(5, 8))).astype(np.float32)
    yv = np.array([0, 1, 2, 0, 1])
    return ds, model, (xv, yv)


def _eq(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_compute_quantities_gives_each_need_from_the_direct_calls(setup, monkeypatch):
    ds, m, _ = setup
    x, y = ds.x_train, ds.y_train
    q = compute_quantities("loss_hard", m, x, y)
    assert list(q) == ["loss"]
    _eq(q["loss"], grads.losses(m.apply_fn, m.params, x, y))
    q = compute_quantities("craig", m, x, y)
    assert list(q) == ["last_layer_e", "last_layer_h"]
    e, h = grads.last_layer_factors(m.apply_with_embedding, m.params, x, y)
    _eq(q["last_layer_e"], e)
    _eq(q["last_layer_h"], h)
    head = grads.last_layer_grads(m.apply_with_embedding, m.params, x, y)
    full = grads.per_sample_grads(m.apply_fn, m.params, x, y)
    for scores, want in (("last_layer", head), ("full", full),
                         ("projected", grads.per_sample_grads(m.apply_fn, m.params, x, y, project_dim=7, seed=4))):
        q = compute_quantities("online_geda", m, x, y, scores=scores, project_dim=7, seed=4)
        assert list(q) == ["grad_norm", "grads"]     # the method's order
        _eq(q["grad_norm"], grads.grad_norms(m.apply_fn, m.params, x, y))
        assert q["grads"].shape == want.shape, scores
        _eq(q["grads"], want)
    # the defaults: last-layer features; a projection to 512 dimensions with seed 0
    _eq(compute_quantities("craig_grads", m, x, y)["grads"], head)
    seen = []
    monkeypatch.setattr(adaptive, "gradient_features", lambda *a, **kw: seen.append(kw) or np.zeros((18, 2)))
    compute_quantities("craig_grads", m, x, y, scores="projected")
    assert seen == [dict(kind="projected", project_dim=512, seed=0)]


def test_validation_quantities_are_the_heads_factors_and_the_labels(setup):
    _, m, (xv, yv) = setup
    v = validation_quantities(m, xv, list(yv))
    assert set(v) == {"val_logits", "val_h", "val_labels"}
    _, h, z = grads.last_layer_factors(m.apply_with_embedding, m.params, xv, yv, return_logits=True)
    _eq(v["val_logits"], z)
    _eq(v["val_h"], h)
    assert isinstance(v["val_labels"], np.ndarray)
    np.testing.assert_array_equal(v["val_labels"], yv)
    headless = to_pure(MLP(8, 3, hidden=(6,), rngs=nnx.Rngs(2)))
    headless = type(headless)(headless.apply_fn, headless.params, None)
    with pytest.raises(ValueError, match=re.escape(
            "A validation-scored method needs a model with a linear head (PureModel.apply_with_embedding).")):
        validation_quantities(headless, xv, yv)


def test_make_reselect_refusals_say_what_to_pass(setup):
    ds, _, val = setup
    with pytest.raises(ValueError, match=r"^Unknown scores 'ful'; choose one of \['last_layer', 'full', "
                                         r"'projected'\]\.$"):
        make_reselect("craig_grads", ds, 6, scores="ful")
    with pytest.raises(ValueError, match=r"^" + re.escape(
            "Method 'glister' scores against a validation set: pass validation=(x_val, y_val) of rows held out "
            "of the training set (jaxsubset.data.holdout(dataset, 0.1) splits them off).") + "$"):
        make_reselect("glister", ds, 6)
    for bad in ((val[0],), (val[0], val[1], val[1]), {"x": val[0], "y": val[1]}, val[0]):
        with pytest.raises(TypeError, match=r"^validation must be a pair \(x_val, y_val\)\.$"):
            make_reselect("glister", ds, 6, validation=bad)
    with pytest.raises(ValueError, match="no_such"):
        make_reselect("no_such", ds, 6)
    for scores in ("last_layer", "full", "projected"):   # every documented kind is accepted
        assert callable(make_reselect("craig_grads", ds, 6, scores=scores))
    assert callable(make_reselect("glister", ds, 6, validation=list(val)))
    # a validation set for a method that does not use one is accepted and ignored
    assert callable(make_reselect("random", ds, 6, validation=val))


def test_reselect_selects_with_seed_plus_epoch_on_the_current_model(setup):
    ds, m, _ = setup
    r = make_reselect("random", ds, 6, seed=3)
    for epoch in (0, 2):
        want = selectors.select("random", ds.y_train, 6, seed=3 + epoch, num_classes=3)
        np.testing.assert_array_equal(r(m, epoch).indices, want.indices)
    assert not np.array_equal(r(m, 0).indices, r(m, 2).indices)
    r = make_reselect("craig_grads", ds, 6, scores="projected", project_dim=7, seed=2)
    feats = grads.per_sample_grads(m.apply_fn, m.params, ds.x_train, ds.y_train, project_dim=7, seed=2)
    want = selectors.select("craig_grads", ds.y_train, 6, {"grads": feats}, seed=3, num_classes=3)
    got = r(m, 1)  # the projection keeps the run's seed; the selection draws with seed + epoch
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_allclose(got.weights, want.weights)


def test_reselect_num_classes_is_the_data_sets(setup):
    ds, m, _ = setup
    wide = ds.replace(num_classes=5, class_names=tuple("abcde"))    # two classes with no rows: per-class budgets still sum to the budget
    r = make_reselect("random", wide, 7, seed=0)
    want = selectors.select("random", ds.y_train, 7, seed=0, num_classes=5)
    np.testing.assert_array_equal(r(m, 0).indices, want.indices)


def test_reselect_glister_scores_the_validation_rows_under_the_current_model(setup):
    ds, m, (xv, yv) = setup
    r = make_reselect("glister", ds, 6, seed=1, validation=(xv, yv))
    e, h = grads.last_layer_factors(m.apply_with_embedding, m.params, ds.x_train, ds.y_train)
    _, vh, vz = grads.last_layer_factors(m.apply_with_embedding, m.params, xv, yv, return_logits=True)
    want = selectors.select("glister", ds.y_train, 6, {"last_layer_e": e, "last_layer_h": h}, seed=1,
                            num_classes=3, validation={"val_logits": vz, "val_h": vh, "val_labels": yv})
    np.testing.assert_array_equal(r(m, 0).indices, want.indices)
    other = to_pure(MLP(8, 3, hidden=(6,), rngs=nnx.Rngs(9)))   # another model: another selection
    assert not np.array_equal(r(other, 0).indices, want.indices)


def test_fit_adaptive_hands_fit_the_callback_and_every_setting(setup, monkeypatch):
    ds, m, (xv, yv) = setup
    calls = []
    monkeypatch.setattr(adaptive, "fit", lambda *a, **kw: calls.append((a, kw)) or "result")
    warm = Subset.unweighted([1, 2, 3])
    assert fit_adaptive("mlp", ds, "craig_grads", np.int64(6), select_every=2, warm_start_epochs=1,
                        warm_start_subset=warm, scores="projected", project_dim=7, seed=2, epochs=4,
                        lr=0.5) == "result"
    [(args, kw)] = calls
    assert args == ("mlp", ds)
    reselect = kw.pop("reselect")
    assert kw == dict(select_every=2, select_size=6, warm_start_epochs=1, warm_start_subset=warm, seed=2,
                      epochs=4, lr=0.5)
    assert type(kw["select_size"]) is int
    want = make_reselect("craig_grads", ds, 6, scores="projected", project_dim=7, seed=2)(m, 1)
    np.testing.assert_array_equal(reselect(m, 1).indices, want.indices)
    # defaults: no warm start, last-layer scores, seed 0; validation reaches the callback
    calls.clear()
    fit_adaptive("mlp", ds, "glister", 6, select_every=1, validation=(xv, yv))
    [(args, kw)] = calls
    reselect = kw.pop("reselect")
    assert kw == dict(select_every=1, select_size=6, warm_start_epochs=0, warm_start_subset=None, seed=0)
    want = make_reselect("glister", ds, 6, validation=(xv, yv))(m, 0)
    np.testing.assert_array_equal(reselect(m, 0).indices, want.indices)
    calls.clear()
    fit_adaptive("mlp", ds, "craig_grads", 6, select_every=1)
    want = make_reselect("craig_grads", ds, 6)(m, 0)
    np.testing.assert_array_equal(calls[0][1]["reselect"](m, 0).indices, want.indices)
    with pytest.raises(ValueError, match=re.escape("budget=19 is larger than the pool of 18 examples")):
        fit_adaptive("mlp", ds, "random", 19, select_every=1)
    with pytest.raises(ValueError, match="Unknown scores"):
        fit_adaptive("mlp", ds, "random", 6, select_every=1, scores="x")
    assert len(calls) == 1


def test_defaults_reach_the_calls_they_configure(setup, monkeypatch):
    ds, m, _ = setup
    # reselect with the documented defaults: last-layer scores, 512 projected dimensions, seed 0
    seen = []
    real = adaptive.compute_quantities
    monkeypatch.setattr(adaptive, "compute_quantities", lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    got = make_reselect("random", ds, 6)(m, 2)
    assert seen == [dict(scores="last_layer", project_dim=512, seed=0)]
    np.testing.assert_array_equal(got.indices, selectors.select("random", ds.y_train, 6, seed=2, num_classes=3).indices)
    # fit_adaptive hands make_reselect its defaults
    made = []
    monkeypatch.setattr(adaptive, "make_reselect", lambda *a, **kw: made.append((a, kw)) or "callback")
    monkeypatch.setattr(adaptive, "fit", lambda *a, **kw: kw)
    kw = fit_adaptive("mlp", ds, "random", 6, select_every=1)
    assert made == [(("random", ds, 6), dict(scores="last_layer", project_dim=512, seed=0, validation=None))]
    assert kw["reselect"] == "callback"


def test_grads_are_computed_once_in_the_requested_kind(setup, monkeypatch):
    ds, m, _ = setup
    monkeypatch.setitem(quantities.QUANTITIES, "grads",
                        lambda *a, **kw: pytest.fail("computed the default 'grads' features as well"))
    q = compute_quantities("online_geda", m, ds.x_train, ds.y_train, scores="last_layer")
    _eq(q["grads"], grads.last_layer_grads(m.apply_with_embedding, m.params, ds.x_train, ds.y_train))
