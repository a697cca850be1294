"""Diagnosis of learned selection (issue 18): one measurement per hypothesis on a 10 000-image
slice of Fashion-MNIST with 20 % of the labels flipped (MLP).  Prints JSON lines.

Usage: python experiments/diagnose_learned.py base repro signal layer ceiling knobs
(the numbers in experiments/results/mislabel/diagnosis.md came from these modes), or
python experiments/diagnose_learned.py full "target='sign'" "target='local'" ... (full Fashion-MNIST,
the settings compared in experiments/RESULTS.md's second diagnosis table); round 3: ``dyn [cells=0.1:1,0.3:0]
"lr=0" "lr=0,dyn=1" ...`` (the settings of ``full`` and ``dyn`` go on top of mislabel.py's config
``fmnist_round3``) (surrogate with recorded training dynamics) and ``headroom``; round 6: ``regress``
(the rewards regressed on the inputs without the layer)."""

from __future__ import annotations

import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxsubset import data, grads
from jaxsubset.solvers.convex_layer import fl_relaxation
from jaxsubset.grads.scores import cross_entropy
import importlib
L = importlib.import_module("jaxsubset.valuation.learned")
from jaxsubset.train.loop import as_pure

DATA = "/usr/share/datasets/fashion-mnist"


def auc(susp, flipped):
    pos = np.zeros(susp.size, bool)
    pos[flipped] = True
    r = np.empty(susp.size)
    r[np.argsort(susp, kind="stable")] = np.arange(1, susp.size + 1)
    p = pos.sum()
    return float((r[pos].sum() - p * (p + 1) / 2) / (p * (susp.size - p)))


# the library's defaults before round 6 (the first modes below ran with them; later settings on top of them)
PRE_ROUND6 = dict(target="sign", lr=1e-5, members=1, probe=False, iterations=10, steps_per_epoch=None)


def out(**kw):
    print(json.dumps(kw), flush=True)


