"""Every registered method does what its name and description say.

``selectors.select(name, ...)`` is compared with the documented direct call (or with an
independent per-class NumPy reference for the score rankings), class by class, and every
method in ``selectors.METHODS`` — including ones added later — keeps the generic contract
(class proportions, valid indices and weights, deterministic for a seed).
"""

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from jaxsubset import per_class_budget, selectors
from jaxsubset.kernels import materialize_last_layer
from jaxsubset.selectors import per_class

N, C, D, B = 90, 3, 6, 27
SEED = 4


@pytest.fixture(scope="module")
def pool():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(C), [40, 30, 20])
    rng.shuffle(y)
    q = {name: rng.permutation(N) + rng.random(N)  # distinct values: no ties to break
         for name in ("loss", "el2n", "grad_norm", "input_grad_norm", "learned_value")}
    q["grad_norm"] = rng.lognormal(size=N)
    q["last_layer_e"] = rng.normal(size=(N, C)).astype(np.float32)
    q["last_layer_h"] = rng.normal(size=(N, 5)).astype(np.float32)
    q["grads"] = (rng.normal(size=(N, D)) + 3 * rng.normal(size=(1, D))).astype(np.float32)
    q["grads_projected"] = rng.normal(size=(N, 8)).astype(np.float32)
    q["embedding"] = rng.normal(size=(N, 5)).astype(np.float32)
    q["knn_shapley"] = rng.normal(size=N)
    logits = rng.normal(size=(N, C))
    q["probs"] = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    q["forgetting"] = rng.integers(0, 5, N).astype(np.float32)
    for name in ("aum", "loss_mean", "loss_var", "el2n_mean", "el2n_var"):
        q[name] = rng.permutation(N) + rng.random(N)
    q["noise_rate"] = np.random.default_rng(9).uniform(0, 0.5, N)   # learned_filter / loss_filter (own stream)
    val = {"val_logits": rng.normal(size=(12, C)).astype(np.float32),
           "val_h": rng.normal(size=(12, 5)).astype(np.float32), "val_labels": rng.integers(0, C, 12)}
    return y, q, val


def _select(name, pool, seed=SEED, budget=B):
    y, q, val = pool
    m = selectors.get(name)
    for k in m.needs:
        if k not in q:
            pytest.skip(f"no synthetic quantity {k!r} for method {name!r}")
    need = {k: q[k] for k in m.needs}
    return selectors.select(name, y, budget, need, seed=seed, num_classes=C,
                            validation=val if m.validation else None)


def _ranked(y, scores, largest):
    """Per class, the examples with the highest (lowest) scores; budgets by largest remainder."""
    out = []
    for c, b in enumerate(per_class_budget(y, B, C)):
        rows = np.flatnonzero(y == c)
        order = np.argsort(-scores[rows] if largest else scores[rows])
        out += rows[order[:b]].tolist()
    return sorted(out)


RANKED = {"loss_hard": ("loss", True), "loss_easy": ("loss", False), "el2n_hard": ("el2n", True),
          "el2n_easy": ("el2n", False), "grand_hard": ("grad_norm", True), "grand_easy": ("grad_norm", False),
          "input_grad_hard": ("input_grad_norm", True), "input_grad_easy": ("input_grad_norm", False),
          "learned": ("learned_value", True)}


@pytest.mark.parametrize("name", sorted(RANKED))
def test_ranking_methods_keep_the_documented_end(name, pool):
    y, q, _ = pool
    if name not in selectors.METHODS:
        pytest.skip(f"{name} not registered")
    key, largest = RANKED[name]
    sub = _select(name, pool)
    assert sub.indices.tolist() == _ranked(y, q[key], largest)
    np.testing.assert_array_equal(sub.weights, 1.0)
    # and the opposite end is really different (the check can fail)
    assert sub.indices.tolist() != _ranked(y, q[key], not largest)


