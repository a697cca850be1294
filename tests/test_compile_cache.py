"""Compile once: the public grads functions reuse their compiled chunk function across calls.

Compilations are counted with ``jax.monitoring`` (XLA backend-compile events). References are
independent: a Python loop of ``jax.grad`` on one example at a time, and the same public call
made after ``clear_cache()`` (a fresh computation).
"""

from __future__ import annotations

import gc
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxsubset import grads
from jaxsubset.grads import _cache

_COMPILES = [0]


def _on_event(event: str, duration: float, **kwargs) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        _COMPILES[0] += 1


def _on_hit(event: str, **kwargs) -> None:
    # a persistent-cache hit (tests/conftest.py) also means the in-memory jit cache missed
    if event == "/jax/compilation_cache/cache_hits":
        _COMPILES[0] += 1


@pytest.fixture(scope="module", autouse=True)
def _listen():
    jax.monitoring.register_event_duration_secs_listener(_on_event)
    jax.monitoring.register_event_listener(_on_hit)
    yield
    jax.monitoring.unregister_event_duration_listener(_on_event)
    jax.monitoring.unregister_event_listener(_on_hit)


def compiles(fn):
    """``(result, number of XLA compilations during fn())``."""
    before = _COMPILES[0]
    out = fn()
    return out, _COMPILES[0] - before


# --- a tiny conv net (probe path) and a tiny MLP (vmap path), as pure functions -----------------

