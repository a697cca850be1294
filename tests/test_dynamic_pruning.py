"""Dynamic data pruning inside fit: InfoBatch, RandomOnline, RS2."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsubset import train
from jaxsubset.data import Dataset
from jaxsubset.subset import Subset
from jaxsubset.train import RS2, InfoBatch, RandomOnline
from jaxsubset.train.dynamic import plan_epoch


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(260, 10)).astype(np.float32)
    y = np.where(x[:, 3] > 0.8, 2, (x[:, 0] - x[:, 1] > 0).astype(np.int64))
    return Dataset(x_train=x[:200], y_train=y[:200], x_test=x[200:], y_test=y[200:], num_classes=3,
                   class_names=("a", "b", "c"), name="tiny")


KW = dict(epochs=6, batch_size=32, lr=5e-3, seed=11, progress=False)


def _leaves(res):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(res.params)]


def _same(a, b):
    for u, v in zip(_leaves(a), _leaves(b)):
        np.testing.assert_array_equal(u, v)


def test_ratio_zero_and_full_anneal_equal_plain_training_bit_for_bit(tiny):
    sub = Subset(np.arange(0, 180), np.linspace(0.5, 1.5, 180))
    plain = train.fit("mlp", tiny, sub, **KW)
    r0 = train.fit("mlp", tiny, sub, dynamic=InfoBatch(ratio=0.0, anneal=0.0), **KW)
    never = train.fit("mlp", tiny, sub, dynamic=InfoBatch(ratio=0.7, anneal=1.0), **KW)
    for res in (r0, never):
        _same(plain, res)  # parameters bit for bit (the reported mean loss may round differently)
        np.testing.assert_allclose(res.history["train_loss"], plain.history["train_loss"], rtol=1e-6)
        assert res.history["num_examples"] == [180] * 6 and res.sample_steps == 6 * 180
    pruned = train.fit("mlp", tiny, sub, dynamic=InfoBatch(ratio=0.7, anneal=0.34), **KW)
    used = pruned.history["num_examples"]
    # epoch 0 has no losses yet; floor(6 * 0.66) = 3 pruned epochs; the last 3 use every row
    assert used[0] == 180 and all(u < 180 for u in used[1:3]) and used[3:] == [180] * 3
    assert pruned.sample_steps == sum(used) == pruned.history["sample_steps"][-1]


def _plan(policy, epoch, epochs, member, w, loss, seen, key, batch_size=8):
    pp = jnp.asarray(policy.epoch_params(epoch, epochs, int(member.sum())))
    return plan_epoch(policy.kind, batch_size, jax.random.PRNGKey(99), key, pp, jnp.asarray(member), jnp.asarray(w),
                      jnp.asarray(loss, jnp.float32), jnp.asarray(seen))


def test_infobatch_rescales_kept_well_learned_rows_and_is_unbiased():
    rng = np.random.default_rng(0)
    n, d, c, r = 40, 5, 3, 0.6
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.integers(0, c, n)
    wmat = rng.normal(size=(d, c)).astype(np.float32)
    member = np.ones(n, bool)
    member[:4] = False  # outside the subset: never active
    w = np.where(member, rng.uniform(0.5, 2.0, n), 0.0).astype(np.float32)

    def losses(W):
        return -jax.nn.log_softmax(x @ W)[np.arange(n), y]

    loss = np.asarray(losses(wmat))
    grads = np.asarray(jax.jacrev(losses)(wmat)).reshape(n, -1)  # per-example gradients (n, d*c)
    mean = loss[member].mean()
    well = member & (loss < mean)
    assert 0 < well.sum() < member.sum()
    policy = InfoBatch(ratio=r, anneal=0.0)
    keys = jax.random.split(jax.random.PRNGKey(3), 4000)
    plans = jax.vmap(lambda k: _plan(policy, 1, 10, member, w, loss, np.ones(n, bool), k))(keys)
    order, w_eff, mult, k = (np.asarray(a) for a in plans)
    active = w_eff > 0
    assert not active[:, ~member].any() and active[:, member & ~well].all()
    np.testing.assert_array_equal(mult[:, ~well], 1.0)
    np.testing.assert_allclose(mult[active & well[None]], 1.0 / (1.0 - r), rtol=1e-6)
    np.testing.assert_allclose(active[:, well].mean(), 1 - r, atol=0.02)  # each well-learned row dropped w.p. r
    np.testing.assert_array_equal(k, active.sum(1))
    for o, kk, a in zip(order[:5], k[:5], active[:5]):  # active rows first, then the rest, then padding n
        assert set(o[:kk]) == set(np.flatnonzero(a)) and (o[n:] == n).all()
    full = (w @ grads) / w.sum()
    draws = (w_eff * mult) @ grads / w.sum()
    est = draws.mean(0)
    se = draws.std(0) / math.sqrt(len(keys))
    assert np.all(np.abs(est - full) <= 4 * se + 1e-7)
    assert np.abs(draws[0] - full).max() > 10 * se.max()  # a single draw is not the full gradient


def test_rs2_visits_every_row_exactly_once_per_cycle():
    n = 53
    member = np.zeros(n, bool)
    member[3:50] = True  # m = 47
    for fraction in (0.3, 0.5, 0.25, 1.0):
        policy = RS2(fraction)
        c = math.ceil(1 / fraction)
        key = jax.random.PRNGKey(0)
        seen = []
        for epoch in range(2 * c):
            key, sub = jax.random.split(key)
            _, w_eff, _, k = _plan(policy, epoch, 2 * c, member, member.astype(np.float32), np.zeros(n),
                                   np.zeros(n, bool), sub)
            seen.append(np.flatnonzero(np.asarray(w_eff) > 0))
            assert int(k) == seen[-1].size <= math.ceil(fraction * 47)
        for cyc in range(2):
            rows = np.concatenate(seen[cyc * c:(cyc + 1) * c])
            np.testing.assert_array_equal(np.sort(rows), np.arange(3, 50))
        if c > 1:
            assert not np.array_equal(np.sort(np.concatenate(seen[:1])), np.sort(np.concatenate(seen[c:c + 1])))


def test_random_online_draws_fresh_subsets_of_the_fraction(tiny):
    res = train.fit("mlp", tiny, None, dynamic=RandomOnline(0.3), **KW)
    assert res.history["num_examples"] == [60] * 6 and res.sample_steps == 360
    member = np.ones(50, bool)
    a = _plan(RandomOnline(0.2), 0, 5, member, member.astype(np.float32), np.zeros(50), member,
              jax.random.PRNGKey(1))
    b = _plan(RandomOnline(0.2), 1, 5, member, member.astype(np.float32), np.zeros(50), member,
              jax.random.PRNGKey(2))
    assert int(a[3]) == int(b[3]) == 10 and not np.array_equal(np.asarray(a[1]) > 0, np.asarray(b[1]) > 0)


def test_deterministic_for_a_seed_and_pruning_stays_inside_a_weighted_subset(tiny):
    sub = Subset(np.arange(100), np.linspace(0.2, 3.0, 100))
    a = train.fit("mlp", tiny, sub, dynamic=InfoBatch(0.5), **KW)
    b = train.fit("mlp", tiny, sub, dynamic=InfoBatch(0.5), **KW)
    _same(a, b)
    assert a.history["num_examples"] == b.history["num_examples"]
    c = train.fit("mlp", tiny, sub, dynamic=InfoBatch(0.5), **dict(KW, seed=12))
    assert any(not np.array_equal(u, v) for u, v in zip(_leaves(a), _leaves(c)))
    # rows outside the subset cannot influence training, under pruning too
    n = tiny.y_train.size
    poisoned = tiny.replace(x_train=np.where(np.arange(n)[:, None] >= 100, -tiny.x_train, tiny.x_train))
    _same(a, train.fit("mlp", poisoned, sub, dynamic=InfoBatch(0.5), **KW))
    assert max(a.history["num_examples"]) <= 100


def test_works_with_adaptive_reselection(tiny):
    def reselect(model, epoch):
        return Subset.unweighted(np.arange(epoch * 10, epoch * 10 + 80))

    res = train.fit("mlp", tiny, dynamic=RandomOnline(0.5), reselect=reselect, select_every=2, **KW)
    assert res.history["num_examples"] == [40] * 6 and len(res.history["selections"]) == 3
    res = train.fit("mlp", tiny, dynamic=InfoBatch(0.5), reselect=reselect, select_every=2, **KW)
    assert max(res.history["num_examples"]) <= 80 and np.isfinite(res.history["train_loss"]).all()


def test_bad_input(tiny):
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="ratio must be in"):
            InfoBatch(ratio=bad)
    for bad in (-0.01, 1.01):
        with pytest.raises(ValueError, match="anneal must be in"):
            InfoBatch(anneal=bad)
    for cls in (RandomOnline, RS2):
        with pytest.raises(ValueError, match="fraction must be in"):
            cls(0.0)
    with pytest.raises(ValueError, match="empty epoch"):
        train.fit("mlp", tiny, Subset.unweighted(np.arange(3)), dynamic=RandomOnline(0.1), **KW)
    with pytest.raises(ValueError, match="empty epoch"):
        train.fit("mlp", tiny, Subset.unweighted(np.arange(3)), dynamic=RS2(0.2), **KW)
    with pytest.raises(TypeError, match="InfoBatch"):
        train.fit("mlp", tiny, dynamic="infobatch", **KW)
    import optax

    with pytest.raises(ValueError, match="optimizer given by name"):
        train.fit("mlp", tiny, dynamic=InfoBatch(), optimizer=optax.sgd(0.1), **KW)
    with pytest.raises(ValueError, match="RandomOnline"):
        train.fit("mlp", tiny, dynamic=RS2(0.5), reselect=lambda m, e: Subset.unweighted([1, 2]), select_every=1,
                  **KW)


def test_compare_dynamic_matches_random_online_to_the_used_sample_steps(tiny):
    from jaxsubset.workflows.run import RunConfig, compare

    cfg = RunConfig(model="mlp", epochs=4, seeds=1, batch_size=32, progress=False, dynamic="infobatch")
    rows = compare(cfg, tiny)
    by = {r["method"]: r for r in rows}
    assert list(by) == ["full", "infobatch", "random_online"]
    assert by["full"]["sample_steps"] == 4 * 200 and by["infobatch"]["sample_steps"] < 4 * 200
    assert abs(by["random_online"]["sample_steps"] - by["infobatch"]["sample_steps"]) <= 4
    with pytest.raises(ValueError, match="dynamic policy"):
        compare(RunConfig(model="mlp", dynamic="infobatch2"), tiny)


def test_cli_passes_the_dynamic_option_through():
    from jaxsubset.cli import build_parser

    assert build_parser().parse_args(["run", "--dynamic", "rs2"]).dynamic == "rs2"
    assert build_parser().parse_args(["run"]).dynamic is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--dynamic", "infobatch2"])
