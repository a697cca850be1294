"""The 'probs' and 'embedding' quantities, and the new selectors through the pipeline and adaptive training."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxsubset.data.dataset import Dataset
from jaxsubset.models import create, to_pure
from jaxsubset.models.pure import PureModel
from jaxsubset.workflows import quantities
from jaxsubset.workflows.adaptive import fit_adaptive
from jaxsubset.workflows.run import select_subset


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 2
    y = np.repeat(np.arange(3), 30).astype(np.int32)
    x = (centres[y] + rng.normal(size=(90, 8))).astype(np.float32)
    return Dataset(x, y, x[:30], y[:30], 3, ("a", "b", "c"), "toy")


def test_probs_and_embedding_equal_the_model(toy):
    m = to_pure(create("mlp", (8,), 3, seed=1))
    q = quantities.compute(["probs", "embedding"], m, toy.x_train, toy.y_train, batch_size=32)
    logits, h = m.apply_with_embedding(m.params, toy.x_train)
    z = np.asarray(logits, np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(q["probs"], p / p.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(q["embedding"], np.asarray(h), rtol=1e-5, atol=1e-6)
    assert q["probs"].shape == (90, 3) and q["embedding"].shape == (90, 256)


def test_embedding_without_a_head_names_the_fix(toy):
    m = to_pure(create("mlp", (8,), 3, seed=1))
    with pytest.raises(ValueError, match="apply_with_embedding"):
        quantities.compute(["embedding"], PureModel(m.apply_fn, m.params), toy.x_train, toy.y_train)


@pytest.mark.parametrize("method", ["uncertainty_margin", "ccs_el2n"])
def test_new_methods_run_in_the_pipeline_per_class(toy, method):
    sub, _ = select_subset(method, toy, 15, model="mlp", seed=0, score_epochs=1, batch_size=32)
    assert len(sub) == 15 and np.bincount(toy.y_train[sub.indices], minlength=3).tolist() == [5, 5, 5]


def test_adaptive_training_reselects_with_a_new_method(toy):
    res = fit_adaptive("mlp", toy, "moderate", 12, epochs=2, batch_size=32, seed=0, progress=False, select_every=1)
    assert [s["epoch"] for s in res.history["selections"]] == [0, 1]
    assert all(len(s["indices"]) == 12 for s in res.history["selections"])
    assert jax.tree_util.tree_leaves(res.params)
