"""Adaptive training hands the method the gradient features ``scores=`` names, of the current model.

A method registered here records the ``grads`` array it receives from ``fit_adaptive(...)``;
the references are a loop of ``jax.grad`` over single examples (all parameters), the same loop
on the head only, and the full gradients times the documented JL matrix.
"""

import jax
import numpy as np
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from jaxsubset import Subset, data, selectors
from jaxsubset.grads import projection_matrix
from jaxsubset.models import MLP
from jaxsubset.workflows.adaptive import fit_adaptive

NAME = "test_adaptive_scores_capture"


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 12)).astype(np.float32)
    y = np.arange(30) % 3
    return data.from_arrays(x, y, x[:6], y[:6])


@pytest.fixture(scope="module")
def capture():
    seen = []

    def record(g, budget, *, seed=0):
        seen.append(np.asarray(g).copy())
        return Subset.unweighted(np.arange(budget))

    selectors.register(NAME, record, needs=("grads",), per_class=False, description="test only")
    yield seen
    selectors.METHODS.pop(NAME, None)


def _module():
    return MLP(12, 3, hidden=(8,), rngs=nnx.Rngs(0))


def _param_grads(module, x, y):
    graphdef, params = nnx.split(module, nnx.Param)

    def loss(p, x1, y1):
        return -jax.nn.log_softmax(nnx.merge(graphdef, p)(x1[None])[0])[y1]

    g = jax.jit(jax.grad(loss))
    rows = [ravel_pytree(g(params, x[i], y[i]))[0] for i in range(len(y))]
    sizes = [leaf.size for leaf in jax.tree_util.tree_leaves(params)]
    return np.stack([np.asarray(r) for r in rows]), sizes


def _fit(tiny, scores, epochs=1):
    return fit_adaptive(_module(), tiny, NAME, 9, epochs=epochs, batch_size=8, seed=5, progress=False, select_every=1,
                        warm_start_epochs=0, scores=scores)


def test_full_scores_are_all_parameter_per_sample_gradients(tiny, capture):
    capture.clear()
    _fit(tiny, "full")
    G, _ = _param_grads(_module(), tiny.x_train, tiny.y_train)
    assert capture[0].shape == G.shape == (30, 12 * 8 + 8 + 8 * 3 + 3)
    np.testing.assert_allclose(capture[0], G, rtol=1e-4, atol=1e-7)


def test_projected_scores_are_the_full_gradients_times_the_jl_matrix(tiny, capture):
    capture.clear()
    _fit(tiny, "projected")
    G, sizes = _param_grads(_module(), tiny.x_train, tiny.y_train)
    R = projection_matrix(sizes, list(range(len(sizes))), 512, seed=5)  # fit's seed seeds the sketch
    np.testing.assert_allclose(capture[0], G @ R, rtol=1e-3, atol=1e-5)


def test_last_layer_scores_are_the_head_gradients(tiny, capture):
    capture.clear()
    _fit(tiny, "last_layer")
    module = _module()
    G, sizes = _param_grads(module, tiny.x_train, tiny.y_train)
    # tree order: head bias (3), head kernel (8 x 3), then the hidden layer; the head's gradients in the
    # documented layout row.reshape(C, d+1): kernel column c then bias c
    names = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(nnx.split(module, nnx.Param)[1])]
    off = np.cumsum([0] + sizes)
    kb = names.index(next(n for n in names if "head" in n and "bias" in n))
    kk = names.index(next(n for n in names if "head" in n and "kernel" in n))
    bias = G[:, off[kb]:off[kb + 1]]
    kernel = G[:, off[kk]:off[kk + 1]].reshape(30, 8, 3)
    want = np.concatenate([np.transpose(kernel, (0, 2, 1)), bias[:, :, None]], axis=2).reshape(30, -1)
    np.testing.assert_allclose(capture[0], want, rtol=1e-4, atol=1e-7)


def test_each_selection_uses_the_current_parameters(tiny, capture):
    capture.clear()
    res = _fit(tiny, "full", epochs=3)
    assert [s["epoch"] for s in res.history["selections"]] == [0, 1, 2] and len(capture) == 3
    assert np.abs(capture[1] - capture[0]).max() > 1e-4 and np.abs(capture[2] - capture[1]).max() > 1e-4