def main(which):
    full = data.load("fashion_mnist", data_dir=DATA)
    rng = np.random.default_rng(0)
    perm = rng.permutation(full.y_train.size)
    tr, va = perm[:10_000], perm[10_000:11_000]
    clean = full.replace(x_train=full.x_train[tr], y_train=full.y_train[tr])
    val = (full.x_train[va], full.y_train[va])
    noisy, flipped = data.flip_labels(clean, 0.2, seed=0)
    x, y = noisy.x_train, noisy.y_train
    pure = as_pure("mlp", noisy, 0)
    xs, ys = jnp.asarray(x), jnp.asarray(y)
    key = jax.random.PRNGKey(0)

    if "base" in which:   # loss ranking after 1..3 plain epochs (same warm-up as learned_values)
        th = pure.params
        for e in range(1, 4):
            th = L._warmup(pure.apply_fn, th, xs, ys, 1, 1e-3, 64, jax.random.fold_in(key, e))
            loss = np.asarray(grads.losses(pure.apply_fn, th, x, y))
            out(h="loss_ranking", epochs=e, auc=auc(loss, flipped))
    if "repro" in which:  # the call: default (noisy) validation split
        t0 = time.perf_counter()
        old = dict(PRE_ROUND6, target="first_order", epsilon=0.1)      # the settings before issue 18
        v = L.learned_values("mlp", noisy, budget_fraction=0.5, epochs=3, seed=0, validation_fraction=0.1, **old)
        out(h="learned_default_noisy_val", auc=auc(-v, flipped), s=time.perf_counter() - t0)
        t0 = time.perf_counter()
        v = L.learned_values("mlp", noisy, budget_fraction=0.5, epochs=3, seed=0, validation=val, **old)
        out(h="learned_clean_val", auc=auc(-v, flipped), s=time.perf_counter() - t0)
    # theta after the 3 warm-up epochs learned_values uses (epoch keys as in _warmup with 3 epochs)
    th = L._warmup(pure.apply_fn, pure.params, xs, ys, 3, 1e-3, 64, jax.random.PRNGKey(0))
    if "signal" in which:  # is the first-order value estimate itself a good detector?
        loss = np.asarray(grads.losses(pure.apply_fn, th, x, y))
        out(h="loss_at_theta_warm", auc=auc(loss, flipped))
        for name, (xv, yv) in {"clean_val": val,
                               "noisy_val": (x[9000:], y[9000:])}.items():
            g = jax.grad(lambda p: jnp.mean(cross_entropy(pure.apply_fn(p, jnp.asarray(xv)), jnp.asarray(yv))))(th)
            al = np.concatenate([np.asarray(jax.jvp(lambda p: cross_entropy(pure.apply_fn(p, xs[s:s + 1000]), ys[s:s + 1000]),
                                                    (th,), (g,))[1]) for s in range(0, 10_000, 1000)])
            out(h="alignment_full_val", val=name, auc=auc(-al, flipped))
            # what the method sees: alignment with a 256-row validation mini-batch
            aucs = []
            for r in range(5):
                rows = np.random.default_rng(r).choice(len(yv), 256, replace=False)
                gb = jax.grad(lambda p: jnp.mean(cross_entropy(pure.apply_fn(p, jnp.asarray(xv[rows])), jnp.asarray(yv[rows]))))(th)
                alb = np.concatenate([np.asarray(jax.jvp(lambda p: cross_entropy(pure.apply_fn(p, xs[s:s + 1000]), ys[s:s + 1000]),
                                                         (th,), (gb,))[1]) for s in range(0, 10_000, 1000)])
                aucs.append(auc(-alb, flipped))
            out(h="alignment_val_batch256", val=name, auc_mean=float(np.mean(aucs)), auc_min=float(np.min(aucs)))
            # sign vs magnitude: fraction of flipped with negative alignment, and of clean
            pos = np.zeros(10_000, bool); pos[flipped] = True
            out(h="alignment_sign", val=name, flipped_negative=float((al[pos] < 0).mean()),
                clean_negative=float((al[~pos] < 0).mean()),
                corr_abs_align_loss=float(np.corrcoef(np.abs(al), loss)[0, 1]))
        # features h_phi sees
        logits, h = pure.apply_with_embedding(th, xs)
        f = np.asarray(L.sample_features(logits, h, ys))
        for i, nm in enumerate(["loss", "p_y", "margin", "log_gnorm"]):
            sgn = -1 if nm in ("p_y", "margin") else 1
            out(h="feature_auc", feature=nm, auc=auc(sgn * f[:, i], flipped))
    if "layer" in which:  # how much the layer lets costs through: saturation, gradient vs alignment
        logits, h = pure.apply_with_embedding(th, xs[:64])
        dist = L.embedding_distances(h)
        g = jax.grad(lambda p: jnp.mean(cross_entropy(pure.apply_fn(p, jnp.asarray(val[0][:256])), jnp.asarray(val[1][:256]))))(th)
        _, al = jax.jvp(lambda p: cross_entropy(pure.apply_fn(p, xs[:64]), ys[:64]), (th,), (g,))
        for eps in (0.01, 0.1, 1.0):
            c0 = jnp.zeros(64)
            sol = fl_relaxation(dist, c0, 32, epsilon=eps, iterations=30)
            yv = np.asarray(sol.open)
            gc = np.asarray(jax.grad(lambda c: -jnp.dot(fl_relaxation(dist, c, 32, epsilon=eps, iterations=30).open, al))(c0))
            # ideal gradient direction on the costs: +align (raise cost where alignment is negative)
            out(h="layer", eps=eps, frac_unsaturated=float(np.mean((yv > 0.05) & (yv < 0.95))),
                y_std=float(yv.std()), grad_cost_norm=float(np.linalg.norm(gc)),
                corr_grad_cost_align=float(np.corrcoef(gc, np.asarray(al))[0, 1]),
                corr_y_align=float(np.corrcoef(yv, np.asarray(al))[0, 1]))
    if "ceiling" in which:  # the best any function of the loss can do for each reward (5 %-bins of the loss)
        e, hh = grads.last_layer_factors(pure.apply_with_embedding, th, x, y)
        loss = np.asarray(grads.losses(pure.apply_fn, th, x, y))
        g = jax.grad(lambda p: jnp.mean(cross_entropy(pure.apply_fn(p, jnp.asarray(val[0])), jnp.asarray(val[1]))))(th)
        a = np.concatenate([np.asarray(jax.jvp(lambda p: cross_entropy(pure.apply_fn(p, xs[s:s + 1000]), ys[s:s + 1000]),
                                               (th,), (g,))[1]) for s in range(0, 10_000, 1000)])
        q = np.quantile(loss, np.linspace(0, 1, 21))
        b = np.clip(np.searchsorted(q, loss) - 1, 0, 19)
        for nm, r in (("first_order", a), ("sign", np.sign(a))):
            m = np.array([r[b == i].mean() for i in range(20)])
            out(h="ceiling E[reward | loss bin]", target=nm, auc=auc(-m[b], flipped),
                bin_means=np.round(m / np.abs(m).max(), 3).tolist())
    if "knobs" in which:  # the fixed method's knobs: 150 alternating steps after 3 warm-up epochs, clean validation
        base = dict(target="sign", steps_per_epoch=150, epochs=1, epsilon=0.1, budget_fraction=0.5)
        for kw in [dict(), dict(target="first_order"), dict(steps_per_epoch=450), dict(selector_lr=1e-2),
                   dict(epsilon=1.0), dict(budget_fraction=0.8), dict(budget_spread=0.4),
                   dict(budget_spread=0.4, epsilon=1.0), dict(budget_fraction=0.7, epsilon=1.0),
                   dict(budget_fraction=0.8, epsilon=1.0, lr=1e-3), dict(budget_fraction=0.8, epsilon=1.0, hidden=(64, 64))]:
            t0 = time.perf_counter()
            res = L.fit_selection_model(as_pure("mlp", noisy, 0), x, y, num_classes=10, seed=0, validation=val,
                                        warmup_epochs=3, **{**PRE_ROUND6, **base, **kw})
            loss = np.asarray(grads.losses(res.model.apply_fn, res.model.params, x, y))
            out(h="knobs", kw=kw, auc=auc(-res.values, flipped), loss_auc_same_theta=auc(loss, flipped),
                s=time.perf_counter() - t0)