def conv_apply(p, x):
    h = lax.conv_general_dilated(x, p["conv"]["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = jax.nn.relu(h + p["conv"]["b"]).reshape(x.shape[0], -1)
    return h @ p["head"]["w"] + p["head"]["b"]


def conv_embed(p, x):
    h = lax.conv_general_dilated(x, p["conv"]["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = jax.nn.relu(h + p["conv"]["b"]).reshape(x.shape[0], -1)
    return h @ p["head"]["w"] + p["head"]["b"], h


def conv_params(seed, channels=2):
    r = np.random.default_rng(seed)
    return {"conv": {"w": jnp.asarray(r.normal(size=(3, 3, 1, channels)) * 0.5, jnp.float32),
                     "b": jnp.asarray(r.normal(size=(channels,)) * 0.1, jnp.float32)},
            "head": {"w": jnp.asarray(r.normal(size=(5 * 5 * channels, 3)) * 0.3, jnp.float32),
                     "b": jnp.asarray(r.normal(size=(3,)) * 0.1, jnp.float32)}}


def mlp_apply(p, x):
    return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"]


def mlp_params(seed, hidden=4):
    r = np.random.default_rng(seed)
    return {"w1": jnp.asarray(r.normal(size=(3, hidden)), jnp.float32),
            "b1": jnp.asarray(r.normal(size=(hidden,)), jnp.float32),
            "w2": jnp.asarray(r.normal(size=(hidden, 3)), jnp.float32)}


@pytest.fixture(scope="module")
def data():
    r = np.random.default_rng(0)
    return (r.normal(size=(10, 5, 5, 1)).astype(np.float32), r.integers(0, 3, 10),
            r.normal(size=(10, 3)).astype(np.float32))


def loop_grads(apply_fn, params, x, y):
    """Independent reference: one ``jax.grad`` per example, flattened in tree order."""
    def loss1(p, x1, y1):
        return -jax.nn.log_softmax(apply_fn(p, x1[None])[0])[y1]
    g1 = jax.jit(jax.grad(loss1))
    rows = []
    for i in range(len(x)):
        g = g1(params, jnp.asarray(x[i]), jnp.int32(y[i]))
        rows.append(np.concatenate([np.ravel(v) for v in jax.tree_util.tree_leaves(g)]))
    return np.stack(rows)


def calls(x, y):
    """Every public grads computation on the conv net, as ``params -> result``."""
    bs = dict(batch_size=4)  # 10 rows: chunks of 4, 4 and a ragged 2 padded to 4
    return {
        "losses": lambda p: grads.losses(conv_apply, p, x, y, **bs),
        "el2n": lambda p: grads.el2n(conv_apply, p, x, y, **bs),
        "grad_norms": lambda p: grads.grad_norms(conv_apply, p, x, y, **bs),
        "grad_norms_vmap": lambda p: grads.grad_norms(conv_apply, p, x, y, method="vmap", **bs),
        "per_sample_grads": lambda p: grads.per_sample_grads(conv_apply, p, x, y, **bs),
        "per_sample_grads_vmap": lambda p: grads.per_sample_grads(conv_apply, p, x, y, method="vmap", **bs),
        "per_sample_grads_wrt": lambda p: grads.per_sample_grads(conv_apply, p, x, y, wrt="head", **bs),
        "projected": lambda p: grads.per_sample_grads(conv_apply, p, x, y, project_dim=6, seed=3, **bs),
        "last_layer_factors": lambda p: grads.last_layer_factors(conv_embed, p, x, y, **bs),
        "last_layer_grads": lambda p: grads.last_layer_grads(conv_embed, p, x, y, **bs),
        "input_grad_norms": lambda p: grads.input_grad_norms(conv_apply, p, x, y, **bs),
        "gram_exact": lambda p: grads.gram(conv_apply, p, x, y, method="exact", **bs),
        "gram_last_layer": lambda p: grads.gram(conv_embed, p, x, y, **bs),
    }


def test_new_parameter_values_compile_nothing_and_match_a_fresh_call(data):
    x, y, _ = data
    p1, p2 = conv_params(1), conv_params(2)
    fns = calls(x, y)
    for fn in fns.values():
        fn(p1)  # compile (ragged last chunk included)
    second = {}
    for name, fn in fns.items():
        second[name], n = compiles(lambda: fn(p2))
        assert n == 0, f"{name}: {n} compilations for new parameter values of the same shapes"
    for name in ("grad_norms", "per_sample_grads", "projected", "last_layer_factors"):  # one per cache path
        grads.clear_cache()
        fresh, n = compiles(lambda: fns[name](p2))
        assert n >= 1, f"{name}: clear_cache() did not drop the compiled function"
        for a, b in zip(jax.tree_util.tree_leaves(second[name]), jax.tree_util.tree_leaves(fresh)):
            np.testing.assert_array_equal(a, b, err_msg=name)
    # ... and the values are those of p2, not of the parameters compiled with
    ref = loop_grads(conv_apply, p2, x, y)
    np.testing.assert_allclose(second["per_sample_grads"], ref, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(second["per_sample_grads_vmap"], ref, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(second["grad_norms"], np.linalg.norm(ref, axis=1), rtol=2e-5)
    np.testing.assert_allclose(second["gram_exact"], ref @ ref.T, rtol=1e-4, atol=1e-6)


def test_projection_seed_is_an_argument(data):
    x, y, _ = data
    p = conv_params(1)
    grads.per_sample_grads(conv_apply, p, x, y, project_dim=5, seed=0, batch_size=4)
    out, n = compiles(lambda: grads.per_sample_grads(conv_apply, p, x, y, project_dim=5, seed=7, batch_size=4))
    assert n == 0
    g = loop_grads(conv_apply, p, x, y)
    leaves = jax.tree_util.tree_leaves(p)
    r = grads.projection_matrix([leaf.size for leaf in leaves], range(len(leaves)), 5, seed=7)
    np.testing.assert_allclose(out, g @ r, rtol=1e-4, atol=1e-6)


def test_ragged_and_small_data_sets_share_one_chunk_shape(data):
    x, y, _ = data
    p = conv_params(1)
    grads.grad_norms(conv_apply, p, x[:8], y[:8], batch_size=4)  # two full chunks of 4
    out, n = compiles(lambda: grads.grad_norms(conv_apply, conv_params(5), x, y, batch_size=4))  # 4, 4, 2
    assert n == 0, "the ragged last chunk compiled a second shape"
    np.testing.assert_allclose(out, np.linalg.norm(loop_grads(conv_apply, conv_params(5), x, y), axis=1),
                               rtol=2e-5)
    # data sets below batch_size pad to the next power of two: 3 and 4 rows share one shape
    grads.per_sample_grads(conv_apply, p, x[:4], y[:4])
    out, n = compiles(lambda: grads.per_sample_grads(conv_apply, p, x[:3], y[:3]))
    assert n == 0
    np.testing.assert_allclose(out, loop_grads(conv_apply, p, x[:3], y[:3]), rtol=2e-5, atol=1e-6)


def test_changed_shapes_or_tree_recompile_with_correct_values(data):
    _, y, xm = data
    grads.per_sample_grads(mlp_apply, mlp_params(0), xm, y, batch_size=4)
    cases = {
        "wider hidden layer": (mlp_params(1, hidden=6), xm),
        "another tree": ({**mlp_params(2), "unused": jnp.ones((2,))}, xm),
    }
    for name, (p, xx) in cases.items():
        out, n = compiles(lambda: grads.per_sample_grads(mlp_apply, p, xx, y, batch_size=4))
        assert n >= 1, name
        np.testing.assert_allclose(out, loop_grads(mlp_apply, p, xx, y), rtol=2e-3, atol=2e-3, err_msg=name)
    # another input width (the model is shape-polymorphic in its weights' first axis)
    p = {**mlp_params(4), "w1": jnp.ones((5, 4)) * 0.1}
    x5 = np.random.default_rng(1).normal(size=(10, 5)).astype(np.float32)
    out, n = compiles(lambda: grads.grad_norms(mlp_apply, p, x5, y, batch_size=4))
    assert n >= 1
    np.testing.assert_allclose(out, np.linalg.norm(loop_grads(mlp_apply, p, x5, y), axis=1), rtol=2e-5)


def test_validation_still_runs_on_cached_calls(data):
    x, y, xm = data
    p = conv_params(1)
    grads.grad_norms(conv_apply, p, x, y, batch_size=4)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        grads.grad_norms(conv_apply, p, x, np.full(10, 3), batch_size=4)
    with pytest.raises(ValueError, match=r"labels must lie"):
        grads.per_sample_grads(conv_apply, p, x, np.full(10, -1), batch_size=4)
    bad = dict(p, head=dict(p["head"], w=p["head"]["w"].at[0, 0].set(jnp.nan)))
    with pytest.raises(FloatingPointError):
        grads.per_sample_grads(conv_apply, bad, x, y, batch_size=4)

    def twice(q, xb):  # w used twice: no ghost site
        return xb @ q["w"] @ q["w"]
    q = {"w": jnp.eye(3)}
    grads.grad_norms(twice, q, xm, y)
    for _ in range(2):
        with pytest.raises(ValueError, match="method='ghost' cannot handle"):
            grads.grad_norms(twice, q, xm, y, method="ghost")


def test_cache_does_not_keep_a_deleted_model_function_alive(data):
    x, y, xm = data

    def make():
        scale = jnp.float32(1.5)

        def apply(p, xb):  # a fresh closure, like to_pure makes
            return mlp_apply(p, xb) * scale
        return apply

    apply = make()
    p = mlp_params(0)
    size0 = grads.cache_info()["size"]
    grads.grad_norms(apply, p, xm, y)
    grads.per_sample_grads(apply, p, xm, y, project_dim=4)
    grads.losses(apply, p, xm, y)
    assert grads.cache_info()["size"] > size0
    ref = weakref.ref(apply)
    del apply
    gc.collect()
    assert ref() is None, "the grads cache keeps the model function alive"
    assert grads.cache_info()["size"] == size0


def test_bound_methods_hit_and_cache_is_bounded(data):
    _, y, xm = data

    class Model:
        def apply(self, p, xb):
            return mlp_apply(p, xb)

    m = Model()
    grads.losses(m.apply, mlp_params(0), xm, y)
    _, n = compiles(lambda: grads.losses(m.apply, mlp_params(1), xm, y))  # a new bound-method object
    assert n == 0
    old = _cache.max_size()
    try:
        grads.clear_cache()
        grads.set_cache_size(2)
        fns = [lambda p, xb, k=k: mlp_apply(p, xb) + k for k in range(3)]
        first = weakref.ref(fns[0])
        for f in fns:
            grads.losses(f, mlp_params(0), xm, y)
        info = grads.cache_info()
        assert info["size"] == 2 and info["evictions"] >= 1
        del fns, f
        gc.collect()
        assert first() is None
        with pytest.raises(ValueError, match="int >= 1"):
            grads.set_cache_size(0)
    finally:
        grads.set_cache_size(old)


def test_library_models_of_one_architecture_share_functions_and_compiles(data):
    """A new surrogate (another seed, same architecture) reuses the compiled computations."""
    from jaxsubset.models import create, to_pure

    x, y = data[2], data[1]
    a = to_pure(create("mlp", (3,), 3, seed=0))
    b = to_pure(create("mlp", (3,), 3, seed=1))
    assert a.apply_fn is b.apply_fn and a.apply_with_embedding is b.apply_with_embedding
    grads.grad_norms(a.apply_fn, a.params, x, y)
    out, n = compiles(lambda: grads.grad_norms(b.apply_fn, b.params, x, y))
    assert n == 0
    np.testing.assert_allclose(out, np.linalg.norm(loop_grads(b.apply_fn, b.params, x, y), axis=1), rtol=2e-5,
                               atol=1e-6)
    c = to_pure(create("mlp", (3,), 4, seed=0))  # another head width: another architecture
    assert c.apply_fn is not a.apply_fn
