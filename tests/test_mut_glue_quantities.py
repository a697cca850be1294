"""`workflows/quantities.py` wiring, found by mutation testing (issue 23).

Gradient features are compared with the direct `grads` calls on an 8-6-3 MLP; `compute`'s
bookkeeping (each name once, groups computed together, recorded dynamics, the batch size handed
down, the refusals word for word) with recording quantities registered for the test only.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from flax import nnx

from jaxsubset import grads
from jaxsubset.models import MLP, to_pure
from jaxsubset.models.pure import PureModel
from jaxsubset.types import DYNAMICS
from jaxsubset.workflows import quantities
from jaxsubset.workflows.quantities import compute, gradient_features, register_quantity


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(18, 8)).astype(np.float32)
    y = np.arange(18) % 3
    return to_pure(MLP(8, 3, hidden=(6,), rngs=nnx.Rngs(4))), x, y


def _eq(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_gradient_features_are_the_direct_calls(tiny):
    m, x, y = tiny
    head = grads.last_layer_grads(m.apply_with_embedding, m.params, x, y)
    _eq(gradient_features(m, x, y), head)
    _eq(gradient_features(m, x, y, kind="last_layer"), head)
    _eq(gradient_features(m, x, y, kind="full"), grads.per_sample_grads(m.apply_fn, m.params, x, y))
    _eq(gradient_features(m, x, y, kind="projected", project_dim=7, seed=3),
        grads.per_sample_grads(m.apply_fn, m.params, x, y, project_dim=7, seed=3))
    assert gradient_features(m, x, y, kind="projected").shape == (18, 512)


def test_gradient_features_defaults_and_batch_sizes(tiny, monkeypatch):
    m, x, y = tiny
    seen = []
    monkeypatch.setattr(quantities.grads, "per_sample_grads", lambda *a, **kw: seen.append(kw) or np.zeros((18, 2)))
    monkeypatch.setattr(quantities.grads, "last_layer_grads", lambda *a, **kw: seen.append(kw) or np.zeros((18, 2)))
    gradient_features(m, x, y, kind="projected")
    gradient_features(m, x, y, kind="projected", batch_size=7)
    gradient_features(m, x, y, kind="full")
    gradient_features(m, x, y, kind="last_layer", batch_size=5)
    gradient_features(m, x, y)
    assert seen == [dict(project_dim=512, seed=0, batch_size=256), dict(project_dim=512, seed=0, batch_size=7),
                    dict(batch_size=256), dict(batch_size=20), dict(batch_size=1024)]


def test_gradient_features_refusals_word_for_word(tiny):
    m, x, y = tiny
    with pytest.raises(ValueError, match=r"^Unknown scores 'lastlayer'; choose one of \['last_layer', 'full', "
                                         r"'projected'\]\.$"):
        gradient_features(m, x, y, kind="lastlayer")
    headless = PureModel(m.apply_fn, m.params)
    with pytest.raises(ValueError, match=r"^" + re.escape(
            "Last-layer gradient features (use 'projected' otherwise) needs a model with a linear head "
            "(apply_with_embedding).") + "$"):
        gradient_features(headless, x, y)
    with pytest.raises(ValueError, match=r"^last-layer factors needs a model with a linear head "
                                         r"\(apply_with_embedding\)\.$"):
        compute(["last_layer_e"], headless, x, y)


def test_compute_computes_each_name_once_with_the_batch_size(tiny, monkeypatch):
    m, x, y = tiny
    calls = []

    def rec(model, xs, ys, *, batch_size=1024):
        calls.append((model, batch_size))
        return [float(len(calls))] * len(ys)

    monkeypatch.setitem(quantities.QUANTITIES, "test_mut_rec", rec)
    monkeypatch.setitem(quantities.QUANTITIES, "test_mut_len", lambda model, xs, ys, *, batch_size=1024: [len(ys)])
    q = compute(["test_mut_rec", "test_mut_rec", "test_mut_len"], m, x, y)
    assert calls == [(m, 1024)] and list(q) == ["test_mut_rec", "test_mut_len"] and q["test_mut_len"].tolist() == [18]
    assert isinstance(q["test_mut_rec"], np.ndarray) and q["test_mut_rec"].tolist() == [1.0] * 18
    compute(["test_mut_rec"], m, x, y, batch_size=17)
    assert calls[-1] == (m, 17)


def test_a_group_is_computed_once_and_returned_in_the_order_asked(tiny, monkeypatch):
    m, x, y = tiny
    calls = []

    def group(model, xs, ys, *, batch_size=1024):
        calls.append(batch_size)
        return [1.0] * len(ys), [2.0] * len(ys)   # lists: compute hands out arrays

    monkeypatch.setitem(quantities.GROUPS, ("test_mut_a", "test_mut_b"), group)
    monkeypatch.setitem(quantities.QUANTITIES, "test_mut_len", lambda model, xs, ys, *, batch_size=1024: [len(ys)])
    q = compute(["test_mut_b", "test_mut_a", "test_mut_len"], m, x, y, batch_size=9)
    assert calls == [9] and list(q) == ["test_mut_b", "test_mut_a", "test_mut_len"]   # and on after the group
    assert isinstance(q["test_mut_a"], np.ndarray)
    np.testing.assert_array_equal(q["test_mut_a"], np.full(18, 1.0))
    np.testing.assert_array_equal(q["test_mut_b"], np.full(18, 2.0))
    # the library's own group: the head's factors, with the batch size passed down
    e, h = grads.last_layer_factors(m.apply_with_embedding, m.params, x, y)
    q = compute(["last_layer_h", "last_layer_e"], m, x, y)
    assert list(q) == ["last_layer_h", "last_layer_e"]
    _eq(q["last_layer_e"], e)
    _eq(q["last_layer_h"], h)
    seen = []
    monkeypatch.setattr(quantities.grads, "last_layer_factors", lambda *a, **kw: seen.append(kw) or (1, 2))
    compute(["last_layer_e"], m, x, y, batch_size=33)
    assert seen == [dict(batch_size=33)]


def test_recorded_dynamics_are_served_as_given(tiny):
    m, x, y = tiny
    name = sorted(DYNAMICS)[0]
    rec = {k: np.arange(18) * (i + 1.5) for i, k in enumerate(sorted(DYNAMICS))}
    q = compute([name, "loss"], m, x, y, dynamics=rec)
    np.testing.assert_array_equal(q[name], rec[name])
    _eq(q["loss"], grads.losses(m.apply_fn, m.params, x, y))
    with pytest.raises(ValueError, match=r"^" + re.escape(
            f"dynamics[{name!r}] has shape (18,), expected (5,): record the dynamics on the same training rows "
            "as x.") + "$"):
        compute([name], m, x[:5], y[:5], dynamics=rec)
    for k in DYNAMICS:
        with pytest.raises(ValueError, match=r"^" + re.escape(
                f"The quantity {k!r} is recorded during training, not computed from a model: train the surrogate "
                "with jaxsubset.train.fit(..., record_dynamics=True) and pass dynamics=result.history['dynamics'] "
                "to quantities.compute (workflows.run.select_subset does this with score_epochs surrogate "
                "epochs).") + "$"):
            compute([k], m, x, y)


def test_unknown_quantity_lists_every_valid_name(tiny):
    m, x, y = tiny
    valid = sorted(quantities.QUANTITIES) + ["last_layer_e", "last_layer_h"]
    assert "loss" in valid and "forgetting" in valid
    with pytest.raises(ValueError, match=r"^" + re.escape(f"Unknown quantity 'gradnorm'; choose one of {valid}.")
                       + "$"):
        compute(["gradnorm"], m, x, y)


def test_register_quantity_adds_it_once(monkeypatch):
    monkeypatch.setattr(quantities, "QUANTITIES", dict(quantities.QUANTITIES))

    def fn(model, x, y, *, batch_size=1024):
        return np.zeros(len(y))

    register_quantity("test_mut_new", fn)
    assert quantities.QUANTITIES["test_mut_new"] is fn
    with pytest.raises(ValueError, match=r"^A quantity named 'loss' is already registered\.$"):
        register_quantity("loss", fn)
    assert quantities.QUANTITIES["loss"] is not fn


def test_grad_norm_quantity_passes_the_chunk_asked_for(tiny, monkeypatch):
    """The registry's grad_norm hands grad_norms the chunk size it was given (default 1024, the CPU chunk of
    grad_norms), which fits it to its buffer budget itself; it no longer caps it at 256."""
    m, x, y = tiny
    seen = []
    monkeypatch.setattr(quantities.grads, "grad_norms", lambda *a, **kw: seen.append(kw) or np.zeros(18))
    quantities.QUANTITIES["grad_norm"](m, x, y)
    quantities.QUANTITIES["grad_norm"](m, x, y, batch_size=4096)
    assert seen == [dict(batch_size=1024), dict(batch_size=4096)]
