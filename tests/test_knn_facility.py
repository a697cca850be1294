"""Facility location on a sparse kNN graph (jaxsubset.selectors.knn_facility) and approximate_knn."""

import importlib.util

import numpy as np
import pytest

from jaxsubset.kernels import similarity_op
from jaxsubset.knn import approximate_knn, knn
from jaxsubset.selectors.facility import facility_location
from jaxsubset.selectors.knn_facility import knn_facility_location, knn_graph_greedy, nearest_pick

needs_faiss = pytest.mark.skipif(importlib.util.find_spec("faiss") is None,
                                 reason="faiss-cpu not installed (pip install -e .[test])")


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=4.0, size=(12, 5))
    return (centres[rng.integers(0, 12, 300)] + rng.normal(size=(300, 5))).astype(np.float32)


def test_complete_graph_equals_dense_lazy_greedy(blobs):
    x = blobs[:120]
    b = float(similarity_op(x).dense().min())
    sub = knn_facility_location(x, 15, k_neighbors=x.shape[0] - 1, baseline=b, graph="exact")
    ref = facility_location(similarity_op(x), 15, baseline=b)
    np.testing.assert_array_equal(sub.indices, ref.order)
    np.testing.assert_allclose(sub.info["graph_objective"], ref.value, rtol=1e-5)
    np.testing.assert_allclose(sub.info["objective"], ref.value, rtol=1e-5)
    np.testing.assert_array_equal(sub.weights, np.bincount(ref.assignment, minlength=15))


def _brute_greedy(cols, sims, k, b):
    """Textbook greedy: every remaining candidate's exact gain each step (self covered at 0)."""
    n = cols.shape[0]
    cov = np.full(n, b)
    order = []
    for _ in range(k):
        best, bj = -1.0, -1
        for j in range(n):
            if j in order:
                continue
            pts = [j] + list(cols[j])
            val = [0.0] + list(sims[j])
            g = sum(max(v - cov[i], 0.0) for i, v in zip(pts, val))
            if g > best + 1e-9:
                best, bj = g, j
        order.append(bj)
        for i, v in zip([bj] + list(cols[bj]), [0.0] + list(sims[bj])):
            cov[i] = max(cov[i], v)
    return order, float(np.maximum(cov - b, 0).sum())


@pytest.mark.parametrize("lazy_batch", [1, 7])
def test_graph_greedy_equals_brute_force(lazy_batch):
    rng = np.random.default_rng(3)
    n, K = 40, 4
    cols = np.stack([rng.choice(np.delete(np.arange(n), j), K, replace=False) for j in range(n)]).astype(np.int32)
    sims = -rng.uniform(0.1, 3.0, size=(n, K)).astype(np.float32)
    order, gains, _ = knn_graph_greedy(cols, sims, 10, baseline=-3.5, lazy_batch=lazy_batch)
    ref_order, ref_val = _brute_greedy(cols, sims, 10, -3.5)
    assert order.tolist() == ref_order
    np.testing.assert_allclose(gains.sum(), ref_val, rtol=1e-6)


def test_sparse_graph_is_a_lower_bound_and_weights_are_nearest_picks(blobs):
    sub = knn_facility_location(blobs, 20, k_neighbors=8, graph="exact")
    assert len(np.unique(sub.indices)) == 20 and sub.weights.sum() == blobs.shape[0]
    assert sub.info["graph_objective"] <= sub.info["objective"] + 1e-3
    D = np.sqrt(((blobs[:, None, :] - blobs[sub.indices][None]) ** 2).sum(-1))
    d, pos = nearest_pick(blobs, sub.indices)
    np.testing.assert_allclose(d, D.min(1), atol=1e-3)
    np.testing.assert_array_equal(sub.weights, np.bincount(D.argmin(1), minlength=20))
    b = sub.info["baseline"]
    np.testing.assert_allclose(sub.info["objective"], np.maximum(-D.min(1) - b, 0).sum(), rtol=1e-5)


@needs_faiss
def test_approximate_knn_exact_when_every_cell_is_probed_and_close_otherwise(blobs):
    d_ex, i_ex = knn(blobs, 6)
    d, i = approximate_knn(blobs, 6, nlist=8, nprobe=8)
    np.testing.assert_array_equal(i, i_ex)
    np.testing.assert_allclose(d, d_ex, atol=1e-4)
    d, i = approximate_knn(blobs, 6, nlist=16, nprobe=2)
    recall = np.mean([len(set(a) & set(b)) / 6 for a, b in zip(i, i_ex)])
    assert recall > 0.9 and (d >= d_ex - 1e-4).all()      # never closer than the true neighbours
    assert i.dtype == np.int32 and not (i == np.arange(len(blobs))[:, None]).any()


@needs_faiss
def test_faiss_graph_selection_beats_random(blobs):
    sub = knn_facility_location(blobs, 12, graph="faiss", k_neighbors=25)
    rand = [nearest_pick(blobs, np.random.default_rng(s).choice(300, 12, replace=False))[0].mean() for s in range(20)]
    assert sub.info["mean_distance"] < min(rand)


def test_bad_input(blobs):
    with pytest.raises(ValueError, match="k must be >= 1"):
        knn_facility_location(blobs, 5, k_neighbors=0)
    with pytest.raises(ValueError, match="graph must be"):
        knn_facility_location(blobs, 5, graph="hnsw")
    with pytest.raises(ValueError, match="budget must be >= 1"):
        knn_facility_location(blobs, 0)
    bad = blobs.copy()
    bad[7, 1] = np.inf
    with pytest.raises(ValueError, match="row 7"):
        knn_facility_location(bad, 5)
    with pytest.raises(ValueError, match="one shape"):
        knn_graph_greedy(np.zeros((4, 2), np.int32), np.zeros((4, 3), np.float32), 2, baseline=-1.0)
    with pytest.raises(ValueError, match="larger than the pool"):
        knn_graph_greedy(np.zeros((4, 2), np.int32), np.zeros((4, 2), np.float32), 5, baseline=-1.0)



@needs_faiss
def test_approximate_knn_bad_input(blobs):
    with pytest.raises(ValueError, match="nlist"):
        approximate_knn(blobs, 3, nlist=0)
    with pytest.raises(ValueError, match="nprobe"):
        approximate_knn(blobs, 3, nprobe=0)


@needs_faiss
def test_approximate_knn_blocks_do_not_matter(blobs):
    d1, i1 = approximate_knn(blobs, 5, nlist=6, nprobe=2)
    d2, i2 = approximate_knn(blobs, 5, nlist=6, nprobe=2, block_bytes=4 * 300 * 7)  # a few rows per block
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(d1, d2, rtol=1e-6)
