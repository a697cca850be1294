"""A linear probe fitted on clean reference embeddings: the loss of each point's given label under it.

A multinomial logistic regression ``softmax(W z + b)`` (``z`` the embedding standardized with the
reference set's mean and deviation) is fitted on a clean labelled reference set only (e.g. the
validation split), full batch, by Adam with L2 penalty ``l2/2 · |W|²`` on the mean cross-entropy.
The noisy training labels never enter the fit, so the probe's loss of a training point's label,
``-log p(y_i | z_i)``, is a mislabel score the noisy labels cannot have bent (the model's own loss
has fitted part of them). It is a linear, global counterpart of the neighbour agreement
(:mod:`jaxsubset.valuation.neighbours`).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsubset.checks import check_labelled_sets


@functools.partial(jax.jit, static_argnames=("num_classes", "steps"))
def _fit(z: jax.Array, y: jax.Array, num_classes: int, steps: int, lr: float, l2: float):
    tx = optax.adam(lr)
    params = (jnp.zeros((z.shape[1], num_classes), jnp.float32), jnp.zeros((num_classes,), jnp.float32))

    def objective(p):
        w, b = p
        logp = jax.nn.log_softmax(z @ w + b)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1)) + 0.5 * l2 * jnp.sum(w * w)

    def step(carry, _):
        p, s = carry
        g = jax.grad(objective)(p)
        u, s = tx.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
    return params


@jax.jit
def _label_loss(params, z: jax.Array, y: jax.Array) -> jax.Array:
    w, b = params
    logp = jax.nn.log_softmax(z @ w + b)
    return -jnp.take_along_axis(logp, y[:, None], axis=1)[:, 0]


def probe_loss(emb: Any, labels: Any, ref_emb: Any, ref_labels: Any, *, num_classes: int, steps: int = 300,
               lr: float = 0.05, l2: float = 1e-3) -> np.ndarray:
    """Loss ``(n,)`` (float32, ``>= 0``) of each point's label under a linear probe fitted on the reference set.

    Args:
      emb: ``(n, d)`` embeddings of the points to score (e.g. a surrogate's penultimate layer).
      labels: int ``(n,)`` their (possibly noisy) labels, in ``[0, num_classes)``.
      ref_emb: ``(m, d)`` embeddings of a clean reference set (a validation split), ``m >= 2``.
      ref_labels: int ``(m,)`` in ``[0, num_classes)``.
      num_classes: ``C``, the probe's outputs.
      steps: full-batch Adam steps (``>= 1``); lr: Adam's step size (``> 0``); l2: penalty on ``W`` (``>= 0``).
    """
    h, y, r, ry, _ = check_labelled_sets(emb, labels, ref_emb, ref_labels, 1, names=("training", "reference"),
                                         what="probe_loss")
    if isinstance(num_classes, (bool, np.bool_)) or int(num_classes) != num_classes or int(num_classes) < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}.")
    for name, lab in (("training", y), ("reference", ry)):
        if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
            raise ValueError(f"{name} labels must lie in [0, {num_classes}), got range [{lab.min()}, {lab.max()}].")
    if r.shape[0] < 2:
        raise ValueError(f"probe_loss needs at least 2 reference points to standardize, got {r.shape[0]}.")
    if isinstance(steps, (bool, np.bool_)) or int(steps) != steps or int(steps) < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}.")
    if not (np.isfinite(lr) and lr > 0) or not (np.isfinite(l2) and l2 >= 0):
        raise ValueError(f"lr must be > 0 and l2 >= 0 (finite), got lr={lr!r}, l2={l2!r}.")
    mu, sd = r.mean(0), r.std(0) + 1e-6
    params = _fit(jnp.asarray((r - mu) / sd), jnp.asarray(ry, jnp.int32), int(num_classes), int(steps),
                  float(lr), float(l2))
    return np.asarray(_label_loss(params, jnp.asarray((h - mu) / sd), jnp.asarray(y, jnp.int32)), np.float32)


__all__ = ["probe_loss"]
