"""`train.fit`'s refusals, loss bookkeeping, evaluation calendar and compile accounting.

Written against the mutants of ``fit`` that the wiring tests left alive (README "Mutation
testing"): each refusal is checked as the user reads it (anchored, with the offending value),
the per-epoch loss over several batches against the mean cross-entropy written here in NumPy,
and the schedule's step count against Optax's own cosine over the expected number of steps.
Same tiny problem as ``test_fit_wiring.py`` (30 rows, 6 features, 3 classes, a 6-8-3 MLP).
"""

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_fit_wiring import C, D, M, N, _flat, _model, ds  # noqa: F401  (the wiring tests' data set fixture and model)

from jaxsubset import Subset, data, train
from jaxsubset.train import engine


def _pick(model, epoch):
    return Subset.unweighted(np.arange(4))


@pytest.mark.parametrize("error,kwargs,match", [
    (TypeError, dict(reselect=3, select_every=1),
     r"^reselect must be a callable reselect\(model, epoch\) -> Subset; build one from a method name with "
     r"jaxsubset\.workflows\.adaptive\.make_reselect"),
    (ValueError, dict(reselect=_pick), r"^select_every must be an integer >= 1 with reselect, got None\.$"),
    (ValueError, dict(reselect=_pick, select_every=0), r"^select_every must be an integer >= 1 with reselect, got 0\.$"),
    (ValueError, dict(reselect=_pick, select_every=1, select_size=0),
     r"^select_size must be >= 1 \(the rows each re-selection returns\), got 0\.$"),
    (ValueError, dict(reselect=_pick, select_every=1, warm_start_epochs=2),
     r"^warm_start_epochs must be in \[0, epochs\), got 2\.$"),
    (ValueError, dict(reselect=_pick, select_every=1, warm_start_epochs=-1),
     r"^warm_start_epochs must be in \[0, epochs\), got -1\.$"),
    (ValueError, dict(subset=Subset.unweighted(np.zeros(0, int))), r"^The subset is empty; select at least one example\.$"),
    (ValueError, dict(epoch_mode="python"), r"^epoch_mode must be 'auto', 'scan' or 'steps', got 'python'\.$"),
], ids=["reselect-not-callable", "select_every-missing", "select_every-0", "select_size-0", "warm_start-too-late",
        "warm_start-negative", "empty-subset", "epoch_mode"])
def test_refusals_read_as_the_user_sees_them(ds, error, kwargs, match):
    kwargs = {"subset": None, **kwargs}
    with pytest.raises(error, match=match):
        train.fit(_model(), ds, kwargs.pop("subset"), epochs=2, progress=False, **kwargs)


def test_runtime_refusals_name_the_epoch(ds):
    with pytest.raises(ValueError, match=r"^reselect returned an empty subset at epoch 1\.$"):
        train.fit(_model(), ds, None, epochs=2, progress=False, reselect=lambda m, e: Subset.unweighted([]),
                  select_every=1, warm_start_epochs=1)
    pure = _model()
    poisoned = dataclasses.replace(pure, params=jax.tree_util.tree_map(lambda a: a.at[0].set(jnp.nan), pure.params))
    with pytest.raises(FloatingPointError, match=r"^Training loss became nan at epoch 0; lower the learning rate\.$"):
        train.fit(poisoned, ds, None, epochs=2, progress=False)