def _direct(name, pool):
    """The documented direct call of each (non-ranking) registered method."""
    y, q, val = pool
    e, h, g, norms = q["last_layer_e"], q["last_layer_h"], q["grads"], q["grad_norm"]
    pc = dict(num_classes=C, seed=SEED)
    calls = {
        "random": lambda: per_class(selectors.random, y, B, **pc),
        "evenly_spaced": lambda: per_class(selectors.evenly_spaced, y, B, arrays={"s": norms}, **pc),
        "quantile_random": lambda: per_class(selectors.quantile_random, y, B, arrays={"s": norms}, **pc),
        "geda": lambda: per_class(selectors.geda, y, B, arrays={"s": norms}, **pc),
        "geda_w1": lambda: per_class(selectors.geda, y, B, arrays={"s": norms}, num_nodes=None, **pc),
        "online_geda": lambda: per_class(selectors.online_geda, y, B, arrays={"s": norms, "g": g}, **pc),
        "craig": lambda: per_class(selectors.craig, y, B, arrays={"g": materialize_last_layer(e, h)}, **pc),
        "gradmatch": lambda: per_class(selectors.gradmatch, y, B, arrays={"g": materialize_last_layer(e, h)}, **pc),
        "herding": lambda: per_class(selectors.herding, y, B, arrays={"g": materialize_last_layer(e, h)}, **pc),
        "kcenter": lambda: per_class(selectors.kcenter_greedy, y, B, arrays={"g": materialize_last_layer(e, h)}, **pc),
        "glister": lambda: selectors.glister((e, h), B, **val),
        "craig_grads": lambda: per_class(selectors.craig, y, B, arrays={"g": g}, **pc),
        "craig_stochastic": lambda: per_class(selectors.craig, y, B, arrays={"g": g}, optimizer="stochastic", **pc),
        "gradmatch_grads": lambda: per_class(selectors.gradmatch, y, B, arrays={"g": g}, **pc),
    }
    return calls[name]()


DIRECT = ["random", "evenly_spaced", "quantile_random", "geda", "geda_w1", "online_geda", "craig", "gradmatch",
          "herding", "kcenter", "glister", "craig_grads", "craig_stochastic", "gradmatch_grads"]


@pytest.mark.parametrize("name", DIRECT)
def test_select_equals_the_documented_direct_call(name, pool):
    if name not in selectors.METHODS:
        pytest.skip(f"{name} not registered")
    via = _select(name, pool)
    ref = _direct(name, pool)
    np.testing.assert_array_equal(via.indices, ref.indices)
    np.testing.assert_allclose(via.weights, ref.weights, rtol=1e-5)


def test_random_is_uniform_per_class_with_seed_plus_class(pool):
    y, _, _ = pool
    sub = _select("random", pool)
    want = []
    for c, b in enumerate(per_class_budget(y, B, C)):
        rows = np.flatnonzero(y == c)
        want += rows[np.random.default_rng(SEED + c).choice(rows.size, size=b, replace=False)].tolist()
    assert sub.indices.tolist() == sorted(want)


def test_geda_w1_minimizes_the_wasserstein_distance_in_every_class(pool):
    """geda_w1's subsets have the smallest W1 to their class (scipy), below GEDA's N=5 pick and random picks."""
    y, q, _ = pool
    norms = q["grad_norm"]
    w1, n5 = _select("geda_w1", pool), _select("geda", pool)
    rng = np.random.default_rng(1)
    for c, b in enumerate(per_class_budget(y, B, C)):
        rows = np.flatnonzero(y == c)
        dist = lambda idx: wasserstein_distance(norms[np.intersect1d(idx, rows)], norms[rows])
        best = dist(w1.indices)
        assert best <= dist(n5.indices) + 1e-12
        rand = [wasserstein_distance(norms[rng.choice(rows, b, replace=False)], norms[rows]) for _ in range(200)]
        assert best <= min(rand) + 1e-12 and best < np.median(rand)


def test_craig_stochastic_is_stochastic_greedy_not_the_lazy_greedy(pool):
    sto, lazy = _select("craig_stochastic", pool), _select("craig_grads", pool)
    infos_s = sto.info["per_class"].values()
    infos_l = lazy.info["per_class"].values()
    # with 6-12 picks from 20-40 rows per class, the stochastic greedy's pick order differs somewhere
    assert any(a["order"].tolist() != b["order"].tolist() for a, b in zip(infos_s, infos_l))
    seeds = {tuple(_select("craig_stochastic", pool, seed=s).indices) for s in range(3)}
    assert len(seeds) > 1  # the seed reaches the stochastic greedy


def test_last_layer_methods_see_the_head_gradients_not_the_grads_feature(pool):
    """'craig' / 'gradmatch' consume the last-layer factors: changing 'grads' changes nothing."""
    y, q, val = pool
    for name in ("craig", "gradmatch", "herding", "kcenter"):
        if name not in selectors.METHODS:
            continue
        a = _select(name, pool)
        q2 = dict(q, grads=q["grads"][::-1].copy())
        b = _select(name, (y, q2, val))
        np.testing.assert_array_equal(a.indices, b.indices)


