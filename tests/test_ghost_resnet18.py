"""The full ResNet-18 (not a toy block) takes the ghost path of `grads.grad_norms` everywhere, and its
ghost norms equal the norms of a loop of `jax.grad` over single examples (issue 23).

1/16 width, 8×8 inputs, 3 examples; parameters are NumPy draws (any values serve, and the library's
initializers would compile for ~15 s of CPU). Compiling ResNet-18's backward pass twice (ghost and
reference) still takes ~20 s of CPU: a `smoke` test (`pytest -m smoke`, CI's second command).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree
from test_models import random_fill

from jaxsubset import grads
from jaxsubset.models import ResNet18, to_pure


@pytest.mark.smoke
def test_full_resnet18_ghost_norms_equal_a_loop_of_jax_grad():
    model = to_pure(random_fill(nnx.eval_shape(lambda: ResNet18(3, 5, width=4, rngs=nnx.Rngs(0)))))
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(3, 8, 8, 3)).astype(np.float32)
    y = np.array([0, 3, 4])
    paths = grads.describe_grad_norms(model.apply_fn, model.params, x)
    assert len(paths) >= 40 and all(v.startswith("ghost") for v in paths.values()), paths
    ghost = grads.grad_norms(model.apply_fn, model.params, x, y, method="ghost")

    def loss(p, x1, y1):
        return -jax.nn.log_softmax(model.apply_fn(p, x1[None])[0])[y1]

    g = jax.jit(jax.grad(loss))
    ref = [np.linalg.norm(np.asarray(ravel_pytree(g(model.params, jnp.asarray(x[i]), y[i]))[0], np.float64))
           for i in range(3)]
    np.testing.assert_allclose(ghost, ref, rtol=2e-4)
    assert np.ptp(ref) > 1e-3 * max(ref)  # three different norms: a mix-up of examples would show