def test_select_size_lays_out_the_schedule_and_its_boundaries_are_accepted(ds):
    """Batches of 16, 2 epochs: a warm-start epoch on all 30 rows (2 steps), then one re-selection of
    ``select_size=1`` row (1 step): the string-form cosine runs over 3 steps, as Optax's cosine over 3 does;
    without ``select_size`` the re-selection is planned at ``len(subset)`` = 30 rows (4 steps in all)."""
    calls = []

    def one_row(model, epoch):
        calls.append(epoch)
        return Subset.unweighted([5])

    kw = dict(epochs=2, batch_size=16, seed=1, progress=False, reselect=one_row, select_every=1, warm_start_epochs=1)
    a = train.fit(_model(), ds, None, optimizer="sgd", lr=0.3, schedule="cosine", select_size=1, **kw)
    b = train.fit(_model(), ds, None, optimizer=optax.sgd(optax.cosine_decay_schedule(0.3, 3), momentum=0.9,
                                                          nesterov=True), **kw)
    c = train.fit(_model(), ds, None, optimizer="sgd", lr=0.3, schedule="cosine", **kw)
    np.testing.assert_allclose(_flat(a.params), _flat(b.params), rtol=1e-5, atol=1e-6)
    assert np.abs(_flat(a.params) - _flat(c.params)).max() > 1e-4  # the planned size shows
    assert a.history["num_examples"] == [N, 1] and calls == [1, 1, 1]


def _mean_ce(model, x, y):
    z = np.asarray(model.apply_fn(model.params, jnp.asarray(x)), np.float64)
    z = z - z.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


@pytest.mark.parametrize("mode", [dict(epoch_mode="scan"), dict(epoch_mode="steps"), dict(max_device_bytes=0)],
                         ids=["scan", "steps", "streamed"])
def test_epoch_loss_is_the_mean_of_its_batch_losses(ds, mode):
    """Three full batches of 10 unit-weight rows and a vanishing learning rate: each epoch's loss is the
    mean cross-entropy of the initial model over all 30 rows, whatever the batch order, and every epoch is
    evaluated (``eval_every=1``) with the initial model's accuracy."""
    res = train.fit(_model(), ds, None, epochs=2, batch_size=10, optimizer="sgd", lr=1e-12, schedule="constant",
                    progress=False, **mode)
    ref = _mean_ce(_model(), ds.x_train, ds.y_train)
    np.testing.assert_allclose(res.history["train_loss"], [ref, ref], rtol=1e-5)
    pred = np.asarray(_model().apply_fn(_model().params, jnp.asarray(ds.x_test))).argmax(1)
    acc = float((pred == ds.y_test).mean())
    assert res.history["test_accuracy"] == pytest.approx([acc, acc])
    assert res.history["num_examples"] == [N, N] and res.sample_steps == 2 * N


def test_evaluation_every_third_epoch_and_at_the_last(ds):
    res = train.fit(_model(), ds, None, epochs=4, batch_size=32, optimizer="sgd", lr=0.1, eval_every=3,
                    progress=False)
    evaluated = [a is not None for a in res.history["test_accuracy"]]
    assert evaluated == [False, False, True, True]
    assert [p is not None for p in res.history["per_class_accuracy"]] == evaluated
    assert all(len(p) == C for p in res.history["per_class_accuracy"][2:])


def _compiled(progs):
    return {sig[0] for sig in progs.compiled}


def test_auto_epoch_mode_runs_single_steps_on_cpu(ds):
    if jax.default_backend() != "cpu":
        pytest.skip("'auto' picks the scan on accelerators")
    train.clear_fit_cache()
    train.fit(_model(), ds, None, epochs=1, batch_size=32, progress=False)
    (progs,) = engine._CACHE.values()
    assert _compiled(progs) == {"plan", "step"}


