import jax
import numpy as np
import pytest
from scipy.optimize import nnls

from jaxsubset import Subset, data, train
from jaxsubset.workflows.adaptive import fit_adaptive, make_reselect
from jaxsubset.workflows.quantities import gradient_features
from jaxsubset.selectors import match_weights, online_geda


@pytest.fixture(scope="module")
def small():
    ds = data.load("digits")
    keep = np.arange(0, ds.y_train.size, 4)  # 360 examples keep the test quick
    return ds.replace(x_train=ds.x_train[keep], y_train=ds.y_train[keep])


def test_match_weights_recovers_planted_weights():
    rng = np.random.default_rng(0)
    G = rng.normal(size=(8, 50)).astype(np.float32)
    w_true = rng.uniform(0.5, 3.0, size=8)
    w = match_weights(G, G.T @ w_true, prior=1.0, lam=1e-8)
    np.testing.assert_allclose(w, w_true, rtol=2e-3)
    # with negative planted weights the non-negative optimum equals scipy's NNLS
    w_neg = rng.normal(size=8)
    ref, _ = nnls(G.T.astype(np.float64), G.T @ w_neg)
    got = match_weights(G, G.T @ w_neg, prior=1.0, lam=1e-8)
    assert np.all(got >= 0)
    np.testing.assert_allclose(got, ref, atol=2e-3)
    # a large ridge pulls every weight to the prior
    np.testing.assert_allclose(match_weights(G, G.T @ w_neg, prior=2.0, lam=1e6), 2.0, rtol=1e-3)
    with pytest.raises(ValueError, match="dimension"):
        match_weights(G, np.ones(3), prior=1.0)


def test_online_geda_matches_gradient_better_than_uniform_weights():
    rng = np.random.default_rng(1)
    G = rng.normal(size=(400, 20)).astype(np.float32) + 0.3
    norms = np.linalg.norm(G, axis=1)
    sub = online_geda(norms, G, 60, lam=1e-3)
    target = G.sum(0)
    err_w = np.linalg.norm(G[sub.indices].T @ sub.weights - target)
    err_u = np.linalg.norm(G[sub.indices].T @ np.full(60, 400 / 60) - target)
    assert len(sub) == 60 and err_w < 0.5 * err_u and np.all(sub.weights >= 0)


def test_adaptive_loop_selects_on_schedule_and_trains_only_on_the_subset(small):
    calls = []
    n = small.y_train.size

    def reselect(model, epoch):
        calls.append(epoch)
        return Subset.unweighted(np.arange(epoch, epoch + 50))  # rows differ per selection

    res = train.fit("mlp", small, epochs=8, batch_size=32, seed=0, progress=False, reselect=reselect,
                    select_every=3, warm_start_epochs=2, warm_start_subset=Subset.unweighted(np.arange(40)))
    assert calls == [2, 5]
    assert [s["epoch"] for s in res.history["selections"]] == [2, 5]
    assert res.history["num_examples"] == [40, 40, 50, 50, 50, 50, 50, 50]
    # rows never selected (>= 60 here) cannot influence training: corrupt them, same parameters
    poisoned = small.replace(x_train=np.where(np.arange(n)[:, None, None, None] >= 60, 1 - small.x_train,
                                              small.x_train))
    calls.clear()
    res2 = train.fit("mlp", poisoned, epochs=8, batch_size=32, seed=0, progress=False, reselect=reselect,
                     select_every=3, warm_start_epochs=2, warm_start_subset=Subset.unweighted(np.arange(40)))
    for a, b in zip(jax.tree_util.tree_leaves(res.params), jax.tree_util.tree_leaves(res2.params)):
        np.testing.assert_array_equal(a, b)


