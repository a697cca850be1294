"""Learning-rate schedules and optimizers by name (thin wrappers over Optax)."""

from __future__ import annotations

import optax

SCHEDULES = ("constant", "cosine", "warmup_cosine", "onecycle")
OPTIMIZERS = ("sgd", "adam", "adamw")


def make_schedule(name: str, lr: float, total_steps: int) -> optax.Schedule:
    """An Optax schedule over ``total_steps`` optimizer steps.

    - ``constant``: ``lr`` throughout.
    - ``cosine``: cosine decay from ``lr`` to 0.
    - ``warmup_cosine``: 5 % linear warm-up then cosine decay.
    - ``onecycle``: the one-cycle (cyclical) schedule of the GEDA study (Smith 2018):
      up to ``lr`` over 30 % of the steps, then cosine annealing down to ``lr / 1e4``.
    """
    if lr <= 0:
        raise ValueError(f"learning rate must be > 0, got {lr}.")
    total_steps = max(int(total_steps), 1)
    if name == "constant":
        return optax.constant_schedule(lr)
    if name == "cosine":
        return optax.cosine_decay_schedule(lr, total_steps)
    if name == "warmup_cosine":
        warm = max(1, total_steps // 20)
        return optax.warmup_cosine_decay_schedule(0.0, lr, warm, total_steps)
    if name == "onecycle":
        return optax.cosine_onecycle_schedule(total_steps, lr, pct_start=0.3)
    raise ValueError(f"Unknown schedule {name!r}; choose one of {list(SCHEDULES)}.")


def make_optimizer(name: str, schedule: optax.Schedule, *, weight_decay: float = 0.0,
                   momentum: float = 0.9) -> optax.GradientTransformation:
    """``sgd`` (Nesterov momentum), ``adam`` or ``adamw``, with optional L2 / decoupled decay."""
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
    if name == "sgd":
        tx = optax.sgd(schedule, momentum=momentum, nesterov=momentum > 0)
        return optax.chain(optax.add_decayed_weights(weight_decay), tx) if weight_decay else tx
    if name == "adam":
        tx = optax.adam(schedule)
        return optax.chain(optax.add_decayed_weights(weight_decay), tx) if weight_decay else tx
    if name == "adamw":
        return optax.adamw(schedule, weight_decay=weight_decay)
    raise ValueError(f"Unknown optimizer {name!r}; choose one of {list(OPTIMIZERS)} or pass an optax "
                     "GradientTransformation.")