def test_compile_accounting_counts_each_new_executable_once(ds):
    """A fresh fit compiles the epoch plan and the step (two executables, one cache miss); the same fit again
    compiles nothing (a hit, twice). Streamed batches have the batch's shape whatever the data set's size, so a
    20-row data set compiles only a new plan: its compile time is that plan's, not zero. Another batch size is
    another cache entry (a second miss). Compile times lie inside the fit's own wall time."""
    kw = dict(epochs=1, batch_size=8, optimizer="sgd", lr=0.1, schedule="constant", progress=False,
              max_device_bytes=0)
    train.clear_fit_cache()
    c0 = train.fit_cache_info()
    t0 = time.perf_counter()
    first = train.fit(_model(), ds, None, **kw)
    wall = time.perf_counter() - t0
    c1 = train.fit_cache_info()
    assert (c1["compiles"] - c0["compiles"], c1["misses"] - c0["misses"], c1["entries"]) == (2, 1, 1)
    assert 0 < first.compile_time_s < wall
    again = [train.fit(_model(), ds, None, **kw) for _ in range(2)]
    c2 = train.fit_cache_info()
    assert (c2["compiles"], c2["hits"] - c1["hits"]) == (c1["compiles"], 2)
    assert [r.compile_time_s for r in again] == [0.0, 0.0]
    small = ds.replace(x_train=ds.x_train[:20], y_train=ds.y_train[:20])
    t0 = time.perf_counter()
    other = train.fit(_model(), small, None, **kw)
    wall = time.perf_counter() - t0
    c3 = train.fit_cache_info()
    assert c3["compiles"] == c2["compiles"] + 1 and 0 < other.compile_time_s < wall
    (progs,) = engine._CACHE.values()
    assert _compiled(progs) == {"plan", "host_step"}
    train.fit(_model(), ds, None, **dict(kw, batch_size=16))
    c4 = train.fit_cache_info()
    assert (c4["misses"] - c0["misses"], c4["entries"]) == (2, 2)


@pytest.mark.parametrize("name,kwargs", [
    ("subset", dict(subset=Subset(np.arange(3), np.zeros(3)))),
    ("warm_start_subset", dict(reselect=_pick, select_every=1, warm_start_epochs=1,
                               warm_start_subset=Subset(np.arange(3), np.zeros(3)))),
])
def test_all_zero_weights_are_refused_for_the_subset_and_the_warm_start_subset(ds, name, kwargs):
    kwargs = {"subset": None, **kwargs}
    with pytest.raises(ValueError, match=rf"^All 3 weights of the {name} are zero, so training would learn nothing"):
        train.fit(_model(), ds, kwargs.pop("subset"), epochs=2, progress=False, **kwargs)


@pytest.fixture(scope="module")
def big():
    """130 rows: batches of 64 and of 65 differ (3 and 2 per epoch)."""
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(C, D)) * 1.5
    y, yt = np.arange(130) % C, np.arange(M) % C
    return data.from_arrays(centres[y] + rng.normal(size=(130, D)), y, centres[yt] + rng.normal(size=(M, D)), yt)


def test_the_documented_defaults(big):
    """``batch_size=64, optimizer="adam", lr=1e-3, schedule="cosine", weight_decay=0, seed=0, eval_every=1``:
    leaving them out trains exactly as passing them."""
    implicit = train.fit(_model(), big, None, epochs=2, progress=False)
    explicit = train.fit(_model(), big, None, epochs=2, batch_size=64, optimizer="adam", lr=1e-3, schedule="cosine",
                         weight_decay=0.0, seed=0, eval_every=1, epoch_mode="auto", progress=False)
    np.testing.assert_array_equal(_flat(implicit.params), _flat(explicit.params))
    assert implicit.history["train_loss"] == explicit.history["train_loss"]
    assert None not in implicit.history["test_accuracy"] and "dynamics" not in implicit.history
    other = train.fit(_model(), big, None, epochs=2, batch_size=65, progress=False)  # the batch size shows
    assert np.abs(_flat(other.params) - _flat(implicit.params)).max() > 1e-6


def test_explicit_epoch_modes_and_auto_on_an_accelerator_pick_their_programs(ds, monkeypatch):
    kw = dict(epochs=1, batch_size=32, progress=False)
    for mode, program in (("scan", "epoch"), ("steps", "step")):
        train.clear_fit_cache()
        train.fit(_model(), ds, None, epoch_mode=mode, **kw)
        (progs,) = engine._CACHE.values()
        assert _compiled(progs) == {"plan", program}, mode
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")  # "auto": the scan off the CPU
    train.clear_fit_cache()
    train.fit(_model(), ds, None, **kw)
    (progs,) = engine._CACHE.values()
    assert _compiled(progs) == {"plan", "epoch"}


