"""GreeDi partitioned facility location (jaxsubset.selectors.partitioned)."""

import numpy as np
import pytest

from jaxsubset.kernels import similarity_op
from jaxsubset.selectors.facility import facility_location, facility_value
from jaxsubset.selectors.partitioned import coverage_value, partitioned_facility_location


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=4.0, size=(20, 8))
    return (centres[rng.integers(0, 20, 1500)] + rng.normal(size=(1500, 8))).astype(np.float32)


def test_one_partition_is_the_full_lazy_greedy(blobs):
    sub = partitioned_facility_location(blobs, 40, partitions=1)
    ref = facility_location(similarity_op(blobs), 40)
    np.testing.assert_array_equal(sub.indices, ref.order)
    np.testing.assert_allclose(sub.info["objective"], ref.value, rtol=1e-6)  # batched gains: summation order
    assert sub.weights.sum() == blobs.shape[0]


def test_coverage_value_equals_dense_reference(blobs):
    op = similarity_op(blobs[:300])
    S = op.dense()
    sel = [3, 17, 250, 99]
    np.testing.assert_allclose(coverage_value(op, sel, float(S.min())), facility_value(S, sel), rtol=1e-6)


def test_partitioned_objective_close_to_full_greedy_and_beats_random(blobs):
    full = facility_location(similarity_op(blobs), 40)
    b = full.baseline
    sub = partitioned_facility_location(blobs, 40, partitions=6, baseline=b, seed=1)
    op = similarity_op(blobs)
    val = coverage_value(op, sub.indices, b)
    np.testing.assert_allclose(val, sub.info["objective"], rtol=1e-5)
    assert len(np.unique(sub.indices)) == 40 and sub.weights.sum() == blobs.shape[0]
    assert val >= 0.95 * full.value
    rand = np.random.default_rng(0).choice(blobs.shape[0], 40, replace=False)
    assert coverage_value(op, rand, b) < 0.95 * full.value  # the bound above can fail


def test_given_parts_and_bad_input(blobs):
    parts = np.arange(blobs.shape[0]) % 3
    sub = partitioned_facility_location(blobs, 30, parts=parts)
    assert sub.info["partitions"] == 3 and len(sub) == 30
    with pytest.raises(ValueError, match="partitions"):
        partitioned_facility_location(blobs, 30, partitions=0)
    with pytest.raises(ValueError, match="parts"):
        partitioned_facility_location(blobs, 30, parts=parts[:-1])
    bad = blobs.copy()
    bad[5, 0] = np.nan
    with pytest.raises(ValueError, match="row 5"):
        partitioned_facility_location(bad, 30, partitions=2)
    with pytest.raises(ValueError, match="per_part"):
        partitioned_facility_location(blobs, 30, partitions=200, per_part=0)