def fmnist_pool():
    """mislabel.py's full Fashion-MNIST setting: the 58 000-row pool, the 2 000-row clean validation split
    (stratified, seed 0) and the surrogate's training keywords."""
    from jaxsubset.data.offline import stratified_split

    fm = data.load("fashion_mnist", data_dir=DATA)
    pool, vi = stratified_split(fm.y_train, 2000 / fm.y_train.size, seed=0)
    val = (fm.x_train[vi], fm.y_train[vi])
    clean = fm.replace(x_train=fm.x_train[pool], y_train=fm.y_train[pool])
    return clean, val, dict(batch_size=256, lr=1e-3, optimizer="adam", schedule="cosine")


def cell_signals(sur, ds, val):
    """The selection network's inputs on one cell, computed as the library does: features and embeddings of the
    pool ``(raw, h)``, the validation embeddings ``hv``, the agreement with the 10 nearest validation points
    ``agree``, and the raw local last-layer alignment ``local (n,)`` with them (its sign is the local reward)."""
    from jaxsubset.valuation.neighbours import label_agreement

    raw, h = L._all_features(sur.apply_with_embedding, sur.params, ds.x_train, ds.y_train, False)
    raw_v, hv = L._all_features(sur.apply_with_embedding, sur.params, val[0], val[1], False)
    agree, nb = label_agreement(h, ds.y_train, hv, val[1], k=10, return_neighbours=True)
    local = (np.einsum("bc,bkc->bk", raw[:, 4:14], raw_v[:, 4:14][nb])
             * (np.einsum("bd,bkd->bk", h, hv[nb]) + 1)).mean(1)
    return raw, h, hv, agree, local


def full(configs):
    """Full Fashion-MNIST (the pool and clean validation split of experiments/mislabel.py), surrogate MLP
    2 epochs; 10 % flipped (seed 1, the seed whose learned ranking had failed) and 30 % (seed 0): the
    loss ranking against learned values with the settings ``configs`` (``key=value,...`` strings)
    on top of mislabel.py's, layer budget 1 - the estimated noise rate."""
    import os
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _common as C
    import mislabel as M
    from jaxsubset.workflows.quantities import compute

    clean, val, train_kw = fmnist_pool()
    for noise, seed in ((0.1, 1), (0.3, 0)):
        ds, flipped = data.flip_labels(clean, noise, seed=seed)
        sur, _ = C.score_model(ds, "mlp", seed=seed, epochs=2, train_kw=train_kw, progress=False)
        loss = compute(["loss"], sur, ds.x_train, ds.y_train)["loss"]
        rho = M.noise_rates(M.predict(sur, ds.x_train), ds.y_train, M.predict(sur, val[0]), val[1], num_classes=10)
        out(h="full", noise=noise, seed=seed, ranking="loss", auc=auc(loss, flipped), noise_estimate=float(rho.mean()))
        for spec in configs:
            kw = dict(M.CONFIGS["fmnist_round3"][5], budget_fraction=float(np.clip(1 - rho.mean(), 0.5, 0.9)))
            kw.update(eval(f"dict({spec})"))       # trusted command-line settings of this script
            kw.pop("dynamics", None)
            t0 = time.perf_counter()
            res = L.fit_selection_model(sur, ds.x_train, ds.y_train, num_classes=10, seed=seed, validation=val, **kw)
            out(h="full", noise=noise, seed=seed, ranking="learned", settings=spec, auc=auc(-res.values, flipped),
                s=time.perf_counter() - t0)


