import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsubset import Subset, data, train
from jaxsubset.models import create, to_pure


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def _small_model(ds, seed=0):
    return to_pure(create("mlp", ds.input_shape, ds.num_classes, seed=seed))


def test_weighted_loss_unit_weights_is_mean_and_integer_weights_duplicate(digits):
    m = _small_model(digits)
    x, y = jnp.asarray(digits.x_train[:12]), jnp.asarray(digits.y_train[:12])
    logits = m.apply_fn(m.params, x)
    ref_mean = -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(12), y])
    assert np.isclose(train.weighted_loss(m.apply_fn, m.params, x, y, jnp.ones(12)), ref_mean, rtol=1e-6)
    w = jnp.asarray([1, 3, 0, 2, 1, 1, 4, 1, 0, 1, 2, 1], jnp.float32)
    g_w = jax.grad(lambda p: train.weighted_loss(m.apply_fn, p, x, y, w))(m.params)
    rep = np.repeat(np.arange(12), np.asarray(w, int))
    g_dup = jax.grad(lambda p: train.weighted_loss(m.apply_fn, p, x[rep], y[rep], jnp.ones(rep.size)))(m.params)
    for a, b in zip(jax.tree_util.tree_leaves(g_w), jax.tree_util.tree_leaves(g_dup)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert float(train.weighted_loss(m.apply_fn, m.params, x, y, jnp.zeros(12))) == 0.0


def test_epoch_scan_matches_streamed_steps_and_is_deterministic(digits):
    sub = Subset(np.arange(0, 300, 2), np.linspace(0.5, 2.0, 150))
    kw = dict(epochs=2, batch_size=32, lr=1e-3, seed=7, progress=False)
    a = train.fit("mlp", digits, sub, epoch_mode="scan", **kw)
    b = train.fit("mlp", digits, sub, max_device_bytes=0, **kw)  # forces the host-streaming path
    c = train.fit("mlp", digits, sub, epoch_mode="scan", **kw)
    d = train.fit("mlp", digits, sub, epoch_mode="steps", **kw)  # one dispatch per batch, data on device
    for x, y, z, u in zip(*(jax.tree_util.tree_leaves(r.params) for r in (a, b, c, d))):
        np.testing.assert_allclose(x, y, rtol=2e-5, atol=2e-6)
        np.testing.assert_array_equal(x, z)
        np.testing.assert_allclose(x, u, rtol=2e-5, atol=2e-6)
    with pytest.raises(ValueError, match="epoch_mode"):
        train.fit("mlp", digits, sub, epoch_mode="python", **kw)
    assert a.history["num_examples"] == [150, 150] and len(a.history["epoch_time_s"]) == 2


def test_training_on_a_subset_only_touches_the_subset(digits):
    """Rows outside the subset cannot influence training: corrupting them changes nothing."""
    sub = Subset.unweighted(np.arange(100))
    poisoned = digits.replace(x_train=np.where(np.arange(digits.y_train.size)[:, None, None, None] >= 100,
                                               1.0 - digits.x_train, digits.x_train))
    kw = dict(epochs=1, batch_size=16, seed=0, progress=False)
    a = train.fit("mlp", digits, sub, **kw)
    b = train.fit("mlp", poisoned, sub, **kw)
    for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_array_equal(x, y)


def test_full_digits_training_reaches_093(digits):
    res = train.fit("mlp", digits, epochs=15, batch_size=64, lr=1e-3, seed=0, progress=False)
    assert res.history["test_accuracy"][-1] >= 0.93
    assert res.history["train_loss"][-1] < res.history["train_loss"][0]
    per_class = np.asarray(res.history["per_class_accuracy"][-1])
    # overall accuracy is the class-size weighted mean of the per-class accuracies
    counts = np.bincount(digits.y_test, minlength=10)
    assert np.isclose((per_class * counts).sum() / counts.sum(), res.history["test_accuracy"][-1])


def test_accuracy_reference():
    apply_fn = lambda p, x: x  # logits are the inputs
    x = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 2]]
    acc, per = train.accuracy(apply_fn, None, x, np.array([0, 1, 1, 0, 2]), 4)
    assert acc == pytest.approx(0.8) and per[:3].tolist() == [1.0, 0.5, 1.0] and np.isnan(per[3])


def test_schedules():
    s = train.make_schedule("onecycle", 0.1, 100)
    vals = np.array([s(i) for i in range(101)])
    assert vals.argmax() == 30 and np.isclose(vals.max(), 0.1) and vals[-1] < 1e-4
    c = train.make_schedule("cosine", 0.1, 10)
    assert np.isclose(c(0), 0.1) and np.isclose(c(10), 0.0)
    with pytest.raises(ValueError, match="onecycle"):
        train.make_schedule("step", 0.1, 10)
    with pytest.raises(ValueError, match="sgd"):
        train.make_optimizer("lbfgs", c)


def test_fit_bad_input(digits):
    with pytest.raises(ValueError, match="epochs"):
        train.fit("mlp", digits, epochs=0)
    with pytest.raises(ValueError, match="out of range"):
        train.fit("mlp", digits, Subset.unweighted([10**6]), epochs=1)
    with pytest.raises(ValueError, match="empty"):
        train.fit("mlp", digits, Subset.unweighted([]), epochs=1)
    with pytest.raises(ValueError, match="Unknown model"):
        train.fit("vit", digits, epochs=1)
    with pytest.raises(ValueError, match="select_every"):
        train.fit("mlp", digits, epochs=2, reselect=lambda m, e: Subset.unweighted([0]), select_every=0)


def test_custom_optax_optimizer_and_nnx_module(digits):
    module = create("mlp", digits.input_shape, digits.num_classes, seed=1)
    res = train.fit(module, digits, Subset.unweighted(np.arange(64)), epochs=1, optimizer=optax.sgd(0.1),
                    progress=False)
    assert np.isfinite(res.history["train_loss"][0])
