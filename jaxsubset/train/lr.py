"""Learning-rate schedules evaluated inside a compiled step, with their parameters as data.

:func:`jaxsubset.train.make_schedule` returns an Optax closure over the total step count;
compiling it into a training step would recompile the step for every different number of
steps (another subset size, another epoch count, a pruned epoch). Here the same four
schedules take the step position ``t`` and their parameters ``hp = [lr, total_steps,
warmup_steps]`` as traced values, so one compiled step serves every schedule length.
``schedule_value(name, t, schedule_params(name, lr, total))`` equals
``make_schedule(name, lr, total)(t)`` (checked in the tests); ``t`` may be fractional.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxsubset.train.schedules import SCHEDULES

_DIV, _FINAL_DIV, _PCT_START = 25.0, 1e4, 0.3  # optax.cosine_onecycle_schedule's defaults (make_schedule)


def schedule_params(name: str, lr: float, total_steps: int) -> np.ndarray:
    """``hp (3,) float32 = [lr, total_steps, warmup_steps]`` for :func:`schedule_value`."""
    if name not in SCHEDULES:
        raise ValueError(f"Unknown schedule {name!r}; choose one of {list(SCHEDULES)}.")
    if lr <= 0:
        raise ValueError(f"learning rate must be > 0, got {lr}.")
    total = max(int(total_steps), 1)
    warm = max(1, total // 20) if name == "warmup_cosine" else 0
    return np.asarray([lr, total, warm], np.float32)


def _cosine(lr: jax.Array, t: jax.Array, steps: jax.Array) -> jax.Array:
    count = jnp.minimum(t, steps)
    return lr * (0.5 * (1 + jnp.cos(jnp.pi * count / steps)))


def _cos_interp(start: jax.Array, end: jax.Array, pct: jax.Array) -> jax.Array:
    return end + (start - end) / 2.0 * (jnp.cos(jnp.pi * pct) + 1)


def schedule_value(name: str, t: jax.Array, hp: jax.Array) -> jax.Array:
    """The learning rate at step position ``t`` (scalar float32) of schedule ``name`` (static)."""
    lr, total, warm = hp[0], hp[1], hp[2]
    if name == "constant":
        return lr
    if name == "cosine":
        return _cosine(lr, t, total)
    if name == "warmup_cosine":
        rise = lr * jnp.minimum(t, warm) / warm
        return jnp.where(t < warm, rise, _cosine(lr, t - warm, jnp.maximum(total - warm, 1.0)))
    if name == "onecycle":
        b1 = jnp.floor(_PCT_START * total)
        start, peak = lr / _DIV, lr
        final = start / _FINAL_DIV
        up = _cos_interp(start, peak, (t - 0.0) / jnp.maximum(b1, 1.0))
        down = _cos_interp(peak, final, (t - b1) / jnp.maximum(total - b1, 1.0))
        return jnp.where(t < 0, start, jnp.where(t < b1, up, jnp.where(t < total, down, final)))
    raise ValueError(f"Unknown schedule {name!r}; choose one of {list(SCHEDULES)}.")
