"""Learned selection with extra per-row inputs (``point_features``, e.g. training dynamics) and a fixed θ (``lr=0``)."""

import numpy as np
import pytest
from flax import nnx
import jax

from jaxsubset.models import to_pure
from jaxsubset.models.mlp import MLP
from jaxsubset.valuation import learned as L

C = 4
NOISE = np.random.default_rng(7).normal(size=(200, 2)).astype(np.float32)   # two uninformative extra columns
# every fit below has these shapes and settings, so they share one compiled alternation epoch
KW = dict(num_classes=C, epochs=1, seed=0, batch_size=32, val_batch_size=50, steps_per_epoch=8, neighbours=3,
          target="local", point_features=NOISE, probe=False, members=1)


@pytest.fixture(scope="module")
def setup():
    """The planted-noise mixture, an MLP warmed up for 2 epochs (by a first lr=0 fit, which returns it), and
    a fit from that model with a fixed θ."""
    from test_learned import mixture

    x, y, flipped, val = mixture(0, 200, 0.2, 60, scale=2.5)
    warm = L.fit_selection_model(to_pure(MLP(8, C, hidden=(16,), rngs=nnx.Rngs(0))), x, y, validation=val,
                                 lr=0.0, warmup_epochs=2, warmup_lr=3e-3, **KW).model
    return warm, x, y, flipped, val, L.fit_selection_model(warm, x, y, validation=val, lr=0.0, **KW)


def test_fixed_theta_keeps_the_model_and_reads_out_the_same_values_as_a_fresh_pass(setup):
    """lr=0 skips the θ step and reuses the start's features at readout: θ is returned unchanged, and the
    values equal a readout that recomputes every feature with a forward pass."""
    m, x, y, _, val, res = setup
    same = jax.tree_util.tree_map(lambda a, b: bool(np.array_equal(a, b)), m.params, res.model.params)
    assert all(jax.tree_util.tree_leaves(same))            # θ does not move during the alternation
    embed = res.model.apply_with_embedding                 # features recomputed at θ, the neighbour column too
    raw, h = L._all_features(embed, res.model.params, x, y, False)
    _, hv = L._all_features(embed, res.model.params, val[0], val[1], False)
    full = np.concatenate([raw, L.label_agreement(h, y, hv, val[1], k=3)[:, None], NOISE], axis=1)
    ref = -np.asarray(res.selector(L.standardize(full, (full.mean(0), full.std(0)))))
    np.testing.assert_allclose(res.values, ref, rtol=1e-5, atol=1e-5)


def test_point_features_reach_the_selection_network(setup):
    """Extra columns enter h_φ (input width 2C + 4 + 1 neighbour column + E) and change the values: with a
    column that carries the planted flips instead of noise, the values rank the flips near perfectly."""
    m, x, y, flipped, val, base = setup
    rng = np.random.default_rng(3)
    marker = np.zeros(200, np.float32)
    marker[flipped] = 1.0
    extra = np.c_[marker + 0.1 * rng.normal(size=200), rng.normal(size=200)].astype(np.float32)
    res = L.fit_selection_model(m, x, y, validation=val, lr=0.0, **dict(KW, point_features=extra, epochs=5))
    width = lambda sel: sel.layers[0].kernel.get_value().shape[0]
    assert width(res.selector) == width(base.selector) == 2 * C + 4 + 1 + 2
    assert not np.allclose(res.values, base.values)
    pos = np.zeros(200, bool)
    pos[flipped] = True
    v = -res.values
    assert (v[pos][:, None] > v[~pos][None, :]).mean() >= 0.95


def test_point_features_bad_input(setup):
    m, x, y, _, val, _ = setup
    with pytest.raises(ValueError, match=r"point_features must be \(n, E\) with n = 200"):
        L.fit_selection_model(m, x, y, validation=val, **dict(KW, point_features=np.zeros((199, 2))))
    with pytest.raises(TypeError, match="numeric"):
        L.fit_selection_model(m, x, y, validation=val, **dict(KW, point_features=np.zeros((200, 2), bool)))
    bad = np.zeros((200, 2))
    bad[7, 1] = np.nan
    with pytest.raises(ValueError, match="point_features"):
        L.fit_selection_model(m, x, y, validation=val, **dict(KW, point_features=bad))
    with pytest.raises(ValueError, match=r"readout_fraction must be in \(0, 1\)"):
        L.fit_selection_model(m, x, y, validation=val, readout="selection", readout_fraction=1.5, **KW)


def test_budget_from_the_noise_estimate_of_the_feature_pass(setup):
    """budget_fraction="noise": the layer keeps 1 - the mean estimated noise rate (clipped to [0.5, 0.9]) of each
    mini-batch, with the rates of valuation.noise.noise_rates on the model's own predictions (computed here
    independently with apply_fn)."""
    import jax.numpy as jnp

    from jaxsubset.valuation.noise import noise_rates

    m, x, y, flipped, val, _ = setup
    res = L.fit_selection_model(m, x, y, validation=val, lr=0.0, **dict(KW, budget_fraction="noise"))
    pred = lambda a: np.asarray(jnp.argmax(m.apply_fn(m.params, jnp.asarray(a)), axis=-1))
    want = noise_rates(pred(x), y, pred(val[0]), val[1], num_classes=C)
    np.testing.assert_allclose(res.history["noise_rates"], want)
    assert abs(np.mean(want) - 0.2) < 0.1                  # 20 % planted
    b = KW["batch_size"]
    assert res.history["budget_fraction"] == round(np.clip(1 - np.mean(want), 0.5, 0.9) * b) / b
    with pytest.raises(ValueError, match='"noise"'):
        L.fit_selection_model(m, x, y, validation=val, **dict(KW, budget_fraction="auto"))


def test_members_average_the_z_scored_values_of_independent_networks(setup):
    """members=2: member 0 is the single network of the same seed (same values), member 1 differs, and the
    result is the mean of their z-scores; a member count below 1 is refused."""
    m, x, y, _, val, res = setup
    two = L.fit_selection_model(m, x, y, validation=val, lr=0.0, **dict(KW, members=2))
    v = two.history["member_values"]
    assert v.shape == (2, 200)
    np.testing.assert_allclose(v[0], res.values, rtol=1e-6, atol=1e-6)
    assert not np.allclose(v[1], v[0])
    z = (v - v.mean(1, keepdims=True)) / v.std(1, keepdims=True)
    np.testing.assert_allclose(two.values, z.mean(0), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="members must be an integer >= 1"):
        L.fit_selection_model(m, x, y, validation=val, **dict(KW, members=0))


def test_fixed_theta_gathers_the_features_a_forward_pass_computes(setup):
    """With lr=0 and a local reward the alternation gathers each row's features and embedding at θ instead of
    running the model per mini-batch. A fit whose θ takes Adam steps of 1e-30 (too small to change θ in
    float32) runs the forward-pass epoch on the same mini-batches: its values match the gathered epoch's up
    to float rounding (the per-batch forward pass rounds differently, and Adam's normalized steps carry that
    into the last digits of φ)."""
    m, x, y, _, val, res = setup
    moving = L.fit_selection_model(m, x, y, validation=val, lr=1e-30, **KW)
    np.testing.assert_allclose(moving.values, res.values, atol=1e-2 * np.ptp(res.values))
    assert np.corrcoef(moving.values, res.values)[0, 1] > 0.9999
    phases = res.history["phase_s"]
    assert set(phases) == {"checks", "features", "neighbours", "probe_and_setup", "alternation_and_readout"}
    assert 0 < sum(phases.values()) <= res.history["total_time_s"] * (1 + 1e-9)
