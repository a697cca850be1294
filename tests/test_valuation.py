"""Data valuation: KNN-Shapley against brute-force Shapley values; learned values on planted noise."""

import itertools
import math

import numpy as np
import pytest

from jaxsubset.valuation import knn_shapley, knn_shapley_self


def knn_utility(subset, d, y_train, y_test, k):
    """U(S) = (1/K) Σ_{r <= min(K,|S|)} 1[label of the r-th nearest point of S = y_test] (U(∅) = 0)."""
    if not subset:
        return 0.0
    near = sorted(subset, key=lambda j: (d[j], j))[:k]
    return sum(y_train[j] == y_test for j in near) / k


def brute_force_shapley(x_train, y_train, x_test, y_test, k):
    """Shapley values by enumerating every subset (independent of the closed form)."""
    n = len(y_train)
    out = np.zeros(n)
    for xt, yt in zip(x_test, y_test):
        d = np.sum((x_train - xt) ** 2, axis=1)
        for i in range(n):
            others = [j for j in range(n) if j != i]
            for r in range(n):
                w = math.factorial(r) * math.factorial(n - r - 1) / math.factorial(n)
                for s in itertools.combinations(others, r):
                    out[i] += w * (knn_utility(list(s) + [i], d, y_train, yt, k) - knn_utility(list(s), d, y_train, yt, k))
    return out / len(y_test)


@pytest.mark.parametrize("k", [1, 2, 3, 8])
def test_knn_shapley_equals_brute_force(k):
    rng = np.random.default_rng(k)
    x, y = rng.normal(size=(7, 3)), rng.integers(0, 3, 7)
    xs, ys = rng.normal(size=(4, 3)), rng.integers(0, 3, 4)
    got = knn_shapley(x, y, xs, ys, k=k)
    np.testing.assert_allclose(got, brute_force_shapley(x, y, xs, ys, k), atol=1e-12)


def test_knn_shapley_efficiency_and_self_leaves_the_test_point_out():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 4)), rng.integers(0, 2, 30)
    xs, ys = rng.normal(size=(5, 4)), rng.integers(0, 2, 5)
    v = knn_shapley(x, y, xs, ys, k=5)
    full = np.mean([knn_utility(list(range(30)), np.sum((x - t) ** 2, 1), y, yt, 5) for t, yt in zip(xs, ys)])
    assert abs(v.sum() - full) < 1e-12            # efficiency: the values sum to U(all)
    # self-valuation with every point as test point = the mean over t of knn_shapley on the other points
    small_x, small_y = x[:6], y[:6]
    want = np.zeros(6)
    for t in range(6):
        rest = [j for j in range(6) if j != t]
        want[rest] += knn_shapley(small_x[rest], small_y[rest], small_x[t:t + 1], small_y[t:t + 1], k=2)
    np.testing.assert_allclose(knn_shapley_self(small_x, small_y, k=2, num_test=6), want / 6, atol=1e-12)


def test_knn_shapley_bad_input():
    x, y = np.zeros((4, 2)), np.zeros(4, int)
    with pytest.raises(ValueError, match="width"):
        knn_shapley(x, y, np.zeros((2, 3)), np.zeros(2, int))
    with pytest.raises(ValueError, match="k"):
        knn_shapley(x, y, x, y, k=0)
    with pytest.raises(TypeError, match="integers"):
        knn_shapley(x, y.astype(float), x, y)


