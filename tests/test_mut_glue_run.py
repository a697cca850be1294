"""The main job's wiring (`workflows/run.py`), found by mutation testing (issue 23).

Training is replaced by a recorder (`run.fit`, and `run.surrogate.score` where a method needs scores)
so every argument the job hands to training and scoring, and every field of the rows it returns, is
checked exactly against the `RunConfig`; the selection itself is real and compared with the direct
`selectors.select` call on the same quantities. A few calls build a real tiny MLP (`as_pure`), so the
parameters that get scored and trained can be compared with a fresh initialization from the seed.
"""

from __future__ import annotations

import dataclasses
import re
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from jaxsubset import data, grads, selectors
from jaxsubset.data import Dataset, holdout
from jaxsubset.models.pure import PureModel
from jaxsubset.selectors.registry import Method
from jaxsubset.subset import Subset, budget_from_fraction
from jaxsubset.train import InfoBatch, RandomOnline, RS2
from jaxsubset.train.loop import as_pure
from jaxsubset.workflows import run
from jaxsubset.workflows.run import RunConfig


@pytest.fixture(scope="module")
def ds():
    """40 rows of 3 classes (8 features), 9 test rows."""
    r = np.random.default_rng(0)
    y = np.repeat(np.arange(3), [14, 13, 13]).astype(np.int32)
    x = (r.normal(size=(40, 8)) + y[:, None]).astype(np.float32)
    yt = np.arange(9, dtype=np.int32) % 3
    return Dataset(x, y, (r.normal(size=(9, 8)) + yt[:, None]).astype(np.float32), yt, 3, ("a", "b", "c"), "toy")


def _same_params(a, b) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(u), np.asarray(v)) for u, v in zip(la, lb))


class Recorder:
    """Stands in for `fit` (and `surrogate.score`): records each call, returns distinct fixed results."""

    def __init__(self, monkeypatch, ds, loss=None):
        self.fits, self.scores, self.n = [], [], ds.y_train.size
        self.loss = np.linspace(0.0, 1.0, ds.y_train.size)[::-1].copy() if loss is None else loss
        monkeypatch.setattr(run, "fit", self.fit)
        monkeypatch.setattr(run.surrogate, "score", self.score)

    def fit(self, model, dataset, subset=None, **kw):
        k = len(self.fits)
        assert k < 50, "the job keeps training: a runaway loop over arms or seeds"
        self.fits.append(SimpleNamespace(model=model, dataset=dataset, subset=subset, kw=kw))
        steps = (self.n if subset is None else len(subset)) * kw["epochs"]
        if kw.get("dynamic") is not None:
            steps = int(steps * 0.6) + k  # a pruning policy presents fewer rows
        return SimpleNamespace(history={"test_accuracy": [0.01, 0.02, 0.5 + 0.01 * k]}, train_time_s=10.0 + k,
                               sample_steps=steps, model=f"trained-{k}")

    def score(self, needs, model, dataset, **kw):
        self.scores.append(SimpleNamespace(needs=needs, model=model, dataset=dataset, kw=kw))
        return {"loss": self.loss}, model, 0.0


CFG = RunConfig(dataset="toy", model="mlp", method="loss_hard", fraction=0.25, epochs=3, seeds=2, batch_size=16,
                lr=0.05, optimizer="sgd", schedule="constant", score_epochs=2, score_models=3, progress=False)
TRAIN_KW = dict(epochs=3, batch_size=16, lr=0.05, optimizer="sgd", schedule="constant", progress=False,
                eval_every=3)


