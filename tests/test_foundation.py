"""The foundation floor: one validation module, budgets, the type vocabulary, one softmax − one-hot."""

import jax
import numpy as np
import pytest

from jaxsubset import check_budget, checks, types
from jaxsubset.grads.last_layer import softmax_minus_onehot


def test_check_labels_returns_int64_and_names_the_fix():
    y = checks.check_labels(np.array([0, 2, 1], np.int32), 3, 3)
    assert y.dtype == np.int64 and y.tolist() == [0, 2, 1]
    with pytest.raises(ValueError, match=r"pool_y must have shape \(4,\) to match pool_x, got \(3,\)"):
        checks.check_labels([0, 1, 2], 4, 3, name="pool_y", against="pool_x")
    with pytest.raises(TypeError, match="integer class ids"):
        checks.check_labels([0.0, 1.0], 2, 3)
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\) for a model with 3 outputs; found \[-1, 2\]"):
        checks.check_labels([-1, 2], 2, 3)
    assert checks.check_labels(np.zeros(0, np.int64), 0, 3).shape == (0,)


def test_check_budget_with_a_minimum():
    assert check_budget(np.int64(3), 5, minimum=1) == 3 and check_budget(0, 5) == 0
    for b in (0, 6):
        with pytest.raises(ValueError, match="budget must be between 1 and the pool size 5, got"):
            check_budget(b, 5, minimum=1)
    with pytest.raises(TypeError, match="integer number"):
        check_budget(2.0, 5, minimum=1)


def test_row_checks_name_the_first_bad_rows():
    x = np.ones((12, 2))
    x[[3, 11]] = np.nan
    with pytest.raises(ValueError, match=r"features contain NaN or inf in rows \[3, 11\]; fix the model"):
        checks.as_features(x)
    with pytest.raises(ValueError, match=r"scores contain NaN or inf in rows \[3, 11\]"):
        checks.as_scores(x[:, 0])
    with pytest.raises(ValueError, match=r"quantity 'g' contains NaN or inf in rows \[3, 11\]"):
        checks.check_quantity(x, "g", 12)
    with pytest.raises(ValueError, match="too large for float32"):
        checks.as_features(np.full((2, 4), 1e18))


def test_feature_scan_by_row_sums_names_only_non_finite_rows():
    """as_features scans row sums, then re-checks the flagged rows entry by entry: a finite row whose float32 sum
    overflows (row 1) is not called NaN/inf (the range check refuses it instead), a row with -inf is."""
    x = np.ones((4, 3), np.float32)
    x[1] = 3e38
    x[2, 1] = -np.inf
    with pytest.raises(ValueError, match=r"features contain NaN or inf in rows \[2\];"):
        checks.as_features(x)
    with pytest.raises(ValueError, match="too large for float32"):
        checks.as_features(x[:2])


def test_softmax_minus_onehot_is_the_logit_gradient_of_the_cross_entropy():
    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(5, 4)).astype(np.float32), np.array([0, 3, 1, 1, 2])
    ce = lambda zz: -jax.nn.log_softmax(zz)[np.arange(5), y].sum()  # noqa: E731
    np.testing.assert_allclose(softmax_minus_onehot(z, y), jax.grad(ce)(z), atol=1e-6)


def test_the_dynamics_names_are_served_only_from_a_training_record():
    from jaxsubset.workflows import quantities

    x, y = np.zeros((2, 1)), np.zeros(2, np.int64)
    for name in types.DYNAMICS:
        with pytest.raises(ValueError, match="recorded during training"):
            quantities.compute([name], None, x, y)
    rec = {k: np.arange(2.0) + i for i, k in enumerate(types.DYNAMICS)}
    out = quantities.compute(list(types.DYNAMICS), None, x, y, dynamics=rec)
    assert all(np.array_equal(out[k], rec[k]) for k in types.DYNAMICS)
