"""Ghost gradient norms against materialized per-sample gradients (vmap of grad)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from jaxsubset import grads
from jaxsubset.grads import _trace
from jaxsubset.models import CNN, MLP, to_pure
from jaxsubset.models.resnet import BasicBlock

RTOL = 1e-4


def _data(shape, c, n=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape)).astype(np.float32), rng.integers(0, c, n)


def _check(apply_fn, params, x, y, expect_ghost=True, check_grads=True):
    """Ghost norms equal the norms of materialized (vmap) gradients, and the probe-based
    per-sample gradients equal vmap's entry by entry (so their layout is right too)."""
    ghost = grads.grad_norms(apply_fn, params, x, y, method="ghost" if expect_ghost else "auto", batch_size=3)
    ref = grads.per_sample_grads(apply_fn, params, x, y, method="vmap")
    np.testing.assert_allclose(ghost, np.linalg.norm(ref, axis=1), rtol=RTOL)
    if check_grads:
        fast = grads.per_sample_grads(apply_fn, params, x, y, method="probe", batch_size=3)
        np.testing.assert_allclose(fast, ref, rtol=RTOL, atol=1e-6 * np.abs(ref).max())
    return ghost


class SmallResNet(nnx.Module):
    """ResNet-18's pieces at toy size: GroupNorm stem, a stride-2 BasicBlock with projection, a head."""

    def __init__(self, rngs):
        self.stem = nnx.Conv(3, 4, (3, 3), padding=1, use_bias=False, rngs=rngs)
        self.stem_norm = nnx.GroupNorm(4, num_groups=2, rngs=rngs)
        self.block = BasicBlock(4, 8, 2, rngs=rngs)
        self.head = nnx.Linear(8, 4, rngs=rngs)

    def __call__(self, x):
        h = jax.nn.relu(self.stem_norm(self.stem(x)))
        return self.head(jnp.mean(self.block(h), axis=(1, 2)))


@functools.lru_cache(maxsize=None)
def _nnx(name):
    r = nnx.Rngs(0)
    if name == "mlp":
        return to_pure(MLP(10, 3, hidden=(6, 5), rngs=r)), (10,), 3
    if name == "cnn":
        return to_pure(CNN((8, 8, 2), 3, channels=(3, 4), hidden=5, rngs=r)), (8, 8, 2), 3
    if name == "cnn1d":
        return to_pure(CNN((12, 1), 3, channels=(3, 4), hidden=5, rngs=r)), (12, 1), 3
    return to_pure(SmallResNet(r)), (8, 8, 3), 4


@pytest.mark.parametrize("name", ["mlp", "cnn", "cnn1d", "resnet"])
def test_library_models_take_the_ghost_path(name):
    model, shape, c = _nnx(name)
    x, y = _data(shape, c)
    paths = grads.describe_grad_norms(model.apply_fn, model.params, x)
    assert all(v.startswith("ghost") for v in paths.values()), paths
    # per_sample_grads on these models is checked against a loop in test_grads_per_sample.
    _check(model.apply_fn, model.params, x, y, check_grads=False)


def _conv_model(dn, strides, padding, lhs_dil=(1, 1), rhs_dil=(1, 1), bias=True):
    """A conv (layout ``dn``) -> relu -> mean-pool -> dense head, as a raw apply_fn."""
    rng = np.random.default_rng(1)
    lhs, rhs, out = dn
    c_in, c_out, k = 2, 3, (3, 2)
    kshape = {"H": k[0], "W": k[1], "I": c_in, "O": c_out}
    params = {"w": jnp.asarray(rng.normal(size=[kshape[a] for a in rhs]), jnp.float32) * 0.5,
              "head": jnp.asarray(rng.normal(size=(c_out, 4)), jnp.float32)}
    if bias:
        params["b"] = jnp.asarray(rng.normal(size=(c_out,)), jnp.float32)

    def apply_fn(p, xb):
        if lhs == "NCHW":
            xb = jnp.transpose(xb, (0, 3, 1, 2))
        h = lax.conv_general_dilated(xb, p["w"], strides, padding, lhs_dilation=lhs_dil, rhs_dilation=rhs_dil,
                                     dimension_numbers=dn)
        feat_axis = out.index("C")
        if bias:
            shape = [1] * 4
            shape[feat_axis] = -1
            h = h + p["b"].reshape(shape)
        h = jnp.tanh(h)
        pooled = jnp.mean(h, axis=tuple(i for i in range(1, 4) if i != feat_axis))
        return pooled @ p["head"]

    return apply_fn, params