def test_compare_trains_each_arm_on_its_subset_with_the_config(monkeypatch, ds):
    rec = Recorder(monkeypatch, ds)
    rows = run.compare(CFG, ds)
    budget = budget_from_fraction(0.25, 40)
    assert budget == 10
    # per seed: the method's subset, a random subset of the same size, the full data
    assert [(f.subset is None, f.kw["seed"]) for f in rec.fits] == [(False, 0), (False, 0), (True, 0),
                                                                    (False, 1), (False, 1), (True, 1)]
    for f in rec.fits:
        assert f.model == "mlp" and f.dataset is ds
        assert {k: v for k, v in f.kw.items() if k != "seed"} == TRAIN_KW
    for seed in (0, 1):
        hard, rand = rec.fits[3 * seed].subset, rec.fits[3 * seed + 1].subset
        want = selectors.select("loss_hard", ds.y_train, budget, {"loss": rec.loss}, seed=seed, num_classes=3)
        np.testing.assert_array_equal(hard.indices, want.indices)
        np.testing.assert_array_equal(rand.indices, selectors.select("random", ds.y_train, budget, seed=seed,
                                                                     num_classes=3).indices)
    # the surrogate scores: once per seed, for the method only (random needs none)
    assert [s.needs for s in rec.scores] == [["loss"], ["loss"]]
    for seed, s in enumerate(rec.scores):
        assert s.model == "mlp" and s.dataset is ds
        assert s.kw == dict(seed=seed, score_epochs=2, score_models=3, progress=False,
                            train_kw=dict(batch_size=16, lr=0.05, optimizer="sgd"))
    # rows: method, fraction, seed, size, the last test accuracy and the times of each fit
    for k, r in enumerate(rows):
        seed, arm = divmod(k, 3)
        assert set(r) == {"method", "fraction", "seed", "num_examples", "test_accuracy", "selection_time_s",
                          "train_time_s"}
        assert (r["method"], r["fraction"], r["seed"], r["num_examples"]) == \
            (("loss_hard", 0.25, seed, 10), ("random", 0.25, seed, 10), ("full", 1.0, seed, 40))[arm]
        assert r["test_accuracy"] == 0.5 + 0.01 * k and r["train_time_s"] == 10.0 + k
        if arm == 2:
            assert r["selection_time_s"] == 0.0
        else:
            assert 0.0 < r["selection_time_s"] < 5.0   # the selection's own wall time, from a clock


def test_compare_random_is_one_arm_and_a_model_is_the_start_of_every_arm(monkeypatch, ds):
    rec = Recorder(monkeypatch, ds)
    start = as_pure("mlp", ds, 5)
    rows = run.compare(dataclasses.replace(CFG, method="random", seeds=1), ds, model=start)
    assert [r["method"] for r in rows] == ["random", "full"] and rec.scores == []
    assert all(f.model is start for f in rec.fits)


def test_compare_at_theta0_scores_and_trains_the_seeds_initial_model(monkeypatch, ds):
    rec = Recorder(monkeypatch, ds)
    run.compare(dataclasses.replace(CFG, score_epochs=0, score_models=1), ds)
    for f in rec.fits:  # the very initial parameters the method scored, per seed
        seed = f.kw["seed"]
        assert isinstance(f.model, PureModel) and _same_params(f.model.params, as_pure("mlp", ds, seed).params)
    assert not _same_params(rec.fits[0].model.params, rec.fits[3].model.params)
    assert rec.scores[0].model is rec.fits[0].model and rec.scores[0].kw["score_epochs"] == 0


def test_compare_loads_the_named_data_set_from_data_dir(monkeypatch, ds):
    rec = Recorder(monkeypatch, ds)
    loads = []
    monkeypatch.setattr(run.data, "load", lambda name, **kw: loads.append((name, kw)) or ds)
    run.compare(dataclasses.replace(CFG, seeds=1, data_dir="/some/dir"))
    run.compare(dataclasses.replace(CFG, seeds=1, dynamic="rs2", dataset="other", data_dir="/dyn"))
    run.compare(dataclasses.replace(CFG, seeds=1))
    assert loads == [("toy", {"data_dir": "/some/dir"}), ("other", {"data_dir": "/dyn"}), ("toy", {"data_dir": None})]
    assert all(f.dataset is ds for f in rec.fits)


def test_compare_refuses_bad_settings_before_any_work(monkeypatch, ds):
    rec = Recorder(monkeypatch, ds)
    monkeypatch.setattr(run.data, "load", lambda *a, **k: pytest.fail("loaded data"))
    with pytest.raises(ValueError, match=r"^seeds must be >= 1, got 0\.$"):
        run.compare(dataclasses.replace(CFG, seeds=0))
    with pytest.raises(ValueError, match=r"^seeds must be >= 1, got 0\.$"):
        run.compare(dataclasses.replace(CFG, seeds=0, dynamic="infobatch"))
    with pytest.raises(ValueError, match="score_epochs must be >= 0"):
        run.compare(dataclasses.replace(CFG, score_epochs=-1))
    with pytest.raises(ValueError, match="score_models must be >= 1"):
        run.compare(dataclasses.replace(CFG, score_models=0))
    with pytest.raises(ValueError, match="no_such_method"):
        run.compare(dataclasses.replace(CFG, method="no_such_method"))
    with pytest.raises(ValueError, match=re.escape("Unknown dynamic policy 'prune'; choose one of "
                                                   "['infobatch', 'random_online', 'rs2'].")):
        run.compare(dataclasses.replace(CFG, dynamic="prune"))
    assert rec.fits == [] and rec.scores == []


