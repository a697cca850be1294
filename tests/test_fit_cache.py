"""`fit` compiles once: same model function, optimizer, batch size and shapes reuse the compiled programs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsubset import train
from jaxsubset.data import Dataset
from jaxsubset.subset import Subset
from jaxsubset.train import lr as lr_mod
from jaxsubset.train.engine import cache_info

_EVENT = "/jax/core/compile/backend_compile_duration"
_compiles: list[float] = []


def _listener(event: str, duration: float, **kw) -> None:
    if event == _EVENT:
        _compiles.append(duration)


jax.monitoring.register_event_duration_secs_listener(_listener)


def _hit(event: str, **kw) -> None:  # a persistent-cache hit (tests/conftest.py) is a jit cache miss too
    if event == "/jax/compilation_cache/cache_hits":
        _compiles.append(0.0)


jax.monitoring.register_event_listener(_hit)


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1).astype(np.int64)
    return Dataset(x_train=x[:240], y_train=y[:240], x_test=x[240:], y_test=y[240:], num_classes=3,
                   class_names=("a", "b", "c"), name="tiny")


KW = dict(epochs=3, batch_size=32, lr=3e-3, progress=False)


def _leaves(res):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(res.params)]


def test_second_fit_compiles_nothing_and_is_bit_for_bit_unchanged(tiny):
    sub = Subset(np.arange(0, 200, 2), np.linspace(0.5, 2.0, 100))
    train.clear_fit_cache()  # another test may have compiled this configuration already
    first = train.fit("mlp", tiny, sub, seed=3, **KW)
    _compiles.clear()
    before = cache_info()["compiles"]
    second = train.fit("mlp", tiny, sub, seed=3, **KW)
    assert _compiles == [], f"the second fit compiled {len(_compiles)} XLA programs"
    assert cache_info()["compiles"] == before
    assert second.compile_time_s == 0.0 and first.compile_time_s > 0.0
    for a, b in zip(_leaves(first), _leaves(second)):
        np.testing.assert_array_equal(a, b)
    assert first.history["train_loss"] == second.history["train_loss"]


def test_other_seeds_subset_sizes_and_epoch_counts_reuse_the_compiled_step(tiny):
    train.fit("mlp", tiny, Subset.unweighted(np.arange(50)), seed=0, **KW)  # warm
    _compiles.clear()
    before = cache_info()["compiles"]
    a = train.fit("mlp", tiny, Subset.unweighted(np.arange(77)), seed=1, **KW)
    b = train.fit("mlp", tiny, Subset.unweighted(np.arange(10, 200)), seed=2, **dict(KW, epochs=5))
    c = train.fit("mlp", tiny, None, seed=4, **dict(KW, lr=1e-2))  # same step: lr and step count are data
    assert cache_info()["compiles"] == before and a.compile_time_s == b.compile_time_s == c.compile_time_s == 0.0
    assert _compiles == []
    assert a.history["num_examples"] == [77] * 3 and b.history["num_examples"] == [190] * 5
    # a changed shape (another batch size) compiles again, and trains correctly
    d = train.fit("mlp", tiny, Subset.unweighted(np.arange(77)), seed=1, **dict(KW, batch_size=16))
    assert d.compile_time_s > 0 and d.history["train_loss"][-1] < d.history["train_loss"][0]


def test_cached_step_gives_the_values_of_a_fresh_compile(tiny):
    sub = Subset.unweighted(np.arange(120))
    train.fit("mlp", tiny, Subset.unweighted(np.arange(30)), seed=5, **KW)  # populates the cache
    cached = train.fit("mlp", tiny, sub, seed=5, **KW)
    train.clear_fit_cache()
    fresh = train.fit("mlp", tiny, sub, seed=5, **KW)
    assert fresh.compile_time_s > 0 and cached.compile_time_s == 0
    for a, b in zip(_leaves(cached), _leaves(fresh)):
        np.testing.assert_array_equal(a, b)


def test_the_cache_is_bounded_and_clearable(monkeypatch):
    import optax

    from jaxsubset.train import engine

    monkeypatch.setattr(engine, "CACHE_SIZE", 3)
    train.clear_fit_cache()
    fns = [lambda p, x, i=i: x * i for i in range(5)]
    built = [engine.programs(("fn", f), f, "adam", optax.adam(1.0), "cosine", 8, "none", (False, False)) for f in fns]
    assert cache_info()["entries"] == 3
    # the two oldest were evicted (a new entry is built), the newest are returned as cached
    assert engine.programs(("fn", fns[4]), fns[4], "adam", None, "cosine", 8, "none", (False, False)) is built[4]
    assert engine.programs(("fn", fns[0]), fns[0], "adam", optax.adam(1.0), "cosine", 8, "none",
                           (False, False)) is not built[0]
    train.clear_fit_cache()
    assert cache_info()["entries"] == 0


def test_schedule_values_equal_optax_schedules():
    for name in train.SCHEDULES:
        for total in (2, 9, 120):
            ref = train.make_schedule(name, 0.02, total)
            hp = jnp.asarray(lr_mod.schedule_params(name, 0.02, total))
            for t in range(total + 2):
                np.testing.assert_allclose(float(lr_mod.schedule_value(name, jnp.float32(t), hp)), float(ref(t)),
                                           rtol=1e-5, atol=1e-9)
    with pytest.raises(ValueError, match="schedule"):
        lr_mod.schedule_params("linear", 0.1, 10)


def test_lr_schedule_is_applied_per_step_like_optax(tiny):
    """SGD without momentum through fit equals a plain loop with the optax schedule (one batch per epoch)."""
    import optax

    from jaxsubset.models import create, to_pure

    sub = Subset.unweighted(np.arange(32))
    res = train.fit("mlp", tiny, sub, epochs=4, batch_size=32, lr=0.1, schedule="cosine", optimizer="sgd",
                    seed=0, progress=False)
    m = to_pure(create("mlp", tiny.input_shape, tiny.num_classes, seed=0))
    tx = optax.chain(optax.trace(0.9, nesterov=True), optax.scale_by_learning_rate(train.make_schedule("cosine", 0.1, 4)))
    p, s = m.params, tx.init(m.params)
    x, y = tiny.x_train[:32], tiny.y_train[:32]
    for _ in range(4):  # every epoch is the same single batch (row order does not change a mean)
        g = jax.grad(lambda q: train.weighted_loss(m.apply_fn, q, x, y, jnp.ones(32)))(p)
        u, s = tx.update(g, s, p)
        p = optax.apply_updates(p, u)
    for a, b in zip(_leaves(res), jax.tree_util.tree_leaves(p)):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-4, atol=1e-6)
