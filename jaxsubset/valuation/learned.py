"""Learned data values through a differentiable facility-location layer (Das et al., ECML PKDD 2021).

A small selection network ``h_φ`` maps per-sample features of the current model ``θ``
(loss, label probability and logit margin, the last-layer gradient's factor ``softmax - onehot``
and norm, the label, the agreement of the label with the nearest clean validation points in the
embedding; optionally the embedding) to an opening cost ``c_j`` per point. On each
training mini-batch of ``B`` points the costs parameterize the facility-location LP relaxation of
:mod:`jaxsubset.solvers.convex_layer`
(assignment costs: squared embedding distances scaled to mean 1, budget ``k = fraction·B``),
whose solution ``y (B,)`` (``Σ y = k``) is the soft selection. Online alternating minimization:

- **φ step** (through the convex layer): minimize the first-order change of the validation
  loss after one inner SGD step of ``θ`` on the selected, ``y``-weighted points,
  ``L_val(θ - η Σ_j y_j ∇ℓ_j / k) - L_val(θ) ≈ -(η/k) Σ_j y_j ⟨∇L_val, ∇ℓ_j⟩``; the
  alignments ``a_j = ⟨∇L_val, ∇ℓ_j⟩`` of all ``B`` points come from one Jacobian-vector product,
  and ``η`` drops out under Adam. With ``target="sign"`` each point's reward is
  ``sign(a_j)`` — whether a step on it lowers or raises the validation loss — instead of
  ``a_j`` itself (``target="first_order"``); with ``target="local"`` the sign of the alignment with
  the last-layer gradients of the point's nearest validation points only; with ``target="local_probe"``
  the mean of that sign and the linear probe's judgement of the label, ``2 p(label) - 1`` (see :func:`local_rewards`;
  the default, with the probe's loss also an input, three networks averaged and θ fixed). The raw alignment
  scales with the gradient norm, so it rewards hard clean points most, values easy clean points
  near 0 and ranks them next to mislabelled ones (measured in experiments/RESULTS.md, "Learned selection: diagnosis").
  Points whose gradients oppose the validation gradient (e.g. mislabelled ones) get higher
  costs, hence lower values.
- **θ step** (optional): Adam on the ``y``-weighted training loss ``Σ y_j ℓ_j / Σ y_j`` with ``lr > 0``, after
  optional plain warm-up epochs; the default ``lr=0`` skips it (values for a fixed, e.g. surrogate, ``θ``).

**Defaults** are the settings measured on full Fashion-MNIST with 10 % and 30 % of labels flipped
(experiments/RESULTS.md, round 6): ``target="local_probe"``, ``probe=True``, ``members=3`` networks of
``steps_per_epoch=150`` steps, one epoch, ``iterations=3``, ``budget_fraction="noise"``, ``lr=0``. They rank flipped
labels above the loss of the same model on every seed (+0.0005 [+0.0001, +0.0009] / +0.0011 [+0.0009, +0.0013]
ROC AUC, 5 seeds) at 2.3–2.6× the time of that loss ranking with its 2-epoch surrogate; the defaults before
(``target="sign"``, one network, all mini-batches for 5 epochs, ``lr=1e-5``) ranked at 0.9846 against the loss's
0.9898 in 66 s.

Each epoch is one compiled ``lax.scan``. Afterwards the values of all ``n`` training points are
read off the trained ``h_φ`` (``readout="cost"``: ``-c_j``) or from the layer (``readout="selection"``:
mean ``y_j`` over random mini-batch partitions, which also reflects redundancy with the other
points). Higher = more valuable. Features are standardized with their mean and deviation over the
data set at the start, in training and readout alike.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxsubset.solvers.convex_layer import fl_layer, fl_relaxation
from jaxsubset.grads.scores import cross_entropy
from jaxsubset.models.pure import PureModel, to_pure
from jaxsubset.checks import as_features, as_scores
from jaxsubset.subset import Subset, check_budget
from jaxsubset.train.loop import as_pure
from jaxsubset.train.step import make_epoch
from jaxsubset.valuation.neighbours import label_agreement
from jaxsubset.valuation.noise import noise_rates
from jaxsubset.valuation.probe import probe_loss

READOUTS = ("cost", "selection")
TARGETS = ("sign", "first_order", "local", "local_probe")


class SelectionModel(nnx.Module):
    """``h_φ``: per-sample features ``(B, F) -> opening costs (B,)``; ReLU MLP, zero-initialized output.

    With the zero output layer every cost starts at 0, so the first selections are plain
    facility location on the embedding distances.
    """

    def __init__(self, in_features: int, hidden: Sequence[int] = (32,), *, rngs: nnx.Rngs):
        dims = [int(in_features), *map(int, hidden)]
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(dims[:-1], dims[1:])])
        self.out = nnx.Linear(dims[-1], 1, kernel_init=nnx.initializers.zeros, rngs=rngs)

    def __call__(self, f: jax.Array) -> jax.Array:
        for layer in self.layers:
            f = jax.nn.relu(layer(f))
        return self.out(f)[:, 0]


def sample_features(logits: jax.Array, h: jax.Array, y: jax.Array, *, embedding: bool = False) -> jax.Array:
    """Per-sample features ``(B, 2C + 4)`` for ``h_φ``: ``[ℓ, p_y, margin, log ‖g‖, p - onehot(y), onehot(y)]``,
    followed by the embedding ``h`` when ``embedding`` (``(B, 2C + 4 + d)``).

    ``logits (B, C)``, embedding ``h (B, d)``, int labels ``y (B,)``. ``ℓ`` is the loss, ``p_y`` the
    probability of the given label, ``margin = z_y - max_{c≠y} z_c`` the logit margin (negative when
    another class wins), ``‖g‖ = ‖p - onehot‖·√(‖h‖² + 1)`` the last-layer gradient norm and
    ``p - onehot(y)`` the last-layer gradient's class factor.
    """
    c = logits.shape[-1]
    onehot = jax.nn.one_hot(y, c, dtype=logits.dtype)
    p = jax.nn.softmax(logits, axis=-1)
    e = p - onehot
    loss = cross_entropy(logits, y)
    z_y = jnp.sum(logits * onehot, axis=-1)
    margin = z_y - jnp.max(jnp.where(onehot > 0, -jnp.inf, logits), axis=-1)
    gnorm = jnp.linalg.norm(e, axis=-1) * jnp.sqrt(jnp.sum(h * h, axis=-1) + 1.0)
    scalars = jnp.stack([loss, jnp.sum(p * onehot, axis=-1), margin, jnp.log(gnorm + 1e-6)], axis=-1)
    return jnp.concatenate([scalars, e, onehot] + ([h] if embedding else []), axis=-1)


def standardize(f: jax.Array, scale: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
    """Column-wise z-scores of ``f (B, F)`` (constant columns map to 0), with ``scale = (mean (F,), std (F,))``
    when given (e.g. of the whole data set), else with those of ``f`` itself."""
    if scale is None:
        scale = (jnp.mean(f, axis=0), jnp.std(f, axis=0))
    return (f - scale[0]) / (scale[1] + 1e-6)


def embedding_distances(h: jax.Array) -> jax.Array:
    """Squared Euclidean distances ``(B, B)`` of ``h (B, d)``, divided by their off-diagonal mean."""
    sq = jnp.sum(h * h, axis=1)
    d = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * h @ h.T, 0.0)
    b = h.shape[0]
    d = d * (1.0 - jnp.eye(b, dtype=d.dtype))
    mean = jnp.sum(d) / max(b * (b - 1), 1)
    return d / (mean + 1e-12)


@dataclasses.dataclass
class LearnedSelection:
    """What :func:`fit_selection_model` returns.

    Attributes:
      values: float32 ``(n,)`` learned value of every training point (higher = more valuable).
      model: the ML model ``θ`` trained alongside (a :class:`PureModel`).
      selector: the trained selection network ``h_φ`` (:class:`SelectionModel`).
      val_idx: int64 rows of the training set held out as the validation split (empty when a
        separate validation set was given).
      history: per-epoch ``hyper_loss`` (mean first-order validation-loss change), ``train_loss``,
        ``epoch_time_s``; ``total_time_s`` (wall time, compilation included); ``phase_s`` (seconds of
        ``checks``, ``features`` (the forward pass over all rows), ``neighbours``, ``probe_and_setup``,
        ``alternation_and_readout``); ``budget_fraction`` (the
        layer's ``k / B`` in training); with ``budget_fraction="noise"`` also ``noise_rates`` (float64
        ``(C,)``, the per-class estimate that set it); with ``members > 1`` also ``member_values``
        (float32 ``(members, n)``, each network's own values).
    """

    values: np.ndarray
    model: PureModel
    selector: SelectionModel
    val_idx: np.ndarray
    history: dict[str, Any]


def _embed_fn(model: PureModel):
    if model.apply_with_embedding is not None:
        return model.apply_with_embedding

    def embed(p, x):
        logits = model.apply_fn(p, x)
        return logits, logits

    return embed


def _check_fraction(value: float, name: str, *, closed_right: bool = False) -> float:
    v = float(value)
    ok = 0.0 < v <= 1.0 if closed_right else 0.0 < v < 1.0
    if not np.isfinite(v) or not ok:
        raise ValueError(f"{name} must be in (0, 1{']' if closed_right else ')'}, got {value!r}.")
    return v


def _split(n: int, validation_fraction: float | None, validation: Any, seed: int):
    """``(train_rows, val_rows)`` of the training set, or all rows when ``validation`` is given."""
    if validation is not None:
        return np.arange(n), np.zeros(0, np.int64)
    if validation_fraction is None:
        raise ValueError("The learned selector needs a clean validation split: pass validation=(x_val, y_val), "
                         "labelled examples you trust (e.g. rows held out before any label noise, split with "
                         "jaxsubset.data.holdout); or, only if the training labels themselves are clean, "
                         "validation_fraction in (0, 1) to hold out part of the training rows. A split carved "
                         "from noisy labels reverses the ranking of mislabelled points.")
    f = _check_fraction(validation_fraction, "validation_fraction")
    n_val = int(round(f * n))
    if n_val < 1 or n - n_val < 2:
        raise ValueError(f"validation_fraction={validation_fraction} leaves {n_val} validation and {n - n_val} "
                         f"training rows out of {n}; both need to be non-empty (training >= 2).")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _as_inputs(x: Any, y: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, np.float32)
    y = np.asarray(y)
    if y.ndim != 1 or x.ndim < 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"{name}: x must be (n, ...) and y (n,) with the same n; got {x.shape} and {y.shape}.")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"{name}: labels must be integers, got dtype {y.dtype}.")
    as_features(x.reshape(x.shape[0], -1), name=f"{name} inputs")      # finiteness, with row numbers
    return x, y.astype(np.int32)


def fit_selection_model(model: Any, x: Any, y: Any, *, num_classes: int, budget_fraction: float | str = "noise",
                        epochs: int = 1, seed: int = 0, validation_fraction: float | None = None,
                        validation: tuple[Any, Any] | None = None, batch_size: int = 64,
                        val_batch_size: int = 256, epsilon: float = 1.0, iterations: int = 3,
                        lr: float = 0.0, selector_lr: float = 3e-3, hidden: Sequence[int] = (32,),
                        warmup_epochs: int = 0, warmup_lr: float = 1e-3,
                        embedding_features: bool = False, target: str = "local_probe",
                        steps_per_epoch: int | None = 150, budget_spread: float = 0.0, neighbours: int = 10,
                        point_features: Any = None, readout: str = "cost", readout_rounds: int = 4,
                        readout_fraction: float | None = None, members: int = 3, probe: bool = True,
                        progress: bool = False) -> LearnedSelection:
    """Learn ``h_φ`` and ``θ`` by online alternating minimization and return values for all points.

    Args:
      model: the ML model ``θ`` to start from, a :class:`PureModel` (e.g. a briefly trained
        surrogate) or an NNX module (converted with ``to_pure``).
      x: training inputs ``(n, ...)``, finite.
      y: int labels ``(n,)`` in ``[0, num_classes)``.
      num_classes: ``C``.
      budget_fraction: fraction of every mini-batch the layer selects, ``k = round(fraction·B)``, in (0, 1).
        (It sets what the layer chooses between; the values rank every point, so it is not the
        fraction finally kept.) The layer passes gradient to the costs mainly near its selection
        boundary, so the values separate best around that quantile: with label noise, set it near
        ``1 -`` the expected noise rate (0.5 ranks mislabelled points worse, see
        experiments/RESULTS.md). ``"noise"`` (default): ``1 -`` the mean over classes of the noise rates that
        :func:`jaxsubset.valuation.noise.noise_rates` estimates from the model's predictions on the
        training rows and on the validation set (clipped to [0.5, 0.9]), taken from the forward pass
        that computes the features (no extra pass); the estimate is returned in
        ``history["noise_rates"]`` (e.g. for :func:`jaxsubset.selectors.noise_filter.filter_random`).
      epochs: passes over the training rows.
      seed: seed of the split, the batch order and ``h_φ``'s initialization.
      validation_fraction: fraction of the training rows held out as the validation split
        (default ``None``: pass ``validation``). The split is *trusted*: with noisy training labels
        it is noisy too, and the validation gradient of a fitted model is then dominated by
        mislabelled validation points, which aligns it with mislabelled training points.
        For mislabel detection pass a clean ``validation`` set instead (the usual protocol of
        validation-based data valuation).
      validation: a separate (clean) validation set ``(x_val, y_val)``; then every row trains. It must
        hold every class that occurs in ``y``.
      batch_size: ``B`` of the training mini-batches (and the convex layer).
      val_batch_size: validation rows drawn per step (a fresh draw each step matters: one fixed
        gradient of all 2 000 validation rows ranked flipped labels at 0.956 instead of 0.987).
      epsilon, iterations: smoothing (in units of the mean embedding distance) and Newton iterations of
        the layer (at ``epsilon=1`` the dual is smooth: 10 iterations give the same values as 30 at a
        third of the solver's cost, and 3 (default) ranked flipped labels as 5 did, see experiments/RESULTS.md). A soft layer (default 1.0) keeps ``y``
        away from 0 / 1 so every point of the mini-batch passes gradient to its cost; at 0.1 the ``y``
        of most points saturate once the costs grow and learning stalls away from the boundary.
      lr, selector_lr: Adam learning rates of ``θ`` and ``φ`` during the alternation (with ``lr=0`` and a local
        target, each step gathers the rows' features and embeddings computed once at the start instead of a
        forward pass). With ``lr > 0``, keep it small: once ``θ`` fits the (clean) selection and grows confident, the
        first-order validation cross-entropy rewards gradients that lower confidence, which
        mislabelled points supply, and the learned ranking of mislabelled points inverts
        (observed on ``digits`` with ``lr >= 1e-4``). ``lr=0`` (default) values points for a fixed ``θ`` (after the
        warm-up): no θ step, and the readout reuses the start's features instead of a second forward
        pass over all rows; on full Fashion-MNIST it ranked flipped labels as well as ``lr=1e-5`` or
        better, at lower cost (experiments/RESULTS.md, round 3).
      warmup_epochs, warmup_lr: plain (unweighted) Adam epochs of ``θ`` on the training rows before
        the alternation, for a model that starts untrained.
      hidden: hidden widths of ``h_φ``.
      embedding_features: also feed the raw embedding to ``h_φ`` (it always enters through the
        layer's distances). Off by default: the embedding drifts while ``θ`` trains, and a
        selection network that keys on raw embedding coordinates goes stale.
      target: ``"sign"`` (reward ``sign(a_j)``), ``"first_order"`` (reward ``a_j``), ``"local"`` (reward
        the sign of the last-layer alignment of ``j`` with its ``neighbours`` nearest validation points,
        ``Σ_v ⟨p_j - e_{y_j}, p_v - e_{y_v}⟩ (⟨h_j, h_v⟩ + 1)``: does a step on ``j`` lower the loss of
        the clean points next to it); see the module docstring. ``"local_probe"`` (default): the mean of that ±1 and
        ``2 p(label) - 1`` under the linear probe fitted on the validation embeddings (``p = exp(-probe loss)``),
        so the reward itself, not only an input, carries the probe's view (:func:`local_rewards`; the probe is
        fitted whether or not ``probe`` also adds it as an input). On full Fashion-MNIST it moved the flipped-label
        AUROC by +0.0001 to +0.0005 over ``target="local"`` with the same inputs, within one network's seed
        spread (experiments/RESULTS.md, round 5).
      steps_per_epoch: alternating mini-batches per epoch (random ones; default 150, at most ``n // B``;
        ``None``: all ``n // B``). The
        selection network is shared by all points, so a few hundred mini-batches train it; fewer
        steps keep the cost near that of training the surrogate.
      budget_spread: each step's layer budget is drawn uniformly from ``B·[f - s, f + s]`` (``f`` =
        ``budget_fraction``, clipped to ``[1, B - 1]``), so that the selection boundary, where the
        layer passes gradient to the costs, visits every quantile of the ranking; 0 keeps ``k`` fixed.
      neighbours: ``k`` of the neighbour feature: the fraction of the ``k`` nearest validation points
        (in ``θ``'s embedding at the start) that share a point's label
        (:func:`jaxsubset.valuation.neighbours.label_agreement`), information the model's loss lacks;
        0 leaves it out.
      point_features: optional float ``(n, E)`` (or ``(n,)``) extra per-row inputs of ``h_φ``, finite,
        standardized over the data set like the others: e.g. the training dynamics of the surrogate
        that ``model`` is (``train.fit(..., record_dynamics=True)``: mean and variance of the loss,
        forgetting, AUM), which its end-of-training view lacks.
      probe: (default ``True``) add the loss of each point's label under a linear probe fitted on the validation split's
        embeddings only (:func:`jaxsubset.valuation.probe.probe_loss`, 300 Adam steps, L2 1e-3): a view
        of the clean labels that the noisy training labels cannot have bent.
      readout: ``"cost"`` or ``"selection"`` (see the module docstring).
      readout_rounds: random partitions averaged by ``readout="selection"``.
      readout_fraction: the layer's budget fraction at ``readout="selection"`` (default: the training
        budget): set it to the fraction finally kept, so that each point's value is how often the layer,
        with the learned costs and the embedding distances (coverage), keeps it at that budget.
      members: (default 3) selection networks trained independently from the same features and start ``θ``
        (their own initialization and mini-batch order); the values are the mean of their z-scored
        values. One network fitted from a noisy ±1 reward varies by seed (flipped-label AUROC 0.9881–0.9896
        on one Fashion-MNIST cell); the mean of 3 is steadier. Each member adds its alternation and readout,
        not the features' pass. ``model`` / ``selector`` of the result are member 0's. On full Fashion-MNIST
        three members of 150 steps each ranked flipped labels above the loss ranking on every seed at 10 % and
        30 % noise, where one network of 300 steps did not (experiments/RESULTS.md, round 6).

    Returns:
      :class:`LearnedSelection`.
    """
    t_start = time.perf_counter()
    if isinstance(model, nnx.Module):
        model = to_pure(model)
    if not isinstance(model, PureModel):
        raise TypeError(f"model must be a PureModel or a flax.nnx.Module, got {type(model).__name__}.")
    x, y = _as_inputs(x, y, "training set")
    n = y.size
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}); found [{int(y.min())}, {int(y.max())}].")
    from_noise = isinstance(budget_fraction, str) and budget_fraction == "noise"
    bf = 0.7 if from_noise else (float(budget_fraction) if isinstance(budget_fraction, (int, float, np.integer,
                                                                                         np.floating)) else np.nan)
    if not (np.isfinite(bf) and 0.0 < bf < 1.0):
        raise ValueError(f"budget_fraction must be in (0, 1), the fraction of each mini-batch the convex layer "
                         f"keeps (e.g. 0.5), or \"noise\" (1 - the estimated noise rate); got {budget_fraction!r}.")
    frac = bf
    if target not in TARGETS:
        raise ValueError(f"Unknown target {target!r}; choose one of {list(TARGETS)}.")
    if not (np.isfinite(budget_spread) and 0.0 <= float(budget_spread) < 1.0):
        raise ValueError(f"budget_spread must be in [0, 1), got {budget_spread}.")
    if readout_fraction is not None:
        _check_fraction(readout_fraction, "readout_fraction")
    if isinstance(members, (bool, np.bool_)) or not isinstance(members, (int, np.integer)) or members < 1:
        raise ValueError(f"members must be an integer >= 1 (selection networks averaged), got {members!r}.")
    if steps_per_epoch is not None and int(steps_per_epoch) < 1:
        raise ValueError(f"steps_per_epoch must be >= 1 (or None for all mini-batches), got {steps_per_epoch}.")
    if readout not in READOUTS:
        raise ValueError(f"Unknown readout {readout!r}; choose one of {list(READOUTS)}.")
    if not (np.isfinite(lr) and lr >= 0 and np.isfinite(selector_lr) and selector_lr > 0 and warmup_lr > 0):
        raise ValueError(f"need lr >= 0, selector_lr > 0 and warmup_lr > 0; got {lr}, {selector_lr}, {warmup_lr}.")
    if not isinstance(probe, (bool, np.bool_)):
        raise TypeError(f"probe must be True or False, got {probe!r}.")
    if isinstance(neighbours, (bool, np.bool_)) or int(neighbours) != neighbours or int(neighbours) < 0:
        raise ValueError(f"neighbours must be an integer >= 0 (0: no neighbour feature), got {neighbours!r}.")
    if int(warmup_epochs) < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}.")
    if point_features is not None:
        point_features = np.asarray(point_features)
        if point_features.dtype == np.bool_ or not np.issubdtype(point_features.dtype, np.number):
            raise TypeError(f"point_features must be a numeric array, got dtype {point_features.dtype}.")
        point_features = point_features.astype(np.float32)
        if point_features.ndim == 1:
            point_features = point_features[:, None]
        if point_features.ndim != 2 or point_features.shape[0] != np.shape(y)[0]:
            raise ValueError(f"point_features must be (n, E) with n = {np.shape(y)[0]} training rows, got shape "
                             f"{point_features.shape}.")
        as_features(point_features, name="point_features")
    if int(epochs) < 1 or int(batch_size) < 2 or int(val_batch_size) < 1 or int(readout_rounds) < 1:
        raise ValueError("epochs, val_batch_size and readout_rounds must be >= 1 and batch_size >= 2; got "
                         f"{epochs}, {val_batch_size}, {readout_rounds}, {batch_size}.")
    if int(batch_size) >= 2 and max(1, int(round(frac * min(int(batch_size), n)))) >= min(int(batch_size), n):
        raise ValueError(f"budget_fraction={budget_fraction} selects all {min(int(batch_size), n)} points of a "
                         "mini-batch; use a smaller fraction (the layer then has nothing to choose).")
    tr_idx, val_idx = _split(n, validation_fraction, validation, seed)
    if validation is not None:
        xv, yv = _as_inputs(validation[0], validation[1], "validation set")
        if xv.shape[1:] != x.shape[1:]:
            raise ValueError(f"validation inputs have shape {xv.shape[1:]} per example, training {x.shape[1:]}.")
        if yv.size == 0:
            raise ValueError("The validation set is empty; pass at least one validation example.")
    else:
        xv, yv = x[val_idx], y[val_idx]
    missing = np.setdiff1d(np.unique(y[tr_idx]), np.unique(yv))
    if missing.size:
        raise ValueError(f"The validation set has no examples of classes {missing.tolist()}, which occur in the "
                         "training set: the learned values of those classes would rest on other classes' "
                         "gradients. Add validation examples of every class (a stratified split, e.g. "
                         "jaxsubset.data.holdout, keeps all of them).")
    xt, yt = x[tr_idx], y[tr_idx]
    b = min(int(batch_size), yt.size)
    k = max(1, int(round(frac * b)))
    if k >= b:
        raise ValueError(f"budget_fraction={budget_fraction} selects all {b} points of a mini-batch; use a "
                         "smaller fraction (the layer then has nothing to choose).")
    vb = min(int(val_batch_size), yv.size)
    steps = yt.size // b
    if steps_per_epoch is not None:
        steps = min(steps, int(steps_per_epoch))

    embed = _embed_fn(model)
    apply_fn = model.apply_fn
    logits0, h0 = embed(model.params, jnp.asarray(xt[:2]))
    if logits0.shape[-1] != num_classes:
        raise ValueError(f"The model has {logits0.shape[-1]} outputs but num_classes={num_classes}.")
    key = jax.random.PRNGKey(int(seed))
    if int(warmup_epochs):
        model = dataclasses.replace(model, params=_warmup(apply_fn, model.params, jnp.asarray(xt), jnp.asarray(yt),
                                                          int(warmup_epochs), float(warmup_lr), b, key))
    if target in ("local", "local_probe") and not int(neighbours):
        raise ValueError(f'target="{target}" rewards agreement with the nearest validation points: set '
                         'neighbours >= 1.')
    t_feat = time.perf_counter()
    raw0, h_all = _all_features(embed, model.params, x, y, bool(embedding_features))
    raw_v, hv_all = _all_features(embed, model.params, xv, yv, False)
    rho = None
    if from_noise:                    # predictions from the features at hand: p = (p - onehot) + onehot
        c = num_classes
        pred = lambda r: np.argmax(r[:, 4:4 + c] + r[:, 4 + c:4 + 2 * c], axis=1)
        rho = noise_rates(pred(raw0[tr_idx]), yt, pred(raw_v), yv, num_classes=num_classes)
        frac = float(np.clip(1.0 - np.mean(rho), 0.5, 0.9))
        k = min(max(1, int(round(frac * b))), b - 1)
    # the validation points' last-layer gradient factors (p - onehot, h), fixed at the start: θ moves little
    vfac = (jnp.asarray(raw_v[:, 4:4 + num_classes]), jnp.asarray(hv_all))
    t_nb = time.perf_counter()
    nbr = np.zeros((n, 1), np.int32)
    if int(neighbours):
        pf, nbr = label_agreement(h_all, y, hv_all, yv,
                                  k=int(neighbours), return_neighbours=True)
        pf = pf[:, None]
    else:
        pf = np.zeros((n, 0), np.float32)
    t_probe = time.perf_counter()
    pl = probe_loss(h_all, y, hv_all, yv, num_classes=num_classes) if (probe or target == "local_probe") else None
    if probe:
        pf = np.concatenate([pf, pl[:, None]], axis=1)
    # the probe's judgement of each row's label, 2 p(label) - 1 in (-1, 1): half of the "local_probe" reward
    pv = (2.0 * np.exp(-pl) - 1.0).astype(np.float32) if target == "local_probe" else np.zeros(n, np.float32)
    if point_features is not None:
        pf = np.concatenate([pf, point_features], axis=1)
    raw0 = np.concatenate([raw0, pf], axis=1)           # the features' scale over the data set, at the start
    as_features(raw0, name="selection features")        # non-finite model outputs: a clear error
    scale = (jnp.asarray(raw0.mean(0)), jnp.asarray(raw0.std(0)))
    feat_dim = 2 * num_classes + 4 + pf.shape[1] + (int(h0.shape[-1]) if embedding_features else 0)
    selector = SelectionModel(feat_dim, hidden, rngs=nnx.Rngs(int(seed)))
    sgraph, phi = nnx.split(selector, nnx.Param)
    tx_theta, tx_phi = _adam(float(lr)), _adam(float(selector_lr))
    theta = model.params
    state = (theta, tx_theta.init(theta), phi, tx_phi.init(phi))

    train_theta = float(lr) > 0.0          # lr = 0: values for a fixed θ, no θ step, features reused at readout
    fixed = not train_theta and target in ("local", "local_probe")     # steps gather θ's features, no forward pass
    epoch = _make_epoch(embed, apply_fn, sgraph, tx_theta, tx_phi, b, vb, steps, float(epsilon),
                        int(iterations), bool(embedding_features), target, float(budget_spread), train_theta,
                        raw0.shape[1] if fixed else 0)

    def costs_fn(p, f):
        return nnx.merge(sgraph, p)(f)

    rows_in = np.concatenate([raw0[tr_idx], h_all[tr_idx]], axis=1) if fixed else xt
    xs, ys, ps, nbs, xvs, yvs = (jax.device_put(a) for a in (rows_in, yt, pf[tr_idx], nbr[tr_idx], xv, yv))
    pvs = jax.device_put(pv[tr_idx])
    t_alt = time.perf_counter()
    history: dict[str, Any] = {"hyper_loss": [], "train_loss": [], "epoch_time_s": [], "budget_fraction": k / b,
                               "phase_s": {"checks": t_feat - t_start, "features": t_nb - t_feat,
                                           "neighbours": t_probe - t_nb, "probe_and_setup": t_alt - t_probe}}
    if rho is not None:
        history["noise_rates"] = rho
    from tqdm.auto import tqdm

    k_read = k if readout_fraction is None else min(max(1, int(round(float(readout_fraction) * b))), b - 1)
    start_key, member_values = key, []
    for m in range(int(members)):        # member 0: seed's initialization and batch order; others their own
        if m:
            phi = nnx.split(SelectionModel(feat_dim, hidden, rngs=nnx.Rngs(int(seed) + 7919 * m)), nnx.Param)[1]
            state = (model.params, tx_theta.init(model.params), phi, tx_phi.init(phi))
            key = jax.random.fold_in(start_key, m)
        for _ in tqdm(range(int(epochs)), desc="learned selection", disable=not progress, leave=False):
            key, sub = jax.random.split(key)
            t0 = time.perf_counter()
            state, hl, loss = epoch(state, sub, jnp.float32(k), xs, ys, ps, nbs, xvs, yvs, scale, vfac, pvs)
            hl, loss = float(hl), float(loss)
            history["epoch_time_s"].append(time.perf_counter() - t0)
            if not (np.isfinite(hl) and np.isfinite(loss)):
                raise FloatingPointError(f"learned selection diverged (hyper loss {hl}, training loss {loss}); "
                                         "lower lr / selector_lr or raise epsilon.")
            history["hyper_loss"].append(hl)
            history["train_loss"].append(loss)
        theta, _, phi, _ = state
        if m == 0:
            trained, first_phi = dataclasses.replace(model, params=theta), phi
        member_values.append(_readout(embed, costs_fn, sgraph, theta, phi, x, y, pf, scale,
                                      embedding_features=embedding_features, readout=readout, batch=b,
                                      epsilon=epsilon, iterations=iterations, k=k_read, rounds=int(readout_rounds),
                                      seed=int(seed), features=None if train_theta else (raw0, h_all)))
    if len(member_values) == 1:
        values = member_values[0]
    else:                                # the members' values on one scale (z-scores), averaged
        values = np.mean([(v - v.mean()) / (v.std() + 1e-12) for v in member_values], axis=0).astype(np.float32)
        history["member_values"] = np.stack(member_values)
    t_end = time.perf_counter()
    history["total_time_s"] = t_end - t_start
    history["phase_s"]["alternation_and_readout"] = t_end - t_alt
    return LearnedSelection(values, trained, nnx.merge(sgraph, first_phi), val_idx.astype(np.int64), history)


def _all_features(embed, theta, x: np.ndarray, y: np.ndarray, embedding_features: bool,
                  chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """:func:`sample_features` ``(n, F)`` and embeddings ``(n, d)`` of all rows under ``θ``, in chunks."""
    fn = _jit_features(embed, embedding_features)
    parts = [fn(theta, jnp.asarray(x[s:s + chunk]), jnp.asarray(y[s:s + chunk])) for s in range(0, y.size, chunk)]
    return tuple(np.concatenate([np.asarray(p[i]) for p in parts]) for i in (0, 1))


@functools.lru_cache(maxsize=8)
def _jit_features(embed, embedding_features: bool):
    @jax.jit
    def features(theta, xb, yb):
        logits, h = embed(theta, xb)
        return sample_features(logits, h, yb, embedding=embedding_features), h

    return features


@functools.lru_cache(maxsize=8)
def _warmup_epoch(apply_fn, lr: float, batch: int):
    tx = _adam(lr)
    return tx, make_epoch(apply_fn, tx, batch)


def _warmup(apply_fn, theta, xs, ys, epochs: int, lr: float, batch: int, key) -> Any:
    """``epochs`` plain Adam epochs of ``θ`` on all training rows (unit weights)."""
    tx, run = _warmup_epoch(apply_fn, lr, batch)
    opt_state = tx.init(theta)
    w = jnp.ones(ys.shape, jnp.float32)
    for e in range(epochs):
        theta, opt_state, _ = run(theta, opt_state, jax.random.fold_in(key, 10_000 + e), xs, ys, w)
    return theta


@functools.lru_cache(maxsize=8)
def _adam(lr: float) -> optax.GradientTransformation:
    return optax.adam(lr)       # cached so that equal settings reuse compiled epochs


def local_rewards(logits: jax.Array, h: jax.Array, y: jax.Array, neighbours: jax.Array,
                  val_factors: tuple[jax.Array, jax.Array], probe_signal: jax.Array | None = None) -> jax.Array:
    """Per-point rewards ``(B,)`` of ``target="local"`` / ``"local_probe"``.

    ``s_j = sign(mean_v ⟨p_j - e_{y_j}, p_v - e_{y_v}⟩ (⟨h_j, h_v⟩ + 1))`` over ``j``'s nearest validation
    points ``v`` (``neighbours (B, K)`` rows of ``val_factors = (p_v - e_{y_v} (m, C), h_v (m, d))``): the sign of
    the alignment of the last-layer gradients. With ``probe_signal (B,)`` in ``[-1, 1]`` (``2 p(label) - 1``
    under the linear probe) the reward is ``(s_j + signal_j) / 2``: the local view and the probe's, equally.
    ``logits (B, C)``, ``h (B, d)``, ``y (B,)`` are the points' under the current ``θ``.
    """
    ej = jax.nn.softmax(logits, axis=-1) - jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype)
    return _factor_rewards(ej, h, neighbours, val_factors, probe_signal)


def _factor_rewards(ej: jax.Array, h: jax.Array, neighbours: jax.Array, val_factors: tuple[jax.Array, jax.Array],
                    probe_signal: jax.Array | None) -> jax.Array:
    """:func:`local_rewards` from the points' class factors ``ej = p_j - e_{y_j} (B, C)`` instead of their logits."""
    ev, hv = val_factors[0][neighbours], val_factors[1][neighbours]       # (B, K, C), (B, K, d)
    local = jnp.einsum("bc,bkc->bk", ej, ev) * (jnp.einsum("bd,bkd->bk", h, hv) + 1.0)
    s = jnp.sign(jnp.mean(local, axis=1))
    return s if probe_signal is None else 0.5 * (s + probe_signal)


@functools.lru_cache(maxsize=8)
def _make_epoch(embed, apply_fn, sgraph, tx_theta, tx_phi, b: int, vb: int, steps: int, epsilon: float,
                iterations: int, embedding_features: bool, target: str = "sign", budget_spread: float = 0.0,
                train_theta: bool = True, fixed_width: int = 0):
    """The jitted epoch ``(state, key, k, x, y, point_features, neighbours, x_val, y_val, scale, val_factors,
    probe_signals) -> (state, hyper_loss, train_loss)``.

    ``fixed_width > 0`` (a fixed θ with a local reward): ``x`` holds each row's features at θ, ``fixed_width``
    columns (:func:`sample_features` and the point features), followed by its embedding, so a step gathers rows
    instead of running the model (``point_features`` is then unused).

    Cached on the model functions and settings, so repeated calls (seeds, data sets of equal
    shapes, any layer budget ``k``, a traced scalar) reuse one compilation.
    """

    def costs_fn(p, f):
        return nnx.merge(sgraph, p)(f)

    def step(carry, inputs):
        theta, s_theta, phi, s_phi, xs, ys, ps, nbs, xvs, yvs, scale, vfac, pvs = carry
        rows, vrows, kt = inputs
        xb, yb = xs[rows], ys[rows]
        if fixed_width:                               # features and embedding of θ, gathered
            feats, h = standardize(xb[:, :fixed_width], scale), xb[:, fixed_width:]
            c = vfac[0].shape[1]
            align = _factor_rewards(xb[:, 4:4 + c], h, nbs[rows], vfac, pvs[rows] if target == "local_probe" else None)
        else:
            logits, h = embed(theta, xb)
            logits, h = jax.lax.stop_gradient(logits), jax.lax.stop_gradient(h)
            feats = standardize(jnp.concatenate([sample_features(logits, h, yb, embedding=embedding_features),
                                                 ps[rows]], axis=-1), scale)
            if target in ("local", "local_probe"):    # last-layer alignment with j's nearest validation points
                align = jax.lax.stop_gradient(local_rewards(logits, h, yb, nbs[rows], vfac,
                                                            pvs[rows] if target == "local_probe" else None))
            else:
                g_val = jax.grad(lambda p: jnp.mean(cross_entropy(apply_fn(p, xvs[vrows]), yvs[vrows])))(theta)
                _, align = jax.jvp(lambda p: cross_entropy(apply_fn(p, xb), yb), (theta,), (g_val,))
                align = jax.lax.stop_gradient(align)  # ⟨∇ℓ_j, ∇L_val⟩ for the B points
                if target == "sign":
                    align = jnp.sign(align)           # does a step on j lower (+1) or raise (-1) L_val
        dist = embedding_distances(h)

        def hyper(p):
            sol = fl_layer(dist, costs_fn(p, feats), kt, jnp.asarray(epsilon, dist.dtype), iterations=iterations,
                            budget_steps=3)
            return -jnp.dot(sol.open, align) / kt, sol.open

        (hl, w), g_phi = jax.value_and_grad(hyper, has_aux=True)(phi)
        upd, s_phi = tx_phi.update(g_phi, s_phi, phi)
        phi = optax.apply_updates(phi, upd)
        w = jax.lax.stop_gradient(w)
        if train_theta:
            loss, g_theta = jax.value_and_grad(
                lambda p: jnp.sum(w * cross_entropy(apply_fn(p, xb), yb)) / jnp.sum(w))(theta)
            upd, s_theta = tx_theta.update(g_theta, s_theta, theta)
            theta = optax.apply_updates(theta, upd)
        else:                                         # θ fixed: the weighted loss from the features at hand
            ell = xb[:, 0] if fixed_width else cross_entropy(logits, yb)
            loss = jnp.sum(w * ell) / jnp.sum(w)
        return (theta, s_theta, phi, s_phi, xs, ys, ps, nbs, xvs, yvs, scale, vfac, pvs), (hl, loss)

    @jax.jit
    def epoch(state, key, k, xs, ys, ps, nbs, xvs, yvs, scale, vfac, pvs):
        k1, k2, k3 = jax.random.split(key, 3)
        rows = jax.random.permutation(k1, ys.shape[0])[: steps * b].reshape(steps, b)
        # the budget of each step: k, or with a spread s uniform in b·[k/b - s, k/b + s] (clipped to [1, b-1]),
        # so that the layer's decision boundary sweeps the ranking instead of sitting at one quantile
        ks = jnp.clip(k + b * budget_spread * jax.random.uniform(k3, (steps,), minval=-1.0, maxval=1.0),
                      1.0, b - 1.0)
        vkeys = jax.random.split(k2, steps)
        vrows = jax.vmap(lambda kk: jax.random.choice(kk, yvs.shape[0], (vb,), replace=False))(vkeys)
        carry, (hl, loss) = jax.lax.scan(step, (*state, xs, ys, ps, nbs, xvs, yvs, scale, vfac, pvs),
                                      (rows, vrows, ks))
        return carry[:4], jnp.mean(hl), jnp.mean(loss)

    return epoch


@functools.lru_cache(maxsize=8)
def _make_readout(sgraph, k: int, epsilon: float, iterations: int):
    """Jitted ``layer_open(φ, h, z) -> y (R, B)`` of standardized features ``z``, cached like the epoch."""

    @jax.jit
    def layer_open(phi, h, z):
        def one(hb, fb):
            costs = nnx.merge(sgraph, phi)(fb)
            return fl_relaxation(embedding_distances(hb), costs, k, epsilon=epsilon, iterations=iterations).open

        return jax.vmap(one)(h, z)

    return layer_open


def _readout(embed, costs_fn, sgraph, theta, phi, x, y, pf, scale, *, embedding_features: bool, readout: str,
             batch: int, k: int, epsilon: float, iterations: int, rounds: int, seed: int,
             features: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Values ``(n,)`` of every row from the trained ``θ, φ``, the per-row features ``pf (n, E)`` and the
    features' ``scale`` of training (see the module docstring); ``features = (raw (n, F + E), h (n, d))``
    when they are already known at ``θ`` (a fixed ``θ``), else one forward pass computes them."""
    n = y.size
    if features is not None:
        raw, h = features
    else:
        raw, h = _all_features(embed, theta, x, y, embedding_features)
        raw = np.concatenate([raw, pf], axis=1)
    as_features(raw, name="selection features")    # non-finite model outputs: a clear error
    z = np.asarray(standardize(jnp.asarray(raw), scale))
    if readout == "cost":
        values = -np.asarray(costs_fn(phi, jnp.asarray(z)), np.float32)
    else:
        layer_open = _make_readout(sgraph, k, float(epsilon), int(iterations))
        rng = np.random.default_rng(seed + 7919)
        total = np.zeros(n, np.float64)
        nb = -(-n // batch)
        for _ in range(rounds):
            perm = rng.permutation(n)
            extra = nb * batch - n                  # pad the last batch with random other rows
            rows = np.concatenate([perm, rng.choice(n, extra, replace=n < extra)]).reshape(nb, batch)
            opened = np.asarray(layer_open(phi, jnp.asarray(h[rows]), jnp.asarray(z[rows])))
            total[perm] += opened.reshape(-1)[:n]
        values = (total / rounds).astype(np.float32)
    return as_scores(values, name="learned values").astype(np.float32)


def learned_values(model: Any, dataset: Any, *, budget_fraction: float | str = "noise", epochs: int = 1, seed: int = 0,
                   validation_fraction: float | None = None, validation: tuple[Any, Any] | None = None,
                   warmup_epochs: int | None = None, **kwargs: Any) -> np.ndarray:
    """Learned value ``(n,)`` of every training point of ``dataset`` (higher = more valuable).

    ``model`` is a model name (initialized from ``seed``), an NNX module or a
    :class:`PureModel`; ``warmup_epochs`` defaults to 3 for a model name (an untrained model)
    and to 0 otherwise; the remaining arguments are those of :func:`fit_selection_model`.
    The values rank points for :func:`learned` / ``top_k`` and flag likely mislabelled points
    (the lowest values) when ``validation`` is clean.
    """
    if warmup_epochs is None:
        warmup_epochs = 3 if isinstance(model, str) else 0
    pure = as_pure(model, dataset, seed)
    return fit_selection_model(pure, dataset.x_train, dataset.y_train, num_classes=dataset.num_classes,
                               budget_fraction=budget_fraction, epochs=epochs, seed=seed,
                               validation_fraction=validation_fraction, validation=validation,
                               warmup_epochs=warmup_epochs, **kwargs).values


def learned_value_quantity(model: PureModel, x: Any, y: Any, *, batch_size: int = 1024, epochs: int = 1,
                           seed: int = 0, **kwargs: Any) -> np.ndarray:
    """Scoring-registry adapter: learned values ``(n,)`` starting from the surrogate ``model``.

    ``fn(model, x, y, *, batch_size)`` as :func:`jaxsubset.workflows.quantities.register_quantity` expects;
    ``batch_size`` is the registry's evaluation chunk and is not the training mini-batch
    (pass ``fit_batch_size``). The registry passes no validation set, so by default 10 % of the
    rows are held out for validation, which trusts the training labels (with label noise call
    :func:`fit_selection_model` with a clean ``validation`` instead); other keyword arguments go
    to :func:`fit_selection_model`.
    """
    del batch_size
    if kwargs.get("validation") is None:
        kwargs.setdefault("validation_fraction", 0.1)
    if "fit_batch_size" in kwargs:
        kwargs["batch_size"] = kwargs.pop("fit_batch_size")
    logits = jax.eval_shape(model.apply_fn, model.params, jax.ShapeDtypeStruct((1, *np.shape(x)[1:]), jnp.float32))
    return fit_selection_model(model, x, y, num_classes=int(logits.shape[-1]), epochs=epochs, seed=seed,
                               **kwargs).values


def learned(values: Any, budget: int) -> Subset:
    """Keep the ``budget`` points with the highest learned values (ties: lower index).

    Args:
      values: float ``(n,)`` from :func:`learned_values`, finite.
      budget: number of points, ``0 <= budget <= n``.
    """
    v = as_scores(values, name="learned values")
    budget = check_budget(budget, v.size)
    order = np.argsort(-v, kind="stable")[:budget]
    return Subset.unweighted(np.sort(order), method="learned")


__all__ = ["SelectionModel", "LearnedSelection", "fit_selection_model", "learned_values", "learned",
           "learned_value_quantity", "sample_features", "standardize", "embedding_distances", "READOUTS", "TARGETS"]
