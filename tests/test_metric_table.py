"""One metric table: every name in kernels.METRICS is the same kernel in the NumPy blocks (CRAIG, k-center,
GRAD-MATCH) and the JAX device blocks (SMI), on feature matrices and on last-layer factor pairs."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from jaxsubset.kernels import METRICS, materialize_last_layer, similarity
from jaxsubset.kernels.device import device_kernel, feature_rows
from jaxsubset.selectors.smi import smi, smi_similarity


@pytest.mark.parametrize("metric", list(METRICS))
def test_numpy_and_device_blocks_agree(metric):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(9, 4)), rng.normal(size=(6, 4))
    e, h = rng.normal(size=(9, 3)), rng.normal(size=(9, 2))
    for x, y in ((a, b), ((e, h), (rng.normal(size=(6, 3)), rng.normal(size=(6, 2))))):
        ref = similarity(x, y, metric=metric, gamma=0.3)
        dev = np.asarray(device_kernel(feature_rows(x), feature_rows(y), metric, 0.3))
        np.testing.assert_allclose(dev, ref, rtol=1e-4, atol=1e-4)
    cos = 1 - cdist(a, b, "cosine")
    expected = {"dot": a @ b.T, "cosine": cos, "shifted_cosine": (1 + cos) / 2, "euclidean": -cdist(a, b),
                "rbf": np.exp(-0.3 * cdist(a, b, "sqeuclidean"))}[metric]
    np.testing.assert_allclose(similarity(a, b, metric=metric, gamma=0.3), expected, rtol=1e-4, atol=1e-4)
    g = materialize_last_layer(e, h)
    np.testing.assert_allclose(similarity((e, h), metric=metric, gamma=0.3), similarity(g, metric=metric, gamma=0.3),
                               rtol=1e-4, atol=1e-4)


def test_smi_uses_the_table_and_refuses_signed_cosine():
    rng = np.random.default_rng(1)
    x, q = rng.normal(size=(20, 5)), rng.normal(size=(4, 5))
    np.testing.assert_allclose(smi_similarity(x, q), similarity(x, q, metric="shifted_cosine"), atol=1e-5)
    np.testing.assert_allclose(smi_similarity(x, q, metric="rbf", gamma=0.2), similarity(x, q, metric="rbf", gamma=0.2),
                               atol=1e-5)
    with pytest.raises(ValueError, match="cos in \\[-1, 1\\]"):
        smi(x, q, 3, metric="cosine")
