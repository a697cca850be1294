import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsubset.models import create, to_pure
from jaxsubset.models.weights import flatten_params, load_params, save_params


def test_roundtrip_keeps_everything_but_the_head(tmp_path):
    src = to_pure(create("cnn", (8, 8, 1), 10, seed=1))
    path = str(tmp_path / "w.npz")
    save_params(src.params, path)
    dst = to_pure(create("cnn", (8, 8, 1), 3, seed=2))  # different head size
    loaded = load_params(dst.params, path)
    a, b, d = flatten_params(src.params), flatten_params(loaded), flatten_params(dst.params)
    assert "conv1/kernel" in a and "head/kernel" in a
    for k in a:
        if k.startswith("head/"):
            np.testing.assert_array_equal(b[k], d[k])
        else:
            np.testing.assert_array_equal(b[k], a[k])
    x = jnp.ones((2, 8, 8, 1))
    # same trunk -> same embedding
    np.testing.assert_allclose(src.apply_with_embedding(src.params, x)[1],
                               dst.apply_with_embedding(loaded, x)[1], rtol=1e-6)


def test_mismatches_raise(tmp_path):
    path = str(tmp_path / "w.npz")
    save_params(to_pure(create("mlp", (8, 8, 1), 10)).params, path)
    with pytest.raises(ValueError, match="no array for parameter .conv1/"):
        load_params(to_pure(create("cnn", (8, 8, 1), 10)).params, path)
    with pytest.raises(ValueError, match="shape"):
        load_params(to_pure(create("mlp", (4, 4, 1), 10)).params, path)