def test_progress_bar_only_when_asked(ds, capsys):
    import re

    kw = dict(epochs=1, batch_size=32, optimizer="sgd", lr=0.1, schedule="constant")
    train.fit(_model(), ds, None, progress=False, **kw)
    assert "epochs" not in capsys.readouterr().err
    train.fit(_model(), ds, None, **kw)  # progress=True by default; the finished bar is cleared (leave=False)
    err = capsys.readouterr().err
    assert re.search(r"(^|\r)epochs: ", err) and not err.endswith("\n")


def test_times_lie_within_the_fits_wall_time(ds):
    """Epoch times, their total and the re-selection times are parts of the call's own wall time."""
    def pick(model, epoch):
        time.sleep(0.05)
        return Subset.unweighted(np.arange(12))

    t0 = time.perf_counter()
    res = train.fit(_model(), ds, None, epochs=3, batch_size=32, optimizer="sgd", lr=0.1, progress=False,
                    reselect=pick, select_every=1, warm_start_epochs=1)
    wall = time.perf_counter() - t0
    h = res.history
    assert 0 < sum(h["epoch_time_s"]) == pytest.approx(res.train_time_s) and res.train_time_s < wall
    assert [s["epoch"] for s in h["selections"]] == [1, 2]
    assert all(0.05 <= s["time_s"] < wall for s in h["selections"])


def test_policies_are_checked_before_compiling_and_infobatch_prunes_from_its_loss_table(ds):
    train.clear_fit_cache()
    before = train.fit_cache_info()["compiles"]
    sub = Subset.unweighted(np.arange(15))
    with pytest.raises(ValueError, match=r"^RandomOnline\(fraction=0\.01\) leaves an empty epoch on a subset of 15 "):
        train.fit(_model(), ds, sub, epochs=1, optimizer="sgd", progress=False, dynamic=train.RandomOnline(0.01))
    with pytest.raises(ValueError, match=r"^RS2\(fraction=0\.1\) splits the subset into 10 parts per cycle, but the "
                                         r"subset has only 5 rows"):
        train.fit(_model(), ds, Subset.unweighted(np.arange(5)), epochs=3, optimizer="sgd", progress=False,
                  dynamic=train.RS2(0.1))
    assert train.fit_cache_info()["compiles"] == before  # refused before anything compiled
    one = train.fit(_model(), ds, sub, epochs=1, optimizer="sgd", progress=False, dynamic=train.RandomOnline(0.4))
    assert one.history["num_examples"] == [6]
    # InfoBatch: epoch 0 has no losses yet (all 30 rows); epoch 1 drops some rows below the mean loss
    res = train.fit(_model(), ds, None, epochs=2, batch_size=32, optimizer="sgd", lr=0.1, progress=False,
                    dynamic=train.InfoBatch(ratio=0.5, anneal=0.0))
    assert res.history["num_examples"][0] == N and res.history["num_examples"][1] < N


def test_training_arrays_go_to_the_device_only_when_they_fit(ds, monkeypatch):
    """On the device (the default here) ``x (n, d)`` and the int32 labels ``(n,)`` are put there once; when
    they exceed ``max_device_bytes`` neither is (batches are streamed)."""
    put = []
    real = jax.device_put

    def spy(x, *args, **kwargs):
        put.append((np.shape(x), np.dtype(getattr(x, "dtype", np.float64))))
        return real(x, *args, **kwargs)

    monkeypatch.setattr(jax, "device_put", spy)
    kw = dict(epochs=1, batch_size=32, optimizer="sgd", lr=0.1, progress=False)
    train.fit(_model(), ds, None, **kw)
    assert ((N, D), np.dtype(np.float32)) in put and ((N,), np.dtype(np.int32)) in put
    put.clear()
    train.fit(_model(), ds, None, max_device_bytes=0, **kw)
    assert ((N, D), np.dtype(np.float32)) not in put and ((N,), np.dtype(np.int32)) not in put
