"""The per-point reward of ``target="local"`` / ``"local_probe"`` (round 5: the linear probe's verdict in the reward)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_learned_dynamics import KW, setup  # noqa: F401  (the shared, compiled fixture)

from jaxsubset.valuation import learned as L
from jaxsubset.valuation.probe import probe_loss


def _last_layer_grad(w, b, h, y):
    """∇_(W, b) of the cross-entropy of a linear head ``W h + b`` on one point, by autodiff."""
    f = lambda wb: -jax.nn.log_softmax(wb[0] @ h + wb[1])[y]
    return jax.grad(f)((w, b))


@pytest.mark.parametrize("with_probe", [False, True])
def test_local_rewards_equal_the_sign_of_autodiff_last_layer_gradient_alignment(with_probe):
    """Independent reference: the last-layer gradients of j and of its validation neighbours by jax.grad of a
    linear head, their mean inner product's sign; with a probe signal in [-1, 1], the mean of that ±1 and it."""
    rng = np.random.default_rng(0)
    bsz, m, kn, c, d = 12, 9, 3, 4, 5
    w, b = rng.normal(size=(c, d)).astype(np.float32), rng.normal(size=c).astype(np.float32)
    h, hv = rng.normal(size=(bsz, d)).astype(np.float32), rng.normal(size=(m, d)).astype(np.float32)
    y, yv = rng.integers(0, c, bsz), rng.integers(0, c, m)
    nb = rng.integers(0, m, (bsz, kn))
    logits, logits_v = h @ w.T + b, hv @ w.T + b
    ev = np.asarray(jax.nn.softmax(logits_v, axis=-1)) - np.eye(c)[yv]
    signal = rng.uniform(-1, 1, bsz).astype(np.float32) if with_probe else None
    got = np.asarray(L.local_rewards(jnp.asarray(logits), jnp.asarray(h), jnp.asarray(y), jnp.asarray(nb),
                                     (jnp.asarray(ev, jnp.float32), jnp.asarray(hv)),
                                     None if signal is None else jnp.asarray(signal)))
    flat = lambda g: np.concatenate([np.ravel(g[0]), np.ravel(g[1])])
    gj = np.stack([flat(_last_layer_grad(w, b, h[j], y[j])) for j in range(bsz)])      # (B, C·d + C)
    gv = np.stack([flat(_last_layer_grad(w, b, hv[v], yv[v])) for v in range(m)])      # (m, C·d + C)
    want = np.array([np.sign(np.mean([gj[j] @ gv[v] for v in nb[j]])) for j in range(bsz)])
    if with_probe:
        assert np.any(want > 0) and np.any(want < 0)     # both signs occur: the mean is not a constant shift
        want = (want + signal) / 2
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_local_probe_target_trains_on_the_probe_verdict(setup):
    """target="local_probe" fits (probe fitted internally, input width unchanged without probe=True), its values
    differ from target="local"'s with the same seed and batches (the reward changed), and still rank the planted
    flips low. The signal the reward adds, 2 p(label) - 1 under the probe, is negative on most planted flips."""
    m, x, y, flipped, val, base = setup
    res = L.fit_selection_model(m, x, y, validation=val, lr=0.0, **dict(KW, target="local_probe"))
    width = lambda sel: sel.layers[0].kernel.get_value().shape[0]
    assert width(res.selector) == width(base.selector)
    assert not np.allclose(res.values, base.values)
    pos = np.zeros(200, bool)
    pos[flipped] = True
    v = -res.values
    assert (v[pos][:, None] > v[~pos][None, :]).mean() >= 0.9
    embed = m.apply_with_embedding
    _, h = L._all_features(embed, m.params, x, y, False)
    _, hv = L._all_features(embed, m.params, val[0], val[1], False)
    signal = 2 * np.exp(-probe_loss(h, y, hv, val[1], num_classes=KW["num_classes"])) - 1
    assert (signal[pos] < 0).mean() >= 0.8 and (signal[~pos] > 0).mean() >= 0.8
    with pytest.raises(ValueError, match='target="local_probe" rewards agreement .* neighbours >= 1'):
        L.fit_selection_model(m, x, y, validation=val, **dict(KW, target="local_probe", neighbours=0))