@pytest.mark.parametrize("dynamic", ["infobatch", "rs2", "random_online"])
def test_compare_dynamic_arms_and_the_matched_random_online(monkeypatch, ds, dynamic):
    rec = Recorder(monkeypatch, ds)
    rows = run.compare(dataclasses.replace(CFG, dynamic=dynamic, fraction=0.4), ds)
    arms = ["full", dynamic] + (["random_online"] if dynamic != "random_online" else [])
    assert [r["method"] for r in rows] == arms * 2
    assert [f.kw["seed"] for f in rec.fits] == [0] * len(arms) + [1] * len(arms)
    for f, r in zip(rec.fits, rows):
        assert f.model == "mlp" and f.dataset is ds and f.subset is None
        assert {k: v for k, v in f.kw.items() if k not in ("seed", "dynamic")} == TRAIN_KW
        pol = f.kw["dynamic"]
        if r["method"] == "full":
            assert pol is None
        elif r["method"] == dynamic:
            want = {"infobatch": InfoBatch(), "rs2": RS2(0.4), "random_online": RandomOnline(0.4)}[dynamic]
            assert type(pol) is type(want) and vars(pol) == vars(want)
        else:  # RandomOnline at the share of sample-steps the dynamic arm used just before
            prev = rows[rows.index(r) - 1]
            assert type(pol) is RandomOnline and pol.fraction == prev["sample_steps"] / (40 * 3)
        assert (r["fraction"], r["num_examples"], r["selection_time_s"]) == (1.0, 40, 0.0)
        assert r["step_fraction"] == r["sample_steps"] / (40 * 3)
    k = 0
    for r in rows:
        assert r["test_accuracy"] == 0.5 + 0.01 * k and r["train_time_s"] == 10.0 + k
        assert r["seed"] == k // len(arms)
        k += 1


def test_compare_dynamic_caps_the_random_online_fraction_at_one(monkeypatch, ds):
    rec = Recorder(monkeypatch, ds)
    real_fit = rec.fit

    def fit(model, dataset, subset=None, **kw):  # a policy that presented more rows than full data
        res = real_fit(model, dataset, subset, **kw)
        res.sample_steps = 40 * 3 * 2 if kw.get("dynamic") is not None else res.sample_steps
        return res

    monkeypatch.setattr(run, "fit", fit)
    rows = run.compare(dataclasses.replace(CFG, dynamic="infobatch", seeds=1), ds)
    assert rows[1]["step_fraction"] == 2.0
    assert rec.fits[2].kw["dynamic"].fraction == 1.0


def test_select_subset_passes_the_surrogate_settings_and_selects_on_its_scores(monkeypatch, ds):
    rec = Recorder(monkeypatch, ds)
    sub, t = run.select_subset("loss_hard", ds, 7, model="mlp", seed=4, score_epochs=5, progress=True,
                               score_models=2)
    assert [s.needs for s in rec.scores] == [["loss"]]
    assert rec.scores[0].kw == dict(seed=4, score_epochs=5, score_models=2, progress=True,
                                    train_kw=dict(batch_size=64, lr=1e-3, optimizer="adam"))
    want = selectors.select("loss_hard", ds.y_train, 7, {"loss": rec.loss}, seed=4, num_classes=3)
    np.testing.assert_array_equal(sub.indices, want.indices)
    assert sub.info["method"] == "loss_hard" and 0.0 < t < 5.0
    with pytest.raises(ValueError, match="score_models must be >= 1"):
        run.select_subset("loss_hard", ds, 7, model="mlp", seed=4, score_epochs=5, score_models=0)
    with pytest.raises(ValueError, match="unknown_method"):
        run.select_subset("unknown_method", ds, 7, model="mlp", seed=4, score_epochs=5)
    assert len(rec.scores) == 1


def _glister_reference(ds, budget, seed, model):
    """GLISTER on the held-out pool, scored by `model`, in training-row numbers (from public calls)."""
    pool, val = holdout(ds, 0.1, seed)
    e, h = grads.last_layer_factors(model.apply_with_embedding, model.params, ds.x_train[pool], ds.y_train[pool])
    _, vh, vz = grads.last_layer_factors(model.apply_with_embedding, model.params, ds.x_train[val], ds.y_train[val],
                                         return_logits=True)
    sub = selectors.select("glister", ds.y_train[pool], budget, {"last_layer_e": e, "last_layer_h": h}, seed=seed,
                           num_classes=ds.num_classes,
                           validation={"val_logits": vz, "val_h": vh, "val_labels": ds.y_train[val]})
    return pool, val, pool[sub.indices], sub.weights


