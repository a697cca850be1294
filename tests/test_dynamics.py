"""Training dynamics recorded during fit equal a NumPy recomputation from the logits of each training step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsubset import train
from jaxsubset.types import DYNAMICS
from jaxsubset.workflows import quantities
from jaxsubset.data import Dataset
from jaxsubset.models.pure import PureModel
from jaxsubset.subset import Subset

N, D, C = 96, 6, 3


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(N + 30, D)).astype(np.float32)
    y = np.where(x[:, 2] > 0.9, 2, (x[:, 0] + 0.3 * rng.normal(size=N + 30) > 0).astype(np.int64))
    y[:12] = (y[:12] + 1) % C  # label noise: some rows are never learned, some forgotten
    ids = np.concatenate([np.arange(N), 1000 + np.arange(30)]).astype(np.float32)[:, None]
    x = np.concatenate([x, ids], axis=1)  # last column: the row id, ignored by the model
    return Dataset(x_train=x[:N], y_train=y[:N], x_test=x[N:], y_test=y[N:], num_classes=C,
                   class_names=("a", "b", "c"), name="tiny")


def _recording_model(log: list):
    """A linear model whose forward pass reports (row ids, logits) through a host callback."""

    def apply_fn(p, x):
        logits = jnp.tanh(x[:, :-1] @ p["w1"]) @ p["w2"] + p["b"]
        jax.debug.callback(lambda i, z: log.append((np.asarray(i).astype(int), np.asarray(z))), x[:, -1], logits,
                           ordered=True)
        return logits

    rng = np.random.default_rng(0)
    params = {"w1": jnp.asarray(rng.normal(size=(D, 8)) * 0.5, jnp.float32),
              "w2": jnp.asarray(rng.normal(size=(8, C)) * 0.5, jnp.float32), "b": jnp.zeros(C)}
    return PureModel(apply_fn, params)


def _reference(log, y, n):
    """Forgetting (Toneva), AUM (Pleiss), loss / EL2N mean and variance from each presentation's logits."""
    pres = {i: [] for i in range(n)}
    for ids, z in log:
        for i, zi in zip(ids, z):
            if i < n:  # test rows (ids >= 1000) come from evaluation
                pres[int(i)].append(zi.astype(np.float64))
    out = {k: np.full(n, np.nan) for k in ("forgetting", "aum", "loss_mean", "loss_var", "el2n_mean", "el2n_var")}
    for i, zs in pres.items():
        if not zs:
            continue
        zs = np.stack(zs)
        correct = zs.argmax(1) == y[i]
        forgets = int(np.sum(correct[:-1] & ~correct[1:]))
        out["forgetting"][i] = forgets if correct.any() else len(zs)  # never learned: forgotten "always"
        other = np.delete(zs, y[i], axis=1).max(1)
        out["aum"][i] = np.mean(zs[:, y[i]] - other)
        p = np.exp(zs - zs.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        loss = -np.log(p[:, y[i]])
        el2n = np.linalg.norm(p - np.eye(C)[y[i]], axis=1)
        out["loss_mean"][i], out["loss_var"][i] = loss.mean(), loss.var()
        out["el2n_mean"][i], out["el2n_var"][i] = el2n.mean(), el2n.var()
    return out, pres


@pytest.mark.parametrize("subset", [None, np.arange(10, 90)])
def test_dynamics_equal_numpy_recomputation_from_step_logits(tiny, subset):
    log: list = []
    sub = None if subset is None else Subset.unweighted(subset)
    res = train.fit(_recording_model(log), tiny, sub, epochs=8, batch_size=16, lr=0.05, optimizer="sgd",
                    seed=0, progress=False, eval_every=100, record_dynamics=True)
    dyn = res.history["dynamics"]
    ref, pres = _reference(log, tiny.y_train, N)
    rows = np.arange(N) if subset is None else subset
    assert all(len(pres[i]) == 8 for i in rows)  # one presentation per epoch, one forward pass per step
    assert set(dyn) == set(ref) and all(v.shape == (N,) and v.dtype == np.float32 for v in dyn.values())
    outside = np.setdiff1d(np.arange(N), rows)
    for k in ref:
        assert np.isnan(dyn[k][outside]).all() and not np.isnan(dyn[k][rows]).any()
    np.testing.assert_array_equal(dyn["forgetting"][rows], ref["forgetting"][rows])
    for k in ("aum", "loss_mean", "el2n_mean"):
        np.testing.assert_allclose(dyn[k][rows], ref[k][rows], rtol=1e-4, atol=1e-5)
    for k in ("loss_var", "el2n_var"):
        np.testing.assert_allclose(dyn[k][rows], ref[k][rows], rtol=1e-3, atol=1e-5)
    f = ref["forgetting"][rows]
    assert (f > 0).any() and (f == 0).any()  # the run exercises both learned and forgotten rows


def test_recording_does_not_change_training(tiny):
    kw = dict(epochs=3, batch_size=16, seed=1, progress=False)
    a = train.fit("mlp", tiny, **kw)
    b = train.fit("mlp", tiny, record_dynamics=True, **kw)
    for u, v in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    assert "dynamics" not in a.history and b.history["dynamics"]["aum"].shape == (N,)


def test_scoring_serves_dynamics_and_names_the_fix_without_them(tiny):
    res = train.fit("mlp", tiny, epochs=2, batch_size=32, progress=False, record_dynamics=True)
    names = list(DYNAMICS)
    q = quantities.compute(names + ["loss"], res.model, tiny.x_train, tiny.y_train, dynamics=res.history["dynamics"])
    for k in names:
        np.testing.assert_array_equal(q[k], res.history["dynamics"][k])
    with pytest.raises(ValueError, match="record_dynamics=True"):
        quantities.compute(["forgetting"], res.model, tiny.x_train, tiny.y_train)
    with pytest.raises(ValueError, match="same training rows"):
        quantities.compute(["aum"], res.model, tiny.x_train[:10], tiny.y_train[:10], dynamics=res.history["dynamics"])
    with pytest.raises(ValueError, match="record_dynamics=True"):
        train.stats.dynamics({})