def dyn(configs, cells=((0.1, 1), (0.3, 0))):
    """Round 3: as :func:`full`, but the 2-epoch surrogate records its training dynamics
    (``fit(record_dynamics=True)``); prints the AUROC of each dynamics ranking and of the learned values
    with settings ``configs``, where ``dyn=1`` feeds the dynamics to the selection network."""
    import os
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import mislabel as M

    clean, val, train_kw = fmnist_pool()
    for noise, seed in cells:
        ds, flipped = data.flip_labels(clean, noise, seed=seed)
        t0 = time.perf_counter()
        sur, dynamics, t_sur = M.surrogate(ds, "mlp", seed, 2, train_kw, False)
        t1 = time.perf_counter()
        loss = M.compute(["loss"], sur, ds.x_train, ds.y_train)["loss"]
        t_loss = time.perf_counter() - t1
        rho = M.noise_rates(M.predict(sur, ds.x_train), ds.y_train, M.predict(sur, val[0]), val[1], num_classes=10)
        out(h="dyn", noise=noise, seed=seed, ranking="loss", auc=auc(loss, flipped), s_surrogate=t_sur, s_loss=t_loss)
        for nm, sgn in (("loss_mean", 1), ("loss_var", 1), ("forgetting", 1), ("aum", -1)):
            out(h="dyn", noise=noise, seed=seed, ranking=nm, auc=auc(sgn * dynamics[nm], flipped))
        for spec in configs:
            kw = dict(M.CONFIGS["fmnist_round3"][5], budget_fraction=float(np.clip(1 - rho.mean(), 0.5, 0.9)))
            kw.update(eval(f"dict({spec})"))       # trusted command-line settings of this script
            kw.pop("dynamics", None)
            if kw.pop("dyn", 0):
                kw["point_features"] = M.dynamics_features(dynamics)
            t0 = time.perf_counter()
            res = L.fit_selection_model(sur, ds.x_train, ds.y_train, num_classes=10, seed=seed, validation=val, **kw)
            out(h="dyn", noise=noise, seed=seed, ranking="learned", settings=spec, auc=auc(-res.values, flipped),
                s=time.perf_counter() - t0)


def headroom(cells=((0.1, 1), (0.3, 0)), probe=False, classifiers=True):
    """Round 3: how much any function of the selection network's inputs can beat the loss. Per cell: the
    AUROC of the loss, of the local reward itself (sign and raw last-layer alignment with the 10 nearest
    validation points), of rank averages, and of a gradient-boosted classifier fitted on the TRUE flip
    indicator (2-fold cross-fitted; a supervised ceiling no validation-based method can be expected to pass).
    Round 4 (``probe=True``, ``headroom probe``): the same ceiling with inputs that use the clean validation
    split more strongly: the loss of the given label under a linear probe fitted on the validation embeddings
    only (:func:`jaxsubset.valuation.probe.probe_loss`) and the distance-weighted agreement among the 50
    nearest validation points (:func:`jaxsubset.valuation.neighbours.soft_label_agreement`)."""
    import os
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import mislabel as M
    from sklearn.ensemble import HistGradientBoostingClassifier
    from jaxsubset.valuation.neighbours import soft_label_agreement
    from jaxsubset.valuation.probe import probe_loss

    clean, val, train_kw = fmnist_pool()
    for noise, seed in cells:
        ds, flipped = data.flip_labels(clean, noise, seed=seed)
        is_flipped = np.zeros(ds.y_train.size, bool)
        is_flipped[flipped] = True
        sur, dynamics, _ = M.surrogate(ds, "mlp", seed, 2, train_kw, False)
        raw, h, hv, agree, local = cell_signals(sur, ds, val)
        loss = raw[:, 0]
        rank = lambda a: np.argsort(np.argsort(a))
        res = dict(h="headroom", noise=noise, seed=seed, loss=auc(loss, flipped), agreement=auc(-agree, flipped),
                   local_raw=auc(-local, flipped), local_sign=M.auroc(-np.sign(local), flipped),
                   rank_loss_agreement=auc(rank(loss) + rank(-agree), flipped),
                   rank_loss_aum=auc(rank(loss) + rank(-dynamics["aum"]), flipped))
        sets = {"inputs": np.c_[raw, agree], "inputs_dynamics": np.c_[raw, agree, M.dynamics_features(dynamics)],
                "loss_agreement": np.c_[loss, agree]}
        if probe:
            t0 = time.perf_counter()
            pl = probe_loss(h, ds.y_train, hv, val[1], num_classes=10)
            t1 = time.perf_counter()
            soft = soft_label_agreement(h, ds.y_train, hv, val[1], k=50)
            t2 = time.perf_counter()
            res.update(probe_loss=auc(pl, flipped), soft_agreement50=auc(-soft, flipped),
                       rank_loss_probe=auc(rank(loss) + rank(pl), flipped), s_probe=t1 - t0, s_soft=t2 - t1,
                       probe_val_acc=float(np.mean(probe_loss(hv, val[1], hv, val[1], num_classes=10) < np.log(2))),
                       # round 5: the rewards of target="local_probe" themselves (probe verdict as a sign, and
                       # the library's 2 p(label) - 1), and the probe's p(label) - ½ sign alone
                       reward_local_probe_sign=M.auroc(-(np.sign(local) + np.sign(np.log(2) - pl)), flipped),
                       reward_local_probe_soft=auc(-(np.sign(local) + 2 * np.exp(-pl) - 1), flipped),
                       probe_sign=M.auroc(-np.sign(np.log(2) - pl), flipped))
            sets = {"inputs": np.c_[raw, agree], "inputs_probe": np.c_[raw, agree, pl],
                    "inputs_soft": np.c_[raw, agree, soft], "inputs_probe_soft": np.c_[raw, agree, pl, soft],
                    "loss_probe": np.c_[loss, pl]}
        fold = np.random.default_rng(0).integers(0, 2, loss.size)
        for name, f in (sets.items() if classifiers else ()):
            p = np.zeros(loss.size)
            for k in (0, 1):
                clf = HistGradientBoostingClassifier(max_iter=200).fit(f[fold != k], is_flipped[fold != k])
                p[fold == k] = clf.predict_proba(f[fold == k])[:, 1]
            res["supervised_" + name] = auc(p, flipped)
        out(**res)


