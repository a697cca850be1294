"""``fit_adaptive`` (method name -> callback -> ``fit``) reproduces the old ``fit(selector=...)`` shorthand.

Two references: the selections and accuracy the shorthand gave on the base commit 49db4b1 (recorded
below, same machine, same seeds), and an independent path: a callback written here from
``quantities.compute`` / ``selectors.select`` and handed to ``fit(reselect=...)`` directly.
"""

import hashlib

import jax
import numpy as np
import pytest

from jaxsubset import data, grads, selectors, train
from jaxsubset.workflows.adaptive import fit_adaptive, validation_quantities

KW = dict(epochs=3, batch_size=32, seed=3, progress=False, select_every=1, warm_start_epochs=1)
# fit("mlp", ds, selector=method, budget=..., scores=..., **KW) on 49db4b1: per selection, the first 16 hex
# digits of sha256(int64 indices), the weight sum; then the final test accuracy.
BASE = {"online_geda": (["295a64702a1451ca", "b58647c861500466"], [348.9238, 351.0837], 0.6740947075208914),
        "glister": (["95c3d40d050a651e", "d4c5803abae78d0f"], [40.0, 40.0], 0.6518105849582173)}


@pytest.fixture(scope="module")
def sets():
    ds = data.load("digits")
    keep = np.arange(0, ds.y_train.size, 4)
    small = ds.replace(x_train=ds.x_train[keep], y_train=ds.y_train[keep])
    pool, val = data.holdout(small, 0.2, seed=1)
    return small, small.replace(x_train=small.x_train[pool], y_train=small.y_train[pool]), \
        (small.x_train[val], small.y_train[val])


def _digest(res):
    sel = res.history["selections"]
    return ([hashlib.sha256(np.asarray(s["indices"], np.int64).tobytes()).hexdigest()[:16] for s in sel],
            [round(float(np.sum(s["weights"])), 4) for s in sel], res.history["test_accuracy"][-1])


def test_fit_adaptive_matches_a_hand_built_callback_and_the_old_shorthand(sets):
    small, _, _ = sets

    def hand(model, epoch):  # projected gradients of the current model, method per class, seed + epoch
        g = grads.per_sample_grads(model.apply_fn, model.params, small.x_train, small.y_train, project_dim=512,
                                   seed=3, batch_size=256)
        norms = grads.grad_norms(model.apply_fn, model.params, small.x_train, small.y_train, batch_size=256)
        return selectors.select("online_geda", small.y_train, 60, {"grad_norm": norms, "grads": g}, seed=3 + epoch,
                                num_classes=10)

    new = fit_adaptive("mlp", small, "online_geda", 60, scores="projected", **KW)
    ref = train.fit("mlp", small, reselect=hand, select_size=60, **KW)
    assert [s["epoch"] for s in new.history["selections"]] == [1, 2]
    for a, b in zip(new.history["selections"], ref.history["selections"]):
        np.testing.assert_array_equal(a["indices"], b["indices"])
        np.testing.assert_allclose(a["weights"], b["weights"], rtol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(new.params), jax.tree_util.tree_leaves(ref.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    hashes, wsum, acc = _digest(new)
    assert hashes == BASE["online_geda"][0]
    np.testing.assert_allclose(wsum, BASE["online_geda"][1], rtol=1e-4)
    assert acc == pytest.approx(BASE["online_geda"][2], abs=1e-9)


def test_fit_adaptive_glister_matches_the_old_shorthand(sets):
    _, pool, val = sets
    res = fit_adaptive("mlp", pool, "glister", 40, validation=val, **KW)
    hashes, wsum, acc = _digest(res)
    assert hashes == BASE["glister"][0] and wsum == BASE["glister"][1]
    assert acc == pytest.approx(BASE["glister"][2], abs=1e-9)
    # the validation quantities the callback used are those of the held-out rows under the current model
    q = validation_quantities(res.model, *val)
    assert q["val_logits"].shape == (val[1].size, 10) and np.array_equal(q["val_labels"], val[1])


def test_fit_refuses_selection_settings_and_bad_callbacks(sets):
    small, _, _ = sets
    with pytest.raises(TypeError, match="selector"):
        train.fit("mlp", small, epochs=1, selector="craig", budget=10)
    with pytest.raises(TypeError, match="callable"):
        train.fit("mlp", small, epochs=1, reselect="craig", select_every=1)
    with pytest.raises(ValueError, match="select_size"):
        train.fit("mlp", small, epochs=2, reselect=lambda m, e: None, select_every=1, select_size=0)
