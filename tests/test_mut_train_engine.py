"""`train.engine`'s step: a batch whose weights are all zero adds 0 to the epoch loss and moves nothing.

The batch loss is ``Σ w_i ℓ_i / Σ w_i`` with ``0 / 0 := 0``; checked with one-row batches against the
cross-entropy written here in NumPy (written against the step's surviving mutants, README "Mutation
testing"). Same tiny problem as ``test_fit_wiring.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree
from test_fit_wiring import C, D, _model, ds  # noqa: F401  (the wiring tests' data set fixture and model)

from jaxsubset import Subset, train
from jaxsubset.train import engine


def _ce(model, x, y):
    z = np.asarray(model.apply_fn(model.params, jnp.asarray(x)), np.float64)
    z = z - z.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return -logp[np.arange(len(y)), y]


@pytest.mark.parametrize("mode", [dict(epoch_mode="scan"), dict(epoch_mode="steps"), dict(max_device_bytes=0)],
                         ids=["scan", "steps", "streamed"])
def test_a_zero_weight_batch_counts_zero_and_a_fractional_weight_divides_out(ds, mode):
    """Rows 0 and 1 with weights 0 and 0.5, one row per batch, a vanishing learning rate: the epoch loss is
    ``(0 + ℓ_1) / 2`` (the 0.5 cancels in ``w ℓ / w``), and the empty batch leaves no NaN in the parameters."""
    res = train.fit(_model(), ds, Subset([0, 1], [0.0, 0.5]), epochs=1, batch_size=1, optimizer="sgd", lr=1e-12,
                    schedule="constant", progress=False, **mode)
    ce = _ce(_model(), ds.x_train[:2], ds.y_train[:2])
    assert res.history["train_loss"][0] == pytest.approx(ce[1] / 2, rel=1e-5)
    flat = np.asarray(ravel_pytree(res.params)[0])
    np.testing.assert_allclose(flat, np.asarray(ravel_pytree(_model().params)[0]), atol=1e-6)


# -- the compiled programs called directly, against ``Σ w m ℓ / Σ w`` over a batch's valid rows --------------

NR, B, LR, TOTAL, MOM = 11, 4, 0.5, 8.0, 0.9   # 11 rows in batches of 4: order has 12 slots, the last is padding


@pytest.fixture(scope="module")
def batch_problem():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(NR, D)).astype(np.float32)
    y = rng.integers(0, C, NR).astype(np.int32)
    perm = [3, 0, 7, 5, 1, 9, 2, 6, 4, 10, 8]      # the last row (10) sits in the third batch's valid part
    order = np.asarray(perm + [NR], np.int32)        # padding index n, as the epoch plan writes it
    w = rng.uniform(0.5, 2.0, NR).astype(np.float32)  # nonzero everywhere: only `valid` may mask a row
    mult = rng.uniform(0.5, 2.0, NR).astype(np.float32)
    return x, y, order, w, mult


def _lr(t):
    return LR * 0.5 * (1 + np.cos(np.pi * min(t, TOTAL) / TOTAL))


def _reference_steps(model, prob, k, ts):
    """Momentum SGD (trace 0.9) at the cosine rate of position ``ts[0] + ts[1] j / ts[2]`` over the
    ``ceil(k / B)`` batches; returns the flat parameters after each step and the summed batch losses."""
    x, y, order, w, mult = prob
    p, unravel = ravel_pytree(model.params)
    p, buf, out, acc = np.asarray(p, np.float64), 0.0, [], 0.0
    for j in range(-(-k // B)):
        pos = j * B + np.arange(B)
        rows = order[pos][pos < k]

        def loss(flat):
            logp = jax.nn.log_softmax(model.apply_fn(unravel(flat), jnp.asarray(x[rows])))
            ce = -logp[jnp.arange(rows.size), y[rows]]
            return jnp.sum(w[rows] * mult[rows] * ce) / np.sum(w[rows])

        value, g = jax.value_and_grad(loss)(jnp.asarray(p, jnp.float32))
        buf = np.asarray(g, np.float64) + MOM * buf
        p = p - _lr(ts[0] + ts[1] * j / ts[2]) * buf
        out.append(p)
        acc += float(value)
    return out, acc


def _programs(model):
    train.clear_fit_cache()
    return engine.programs(("fn", model.apply_fn), model.apply_fn, "momentum", optax.sgd(1.0, momentum=MOM),
                           "cosine", B, "none", (False, False))


def _args(prob):
    x, y, order, w, mult = prob
    return jnp.asarray(x), jnp.asarray(y), jnp.asarray(order), jnp.asarray(w), jnp.asarray(mult)


HP = np.asarray([LR, TOTAL, 0.0], np.float32)
TS = np.asarray([2.0, 4.0, 3.0], np.float32)  # 2 steps done; this epoch's 4 nominal steps spread over its 3


def _flat(params):
    return np.asarray(ravel_pytree(params)[0], np.float64)


def test_step_and_host_step_apply_the_weighted_multiplied_loss_of_the_valid_rows(batch_problem):
    model = _model()
    progs = _programs(model)
    x, y, order, w, mult = batch_problem
    ref, acc_ref = _reference_steps(model, batch_problem, 10, TS)
    params, state, acc = model.params, optax.sgd(1.0, momentum=MOM).init(model.params), 0.0
    for j in range(3):
        params, state, tables, acc = progs.step(params, state, {}, np.float32(acc), *_args(batch_problem),
                                                np.int32(10), np.int32(j), TS, HP)
        np.testing.assert_allclose(_flat(params), ref[j], rtol=1e-5, atol=1e-6, err_msg=f"step {j}")
        assert tables == {}
    assert float(acc) == pytest.approx(acc_ref, rel=1e-5)
    # the host-streamed step gets the same batches as arrays (padding clamped to row n - 1, masked out)
    params, state, acc = model.params, optax.sgd(1.0, momentum=MOM).init(model.params), np.float32(0.0)
    for j in range(3):
        pos = j * B + np.arange(B)
        idx = order[pos]
        valid = pos < 10
        src = np.minimum(idx, NR - 1)
        params, state, _, acc = progs.host_step(params, state, {}, acc, x[src], y[src], idx,
                                                np.where(valid, w[src], 0.0).astype(np.float32), mult[src], valid,
                                                np.int32(j), TS, HP)
        np.testing.assert_allclose(_flat(params), ref[j], rtol=1e-5, atol=1e-6, err_msg=f"host step {j}")
    assert float(acc) == pytest.approx(acc_ref, rel=1e-5)


@pytest.mark.parametrize("k", [8, 9, 10])
def test_epoch_runs_ceil_k_over_b_steps(batch_problem, k):
    """k = 8, 9, 10 active rows: 2, 3, 3 steps (an extra all-masked step would still move the momentum)."""
    model = _model()
    progs = _programs(model)
    ref, acc_ref = _reference_steps(model, batch_problem, k, TS)
    state = optax.sgd(1.0, momentum=MOM).init(model.params)
    params, _, tables, acc = progs.epoch(model.params, state, {}, np.float32(0.0), *_args(batch_problem),
                                         np.int32(k), TS, HP)
    np.testing.assert_allclose(_flat(params), ref[-1], rtol=1e-5, atol=1e-6)
    assert float(acc) == pytest.approx(acc_ref, rel=1e-5) and tables == {}


def test_executables_are_kept_per_signature_least_recently_used_first(monkeypatch):
    """``Programs.executable``: one executable per (function, argument shapes and dtypes), a hit costs 0 s and
    moves its entry to the back; beyond ``CACHE_SIZE`` the least recently used one goes."""
    monkeypatch.setattr(engine, "CACHE_SIZE", 2)
    double = jax.jit(lambda a: 2 * a)
    progs = engine.Programs(plan=double, step=double, epoch=double, host_step=double, predict=double)
    before = engine.cache_info()["compiles"]
    a, b, c = np.ones(2, np.float32), np.ones(3, np.float32), np.ones(2, np.int32)
    exe_a, dt = progs.executable("plan", a)
    assert dt > 0 and progs.executable("plan", a) == (exe_a, 0.0)
    np.testing.assert_array_equal(exe_a(a + 1), [4.0, 4.0])
    progs.executable("plan", b)                 # a, b
    assert progs.executable("plan", a)[1] == 0.0  # b, a  (a used last)
    progs.executable("plan", c)                 # a, c  (b evicted; the int32 shape of a is another signature)
    assert engine.cache_info()["compiles"] == before + 3
    assert [sig[2][0] for sig in progs.compiled] == [((2,), np.dtype(np.float32)), ((2,), np.dtype(np.int32))]
    assert progs.executable("plan", b)[1] > 0 and progs.executable("step", a)[1] > 0  # rebuilt; another name
