"""Exact per-sample gradients against a Python loop of jax.grad and closed forms."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxsubset import grads
from jaxsubset.grads import cross_entropy
from jaxsubset.models import CNN, MLP, to_pure
from jaxsubset.models.resnet import BasicBlock


class BlockNet(nnx.Module):
    """One ResNet-18 basic block (stride 2, projection shortcut, GroupNorm) and a linear head."""

    def __init__(self, rngs):
        self.block = BasicBlock(3, 8, 2, rngs=rngs)
        self.head = nnx.Linear(8, 4, rngs=rngs)

    def features(self, x):
        return jnp.mean(self.block(x), axis=(1, 2))

    def __call__(self, x):
        return self.head(self.features(x))


@functools.lru_cache(maxsize=None)
def _model(name):
    """(PureModel, per-example input shape, number of classes); built once per session."""
    r = nnx.Rngs(0)
    if name == "mlp":
        return to_pure(MLP(12, 3, hidden=(7, 5), rngs=r)), (12,), 3
    if name == "cnn":
        return to_pure(CNN((6, 6, 2), 3, channels=(3, 4), hidden=5, rngs=r)), (6, 6, 2), 3
    return to_pure(BlockNet(r)), (6, 6, 3), 4


def _loop_reference(apply_fn, params, x, y):
    """A Python loop of jax.grad over single examples, flattened in tree order."""
    def loss(p, xi, yi):
        return cross_entropy(apply_fn(p, xi[None]), jnp.asarray([yi]))[0]
    grad = jax.jit(jax.grad(loss))  # one example at a time: no vmap involved
    rows = []
    for xi, yi in zip(x, y):
        g = grad(params, jnp.asarray(xi), jnp.int32(yi))
        rows.append(np.concatenate([np.ravel(leaf) for leaf in jax.tree_util.tree_leaves(g)]))
    return np.stack(rows)


def _rel(a, b):
    return np.linalg.norm(a - b, axis=-1) / np.maximum(np.linalg.norm(b, axis=-1), 1e-30)


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet_block"])
def test_matches_python_loop_and_batched_mean(name):
    model, shape, c = _model(name)
    rng = np.random.default_rng(1)
    n = 5
    x = rng.normal(size=(n, *shape)).astype(np.float32)
    y = rng.integers(0, c, n)
    ref = _loop_reference(model.apply_fn, model.params, x, y)
    for method in ("auto", "vmap", "probe"):
        g = grads.per_sample_grads(model.apply_fn, model.params, x, y, method=method, batch_size=2)
        assert g.shape == ref.shape
        assert np.max(_rel(g, ref)) < 1e-5, method
    # The mean of per-sample gradients is the gradient of the mean loss over the batch.
    batched = jax.jit(jax.grad(lambda p: jnp.mean(cross_entropy(model.apply_fn(p, jnp.asarray(x)),
                                                                 jnp.asarray(y)))))(model.params)
    flat = np.concatenate([np.ravel(v) for v in jax.tree_util.tree_leaves(batched)])
    assert _rel(g.mean(0), flat) < 1e-5


def test_softmax_regression_closed_form():
    rng = np.random.default_rng(2)
    n, d, c = 9, 6, 4
    w = rng.normal(size=(d, c)).astype(np.float32)
    params = {"w": jnp.asarray(w)}
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.integers(0, c, n)
    g = grads.per_sample_grads(lambda p, xb: xb @ p["w"], params, x, y, batch_size=4)
    z = x @ w
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    e = p - np.eye(c)[y]
    ref = np.einsum("nd,nc->ndc", x, e).reshape(n, -1)  # dL/dW = x (p - onehot)^T, W is (d, c)
    np.testing.assert_allclose(g, ref, rtol=1e-5, atol=1e-6)


def test_chunk_size_invariance_and_ragged_last_chunk():
    model, shape, c = _model("mlp")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(7, *shape)).astype(np.float32)
    y = rng.integers(0, c, 7)
    outs = [grads.per_sample_grads(model.apply_fn, model.params, x, y, batch_size=b) for b in (7, 2, 3)]
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], rtol=1e-5, atol=1e-7)
    p1 = grads.per_sample_grads(model.apply_fn, model.params, x, y, project_dim=8, batch_size=3)
    p2 = grads.per_sample_grads(model.apply_fn, model.params, x, y, project_dim=8, batch_size=4)
    np.testing.assert_allclose(p1, p2, rtol=1e-5, atol=1e-6)


def test_wrt_selects_leaves_and_last_layer_closed_form():
    model, shape, c = _model("mlp")
    rng = np.random.default_rng(4)
    x = rng.normal(size=(6, *shape)).astype(np.float32)
    y = rng.integers(0, c, 6)
    full = grads.per_sample_grads(model.apply_fn, model.params, x, y)
    names = grads.leaf_names(model.params)
    sizes = [leaf.size for leaf in jax.tree_util.tree_leaves(model.params)]
    offsets = np.cumsum([0] + sizes)
    head = grads.per_sample_grads(model.apply_fn, model.params, x, y, wrt="head")
    idx = [i for i, nm in enumerate(names) if nm.startswith("head/")]
    expect = np.concatenate([full[:, offsets[i]:offsets[i + 1]] for i in idx], axis=1)
    np.testing.assert_allclose(head, expect, rtol=1e-6)
    pred = grads.per_sample_grads(model.apply_fn, model.params, x, y, wrt=lambda nm, _: nm == "head/kernel")
    k = names.index("head/kernel")
    np.testing.assert_allclose(pred, full[:, offsets[k]:offsets[k + 1]])

    # last_layer_grads: row = e ⊗ [h, 1]; nnx.Linear head is bias (C,) then kernel (d, C) in tree order.
    ll = grads.last_layer_grads(model.apply_with_embedding, model.params, x, y, batch_size=4)
    d = model.params["head"]["kernel"][...].shape[0]
    assert ll.shape == (6, c * (d + 1))
    ll = ll.reshape(6, c, d + 1)
    bias, kernel = head[:, :c], head[:, c:].reshape(6, d, c)
    np.testing.assert_allclose(ll[:, :, d], bias, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.swapaxes(ll[:, :, :d], 1, 2), kernel, rtol=1e-5, atol=1e-6)


def test_input_grad_norms_match_loop():
    model, shape, c = _model("cnn")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(5, *shape)).astype(np.float32)
    y = rng.integers(0, c, 5)
    out = grads.input_grad_norms(model.apply_fn, model.params, x, y, batch_size=2)
    loss = lambda xi, yi: cross_entropy(model.apply_fn(model.params, xi[None]), jnp.asarray([yi]))[0]
    grad = jax.jit(jax.grad(loss))
    ref = [np.linalg.norm(grad(jnp.asarray(xi), jnp.int32(yi))) for xi, yi in zip(x, y)]
    np.testing.assert_allclose(out, ref, rtol=1e-5)


def test_losses_and_el2n_unchanged_api():
    model, shape, c = _model("mlp")
    rng = np.random.default_rng(6)
    x = rng.normal(size=(5, *shape)).astype(np.float32)
    y = rng.integers(0, c, 5)
    z = np.asarray(model.apply_fn(model.params, jnp.asarray(x)), np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(grads.losses(model.apply_fn, model.params, x, y, batch_size=2),
                               -np.log(p[np.arange(5), y]), rtol=1e-5)
    np.testing.assert_allclose(grads.el2n((model.apply_fn, model.params), x, y),
                               np.linalg.norm(p - np.eye(c)[y], axis=1), rtol=1e-5)


def test_bad_input_raises_clear_errors():
    model, shape, c = _model("mlp")
    rng = np.random.default_rng(7)
    x = rng.normal(size=(4, *shape)).astype(np.float32)
    y = rng.integers(0, c, 4)
    f, p = model.apply_fn, model.params
    with pytest.raises(ValueError, match="rows"):
        grads.per_sample_grads(f, p, x, y[:3])
    with pytest.raises(ValueError, match="labels must lie"):
        grads.per_sample_grads(f, p, x, np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="labels must lie"):
        grads.grad_norms(f, p, x, np.array([0, -1, 0, 0]))
    with pytest.raises(ValueError, match="project_dim"):
        grads.per_sample_grads(f, p, x, y, project_dim=0)
    with pytest.raises(ValueError, match="selects no parameter"):
        grads.per_sample_grads(f, p, x, y, wrt="nope")
    with pytest.raises(TypeError, match="integer"):
        grads.per_sample_grads(f, p, x, y.astype(np.float32))
    with pytest.raises(TypeError, match="apply_with_embedding"):
        grads.last_layer_grads(f, p, x, y)
    bad = x.copy()
    bad[2, 0] = np.nan
    with pytest.raises(FloatingPointError, match=r"rows \[2\]"):
        grads.per_sample_grads(f, p, bad, y)
    with pytest.raises(FloatingPointError, match=r"rows \[2\]"):
        grads.grad_norms(f, p, bad, y)
    with pytest.raises(FloatingPointError, match=r"rows \[2\]"):
        grads.last_layer_grads(model.apply_with_embedding, p, bad, y)


def test_huge_but_finite_gradients_are_not_reported_as_non_finite():
    # Entries of 1.5e37 are finite, but a row's sum overflows float32; the on-device row
    # sums flag the rows and the exact re-check must clear them.
    c, d = 2, 40
    x = np.full((3, d), 1.5e37, np.float32)
    y = np.array([0, 1, 0])
    g = grads.per_sample_grads(lambda p, xb: xb @ p["w"], {"w": jnp.zeros((d, c))}, x, y)
    e = np.full((3, c), 0.5, np.float32) - np.eye(c, dtype=np.float32)[y]
    np.testing.assert_allclose(g, np.einsum("nd,nc->ndc", x, e).reshape(3, -1), rtol=1e-6)


def test_fit_rows_shrinks_cpu_chunks_to_the_budget(monkeypatch):
    from jaxsubset.grads import chunking, per_sample
    from jaxsubset.grads.chunking import fit_rows

    x = np.zeros((64, 4), np.float32)
    wide = jax.jit(lambda xb: jnp.tile(xb, (1, 2**18)))  # 4 MiB of output per row
    assert fit_rows(wide, (x,), 64, budget=16 * 2**20) == 4  # outputs are counted in full
    assert fit_rows(wide, (x,), 64, budget=2**40) == 64
    assert fit_rows(wide, (x,), 3) == 3  # never more rows than asked for
    assert fit_rows(lambda xb: xb, (x,), 64) == 64  # not jitted: kept
    assert fit_rows(jax.jit(lambda xb: 2 * xb), (x,), 64) == 64  # 16 bytes per row
    # chunks of the size fit_rows picks give the same per-sample gradients as one chunk
    model, shape, c = _model("cnn")
    rng = np.random.default_rng(4)
    xs = rng.normal(size=(20, *shape)).astype(np.float32)
    ys = rng.integers(0, c, 20)
    whole = grads.per_sample_grads(model.apply_fn, model.params, xs, ys, batch_size=20)
    calls = []
    monkeypatch.setattr(chunking, "CPU_CALL_BYTES", 2048)  # a few rows of this tiny CNN's gradients
    monkeypatch.setattr(per_sample, "iter_chunks", lambda *a, **k: calls.append(k["batch_size"]) or
                        _chunk.iter_chunks(*a, **k))
    small = grads.per_sample_grads(model.apply_fn, model.params, xs, ys, batch_size=20)
    assert 1 <= calls[-1] < 20
    np.testing.assert_allclose(small, whole, rtol=1e-5, atol=1e-7)


def test_out_of_memory_suggests_smaller_batch_size():
    def fn(xb):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1 TB")
    with pytest.raises(MemoryError, match="smaller batch_size"):
        grads.chunked_map(fn, (np.zeros((4, 2)),), batch_size=2)


def test_iterator_of_batches_equals_arrays():
    from jaxsubset import grads
    from jaxsubset.models import create, to_pure

    m = to_pure(create("mlp", (6,), 3, seed=0))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(23, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=23)

    def loader():  # uneven batches, as a data loader would give
        for s in range(0, 23, 7):
            yield x[s:s + 7], y[s:s + 7]

    np.testing.assert_allclose(grads.losses(m.apply_fn, m.params, loader(), None),
                               grads.losses(m.apply_fn, m.params, x, y), rtol=1e-6)
    np.testing.assert_allclose(grads.grad_norms(m.apply_fn, m.params, loader(), None, batch_size=8),
                               grads.grad_norms(m.apply_fn, m.params, x, y, batch_size=8), rtol=1e-5)
    np.testing.assert_allclose(grads.per_sample_grads(m.apply_fn, m.params, loader(), None, batch_size=8),
                               grads.per_sample_grads(m.apply_fn, m.params, x, y, batch_size=8), rtol=1e-5)
    with pytest.raises(TypeError, match="pairs"):
        grads.losses(m.apply_fn, m.params, iter([x[:2]]), None)
    with pytest.raises(ValueError, match="empty"):
        grads.losses(m.apply_fn, m.params, iter([]), None)
