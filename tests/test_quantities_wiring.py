"""`quantities.compute` hands every method the quantity its name promises.

Each quantity is checked against an independent reference written here with plain JAX:
a Python loop of ``jax.grad`` over single examples (parameter and input gradients), and
the cross-entropy / EL2N formulas on logits of the Flax module itself.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from jaxsubset.workflows import quantities
from jaxsubset.models import MLP, to_pure


@pytest.fixture(scope="module")
def tiny():
    """A 12-8-3 MLP (131 parameters) and 10 examples: full per-sample gradients are cheap."""
    module = MLP(12, 3, hidden=(8,), rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 12)).astype(np.float32)
    y = rng.integers(0, 3, size=10).astype(np.int32)
    return module, to_pure(module), x, y


def _example_loss(module, x1, y1):
    logits = module(x1[None])[0]
    return -jax.nn.log_softmax(logits)[y1]


def ref_param_grads(module, x, y):
    """Row i: ∇θ ℓ_i flattened in tree order (a loop of jax.grad, one example at a time)."""
    graphdef, params = nnx.split(module, nnx.Param)

    def loss(p, x1, y1):
        return _example_loss(nnx.merge(graphdef, p), x1, y1)

    g = jax.jit(jax.grad(loss))
    return np.stack([np.asarray(ravel_pytree(g(params, x[i], y[i]))[0]) for i in range(len(y))])


def ref_input_grad_norms(module, x, y):
    g = jax.jit(jax.grad(lambda x1, y1: _example_loss(module, x1, y1)))
    return np.array([np.linalg.norm(np.asarray(g(x[i], y[i]))) for i in range(len(y))])


def ref_head_grads(module, x, y):
    """Per-example gradients of the head's kernel and bias only (loop of jax.grad)."""
    h = np.asarray(module.features(jnp.asarray(x)))
    W, b = module.head.kernel[...], module.head.bias[...]

    def loss(W, b, h1, y1):
        return -jax.nn.log_softmax(h1 @ W + b)[y1]

    g = jax.jit(jax.grad(loss, argnums=(0, 1)))
    return np.stack([np.concatenate([np.ravel(a) for a in g(W, b, h[i], y[i])]) for i in range(len(y))])


def test_loss_and_el2n_are_the_formulas_on_the_module_logits(tiny):
    module, m, x, y = tiny
    q = quantities.compute(["loss", "el2n"], m, x, y)
    logits = np.asarray(module(jnp.asarray(x)), np.float64)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    np.testing.assert_allclose(q["loss"], -logp[np.arange(10), y], rtol=1e-5)
    p = np.exp(logp)
    np.testing.assert_allclose(q["el2n"], np.linalg.norm(p - np.eye(3)[y], axis=1), rtol=1e-5)


def test_grad_norm_is_the_per_sample_parameter_gradient_norm(tiny):
    module, m, x, y = tiny
    q = quantities.compute(["grad_norm", "input_grad_norm"], m, x, y)
    G = ref_param_grads(module, x, y)
    np.testing.assert_allclose(q["grad_norm"], np.linalg.norm(G, axis=1), rtol=1e-4)
    ig = ref_input_grad_norms(module, x, y)
    np.testing.assert_allclose(q["input_grad_norm"], ig, rtol=1e-4)
    # the two quantities really differ here, so swapping them cannot pass
    assert np.max(np.abs(q["grad_norm"] / ig - 1)) > 0.1


