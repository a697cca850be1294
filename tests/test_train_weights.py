"""`train.fit` honours subset weights, optimizers, weight decay and schedules.

References are independent of the library: duplicated rows for integer weights, and the
update rules of SGD (Nesterov momentum), Adam and AdamW written out in NumPy over
gradients of a plain JAX mean cross-entropy.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from jaxsubset import Subset, data, train
from jaxsubset.models import MLP, to_pure


@pytest.fixture(scope="module")
def small():
    ds = data.load("digits")
    return ds.replace(x_train=ds.x_train[:48], y_train=ds.y_train[:48])


def _module(seed=0):
    return MLP(64, 10, hidden=(16,), rngs=nnx.Rngs(seed))


def _flat(params):
    return np.asarray(ravel_pytree(params)[0], np.float64)


@pytest.mark.parametrize("mode", [dict(epoch_mode="scan"), dict(epoch_mode="steps"), dict(max_device_bytes=0)],
                         ids=["scan", "steps", "streamed"])
def test_integer_weights_equal_duplicated_rows_one_full_batch_sgd_epoch(small, mode):
    rows = np.arange(0, 48, 2)                             # 24 rows of the 48
    w = np.tile([1.0, 3.0, 2.0], 8).astype(np.float32)     # integer weights, sum 48
    rep = np.repeat(rows, w.astype(int))
    dup = small.replace(x_train=small.x_train[rep], y_train=small.y_train[rep])
    kw = dict(epochs=1, batch_size=64, optimizer="sgd", lr=0.5, schedule="constant", progress=False, **mode)
    weighted = train.fit(_module(), small, Subset(rows, w), **kw)
    repeated = train.fit(_module(), dup, None, **kw)
    a, b = _flat(weighted.params), _flat(repeated.params)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    if mode.get("epoch_mode") == "steps":  # once: the weights make a real difference here
        u = _flat(train.fit(_module(), small, Subset.unweighted(rows), **kw).params)
        assert np.abs(a - u).max() > 100 * max(np.abs(a - b).max(), 1e-7)
    assert weighted.history["train_loss"][0] == pytest.approx(repeated.history["train_loss"][0], rel=1e-5)


def test_weights_scale_invariant_over_several_batches(small):
    """Σ w ℓ / Σ w per batch: scaling every weight by 2.5 changes nothing, over shuffled batches."""
    rows = np.arange(40)
    w = np.random.default_rng(0).uniform(0.2, 3.0, size=40).astype(np.float32)
    kw = dict(epochs=2, batch_size=16, optimizer="sgd", lr=0.3, schedule="constant", progress=False, seed=3)
    a = train.fit(_module(), small, Subset(rows, w), **kw)
    b = train.fit(_module(), small, Subset(rows, 2.5 * w), **kw)
    np.testing.assert_allclose(_flat(a.params), _flat(b.params), rtol=1e-5, atol=1e-6)


# -- hand-written optimizers ---------------------------------------------------------------

def _loss_grad(small, rows):
    m = to_pure(_module())
    p0, unravel = ravel_pytree(m.params)
    x, y = jnp.asarray(small.x_train[rows]), jnp.asarray(small.y_train[rows])

    def loss(flat):
        logits = m.apply_fn(unravel(flat), x)
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(y.size), y])

    g = jax.jit(jax.grad(loss))
    return np.asarray(p0, np.float64), lambda p: np.asarray(g(jnp.asarray(p, jnp.float32)), np.float64)


def _reference(name, p, grad, lrs, wd):
    b1, b2, eps, mom = 0.9, 0.999, 1e-8, 0.9
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, lr in enumerate(lrs, start=1):
        g = grad(p)
        if name == "sgd":               # L2 decay added to the gradient, then Nesterov momentum
            g = g + wd * p
            m = g + mom * m
            p = p - lr * (g + mom * m)
        elif name in ("adam", "adamw"):  # adam: L2 decay into the gradient; adamw: decoupled decay
            if name == "adam":
                g = g + wd * p
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            u = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
            if name == "adamw":
                u = u + wd * p
            p = p - lr * u
    return p


def _warmup_cosine(lr, total):
    warm = max(1, total // 20)
    t = np.arange(total)
    return np.where(t < warm, lr * t / warm, lr * 0.5 * (1 + np.cos(np.pi * (t - warm) / (total - warm))))


@pytest.mark.parametrize("name,wd,schedule", [("sgd", 0.0, "constant"), ("sgd", 0.05, "constant"),
                                              ("adam", 0.05, "constant"), ("adamw", 0.1, "constant"),
                                              ("adamw", 0.0, "warmup_cosine"), ("sgd", 0.0, "cosine")])
def test_optimizers_weight_decay_and_schedules_match_hand_written_updates(small, name, wd, schedule):
    rows = np.arange(32)
    epochs, lr = 4, (0.2 if name == "sgd" else 0.01)
    res = train.fit(_module(), small, Subset.unweighted(rows), epochs=epochs, batch_size=32, optimizer=name,
                    lr=lr, schedule=schedule, weight_decay=wd, progress=False)
    if schedule == "constant":
        lrs = np.full(epochs, lr)
    elif schedule == "cosine":
        lrs = lr * 0.5 * (1 + np.cos(np.pi * np.arange(epochs) / epochs))
    else:
        lrs = _warmup_cosine(lr, epochs)
    p0, grad = _loss_grad(small, rows)
    ref = _reference(name, p0, grad, lrs, wd)
    np.testing.assert_allclose(_flat(res.params), ref, rtol=2e-4, atol=2e-5)
    assert np.abs(ref - p0).max() > 1e-3  # the reference moved: the comparison is not vacuous


def test_schedule_values_match_closed_forms():
    np.testing.assert_allclose([train.make_schedule("constant", 0.3, 50)(t) for t in (0, 7, 49)], 0.3)
    s = train.make_schedule("warmup_cosine", 0.1, 200)
    np.testing.assert_allclose([s(t) for t in range(200)], _warmup_cosine(0.1, 200), rtol=1e-5, atol=1e-8)
    assert float(s(0)) == 0.0 and float(s(10)) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="learning rate"):
        train.make_schedule("constant", 0.0, 10)
    with pytest.raises(ValueError, match="weight_decay"):
        train.make_optimizer("sgd", train.make_schedule("constant", 0.1, 10), weight_decay=-1.0)


@pytest.mark.parametrize("name,custom", [
    ("sgd", lambda steps: optax.sgd(optax.cosine_decay_schedule(0.1, steps), momentum=0.9, nesterov=True)),
    ("adam", lambda steps: optax.adam(optax.cosine_decay_schedule(0.1, steps))),
])
def test_custom_optax_optimizer_equals_the_string_form(small, name, custom):
    """The string form builds the same transformation over fit's total step count (3 epochs × 3 batches)."""
    sub = Subset.unweighted(np.arange(40))
    kw = dict(epochs=3, batch_size=16, seed=1, progress=False)
    a = train.fit(_module(), small, sub, optimizer=name, lr=0.1, schedule="cosine", **kw)
    b = train.fit(_module(), small, sub, optimizer=custom(9), **kw)
    c = train.fit(_module(), small, sub, optimizer=custom(1000), **kw)  # a different schedule length
    np.testing.assert_allclose(_flat(a.params), _flat(b.params), rtol=1e-5, atol=1e-6)
    assert np.abs(_flat(a.params) - _flat(c.params)).max() > 1e-4
    assert a.history["train_loss"] == pytest.approx(b.history["train_loss"], rel=1e-5)
