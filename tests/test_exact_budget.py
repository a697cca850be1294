"""Every registered method returns exactly the budget; GRAD-MATCH fills its remainder as CORDS does."""

import numpy as np
import pytest

from jaxsubset.selectors import METHODS, gradmatch, gradmatch_batches, select
from jaxsubset.selectors.fill import fill_to_budget

N, C, D, H = 90, 3, 6, 5


@pytest.fixture(scope="module")
def pool():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(C), N // C)
    rng.shuffle(labels)
    e = rng.normal(size=(N, C)).astype(np.float32)
    e[np.arange(N), labels] -= 1.0            # softmax - one-hot: each row sums near 0
    h = rng.normal(size=(N, H)).astype(np.float32)
    q = {"loss": rng.exponential(size=N), "el2n": rng.uniform(size=N), "grad_norm": rng.lognormal(size=N),
         "input_grad_norm": rng.lognormal(size=N), "grads": rng.normal(size=(N, D)).astype(np.float32),
         "grads_projected": rng.normal(size=(N, D)).astype(np.float32), "learned_value": rng.normal(size=N),
         "last_layer_e": e, "last_layer_h": h, "embedding": h, "knn_shapley": rng.normal(size=N),
         "probs": np.exp(e) / np.exp(e).sum(1, keepdims=True),
         # training dynamics (forgetting counts are integers; AUM is a margin, any sign)
         "forgetting": rng.integers(0, 4, N).astype(np.float32), "aum": rng.normal(size=N),
         "loss_mean": rng.exponential(size=N), "loss_var": rng.exponential(size=N),
         "el2n_mean": rng.uniform(size=N), "el2n_var": rng.uniform(size=N) * 0.1}
    q["noise_rate"] = np.random.default_rng(9).uniform(0, 0.5, N)   # learned_filter / loss_filter (own stream)
    m = 24
    val = {"val_logits": rng.normal(size=(m, C)).astype(np.float32),
           "val_h": rng.normal(size=(m, H)).astype(np.float32), "val_labels": np.arange(m) % C}
    return labels, q, val


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_returns_exactly_the_budget(name, pool):
    labels, q, val = pool
    method = METHODS[name]
    missing = [k for k in method.needs if k not in q]
    assert not missing, f"test fixture lacks quantities {missing} for {name!r}; add them"
    for budget in (3, 45, 89):   # 1 / 15 / 29-30 per class
        sub = select(name, labels, budget, q, seed=1, num_classes=C,
                     validation=val if method.validation else None)
        assert len(sub) == budget, (name, budget, len(sub))
        assert np.unique(sub.indices).size == budget
        assert np.all(sub.weights >= 0)
        if method.per_class:  # class proportions kept
            np.testing.assert_array_equal(np.bincount(labels[sub.indices], minlength=C),
                                          _per_class_budget(labels, budget))


def _per_class_budget(labels, budget):
    from jaxsubset.subset import per_class_budget
    return per_class_budget(labels, budget, C)


def _easy_target():
    """Gradients whose mean is matched by very few examples: OMP stops early."""
    rng = np.random.default_rng(3)
    G = np.zeros((40, 4), np.float32)
    G[:, 0] = 1.0                                  # every row has the same first coordinate
    G[:5, 1:] = rng.normal(size=(5, 3)) * 1e-3
    return G


def test_gradmatch_fills_the_remainder_at_random_with_weight_one():
    G = _easy_target()
    bare = gradmatch(G, 20, fill=False)
    assert len(bare) < 20 and bare.info["stop"] != "budget" and bare.info.get("filled", 0) == 0
    full = gradmatch(G, 20, seed=4)
    assert len(full) == 20 and full.info["filled"] == 20 - len(bare)
    assert set(bare.indices) <= set(full.indices)
    pos = np.searchsorted(full.indices, bare.indices)
    np.testing.assert_array_equal(full.weights[pos], bare.weights)       # OMP's picks keep their weights
    extra = np.setdiff1d(full.indices, bare.indices)
    np.testing.assert_array_equal(full.weights[np.searchsorted(full.indices, extra)], 1.0)
    np.testing.assert_array_equal(full.indices, gradmatch(G, 20, seed=4).indices)   # seeded
    assert not np.array_equal(full.indices, gradmatch(G, 20, seed=5).indices)


def test_fill_is_uniform_over_the_unselected():
    hits = np.zeros(30)
    base = np.array([0, 7, 9])
    for s in range(400):
        sub = fill_to_budget(base, np.full(3, 2.0), 30, 8, seed=s)
        assert len(sub[0]) == 8 and set(base) <= set(sub[0])
        hits[sub[0]] += 1
    others = np.setdiff1d(np.arange(30), base)
    assert np.all(hits[base] == 400)
    p = 5 / 27
    assert np.all(np.abs(hits[others] / 400 - p) < 5 * np.sqrt(p * (1 - p) / 400))


def test_fill_false_is_todays_behaviour():
    G = _easy_target()
    a = gradmatch(G, 20, fill=False)
    b = gradmatch(G, 20, fill=False, seed=9)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.weights, b.weights)
    assert a.info["filled"] == 0


def test_gradmatch_batches_fills_too():
    G = _easy_target()
    sub = gradmatch_batches(G, 23, batch_size=5, seed=0)
    assert len(sub) == 23 and sub.info["filled"] == 23 - sum(len(b) for b in sub.info["batches"])
    bare = gradmatch_batches(G, 23, batch_size=5, seed=0, fill=False)
    assert len(bare) % 5 == 0 and len(bare) < 23


def test_fill_on_a_pool_smaller_than_the_budget_is_an_error():
    G = _easy_target()
    with pytest.raises(ValueError, match="fill"):
        gradmatch(G, 41)
    with pytest.raises(ValueError, match="fill"):
        fill_to_budget(np.array([1]), np.ones(1), 5, 6, seed=0)