def regress(cells=((0.1, 1), (0.3, 0), (0.1, 0))):
    """Round 6: is the convex layer what holds the learned values at the loss ranking's level? Per cell, the
    AUROC of the selection network's rewards regressed *directly* on its inputs (the features, the neighbour
    agreement and the probe loss, z-scored; least squares and gradient boosting, no layer), for the local reward
    and the ``local_probe`` reward, next to the loss and the rank average of loss and probe loss."""
    import os
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import mislabel as M
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import LinearRegression
    from jaxsubset.valuation.probe import probe_loss

    clean, val, train_kw = fmnist_pool()
    rank = lambda a: np.argsort(np.argsort(a)) / a.size        # noqa: E731
    for noise, seed in cells:
        ds, flipped = data.flip_labels(clean, noise, seed=seed)
        sur, _, _ = M.surrogate(ds, "mlp", seed, 2, train_kw, False)
        raw, h, hv, agree, local = cell_signals(sur, ds, val)
        pl = probe_loss(h, ds.y_train, hv, val[1], num_classes=10)
        f = np.c_[raw, agree, pl]
        z = (f - f.mean(0)) / (f.std(0) + 1e-6)
        res = dict(h="regress", noise=noise, seed=seed, loss=auc(raw[:, 0], flipped),
                   rank_loss_probe=auc(rank(raw[:, 0]) + rank(pl), flipped))
        for name, r in (("local", np.sign(local)), ("local_probe", 0.5 * (np.sign(local) + 2 * np.exp(-pl) - 1))):
            res[f"least_squares_{name}"] = auc(-LinearRegression().fit(z, r).predict(z), flipped)
            res[f"boosting_{name}"] = auc(-HistGradientBoostingRegressor(max_iter=100, random_state=0).fit(z, r).predict(z), flipped)
        out(**res)


if __name__ == "__main__":
    if sys.argv[1:2] == ["full"]:
        full(sys.argv[2:])
    elif sys.argv[1:2] == ["headroom"]:       # optional "probe" (round 4), optional "cells=0.1:1"
        cells = tuple((float(a), int(b)) for a, b in (c.split(":") for c in next(
            (x[6:] for x in sys.argv[2:] if x.startswith("cells=")), "0.1:1,0.3:0").split(",")))
        headroom(cells, probe="probe" in sys.argv[2:], classifiers="noclf" not in sys.argv[2:])
    elif sys.argv[1:2] == ["regress"]:        # round 6
        regress()
    elif sys.argv[1:2] == ["dyn"]:      # optional first setting "cells=0.1:1,0.3:0" (noise:seed pairs)
        args = sys.argv[2:]
        if args and args[0].startswith("cells="):
            cells = tuple((float(a), int(b)) for a, b in (c.split(":") for c in args[0][6:].split(",")))
            dyn(args[1:], cells)
        else:
            dyn(args)
    else:
        main(sys.argv[1:])