@pytest.mark.parametrize("name", sorted(selectors.METHODS))
def test_every_registered_method_keeps_the_contract(name, pool):
    y, _, _ = pool
    m = selectors.get(name)
    sub = _select(name, pool)
    again = _select(name, pool)
    assert sub.info["method"] == name and m.name == name
    assert np.unique(sub.indices).size == len(sub) and sub.indices.min() >= 0 and sub.indices.max() < N
    assert np.all(np.isfinite(sub.weights)) and np.all(sub.weights >= 0)
    np.testing.assert_array_equal(sub.indices, again.indices)  # deterministic for a seed
    if m.per_class:
        np.testing.assert_array_equal(np.bincount(y[sub.indices], minlength=C), per_class_budget(y, B, C))
    else:
        assert len(sub) == B
    assert m.description, f"{name} has no description"


def test_a_method_with_rows_reads_the_whole_arrays_in_place(pool):
    """Per class, a method taking ``rows`` gets the whole (n, ...) arrays and the class's rows (no copies);
    one without it gets the class's rows copied. Both give the same subset."""
    y, q, _ = pool
    from jaxsubset.subset import Subset

    calls = {}

    def with_rows(g, budget, *, rows=None):
        calls.setdefault("rows", []).append((np.shape(g)[0], None if rows is None else np.asarray(rows).copy()))
        local = np.asarray(g)[rows] if rows is not None else np.asarray(g)
        return Subset.unweighted(np.argsort(-local[:, 0], kind="stable")[:budget])

    def without_rows(g, budget):
        calls.setdefault("copy", []).append(np.shape(g)[0])
        return Subset.unweighted(np.argsort(-np.asarray(g)[:, 0], kind="stable")[:budget])

    names = ("test_dir_rows", "test_dir_copy")
    selectors.register(names[0], with_rows, needs=("grads",))
    selectors.register(names[1], without_rows, needs=("grads",))
    try:
        a = selectors.select(names[0], y, B, {"grads": q["grads"]}, num_classes=C)
        b = selectors.select(names[1], y, B, {"grads": q["grads"]}, num_classes=C)
    finally:
        for n in names:
            selectors.METHODS.pop(n, None)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert [n for n, _ in calls["rows"]] == [N] * C  # whole arrays every time
    for c, (_, rows) in enumerate(calls["rows"]):
        np.testing.assert_array_equal(rows, np.flatnonzero(y == c))
    assert calls["copy"] == [int(np.sum(y == c)) for c in range(C)]


def test_calling_a_method_directly_defaults_to_seed_0():
    m = selectors.get("random")
    np.testing.assert_array_equal(m(50, budget=7).indices, selectors.random(50, 7, seed=0).indices)
    np.testing.assert_array_equal(m(50, budget=7, seed=3).indices, selectors.random(50, 7, seed=3).indices)


def test_registry_errors_say_what_to_do_and_select_defaults_to_seed_0(pool):
    y, q, _ = pool
    with pytest.raises(ValueError, match=r"Unknown selection method 'nope'; choose one of \[.*'random'.*\]"):
        selectors.get("nope")
    with pytest.raises(ValueError, match=r"needs quantities \['loss'\]; compute them with "
                                         r"jaxsubset\.workflows\.quantities\.compute\(\.\.\.\) first"):
        selectors.select("loss_hard", y, B, {})
    np.testing.assert_array_equal(selectors.select("random", y, B).indices,
                                  selectors.select("random", y, B, seed=0).indices)
    assert selectors.select("random", y, B).indices.tolist() != selectors.select("random", y, B, seed=1).indices.tolist()


def test_validation_scored_method_without_a_validation_set_says_how_to_get_one(pool):
    y, q, val = pool
    if "glister" not in selectors.METHODS:
        pytest.skip("glister not registered")
    need = {k: q[k] for k in selectors.get("glister").needs}
    msg = (r"scores against a validation set: pass validation=\{'val_logits': \(m, C\), 'val_h': \(m, d\), "
           r"'val_labels': \(m,\)\} computed on held-out rows \(jaxsubset\.data\.holdout splits them off; "
           r"fit\(\.\.\., validation=\(x_val, y_val\)\) does this for adaptive training\)")
    with pytest.raises(ValueError, match=msg):
        selectors.select("glister", y, B, need)
    with pytest.raises(ValueError, match=msg):  # one key missing
        selectors.select("glister", y, B, need, validation={k: v for k, v in val.items() if k != "val_h"})
