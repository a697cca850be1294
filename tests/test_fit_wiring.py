"""`train.fit`'s bookkeeping and re-selection wiring against a plain gradient-descent reference.

Full-batch training makes the batch order irrelevant, so ``fit`` must equal gradient descent on
``Σ w_i ℓ_i / Σ w_i`` written here with ``jax.grad`` over a plain cross-entropy (not the library's
loss); the history (losses, accuracies, example counts, time totals) is checked against the same
reference. Small shapes: a 6-feature, 3-class problem and a 6-8-3 MLP (a few seconds in all).
"""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from jaxsubset import Subset, data, train
from jaxsubset.models import MLP, to_pure

N, M, D, C = 30, 21, 6, 3
LR = 0.4


@pytest.fixture(scope="module")
def ds():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(C, D)) * 1.5
    y, yt = np.arange(N) % C, np.arange(M) % C
    x = centres[y] + rng.normal(size=(N, D))
    xt = centres[yt] + rng.normal(size=(M, D))
    return data.from_arrays(x, y, xt, yt)


def _model(seed=0):
    return to_pure(MLP(D, C, hidden=(8,), rngs=nnx.Rngs(seed)))


def _flat(params):
    return np.asarray(ravel_pytree(params)[0], np.float64)


def _reference(ds, model, plan, momentum):
    """Full-batch GD (Nesterov momentum 0.9 when ``momentum``) with subset ``plan[e]`` in epoch ``e``.

    Returns the flat parameters after each epoch and each epoch's loss before its update.
    """
    p, unravel = ravel_pytree(model.params)
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)

    def loss(flat, w):
        logp = jax.nn.log_softmax(model.apply_fn(unravel(flat), x))
        return -jnp.sum(w * logp[jnp.arange(N), y]) / jnp.sum(w)

    vg = jax.jit(jax.value_and_grad(loss))
    p, buf, params, losses = np.asarray(p, np.float64), 0.0, [], []
    for sub in plan:
        w = np.zeros(N, np.float32)
        w[sub.indices] = sub.weights
        value, g = vg(jnp.asarray(p, jnp.float32), jnp.asarray(w))
        g = np.asarray(g, np.float64)
        if momentum:
            buf = g + 0.9 * buf
            p = p - LR * (g + 0.9 * buf)
        else:
            p = p - LR * g
        params.append(p)
        losses.append(float(value))
    return params, losses, unravel


def _accuracy(ds, model, unravel, flat):
    pred = np.asarray(model.apply_fn(unravel(jnp.asarray(flat, jnp.float32)), jnp.asarray(ds.x_test))).argmax(1)
    hit = pred == ds.y_test
    return float(hit.mean()), [float(hit[ds.y_test == c].mean()) for c in range(C)]


