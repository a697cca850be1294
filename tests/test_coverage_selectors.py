"""Uncertainty, CCS, Moderate coreset, D2 pruning and the blocked kNN against independent references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from jaxsubset import selectors
from jaxsubset.knn import knn
from jaxsubset.selectors.ccs import ccs, recommended_beta, stratum_budgets, strata
from jaxsubset.selectors.d2 import d2, difficulty, forward_scores, reverse_select
from jaxsubset.selectors.moderate import moderate
from jaxsubset.selectors.uncertainty import uncertainty, uncertainty_scores


# ---------------------------------------------------------------- uncertainty
def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_uncertainty_scores_match_plain_python():
    p = _softmax(np.random.default_rng(0).normal(size=(7, 4)) * 2)
    p[0] = [1.0, 0.0, 0.0, 0.0]  # 0 log 0 = 0
    for i, row in enumerate(p):
        srt = sorted(row, reverse=True)
        assert math.isclose(uncertainty_scores(p, "least_confidence")[i], 1 - srt[0], abs_tol=1e-12)
        assert math.isclose(uncertainty_scores(p, "entropy")[i], -sum(v * math.log(v) for v in row if v > 0),
                            abs_tol=1e-12)
        assert math.isclose(uncertainty_scores(p, "margin")[i], 1 - (srt[0] - srt[1]), abs_tol=1e-12)


def test_uncertainty_keeps_the_most_uncertain_per_class():
    rng = np.random.default_rng(1)
    p = _softmax(rng.normal(size=(40, 3)) * 3)
    y = np.repeat([0, 1], 20)
    sub = selectors.select("uncertainty_entropy", y, 10, {"probs": p})
    h = -(p * np.log(p)).sum(axis=1)
    expect = np.concatenate([np.argsort(-h[:20])[:5], 20 + np.argsort(-h[20:])[:5]])
    np.testing.assert_array_equal(sub.indices, np.sort(expect))
    np.testing.assert_array_equal(uncertainty(p, 3, kind="margin").indices,
                                  np.sort(np.argsort(-uncertainty_scores(p, "margin"))[:3]))


def test_uncertainty_rejects_logits_and_unknown_kind():
    with pytest.raises(ValueError, match="softmax probabilities"):
        uncertainty(np.random.default_rng(0).normal(size=(5, 3)), 2)
    with pytest.raises(ValueError, match="choose one of"):
        uncertainty_scores(np.full((2, 2), 0.5), "variance")


# ---------------------------------------------------------------- CCS
def _brute_budgets(sizes, budget):
    """Sparsest stratum first, each min(size, floor(rest / strata left)), written as a plain loop."""
    left = list(range(len(sizes)))
    out = [0] * len(sizes)
    rest = budget
    while left:
        i = min(left, key=lambda j: (sizes[j], j))
        out[i] = min(sizes[i], rest // len(left))
        rest -= out[i]
        left.remove(i)
    return out


def test_stratum_budgets_equal_brute_force_on_all_small_inputs():
    for sizes in itertools.product(range(4), repeat=3):
        for budget in range(sum(sizes) + 1):
            got = stratum_budgets(np.array(sizes), budget)
            assert got.tolist() == _brute_budgets(list(sizes), budget), (sizes, budget)
            assert got.sum() == budget and np.all(got <= np.array(sizes))


def test_ccs_stratum_counts_and_hard_cutoff():
    rng = np.random.default_rng(2)
    s = np.concatenate([rng.normal(0, 1, 300), rng.normal(6, 0.3, 20)])  # a sparse easy tail
    sub = ccs(s, 60, beta=0.1, num_strata=8, hard="low", seed=3)
    dropped = np.argsort(s, kind="stable")[:32]                          # 10 % lowest (hardest) scores
    assert not np.intersect1d(sub.indices, dropped).size
    kept = np.setdiff1d(np.arange(s.size), dropped)
    lo, hi = s[kept].min(), s[kept].max()
    bins = np.minimum(((s[kept] - lo) / (hi - lo) * 8).astype(int), 7)
    sizes = np.bincount(bins, minlength=8)
    want = _brute_budgets(sizes.tolist(), 60)
    got = np.bincount(np.minimum(((s[sub.indices] - lo) / (hi - lo) * 8).astype(int), 7), minlength=8)
    assert got.tolist() == want and len(sub) == 60


def test_ccs_with_no_cutoff_and_one_stratum_is_random():
    s = np.random.default_rng(4).normal(size=97)
    for seed in range(3):
        np.testing.assert_array_equal(ccs(s, 30, beta=0.0, num_strata=1, seed=seed).indices,
                                      selectors.random(97, 30, seed=seed).indices)


def test_ccs_recommended_beta_and_registry():
    assert recommended_beta(0.9) == 0.3 and recommended_beta(0.8) == 0.1 and recommended_beta(0.5) == 0.0
    s = np.arange(100.0)
    assert ccs(s, 10, num_strata=5).info["beta"] == 0.3        # 90 % pruned
    assert ccs(s, 50, num_strata=5).info["beta"] == 0.0
    assert ccs(np.arange(458.0), 46, num_strata=5).info["beta"] == 0.3  # a rounded "10 %" class budget
    y = np.repeat([0, 1], 60)
    sub = selectors.select("ccs", y, 24, {"aum": np.random.default_rng(5).normal(size=120)}, seed=1)
    assert len(sub) == 24 and np.bincount(y[sub.indices]).tolist() == [12, 12]
    np.testing.assert_array_equal(strata(np.array([0.0, 0.5, 1.0]), 2), [0, 1, 1])


def test_ccs_bad_input_names_the_fix():
    s = np.arange(10.0)
    for beta in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"beta .* must be in \[0, 1\)"):
            ccs(s, 3, beta=beta, num_strata=2)
    with pytest.raises(ValueError, match="num_strata <= 10"):
        ccs(s, 3, beta=0.0, num_strata=11)
    assert ccs(s, 3, beta=0.0).info["num_strata"] == 10      # default: 50, or one per example below 50
    with pytest.raises(ValueError, match="lower beta"):
        ccs(s, 8, beta=0.5, num_strata=2)
    with pytest.raises(ValueError, match="record_dynamics=True"):
        selectors.select("ccs", np.zeros(10, int), 3, {"el2n": s})


# ---------------------------------------------------------------- Moderate
def test_moderate_equals_explicit_median_distance():
    rng = np.random.default_rng(6)
    z = rng.normal(size=(31, 5))
    c = z.sum(axis=0) / len(z)
    d = np.array([math.sqrt(sum((a - b) ** 2 for a, b in zip(row, c))) for row in z])
    med = sorted(d)[len(d) // 2]                                       # odd n: the middle value
    expect = sorted(range(len(d)), key=lambda i: (abs(d[i] - med), i))[:9]
    np.testing.assert_array_equal(moderate(z, 9).indices, np.sort(expect))
    y = np.repeat([0, 1], [31, 20])
    zz = np.concatenate([z, rng.normal(size=(20, 5)) + 3])
    sub = selectors.select("moderate", y, 17, {"embedding": zz})
    np.testing.assert_array_equal(sub.indices[y[sub.indices] == 0], np.sort(moderate(z, 10).indices))


# ---------------------------------------------------------------- kNN and D2
def test_blocked_knn_equals_brute_force():
    z = np.random.default_rng(7).normal(size=(53, 6)).astype(np.float32)
    full = np.linalg.norm(z[:, None, :].astype(np.float64) - z[None, :, :], axis=-1)
    np.fill_diagonal(full, np.inf)
    ref = np.argsort(full, axis=1, kind="stable")[:, :4]
    for block in (1, 7, 53, None):
        dist, idx = knn(z, 4, block_rows=block)
        np.testing.assert_array_equal(idx, ref)
        np.testing.assert_allclose(dist, np.take_along_axis(full, ref, axis=1), rtol=1e-4, atol=1e-5)


def test_knn_k_larger_than_class_names_the_fix():
    with pytest.raises(ValueError, match="lower k to at most 4"):
        knn(np.zeros((5, 2)), 5)
    y = np.repeat([0, 1], [20, 4])
    q = {"embedding": np.random.default_rng(0).normal(size=(24, 3)), "forgetting": np.arange(24.0)}
    with pytest.raises(ValueError, match="lower k"):
        selectors.select("d2", y, 12, q)


def _dense_d2(z, s, k, gf, gr, budget):
    """D2 with a dense weight matrix W[i, j] = exp(-gamma d_ij) on i's k nearest (a matrix reference)."""
    n = len(z)
    d = np.linalg.norm(z[:, None] - z[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    adj = np.zeros((n, n), bool)
    adj[np.arange(n)[:, None], np.argsort(d, axis=1)[:, :k]] = True
    fwd = s + np.where(adj, np.exp(-gf * np.where(adj, d, 0)), 0) @ s
    wr = np.where(adj, np.exp(-gr * np.where(adj, d, 0)), 0)
    cur, picks = fwd.copy(), []
    for _ in range(budget):
        i = max((j for j in range(n) if j not in picks), key=lambda j: (cur[j], -j))
        picks.append(i)
        cur = cur - wr[i] * cur[i]
    return fwd, picks


def test_d2_message_passing_equals_dense_reference():
    rng = np.random.default_rng(8)
    z = rng.normal(size=(25, 3)).astype(np.float32)
    raw = rng.uniform(size=25)
    s = difficulty(raw)
    dist, idx = knn(z, 3)
    fwd_ref, picks_ref = _dense_d2(z.astype(np.float64), s, 3, 0.7, 1.3, 8)
    fwd = forward_scores(s, dist, idx, 0.7)
    np.testing.assert_allclose(fwd, fwd_ref, rtol=1e-5)
    assert reverse_select(fwd, dist, idx, 1.3, 8).tolist() == picks_ref
    sub = d2(z, raw, 8, k=3, gamma_forward=0.7, gamma_reverse=1.3)
    assert sub.info["order"] == picks_ref
    # AUM-style scores (lower = harder) give the same selection as their negation with hard="high"
    np.testing.assert_array_equal(d2(z, -raw, 8, k=3, hard="low").indices, d2(z, raw, 8, k=3).indices)


def test_d2_cutoff_and_bad_input():
    rng = np.random.default_rng(9)
    z, s = rng.normal(size=(40, 2)), rng.uniform(size=40)
    sub = d2(z, s, 10, k=3, beta=0.25)
    assert not np.intersect1d(sub.indices, np.argsort(-s)[:10]).size
    with pytest.raises(ValueError, match=r"must be in \[0, 1\)"):
        d2(z, s, 10, beta=1.0)
    with pytest.raises(ValueError, match="same pool"):
        d2(z[:30], s, 10)
