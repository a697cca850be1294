"""Selectors that read a class's rows in place (``rows=``) agree with running on a copy of them."""

import numpy as np
import pytest

from jaxsubset import selectors
from jaxsubset.kernels import similarity_op
from jaxsubset.selectors.craig import craig
from jaxsubset.selectors.gradmatch import gradmatch
from jaxsubset.selectors.per_class import per_class


def _factors(n=700, C=4, d=24, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, C)).astype(np.float32), np.abs(rng.normal(size=(n, d))).astype(np.float32),
            rng.integers(0, C, n))


@pytest.mark.parametrize("metric", ["euclidean", "cosine", "dot", "rbf"])
def test_subpool_operator_equals_operator_on_a_copy(metric):
    e, h, _ = _factors()
    rows = np.random.default_rng(1).choice(700, 530, replace=False)  # > 256: several gathered blocks
    a = np.concatenate([e, h], axis=1)
    for op, ref in [(similarity_op((e, h), metric=metric, rows=rows),
                     similarity_op((e[rows], h[rows]), metric=metric)),
                    (similarity_op(a, metric=metric, rows=rows), similarity_op(a[rows], metric=metric))]:
        assert op.shape == ref.shape == (530, 530)
        if metric == "rbf":
            assert op.gamma == pytest.approx(ref.gamma, rel=1e-5)
        np.testing.assert_allclose(op.dense(), ref.dense(), rtol=2e-5, atol=2e-5)
        np.testing.assert_allclose(op.row_sq_norms, ref.row_sq_norms, rtol=1e-6)
        sub = np.array([5, 300, 2])
        np.testing.assert_allclose(op.block(sub, None), ref.block(sub, None), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("selector,kw", [(craig, {}), (craig, {"dense_limit": 0}),
                                         (gradmatch, {}), (gradmatch, {"matrix_free": True})])
def test_per_class_in_place_equals_per_class_on_copies(selector, kw):
    e, h, y = _factors()

    def copying(e_c, h_c, b):  # no rows parameter: per_class hands it copies of the class rows
        return selector((e_c, h_c), b, **kw)

    def in_place(e_all, h_all, b, *, rows=None):
        assert e_all.shape[0] == 700 and rows is not None  # the whole arrays and the class's rows
        return selector((e_all, h_all), b, rows=rows, **kw)

    a = per_class(copying, y, 140, arrays={"e": e, "h": h})
    b = per_class(in_place, y, 140, arrays={"e": e, "h": h})
    # Gathered blocks round differently in the last bits, so a near-tie may break the other way;
    # the objectives agree to float32 rounding and nearly all picks coincide.
    assert len(np.intersect1d(a.indices, b.indices)) >= 0.95 * len(a) and len(a) == len(b)
    for c in range(4):
        ia, ib = a.info["per_class"][c], b.info["per_class"][c]
        if "objective" in ia:  # CRAIG: facility-location value
            assert ib["objective"] == pytest.approx(ia["objective"], rel=1e-6)
        else:  # GRAD-MATCH: relative residual after the last pick
            assert ib["residual"][-1] == pytest.approx(ia["residual"][-1], rel=1e-4)
    # The registry routes rows through as well: exactly the in-place result.
    name = "craig" if selector is craig else "gradmatch"
    if not kw:
        c = selectors.select(name, y, 140, {"last_layer_e": e, "last_layer_h": h})
        np.testing.assert_array_equal(c.indices, b.indices)


def test_rows_on_feature_matrices_and_bad_rows():
    rng = np.random.default_rng(3)
    g = rng.normal(size=(300, 12)).astype(np.float32)
    rows = np.flatnonzero(rng.random(300) < 0.5)
    for fn in (craig, gradmatch):
        a, b = fn(g[rows], 20), fn(g, 20, rows=rows)
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_allclose(a.weights, b.weights, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="rows must index the pool of 300"):
        craig(g, 2, rows=[0, 300])
    with pytest.raises(ValueError, match="must not repeat"):
        gradmatch(g, 2, rows=[1, 1, 2])
    with pytest.raises(ValueError, match="larger than the pool"):
        craig(g, 5, rows=[0, 1, 2])
    bad = g.copy(); bad[7, 0] = np.nan
    with pytest.raises(ValueError, match=r"rows \[7\]"):  # the global row is named
        craig(bad, 2, rows=np.arange(5, 20))
    craig(bad, 2, rows=np.arange(8, 20))  # NaN outside the sub-pool is not its concern
