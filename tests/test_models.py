import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxsubset.models import create, to_pure
from jaxsubset.models.cnn import _pool


@pytest.mark.parametrize("shape", [(3, 8, 8, 4), (3, 7, 9, 2), (3, 40, 5), (2, 1, 6, 3)])
def test_pool_equals_flax_max_pool(shape):
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    win = tuple(2 if s >= 2 else 1 for s in shape[1:-1])
    np.testing.assert_array_equal(_pool(x), nnx.max_pool(x, window_shape=win, strides=win, padding="VALID"))


def random_fill(abstract):
    """The module with NumPy normal draws for every variable: ResNet-18's initializers (a truncated normal
    per kernel shape) compile for ~15 s of CPU, and the checks below hold for any parameter values."""
    graphdef, state = nnx.split(abstract)
    rng = np.random.default_rng(0)
    state = jax.tree_util.tree_map(lambda a: (rng.normal(size=a.shape) / np.sqrt(np.prod(a.shape[:-1]) or 1.0))
                                   .astype(a.dtype), state)
    return nnx.merge(graphdef, state)


@pytest.mark.parametrize("name,shape,d", [("mlp", (8, 8, 1), 256), ("cnn", (8, 8, 1), 128), ("cnn", (40, 1), 128),
                                          ("resnet18", (16, 16, 3), 64)])
def test_pure_pair_matches_module_and_examples_do_not_interact(name, shape, d):
    if name == "resnet18":  # the full architecture at 1/8 width keeps the test fast
        from jaxsubset.models import ResNet18
        module = random_fill(nnx.eval_shape(lambda: ResNet18(3, 7, width=8, rngs=nnx.Rngs(0))))
    else:
        module = create(name, shape, 7, seed=0)
    pure = to_pure(module)
    x = jax.random.uniform(jax.random.PRNGKey(1), (4, *shape))
    embed = jax.jit(pure.apply_with_embedding)
    z, h = embed(pure.params, x)
    assert z.shape == (4, 7) and h.shape == (4, d) and pure.head_key == "head"
    if name == "resnet18":  # compile ResNet-18 once: its logits come from the embedding form only
        apply = lambda p, xb: embed(p, xb)[0]
    else:
        apply = jax.jit(pure.apply_fn)
        np.testing.assert_allclose(apply(pure.params, x), nnx.jit(lambda m, x: m(x))(module, x), rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_allclose(z, apply(pure.params, x), rtol=1e-6)
    logits = z
    # no normalization mixes examples: example 0 among other examples gives the same logits
    others = jax.random.uniform(jax.random.PRNGKey(2), (3, *shape)) * 5.0
    np.testing.assert_allclose(apply(pure.params, jnp.concatenate([x[:1], others]))[0], logits[0],
                               rtol=1e-4, atol=1e-5)


def test_bad_model_requests():
    with pytest.raises(ValueError, match="mlp"):
        create("vgg", (8, 8, 1), 10)
    with pytest.raises(ValueError, match="image"):
        create("resnet18", (40, 1), 10)
    bn = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="GroupNorm"):
        to_pure(bn)