@pytest.mark.parametrize("dn,strides,padding,lhs_dil,rhs_dil", [
    (("NHWC", "HWIO", "NHWC"), (1, 1), "SAME", (1, 1), (1, 1)),
    (("NHWC", "HWIO", "NHWC"), (2, 1), "VALID", (1, 1), (1, 1)),
    (("NHWC", "HWIO", "NHWC"), (2, 2), ((1, 2), (0, 1)), (1, 1), (2, 1)),
    (("NHWC", "HWIO", "NHWC"), (1, 1), ((1, 1), (1, 1)), (2, 2), (1, 1)),  # transposed-style conv
    (("NCHW", "OIHW", "NCHW"), (2, 2), "SAME", (1, 1), (1, 1)),
])
def test_conv_variants(dn, strides, padding, lhs_dil, rhs_dil):
    apply_fn, params = _conv_model(dn, strides, padding, lhs_dil, rhs_dil)
    x, y = _data((7, 6, 2), 4)
    _check(apply_fn, params, x, y)


@pytest.mark.parametrize("method", ["outer", "ghost", "materialize"])
def test_gram_norm_forms_agree(method):
    rng = np.random.default_rng(2)
    t = 1 if method == "outer" else 6
    a = rng.normal(size=(2, t, 5)).astype(np.float32)
    g = rng.normal(size=(2, t, 4)).astype(np.float32)
    ref = sum(np.sum((a[b].T @ g[b]) ** 2) for b in range(2))
    np.testing.assert_allclose(float(_trace._gram_norm(jnp.asarray(a), jnp.asarray(g), method)), ref, rtol=1e-5)


@pytest.mark.parametrize("seq", [3, 40])  # short sequences take the ghost form, long ones materialize
def test_dense_over_sequences_and_einsum_with_weight_on_the_left(seq):
    rng = np.random.default_rng(3)
    d, p = 12, 16
    params = {"w": jnp.asarray(rng.normal(size=(d, p)) * 0.3, jnp.float32),
              "v": jnp.asarray(rng.normal(size=(3, p)) * 0.3, jnp.float32),  # used as v @ h^T: weight on lhs
              "s": jnp.ones((p,), jnp.float32)}

    def apply_fn(prm, xb):
        h = jnp.tanh(jnp.einsum("btd,dp->btp", xb, prm["w"]) * prm["s"])
        z = jnp.einsum("cp,btp->bct", prm["v"], h)
        return jnp.mean(z, axis=-1)

    x, y = _data((seq, d), 3)
    paths = grads.describe_grad_norms(apply_fn, params, x)
    assert paths["w"] == ("ghost: dense (ghost)" if seq == 3 else "ghost: dense (materialize)")
    assert paths["s"] == "ghost: scale (reduce)"
    _check(apply_fn, params, x, y)


def test_unsupported_uses_fall_back_per_leaf():
    rng = np.random.default_rng(4)
    params = {"w": jnp.asarray(rng.normal(size=(6, 6)) * 0.4, jnp.float32),   # used twice (tied)
              "u": jnp.asarray(rng.normal(size=(6,)), jnp.float32),         # through sin
              "r": jnp.asarray(rng.normal(size=(6, 6)) * 0.4, jnp.float32),  # inside a scan
              "head": jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)}

    def apply_fn(p, xb):
        h = jnp.tanh(xb @ p["w"])
        h = jnp.tanh(h @ p["w"].T + jnp.sin(p["u"]))
        h, _ = lax.scan(lambda c, _: (jnp.tanh(c @ p["r"]), None), h, None, length=2)
        return h @ p["head"]

    x, y = _data((6,), 3)
    paths = grads.describe_grad_norms(apply_fn, params, x)
    assert paths["head"].startswith("ghost")
    for name in ("w", "u", "r"):
        assert paths[name].startswith("vmap"), paths
    with pytest.raises(ValueError, match="method='ghost' cannot handle"):
        grads.grad_norms(apply_fn, params, x, y, method="ghost")
    _check(apply_fn, params, x, y, expect_ghost=False)


def test_wrt_restricts_the_norm():
    model, shape, c = _nnx("mlp")
    x, y = _data(shape, c)
    head = grads.grad_norms(model.apply_fn, model.params, x, y, wrt="head")
    ref = np.linalg.norm(grads.last_layer_grads(model.apply_with_embedding, model.params, x, y), axis=1)
    np.testing.assert_allclose(head, ref, rtol=RTOL)


def test_vmap_method_matches_materialized_norms():
    model, shape, c = _nnx("mlp")
    x, y = _data(shape, c)
    ref = np.linalg.norm(grads.per_sample_grads(model.apply_fn, model.params, x, y), axis=1)
    np.testing.assert_allclose(grads.grad_norms(model.apply_fn, model.params, x, y, method="vmap"), ref, rtol=RTOL)


def test_unknown_method():
    model, shape, c = _nnx("mlp")
    x, y = _data(shape, c)
    with pytest.raises(ValueError, match="Unknown method"):
        grads.grad_norms(model.apply_fn, model.params, x, y, method="fast")