def test_select_subset_glister_holds_out_validation_rows_at_theta0(monkeypatch, ds):
    rec = Recorder(monkeypatch, ds)
    start = as_pure("mlp", ds, 2)
    sub, _ = run.select_subset("glister", ds, 9, model=start, seed=2, score_epochs=0)
    pool, val, idx, w = _glister_reference(ds, 9, 2, start)
    np.testing.assert_array_equal(sub.indices, idx)
    np.testing.assert_allclose(sub.weights, w)
    assert not np.isin(sub.indices, val).any() and rec.fits == [] and rec.scores == []
    # a model name at theta0: initialized from the seed, on the pool's shapes
    sub2, _ = run.select_subset("glister", ds, 9, model="mlp", seed=2, score_epochs=0)
    np.testing.assert_array_equal(sub2.indices, idx)


def test_select_subset_glister_trains_one_surrogate_on_the_pool(monkeypatch, ds):
    rec = Recorder(monkeypatch, ds)
    sur = as_pure("mlp", ds, 11)  # what the surrogate training "returns"

    def fit(model, dataset, subset=None, **kw):
        rec.fits.append(SimpleNamespace(model=model, dataset=dataset, subset=subset, kw=kw))
        return SimpleNamespace(model=sur)

    monkeypatch.setattr(run, "fit", fit)
    sub, _ = run.select_subset("glister", ds, 9, model="mlp", seed=3, score_epochs=4, batch_size=8, lr=0.5,
                               optimizer="sgd", progress=True)
    pool, val, idx, w = _glister_reference(ds, 9, 3, sur)
    np.testing.assert_array_equal(sub.indices, idx)
    [f] = rec.fits
    assert f.model == "mlp" and f.subset is None
    np.testing.assert_array_equal(f.dataset.y_train, ds.y_train[pool])
    np.testing.assert_array_equal(f.dataset.x_train, ds.x_train[pool])
    np.testing.assert_array_equal(f.dataset.x_test, ds.x_test)
    assert f.kw == dict(epochs=4, seed=1003, progress=True, eval_every=4, batch_size=8, lr=0.5, optimizer="sgd")


def test_select_subset_glister_budget_larger_than_the_pool(monkeypatch, ds):
    Recorder(monkeypatch, ds)
    pool, val = holdout(ds, 0.1, 0)
    assert pool.size == 37 and val.size == 3   # round(0.1 * n_c) = 1 row of each class held out
    sub, _ = run.select_subset("glister", ds, 37, model="mlp", seed=0, score_epochs=0)
    assert len(sub) == 37
    with pytest.raises(ValueError, match=re.escape(
            "budget=38 is larger than the 37 rows left after holding out 3 validation rows for 'glister'; "
            "lower the fraction.")):
        run.select_subset("glister", ds, 38, model="mlp", seed=0, score_epochs=0)


def test_run_config_defaults():
    assert dataclasses.asdict(RunConfig()) == dict(
        dataset="digits", model="cnn", method="geda", fraction=0.3, epochs=20, seeds=3, batch_size=64, lr=1e-3,
        optimizer="adam", schedule="cosine", score_epochs=3, score_models=1, data_dir=None, progress=True,
        dynamic=None)


def test_select_subset_validation_method_gets_pool_quantities_and_keeps_weights_and_info(monkeypatch, ds):
    """A validation-scored probe method records what it receives and returns a weighted subset."""
    Recorder(monkeypatch, ds)
    seen = []

    def probe(e, h, budget, *, seed=0, val_logits, val_h, val_labels):
        seen.append(dict(e=e, h=h, budget=budget, seed=seed, val_logits=val_logits, val_h=val_h,
                         val_labels=val_labels))
        return Subset(np.arange(budget)[::-1], np.arange(1.0, budget + 1.0), {"probe": budget})

    monkeypatch.setitem(selectors.METHODS, "test_mut_probe",
                        Method("test_mut_probe", probe, ("last_layer_e", "last_layer_h"), per_class=False,
                               validation=True))
    start = as_pure("mlp", ds, 6)
    sub, _ = run.select_subset("test_mut_probe", ds, 5, model=start, seed=6, score_epochs=0)
    pool, val = holdout(ds, 0.1, 6)
    e, h = grads.last_layer_factors(start.apply_with_embedding, start.params, ds.x_train[pool], ds.y_train[pool])
    _, vh, vz = grads.last_layer_factors(start.apply_with_embedding, start.params, ds.x_train[val], ds.y_train[val],
                                         return_logits=True)
    [got] = seen
    assert (got["budget"], got["seed"]) == (5, 6)
    for k, want in (("e", e), ("h", h), ("val_logits", vz), ("val_h", vh), ("val_labels", ds.y_train[val])):
        np.testing.assert_allclose(np.asarray(got[k]), want, rtol=1e-5, atol=1e-6, err_msg=k)
    np.testing.assert_array_equal(sub.indices, pool[np.arange(5)[::-1]])
    np.testing.assert_array_equal(sub.weights, np.arange(1.0, 6.0))
    assert sub.info == {"probe": 5, "method": "test_mut_probe"}
