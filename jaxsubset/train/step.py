"""Jitted training steps and whole-epoch scans on weighted data."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from jaxsubset.train.loss import weighted_loss
from jaxsubset.types import ApplyFn


def make_train_step(apply_fn: ApplyFn, tx: optax.GradientTransformation) -> Callable:
    """``step(params, opt_state, x (B, ...), y (B,), w (B,)) -> (params, opt_state, loss)``, jitted."""

    def step(params, opt_state, x, y, w):
        loss, g = jax.value_and_grad(lambda p: weighted_loss(apply_fn, p, x, y, w))(params)
        updates, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step)


def epoch_order(key: jax.Array, n: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """A random permutation of ``range(n)`` padded to whole batches.

    Returns:
      ``(order (num_batches, batch_size) int32, valid (num_batches, batch_size) bool)``; padded
      slots point at row 0 and are marked invalid (they get weight 0).
    """
    nb = -(-n // batch_size)
    perm = jax.random.permutation(key, n)
    pad = nb * batch_size - n
    order = jnp.concatenate([perm, jnp.zeros((pad,), perm.dtype)]).reshape(nb, batch_size)
    valid = (jnp.arange(nb * batch_size) < n).reshape(nb, batch_size)
    return order.astype(jnp.int32), valid


def make_epoch(apply_fn: ApplyFn, tx: optax.GradientTransformation, batch_size: int) -> Callable:
    """One epoch over device-resident data as a single compiled ``lax.scan``.

    ``epoch(params, opt_state, key, x (n, ...), y (n,), w (n,)) -> (params, opt_state, mean_loss)``;
    the batches are a fresh permutation from ``key``; the last batch is padded with
    zero-weight rows, which leaves every batch's weighted loss exact.
    """
    step = make_train_step(apply_fn, tx)

    def epoch(params, opt_state, key, x, y, w):
        order, valid = epoch_order(key, y.shape[0], batch_size)

        def body(carry, ov):
            p, s = carry
            o, v = ov
            p, s, loss = step(p, s, x[o], y[o], w[o] * v)
            return (p, s), loss

        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), (order, valid))
        return params, opt_state, jnp.mean(losses)

    return jax.jit(epoch)


def make_indexed_step(apply_fn: ApplyFn, tx: optax.GradientTransformation) -> Callable:
    """``step(params, opt_state, x (n, ...), y (n,), w (n,), order (B,), valid (B,))``, jitted.

    One optimizer step on the rows ``order`` of device-resident arrays (padding slots have
    ``valid = False`` and weight 0): the per-step counterpart of :func:`make_epoch`, for
    backends where a ``lax.scan`` body runs slower than the same step compiled alone
    (XLA:CPU with convolutions; see ``fit(epoch_mode=...)``).
    """

    def step(params, opt_state, x, y, w, order, valid):
        loss, g = jax.value_and_grad(
            lambda p: weighted_loss(apply_fn, p, x[order], y[order], w[order] * valid))(params)
        updates, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step)