def test_knn_shapley_is_registered_and_selects_the_highest():
    from flax import nnx

    from jaxsubset import selectors
    from jaxsubset.workflows import quantities
    from jaxsubset.models import to_pure
    from jaxsubset.models.mlp import MLP

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 5)).astype(np.float32), rng.integers(0, 3, 60).astype(np.int32)
    m = to_pure(MLP(5, 3, hidden=(8,), rngs=nnx.Rngs(0)))
    v = quantities.compute(["knn_shapley"], m, x, y)["knn_shapley"]
    _, h = m.apply_with_embedding(m.params, x)
    np.testing.assert_allclose(v, knn_shapley_self(np.asarray(h), y, k=10), rtol=1e-5, atol=1e-9)
    sub = selectors.select("knn_shapley", y, 20, {"knn_shapley": v}, num_classes=3)
    assert len(sub) == 20
    for c in range(3):   # per class: the kept rows of each class are its highest-valued ones
        rows = np.flatnonzero(y == c)
        kept = np.intersect1d(sub.indices, rows)
        if kept.size and kept.size < rows.size:
            assert v[kept].min() >= v[np.setdiff1d(rows, kept)].max()


# ---------------------------------------------------------------- learned values on planted label noise
C4, D8 = 4, 8


def planted(seed: int, n: int = 600, noise: float = 0.2, n_val: int = 200):
    """Gaussian mixture (4 classes, 8-D); ``noise`` of the n training labels flipped; a clean validation set."""
    from test_learned import C as c, D as d, mixture

    assert (c, d) == (C4, D8)
    return mixture(seed, n, noise, n_val, scale=2.5)


def auroc(suspicion, positives):
    pos = np.zeros(suspicion.size, bool)
    pos[positives] = True
    a, b = suspicion[pos], suspicion[~pos]
    return float(((a[:, None] > b[None, :]).sum() + 0.5 * (a[:, None] == b[None, :]).sum()) / (a.size * b.size))


@pytest.fixture(scope="module")
def mlp_model():
    from flax import nnx

    from jaxsubset.models import to_pure
    from jaxsubset.models.mlp import MLP

    return to_pure(MLP(D8, C4, hidden=(32,), rngs=nnx.Rngs(0)))


LEARN = dict(num_classes=C4, epochs=2, seed=0, batch_size=32, val_batch_size=100,
             warmup_epochs=3, warmup_lr=3e-3)
# otherwise the defaults: local_probe reward, probe input, three networks of 150 steps, budget from the noise
# estimate, θ fixed after the warm-up


def test_learned_values_rank_planted_noisy_labels_lowest(mlp_model):
    """20 % planted flips, clean validation: AUROC of (-value) for the flipped rows >= 0.95. The values
    start at exactly 0 for every point (zero-initialized output layer), so only the learning signal
    through the layer can separate them; with shuffled validation labels (a broken signal) it fails."""
    from jaxsubset.valuation.learned import fit_selection_model

    x, y, flipped, val = planted(0)
    res = fit_selection_model(mlp_model, x, y, validation=val, **LEARN)
    assert res.values.shape == (600,) and np.all(np.isfinite(res.values))
    a = auroc(-res.values, flipped)
    assert a >= 0.95, a
    broken = (val[0], np.random.default_rng(1).permutation(val[1]))
    res_b = fit_selection_model(mlp_model, x, y, validation=broken, **LEARN)
    a_b = auroc(-res_b.values, flipped)
    assert a_b < 0.8, a_b


def test_learned_values_bad_input(mlp_model):
    from jaxsubset.valuation.learned import fit_selection_model

    x, y, _, (xv, yv) = planted(1, n=100, n_val=40)
    kw = dict(LEARN)
    with pytest.raises(ValueError, match=r"clean validation split: pass validation=\(x_val, y_val\)"):
        fit_selection_model(mlp_model, x, y, **kw)
    keep = yv != 2
    with pytest.raises(ValueError, match=r"no examples of classes \[2\].*every class"):
        fit_selection_model(mlp_model, x, y, validation=(xv[keep], yv[keep]), **kw)
    for bad in (0.0, 1.0, 1.5, -0.2, float("nan")):
        kw["budget_fraction"] = bad
        with pytest.raises(ValueError, match=r"budget_fraction must be in \(0, 1\).*e\.g\. 0\.5"):
            fit_selection_model(mlp_model, x, y, validation=(xv, yv), **kw)
