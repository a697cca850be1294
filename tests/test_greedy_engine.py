"""The one greedy engine (jaxsubset.solvers.greedy): every greedy selector's picks equal a brute-force
greedy that re-evaluates its objective from scratch for every candidate at every step (tiny cases)."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from jaxsubset.kernels import materialize_last_layer
from jaxsubset.selectors.coverage import herding, kcenter_greedy
from jaxsubset.selectors.craig import craig
from jaxsubset.selectors.facility import facility_location
from jaxsubset.selectors.glister import glister
from jaxsubset.selectors.smi import smi, smi_objective
from jaxsubset.solvers.greedy import Oracle, greedy
from jaxsubset.selectors.kmeanspp import kmeanspp


def brute_greedy(score, n, k, first=()):
    """Pick ``k`` of ``range(n)``: each step the candidate of largest ``score(picks, j)`` (lowest index on ties)."""
    picks = list(first)
    while len(picks) < k:
        vals = [score(picks, j) if j not in picks else -np.inf for j in range(n)]
        picks.append(int(np.argmax(vals)))
    return picks


def _fl_value(S, A, b):
    return float(np.maximum(S[A].max(0) - b, 0.0).sum()) if len(A) else 0.0


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    e, h = rng.normal(size=(30, 3)), rng.normal(size=(30, 4))
    return rng.normal(size=(30, 5)), e, h


@pytest.mark.parametrize("optimizer", ["naive", "lazy"])
def test_facility_location_and_craig(data, optimizer):
    x, _, _ = data
    S = -cdist(x, x)
    ref = brute_greedy(lambda A, j: _fl_value(S, A + [j], S.min()) - _fl_value(S, A, S.min()), 30, 8)
    assert facility_location(S.astype(np.float32), 8, optimizer=optimizer).order.tolist() == ref
    assert craig(x, 8, optimizer=optimizer).info["order"].tolist() == ref
    # stochastic greedy whose sample is every remaining candidate is the exact greedy
    assert facility_location(S.astype(np.float32), 8, optimizer="stochastic", epsilon=1e-12).order.tolist() == ref


def test_herding_brute_force(data):
    x, e, h = data
    for feats, g in ((x, x), ((e, h), materialize_last_layer(e, h))):
        mu = g.mean(0)
        ref = brute_greedy(lambda A, j: -np.linalg.norm((len(A) + 1) * mu - g[A + [j]].sum(0)), 30, 9)
        assert herding(feats, 9).info["order"].tolist() == ref


def test_kcenter_brute_force(data):
    x, e, h = data
    for feats, g in ((x, x), ((e, h), materialize_last_layer(e, h))):
        sub = kcenter_greedy(feats, 7, seed=3)
        first = [int(np.random.default_rng(3).integers(30))]
        ref = brute_greedy(lambda A, j: cdist(g[[j]], g[A]).min(), 30, 7, first)
        assert sub.info["order"].tolist() == ref


def test_glister_brute_force(data):
    _, e, h = data
    rng = np.random.default_rng(1)
    zv, hv, yv = rng.normal(size=(12, 3)), rng.normal(size=(12, 4)), rng.integers(0, 3, 12)
    g, lr = materialize_last_layer(e, h), 0.3

    def score(A, j):  # η <g_j, ∇L_val(θ_S)>, logits moved by the picks recomputed from scratch
        z = zv - lr * sum(np.outer(hv @ h[i] + 1.0, e[i]) for i in A) if A else zv
        p = np.exp(z - z.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
        p[np.arange(12), yv] -= 1.0
        grad = (p.T @ np.hstack([hv, np.ones((12, 1))]) / 12).reshape(-1)
        return lr * g[j] @ grad

    sub = glister((e, h), 6, val_logits=zv, val_h=hv, val_labels=yv, lr=lr)
    assert sub.info["order"].tolist() == brute_greedy(score, 30, 6)


@pytest.mark.parametrize("optimizer", ["greedy", "lazy"])
def test_smi_brute_force(data, optimizer):
    x, _, _ = data
    kw = dict(function="flvmi", eta=0.5, diversity_weight=0.2, diversity="facility_location")
    f = smi_objective(x[:24], x[24:], **kw)
    ref = brute_greedy(lambda A, j: f(A + [j]) - f(A), 24, 6)
    assert smi(x[:24], x[24:], 6, optimizer=optimizer, **kw).info["order"].tolist() == ref


def test_kmeanspp_is_d2_sampling_through_the_engine(data):
    x, _, _ = data
    sub = kmeanspp(x, 6, seed=2)
    rng, picks = np.random.default_rng(2), [int(np.argmax((x * x).sum(1)))]
    while len(picks) < 6:  # D² sampling recomputed from scratch
        d2 = cdist(x, x[picks], "sqeuclidean").min(1)
        d2[picks] = 0.0
        picks.append(int(rng.choice(30, p=d2 / d2.sum())))
    assert sub.info["order"].tolist() == picks


def test_engine_lazy_equals_naive_and_refresh_takes_the_best_per_evaluation():
    rng = np.random.default_rng(5)
    S = rng.random((40, 25))

    def oracle():
        cov = np.zeros(25)

        def add(p):
            cov[:] = np.maximum(cov, S[p].max(0))
        return Oracle(40, lambda c: np.maximum(S[c] - cov, 0).sum(1), add)

    naive = greedy(oracle(), 10)
    lazy = greedy(oracle(), 10, optimizer="lazy", batch=2, max_batch=8)
    assert lazy.order.tolist() == naive.order.tolist() and lazy.evaluations < naive.evaluations
    np.testing.assert_allclose(lazy.gains, naive.gains)
    batched = greedy(oracle(), 10, refresh=10)  # one evaluation: the 10 best gains on the empty set
    assert batched.order.tolist() == np.argsort(-S.sum(1), kind="stable")[:10].tolist()
    with pytest.raises(ValueError, match="Unknown optimizer"):
        greedy(oracle(), 2, optimizer="fast")
