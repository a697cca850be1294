"""`train.engine`'s step: a batch whose weights are all zero adds 0 to the epoch loss and moves nothing.

The batch loss is ``Σ w_i ℓ_i / Σ w_i`` with ``0 / 0 := 0``; checked with one-row batches against the
cross-entropy written here in NumPy (written against the step's surviving mutants, README "Mutation
testing"). Same tiny problem as ``test_fit_wiring.py``.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from jaxsubset import Subset, data, train
from jaxsubset.models import MLP, to_pure

N, M, D, C = 30, 21, 6, 3


@pytest.fixture(scope="module")
def ds():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(C, D)) * 1.5
    y, yt = np.arange(N) % C, np.arange(M) % C
    x = centres[y] + rng.normal(size=(N, D))
    xt = centres[yt] + rng.normal(size=(M, D))
    return data.from_arrays(x, y, xt, yt)


def _model(seed=0):
    return to_pure(MLP(D, C, hidden=(8,), rngs=nnx.Rngs(seed)))


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