def test_fit_with_a_named_selector_reselects_with_the_current_model(small):
    res = fit_adaptive("mlp", small, "online_geda", 72, epochs=4, batch_size=32, seed=0, progress=False,
                       select_every=2, warm_start_epochs=1)
    sel = res.history["selections"]
    assert [s["epoch"] for s in sel] == [1, 3] and all(len(s["indices"]) == 72 for s in sel)
    assert sel[0]["indices"] != sel[1]["indices"] or sel[0]["weights"] != sel[1]["weights"]
    counts = np.bincount(small.y_train[sel[0]["indices"]], minlength=10)
    from jaxsubset import per_class_budget
    assert counts.tolist() == per_class_budget(small.y_train, 72, 10).tolist()  # class proportions kept
    assert res.history["num_examples"] == [360, 72, 72, 72]


def test_gradient_feature_kinds_agree_on_the_head(small):
    from jaxsubset.models import create, to_pure

    m = to_pure(create("mlp", small.input_shape, 10, seed=0))
    x, y = small.x_train[:16], small.y_train[:16]
    ll = gradient_features(m, x, y, kind="last_layer")
    full = gradient_features(m, x, y, kind="full")
    proj = gradient_features(m, x, y, kind="projected", project_dim=64)
    assert ll.shape == (16, 10 * 257) and proj.shape == (16, 64)
    # the squared norm of the head gradient is part of the full gradient's squared norm
    assert np.all(np.sum(ll ** 2, 1) <= np.sum(full ** 2, 1) * (1 + 1e-5))
    with pytest.raises(ValueError, match="projected"):
        make_reselect("online_geda", small, 10, scores="exact")
    with pytest.raises(ValueError, match="Unknown selection method"):
        make_reselect("nope", small, 10)


def test_glister_through_the_registry_and_adaptive_training(small):
    from jaxsubset import selectors
    from jaxsubset.workflows.adaptive import validation_quantities
    from jaxsubset.models import create, to_pure
    from jaxsubset.workflows.quantities import compute
    from jaxsubset.workflows.run import select_subset

    pool, val = data.holdout(small, 0.2, seed=1)
    assert np.intersect1d(pool, val).size == 0 and pool.size + val.size == small.y_train.size
    np.testing.assert_array_equal(np.bincount(small.y_train[val], minlength=10),
                                  np.round(0.2 * np.bincount(small.y_train, minlength=10)))
    with pytest.raises(ValueError, match="fraction"):
        data.holdout(small, 1.0)
    ds = small.replace(x_train=small.x_train[pool], y_train=small.y_train[pool])
    xv, yv = small.x_train[val], small.y_train[val]

    # The registry forwards the validation set; the result is the direct call's.
    m = to_pure(create("mlp", small.input_shape, 10, seed=0))
    q = compute(["last_layer_e", "last_layer_h"], m, ds.x_train, ds.y_train)
    v = validation_quantities(m, xv, yv)
    direct = selectors.glister(q["last_layer_e"], q["last_layer_h"], 30, **v)
    via = selectors.select("glister", ds.y_train, 30, q, validation=v)
    np.testing.assert_array_equal(via.indices, direct.indices)
    assert via.info["val_loss"][1] < via.info["val_loss"][0]  # the lookahead lowers the validation loss
    with pytest.raises(ValueError, match="validation set"):
        selectors.select("glister", ds.y_train, 30, q)

    # Adaptive: selections on schedule, from the pool only.
    res = fit_adaptive("mlp", ds, "glister", 40, epochs=4, batch_size=32, seed=0, progress=False, select_every=2,
                       warm_start_epochs=1, validation=(xv, yv))
    sel = res.history["selections"]
    assert [s["epoch"] for s in sel] == [1, 3] and all(len(s["indices"]) == 40 for s in sel)
    with pytest.raises(ValueError, match="validation"):
        fit_adaptive("mlp", ds, "glister", 40, epochs=2, progress=False, select_every=1)
    with pytest.raises(TypeError, match="validation"):  # fit trains; selection settings belong to fit_adaptive
        train.fit("mlp", ds, epochs=2, progress=False, validation=(xv, yv))

    # The main job's selection step holds validation rows out and never selects them.
    sub, _ = select_subset("glister", small, 50, model="mlp", seed=0, score_epochs=1)
    _, held = data.holdout(small, 0.1, seed=0)
    assert len(sub) == 50 and np.intersect1d(sub.indices, held).size == 0
