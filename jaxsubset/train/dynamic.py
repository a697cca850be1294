"""Dynamic data pruning policies: which rows of the (selected) subset each epoch trains on.

A policy is a small immutable object passed to :func:`jaxsubset.train.fit` as
``dynamic=``. It never touches data: on the host it turns (epoch, subset size) into a
parameter vector ``(4,) float32``; on the device :func:`draw` turns that vector, the
epoch's random key and the per-example loss table into the epoch's active rows and their
gradient multipliers. Both are pure, so a fit with a policy is deterministic for a seed.

Static shapes: the active set is never materialised as a variable-length array. Every
epoch sorts all ``n`` training rows so that the active rows come first in a random order
(``argsort`` of a uniform key, inactive rows keyed 2), pads that order to whole batches
with the out-of-range row ``n``, and returns the active count ``k``; the epoch then runs
``ceil(k / batch_size)`` steps that read batches at offsets ``j * batch_size`` of the same
``(n_pad,)`` array (rows past ``k`` get weight 0). The compiled step depends only on ``n``
and the batch size, never on ``k``.

- :class:`InfoBatch` (Qin et al., ICLR 2024): each epoch, rows whose loss at their latest
  presentation is below the mean over the subset's presented rows are "well learned"; each
  is dropped with probability ``ratio`` and the kept ones get multiplier ``1/(1-ratio)``
  (the epoch's expected gradient is the full-data one); the last ``anneal`` fraction of
  the epochs (and epoch 0, before any loss is known) use every row, multiplier 1.
- :class:`RandomOnline`: a fresh uniform random ``round(fraction·m)`` rows of the ``m``-row
  subset every epoch.
- :class:`RS2` (Okanovic et al. 2023, without replacement): the subset is shuffled once per
  cycle of ``c = ceil(1/fraction)`` epochs and cut into ``c`` consecutive parts of
  ``floor((j+1)m/c) - floor(jm/c)`` rows; epoch ``j`` of the cycle trains on part ``j``, so
  every row is used exactly once per cycle (per-epoch size ``m/c <= fraction·m``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Union

import jax
import jax.numpy as jnp
import numpy as np


def _check_fraction(name: str, fraction: float) -> float:
    f = float(fraction)
    if not 0.0 < f <= 1.0:
        raise ValueError(f"{name}(fraction={fraction}): fraction must be in (0, 1]; it is the share of the subset "
                         "each epoch trains on.")
    return f


@dataclasses.dataclass(frozen=True)
class InfoBatch:
    """InfoBatch: prune a fraction ``ratio`` of the well-learned rows, rescale the rest.

    Args:
      ratio: probability ``r in [0, 1)`` of dropping a well-learned row in a pruned epoch.
      anneal: fraction ``delta in [0, 1]`` of the final epochs trained on every row
        (the paper's 0.875 "stop pruning" point is ``anneal=0.125``); ``1`` never prunes.
    """

    ratio: float = 0.5
    anneal: float = 0.125
    kind: ClassVar[str] = "infobatch"
    needs_loss: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.ratio) < 1.0:
            raise ValueError(f"InfoBatch ratio must be in [0, 1), got {self.ratio}; 0 disables pruning, values "
                             "near 1 drop almost every well-learned row.")
        if not 0.0 <= float(self.anneal) <= 1.0:
            raise ValueError(f"InfoBatch anneal must be in [0, 1] (the fraction of final epochs on all rows), "
                             f"got {self.anneal}.")

    def prune_epochs(self, epochs: int) -> int:
        """Number of leading epochs that may prune: ``floor(epochs · (1 - anneal))``."""
        return int(math.floor(epochs * (1.0 - float(self.anneal)) + 1e-9))

    def epoch_params(self, epoch: int, epochs: int, m: int) -> np.ndarray:
        prune = 1.0 if epoch < self.prune_epochs(epochs) else 0.0
        return np.asarray([self.ratio, prune, 0.0, 0.0], np.float32)


@dataclasses.dataclass(frozen=True)
class RandomOnline:
    """A fresh uniform random ``round(fraction · m)`` rows of the subset every epoch (weights kept)."""

    fraction: float
    kind: ClassVar[str] = "random_online"
    needs_loss: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _check_fraction("RandomOnline", self.fraction)

    def epoch_size(self, m: int) -> int:
        k = int(round(float(self.fraction) * m))
        if k < 1:
            raise ValueError(f"RandomOnline(fraction={self.fraction}) leaves an empty epoch on a subset of {m} rows; "
                             f"use fraction >= {0.5 / max(m, 1):.3g}.")
        return k

    def epoch_params(self, epoch: int, epochs: int, m: int) -> np.ndarray:
        return np.asarray([self.epoch_size(m), 0.0, 0.0, 0.0], np.float32)


@dataclasses.dataclass(frozen=True)
class RS2:
    """Repeated sampling of random subsets without replacement: every row once per ``ceil(1/fraction)`` epochs."""

    fraction: float
    kind: ClassVar[str] = "rs2"
    needs_loss: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _check_fraction("RS2", self.fraction)

    @property
    def cycle(self) -> int:
        """Epochs per pass over the subset, ``ceil(1 / fraction)``."""
        return int(math.ceil(1.0 / float(self.fraction) - 1e-9))

    def epoch_params(self, epoch: int, epochs: int, m: int) -> np.ndarray:
        c = self.cycle
        if m < c:
            raise ValueError(f"RS2(fraction={self.fraction}) splits the subset into {c} parts per cycle, but the "
                             f"subset has only {m} rows, which leaves an empty epoch; raise the fraction to at "
                             f"least 1/{m}.")
        j = epoch % c
        return np.asarray([(j * m) // c, ((j + 1) * m) // c, epoch // c, 0.0], np.float32)


Policy = Union[InfoBatch, RandomOnline, RS2]
POLICIES = {"infobatch": InfoBatch, "random_online": RandomOnline, "rs2": RS2}


def check_policy(policy: object) -> None:
    """TypeError unless ``policy`` is one of the policies here."""
    if not isinstance(policy, (InfoBatch, RandomOnline, RS2)):
        raise TypeError(f"dynamic must be InfoBatch(...), RandomOnline(...) or RS2(...) from jaxsubset.train, "
                        f"got {type(policy).__name__}.")


def _ranks(key: jax.Array, member: jax.Array) -> jax.Array:
    """A uniformly random rank ``0..m-1`` of each member row (non-members rank after them)."""
    n = member.shape[0]
    order = jnp.argsort(jnp.where(member, jax.random.uniform(key, (n,)), 2.0))
    return jnp.zeros((n,), jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))


def draw(kind: str, base_key: jax.Array, key: jax.Array, pp: jax.Array, member: jax.Array,
         last_loss: jax.Array, seen: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The epoch's ``(active (n,) bool, multiplier (n,) float32)`` for policy ``kind`` (static).

    ``pp`` is the policy's ``epoch_params``; ``member`` the subset's rows; ``last_loss``
    and ``seen`` the loss table (InfoBatch); ``base_key`` is fixed for the fit (RS2's
    per-cycle permutation), ``key`` fresh per epoch.
    """
    n = member.shape[0]
    ones = jnp.ones((n,), jnp.float32)
    if kind == "none":
        return member, ones
    if kind == "infobatch":
        r, prune = pp[0], pp[1] > 0
        scored = member & seen
        mean = jnp.sum(jnp.where(scored, last_loss, 0.0)) / jnp.maximum(jnp.sum(scored), 1)
        well = scored & (last_loss < mean) & prune
        drop = well & (jax.random.uniform(key, (n,)) < r)
        return member & ~drop, jnp.where(well & ~drop, 1.0 / (1.0 - r), ones)
    if kind == "random_online":
        return member & (_ranks(key, member) < pp[0].astype(jnp.int32)), ones
    if kind == "rs2":
        rank = _ranks(jax.random.fold_in(base_key, pp[2].astype(jnp.int32)), member)
        return member & (rank >= pp[0].astype(jnp.int32)) & (rank < pp[1].astype(jnp.int32)), ones
    raise ValueError(f"Unknown policy kind {kind!r}.")


def plan_epoch(kind: str, batch_size: int, base_key: jax.Array, key: jax.Array, pp: jax.Array, member: jax.Array,
               w: jax.Array, last_loss: jax.Array, seen: jax.Array
               ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The epoch's batch plan with static shapes.

    Returns ``order (n_pad,) int32`` (active rows first in random order, then the others,
    then ``n`` up to a multiple of ``batch_size``), ``w_eff (n,)`` (subset weight on active
    rows, 0 elsewhere), ``mult (n,)`` (the policy's gradient multiplier) and ``k`` (active
    count, int32 scalar).
    """
    n = member.shape[0]
    k_order, k_draw = jax.random.split(key)
    active, mult = draw(kind, base_key, k_draw, pp, member, last_loss, seen)
    order = jnp.argsort(jnp.where(active, jax.random.uniform(k_order, (n,)), 2.0)).astype(jnp.int32)
    n_pad = -(-n // batch_size) * batch_size
    order = jnp.concatenate([order, jnp.full((n_pad - n,), n, jnp.int32)])
    return order, jnp.where(active, w, 0.0), mult, jnp.sum(active).astype(jnp.int32)