def test_grads_and_last_layer_factors_are_the_head_gradients(tiny):
    module, m, x, y = tiny
    q = quantities.compute(["grads", "last_layer_e", "last_layer_h"], m, x, y)
    H = ref_head_grads(module, x, y)
    assert q["grads"].shape == (10, 3 * 9)
    # layout-free comparison: inner products (what CRAIG / GRAD-MATCH consume) and norms
    np.testing.assert_allclose(q["grads"] @ q["grads"].T, H @ H.T, rtol=1e-4, atol=1e-6)
    # documented layout: row.reshape(C, d+1)[:, :d].T is the kernel gradient, [:, d] the bias
    r = q["grads"].reshape(10, 3, 9)
    np.testing.assert_allclose(np.transpose(r[:, :, :8], (0, 2, 1)).reshape(10, -1), H[:, :24], rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(r[:, :, 8], H[:, 24:], rtol=1e-4, atol=1e-6)
    logits = np.asarray(module(jnp.asarray(x)))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(q["last_layer_e"], p - np.eye(3)[y], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(q["last_layer_h"], np.asarray(module.features(jnp.asarray(x))), rtol=1e-5)


def test_projected_grads_preserve_inner_products_of_the_full_gradients(tiny):
    module, m, x, y = tiny
    P = quantities.compute(["grads_projected"], m, x, y)["grads_projected"]
    G = ref_param_grads(module, x, y).astype(np.float64)
    assert P.shape == (10, 512)
    # a 512-dim JL sketch keeps norms within a few percent (131 -> 512 dims)
    np.testing.assert_allclose(np.linalg.norm(P, axis=1), np.linalg.norm(G, axis=1), rtol=0.15)
    cos_ref = (G @ G.T) / np.outer(np.linalg.norm(G, axis=1), np.linalg.norm(G, axis=1))
    cos = (P @ P.T) / np.outer(np.linalg.norm(P, axis=1), np.linalg.norm(P, axis=1))
    np.testing.assert_allclose(cos, cos_ref, atol=0.15)


def test_compute_order_unknown_names_and_groups(tiny):
    _, m, x, y = tiny
    q = quantities.compute(["el2n", "loss", "el2n"], m, x, y)
    assert list(q) == ["el2n", "loss"]
    with pytest.raises(ValueError, match="grad_norm"):
        quantities.compute(["gradnorm"], m, x, y)


def test_register_quantity_end_to_end(tiny):
    """A user quantity reaches a user method through select(), and the registry refuses duplicates."""
    from jaxsubset import selectors
    from jaxsubset.subset import Subset

    _, m, x, y = tiny
    qname, mname = "test_wiring_first_logit", "test_wiring_top_first_logit"
    seen = {}

    def first_logit(model, xs, ys, *, batch_size=1024):
        return np.asarray(model.apply_fn(model.params, jnp.asarray(xs)))[:, 0]

    def pick(values, budget, *, seed=0):
        seen.setdefault("calls", []).append((np.asarray(values).copy(), budget, seed))
        return Subset.unweighted(np.argsort(-np.asarray(values), kind="stable")[:budget])

    quantities.register_quantity(qname, first_logit)
    method = selectors.register(mname, pick, needs=[qname], largest=True)
    try:
        assert selectors.get(mname) is method and method.name == mname and method.needs == (qname,)
        assert method.description == "" and method.per_class is True and method.validation is False
        assert dict(method.kwargs) == {"largest": True}
        other = selectors.register(mname + "_v", pick, needs=(qname,), per_class=False, validation=True)
        assert other.per_class is False and other.validation is True and other.name == mname + "_v"
        selectors.METHODS[mname] = method = selectors.Method(mname, pick, (qname,), "test only")
        with pytest.raises(ValueError, match="already registered"):
            quantities.register_quantity(qname, first_logit)
        with pytest.raises(ValueError, match="already registered"):
            selectors.register(mname, pick, needs=(qname,))
        q = quantities.compute([qname], m, x, y)
        z0 = np.asarray(m.apply_fn(m.params, jnp.asarray(x)))[:, 0]
        np.testing.assert_allclose(q[qname], z0)
        sub = selectors.select(mname, y, 6, q, seed=3, num_classes=3)
        # reference: per class, the highest first logits, class budgets by largest remainder
        from jaxsubset import per_class_budget

        want = []
        for c, b in enumerate(per_class_budget(y, 6, 3)):
            rows = np.flatnonzero(y == c)
            want += rows[np.argsort(-z0[rows], kind="stable")[:b]].tolist()
        assert sub.indices.tolist() == sorted(want) and sub.info["method"] == mname
        # seed + class index reaches a per-class method that takes a seed
        assert sorted(s for _, _, s in seen["calls"]) == [3 + c for c in range(3) if np.any(y == c)]
        with pytest.raises(ValueError, match="needs quantities"):
            selectors.select(mname, y, 6, {})
    finally:
        quantities.QUANTITIES.pop(qname, None)
        selectors.METHODS.pop(mname, None)
        selectors.METHODS.pop(mname + "_v", None)