SUB = Subset(np.arange(1, N, 2), np.linspace(0.5, 3.0, N // 2))  # 15 rows, unequal weights


@pytest.mark.parametrize("mode", ["scan", "steps", "streamed"])
def test_full_batch_fit_equals_gradient_descent_and_its_history(ds, mode):
    kw = dict(max_device_bytes=0) if mode == "streamed" else dict(epoch_mode=mode)
    res = train.fit(_model(), ds, SUB, epochs=3, batch_size=32, optimizer="sgd", lr=LR, schedule="constant",
                    eval_every=2, progress=False, **kw)
    ref, losses, unravel = _reference(ds, _model(), [SUB] * 3, momentum=True)
    np.testing.assert_allclose(_flat(res.params), ref[-1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_flat(res.model.params), ref[-1], rtol=1e-4, atol=1e-5)
    assert np.abs(ref[-1] - ref[0]).max() > 1e-2  # the reference moved
    h = res.history
    assert h["epoch"] == [0, 1, 2]
    np.testing.assert_allclose(h["train_loss"], losses, rtol=1e-4)
    acc1, pc1 = _accuracy(ds, _model(), unravel, ref[1])
    acc2, pc2 = _accuracy(ds, _model(), unravel, ref[2])
    assert h["test_accuracy"][0] is None and h["per_class_accuracy"][0] is None  # eval_every=2: epochs 1, 2
    assert h["test_accuracy"][1:] == pytest.approx([acc1, acc2])
    assert h["per_class_accuracy"][1:] == [pytest.approx(pc1), pytest.approx(pc2)]
    assert h["num_examples"] == [15, 15, 15] and h["sample_steps"] == [15, 30, 45] and res.sample_steps == 45
    assert len(h["epoch_time_s"]) == 3 and min(h["epoch_time_s"]) > 0
    np.testing.assert_allclose(h["wall_time_s"], np.cumsum(h["epoch_time_s"]), rtol=1e-9)
    assert res.train_time_s == pytest.approx(sum(h["epoch_time_s"]))
    assert h["selections"] == [] and "dynamics" not in h


def test_every_row_of_the_subset_is_presented_once_per_epoch_in_every_mode(ds):
    """Several batches per epoch (7 rows of 15 per batch, the last one partial): the dynamics count of each row."""
    for kw in (dict(epoch_mode="scan"), dict(epoch_mode="steps"), dict(max_device_bytes=0)):
        res = train.fit(_model(), ds, SUB, epochs=2, batch_size=7, lr=0.01, progress=False, record_dynamics=True,
                        **kw)
        loss_mean = res.history["dynamics"]["loss_mean"]
        assert np.isfinite(loss_mean[SUB.indices]).all(), kw
        assert np.isnan(np.delete(loss_mean, SUB.indices)).all(), kw
        assert res.history["num_examples"] == [15, 15]


def test_reselect_runs_on_schedule_with_the_current_model_and_trains_on_what_it_returns(ds):
    """warm start 1 epoch on `warm`, then a new subset every 2 epochs: fit equals GD over that plan."""
    warm = Subset.unweighted(np.arange(10))
    picks = {1: Subset(np.arange(5, 25), np.linspace(1.0, 2.0, 20)), 3: Subset.unweighted(np.arange(0, N, 3))}
    seen = []

    def reselect(model, epoch):
        seen.append((epoch, _flat(model.params)))
        return picks[epoch]

    res = train.fit(_model(), ds, None, epochs=5, batch_size=32, optimizer=optax.sgd(LR), reselect=reselect,
                    select_every=2, warm_start_epochs=1, warm_start_subset=warm, progress=False, eval_every=5)
    plan = [warm, picks[1], picks[1], picks[3], picks[3]]
    ref, losses, _ = _reference(ds, _model(), plan, momentum=False)
    assert [e for e, _ in seen] == [1, 3]
    np.testing.assert_allclose(seen[0][1], ref[0], rtol=1e-4, atol=1e-5)  # the model after epoch 0
    np.testing.assert_allclose(seen[1][1], ref[2], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_flat(res.params), ref[-1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(res.history["train_loss"], losses, rtol=1e-4)
    assert res.history["num_examples"] == [10, 20, 20, 10, 10]
    sel = res.history["selections"]
    assert [s["epoch"] for s in sel] == [1, 3]
    assert sel[0]["indices"] == picks[1].indices.tolist() and sel[0]["weights"] == pytest.approx(picks[1].weights)
    assert sel[1]["indices"] == picks[3].indices.tolist() and all(s["time_s"] >= 0 for s in sel)
    assert res.history["test_accuracy"][:4] == [None] * 4 and res.history["test_accuracy"][4] is not None


def test_reselect_without_warm_start_subset_warms_up_on_all_rows(ds):
    calls = []
    pick = Subset.unweighted(np.arange(12))
    res = train.fit(_model(), ds, None, epochs=3, batch_size=32, optimizer=optax.sgd(LR), progress=False,
                    reselect=lambda m, e: calls.append(e) or pick, select_every=5, warm_start_epochs=2)
    full = Subset.unweighted(np.arange(N))
    ref, _, _ = _reference(ds, _model(), [full, full, pick], momentum=False)
    assert calls == [2] and res.history["num_examples"] == [N, N, 12]
    np.testing.assert_allclose(_flat(res.params), ref[-1], rtol=1e-4, atol=1e-5)


def test_no_subset_trains_on_every_row_with_weight_one(ds):
    res = train.fit(_model(), ds, epochs=2, batch_size=32, optimizer=optax.sgd(LR), progress=False)
    ref, _, _ = _reference(ds, _model(), [Subset.unweighted(np.arange(N))] * 2, momentum=False)
    np.testing.assert_allclose(_flat(res.params), ref[-1], rtol=1e-4, atol=1e-5)
    assert res.history["num_examples"] == [N, N]


def test_a_named_model_is_built_from_the_seed(ds):
    a = train.fit("mlp", ds, SUB, epochs=1, lr=1e-9, seed=3, progress=False)
    from jaxsubset.models import create
    init = _flat(to_pure(create("mlp", ds.input_shape, C, seed=3)).params)
    np.testing.assert_allclose(_flat(a.params), init, atol=1e-6)  # lr 1e-9: the initialisation shows through
    assert np.abs(_flat(a.params) - _flat(to_pure(create("mlp", ds.input_shape, C, seed=0)).params)).max() > 1e-3


@pytest.mark.parametrize("kwargs,match", [
    (dict(reselect=lambda m, e: SUB), "select_every"),
    (dict(reselect=lambda m, e: SUB, select_every=1, warm_start_epochs=2), "warm_start_epochs"),
    (dict(reselect=lambda m, e: SUB, select_every=1, warm_start_epochs=-1), "warm_start_epochs"),
    (dict(epoch_mode="python"), "epoch_mode"),
    (dict(dynamic=train.RandomOnline(0.5), optimizer=optax.sgd(0.1)), re.escape(
        "dynamic pruning shortens epochs, and fit keeps the learning-rate schedule over the steps actually taken "
        "only for an optimizer given by name; pass optimizer='sgd'|'adam'|'adamw' with lr/schedule, or drop "
        "dynamic=.")),
    (dict(dynamic=train.RS2(0.5), reselect=lambda m, e: SUB, select_every=1), re.escape(
        "RS2 cycles through a fixed subset without replacement, which adaptive re-selection changes; use "
        "RandomOnline(fraction) or InfoBatch with reselect.")),
    (dict(subset=Subset.unweighted(np.zeros(0, int))), "empty"),
    (dict(subset=Subset.unweighted([N])), "out of range"),
])
def test_bad_arguments_are_refused_with_what_to_change(ds, kwargs, match):
    kwargs = {"subset": SUB, **kwargs}
    with pytest.raises(ValueError, match=match):
        train.fit(_model(), ds, kwargs.pop("subset"), epochs=2, progress=False, **kwargs)


def test_reselect_returning_an_empty_or_out_of_pool_subset_is_refused(ds):
    with pytest.raises(ValueError, match="empty subset at epoch 1"):
        train.fit(_model(), ds, None, epochs=2, progress=False, reselect=lambda m, e: Subset.unweighted([]),
                  select_every=1, warm_start_epochs=1)
    with pytest.raises(ValueError, match="out of range"):
        train.fit(_model(), ds, None, epochs=2, progress=False, reselect=lambda m, e: Subset.unweighted([N + 2]),
                  select_every=1)


def _poisoned():
    pure = _model()
    return dataclasses.replace(pure, params=jax.tree_util.tree_map(lambda a: a.at[0].set(jnp.nan), pure.params))


def test_model_of_another_kind_and_a_diverging_loss_are_refused(ds):
    with pytest.raises(TypeError, match="model must be .*, got object"):
        train.fit(object(), ds, SUB, epochs=1, progress=False)
    with pytest.raises(FloatingPointError, match="epoch 0"):
        train.fit(_poisoned(), ds, SUB, epochs=2, progress=False)


def test_as_pure_accepts_names_modules_and_pure_models(ds):
    pure = _model()
    assert train.as_pure(pure, ds, 0) is pure
    m = train.as_pure(MLP(D, C, hidden=(8,), rngs=nnx.Rngs(0)), ds, 0)
    np.testing.assert_array_equal(_flat(m.params), _flat(pure.params))
    from jaxsubset.models import create
    named = train.as_pure("mlp", ds, 1)
    np.testing.assert_array_equal(_flat(named.params), _flat(to_pure(create("mlp", (D,), C, seed=1)).params))
    assert np.abs(_flat(named.params) - _flat(train.as_pure("mlp", ds, 0).params)).max() > 1e-3
    x = jnp.asarray(ds.x_test[:2])
    assert named.apply_fn(named.params, x).shape == (2, C)


def test_max_device_bytes_is_an_inclusive_limit(ds):
    """Training data of exactly ``max_device_bytes`` stay on the device (the compiled step, not the host one)."""
    from jaxsubset.train import engine

    for limit, program in ((ds.x_train.nbytes, "step"), (ds.x_train.nbytes - 1, "host_step")):
        train.clear_fit_cache()
        train.fit(_model(), ds, SUB, epochs=1, epoch_mode="steps", max_device_bytes=limit, progress=False)
        (progs,) = engine._CACHE.values()
        assert {sig[0] for sig in progs.compiled} == {"plan", program}, limit
    train.clear_fit_cache()
    train.fit(_model(), ds, SUB, epochs=1, epoch_mode="steps", progress=False)  # default: a quarter of the
    (progs,) = engine._CACHE.values()                                            # device's memory, 4 GiB on CPU
    assert {sig[0] for sig in progs.compiled} == {"plan", "step"}


def test_default_device_budget_on_cpu_is_4_gib():
    from jaxsubset.train.loop import _device_fits

    if jax.default_backend() != "cpu":
        pytest.skip("the 4 GiB default applies to devices that report no memory limit")
    assert _device_fits(4 << 30, None) and not _device_fits((4 << 30) + 1, None)


def test_nnx_modules_share_compiled_programs_by_architecture_only(ds):
    """A module of the same architecture (new values) reuses the programs; another architecture gets its own."""
    kw = dict(epochs=1, batch_size=32, optimizer="sgd", lr=LR, schedule="constant", progress=False)
    train.clear_fit_cache()
    train.fit(MLP(D, C, hidden=(8,), rngs=nnx.Rngs(0)), ds, SUB, **kw)
    before = train.fit_cache_info()
    train.fit(MLP(D, C, hidden=(8,), rngs=nnx.Rngs(1)), ds, SUB, **kw)
    after = train.fit_cache_info()
    assert after["compiles"] == before["compiles"] and after["hits"] == before["hits"] + 1
    other = train.fit(MLP(D, C, hidden=(5,), rngs=nnx.Rngs(0)), ds, SUB, **kw)
    assert train.fit_cache_info()["entries"] == 2
    ref, _, _ = _reference(ds, to_pure(MLP(D, C, hidden=(5,), rngs=nnx.Rngs(0))), [SUB], momentum=True)
    np.testing.assert_allclose(_flat(other.params), ref[-1], rtol=1e-4, atol=1e-5)


def test_policies_run_where_they_can_serve(ds):
    """RS2 without re-selection, and RandomOnline with it, train (each epoch on about half of its subset)."""
    kw = dict(epochs=2, batch_size=8, optimizer="sgd", lr=0.01, progress=False)
    used = train.fit(_model(), ds, SUB, dynamic=train.RS2(0.5), **kw).history["num_examples"]
    assert sorted(used) == [7, 8]  # half of 15 rows per epoch, without replacement: one pass in two epochs
    res = train.fit(_model(), ds, None, dynamic=train.RandomOnline(0.5), reselect=lambda m, e: SUB, select_every=1,
                    **kw)
    assert sorted(res.history["num_examples"]) in ([7, 7], [7, 8], [8, 8]) and len(res.history["selections"]) == 2


def test_warm_start_epochs_count_their_own_steps_in_the_schedule(ds):
    """Batches of 16: 2 warm-start epochs of 30 rows (2 steps each), then 2 epochs on 10 rows (1 step each):
    the string form's cosine runs over 6 steps, as optax's own cosine over 6 steps does. (With re-selection,
    ``subset`` gives the size each re-selection is planned at.)"""
    pick = Subset.unweighted(np.arange(10))
    kw = dict(epochs=4, batch_size=16, seed=1, progress=False, reselect=lambda m, e: pick, select_every=1,
              warm_start_epochs=2, warm_start_subset=Subset.unweighted(np.arange(N)))
    a = train.fit(_model(), ds, pick, optimizer="sgd", lr=0.3, schedule="cosine", **kw)
    b = train.fit(_model(), ds, pick, optimizer=optax.sgd(optax.cosine_decay_schedule(0.3, 6), momentum=0.9,
                                                          nesterov=True), **kw)
    c = train.fit(_model(), ds, pick, optimizer=optax.sgd(optax.cosine_decay_schedule(0.3, 4), momentum=0.9,
                                                          nesterov=True), **kw)
    np.testing.assert_allclose(_flat(a.params), _flat(b.params), rtol=1e-5, atol=1e-6)
    assert np.abs(_flat(a.params) - _flat(c.params)).max() > 1e-4  # the step count shows
    assert a.history["num_examples"] == [N, N, 10, 10]
