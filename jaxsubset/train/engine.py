"""The compiled programs :func:`jaxsubset.train.fit` runs, cached across fits.

A fit needs four jitted functions: the epoch plan (:func:`jaxsubset.train.dynamic.plan_epoch`),
the optimizer step on device-resident data (one call per batch, ``epoch_mode="steps"``),
the whole epoch as one compiled loop (``epoch_mode="scan"``) and the step on host-streamed
batches. None of them closes over anything that changes between fits of the same model:

- data enter as the full training arrays ``(n, ...)`` plus an epoch plan of shape
  ``(ceil(n / B) · B,)``, so the subset size, the seed and the policy's choices are data;
- the learning rate is computed in the step from the step position and ``[lr, total steps,
  warm-up steps]`` passed as data (:mod:`jaxsubset.train.lr`); the optimizer runs with unit
  learning rate and its update is scaled by that value (all of ``sgd`` / ``adam`` / ``adamw``
  apply the learning rate last, so this is the same update);
- models built by name or passed as an NNX module are keyed by their ``GraphDef`` (equal
  for every seed), a :class:`PureModel` by its ``apply_fn`` object.

Programs are kept in a bounded LRU cache of :data:`CACHE_SIZE` entries keyed by (model,
optimizer name and weight decay or the optax object, schedule name, batch size, policy
kind, recorded tables, epoch mode); each entry keeps at most :data:`CACHE_SIZE` compiled
executables per function (one per data/parameter shape). The cache holds strong
references to at most that many model functions; :func:`clear_cache` empties it.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from typing import Any, Callable, Hashable

import jax
import jax.numpy as jnp
import optax

from jaxsubset.grads.scores import cross_entropy
from jaxsubset.train.dynamic import plan_epoch
from jaxsubset.train.evaluate import make_predict
from jaxsubset.train.lr import schedule_value
from jaxsubset.train.stats import update_tables

CACHE_SIZE = 8
_CACHE: "collections.OrderedDict[Hashable, Programs]" = collections.OrderedDict()
_COUNTS = {"hits": 0, "misses": 0, "compiles": 0}


@dataclasses.dataclass
class Programs:
    """Jitted functions of one cache entry and their compiled executables per input signature."""

    plan: Callable
    step: Callable
    epoch: Callable
    host_step: Callable
    predict: Callable
    compiled: "collections.OrderedDict[Hashable, Any]" = dataclasses.field(
        default_factory=collections.OrderedDict)

    def executable(self, name: str, *args: Any) -> tuple[Any, float]:
        """The compiled ``name`` for these argument shapes and the seconds spent compiling it (0 if cached)."""
        leaves, tree = jax.tree_util.tree_flatten(args)
        sig = (name, tree, tuple((jnp.shape(a), jnp.result_type(a)) for a in leaves))
        if sig in self.compiled:
            self.compiled.move_to_end(sig)
            return self.compiled[sig], 0.0
        t0 = time.perf_counter()
        exe = getattr(self, name).lower(*args).compile()
        dt = time.perf_counter() - t0
        _COUNTS["compiles"] += 1
        self.compiled[sig] = exe
        while len(self.compiled) > CACHE_SIZE:
            self.compiled.popitem(last=False)
        return exe, dt


def _step_core(apply_fn: Callable, tx: optax.GradientTransformation, schedule: str | None) -> Callable:
    """``core(params, opt_state, tables, xb, yb, idx, wb, mb, valid, t, hp)``: one weighted step.

    The batch loss is ``Σ w_i m_i ℓ_i / Σ w_i`` over valid rows (``m`` the policy's gradient
    multiplier, 1 without a policy); the per-row logits and losses of the same forward pass
    update the per-example tables.
    """

    def core(params, opt_state, tables, xb, yb, idx, wb, mb, valid, t, hp):
        def loss_fn(p):
            logits = apply_fn(p, xb)
            ce = cross_entropy(logits, yb)
            total = jnp.sum(wb)
            loss = jnp.where(total > 0, jnp.sum(wb * mb * ce) / jnp.where(total > 0, total, 1.0), 0.0)
            return loss, (logits, ce)

        (loss, (logits, ce)), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(g, opt_state, params)
        if schedule is not None:
            lr = schedule_value(schedule, t, hp)
            updates = jax.tree_util.tree_map(lambda u: jnp.asarray(lr, u.dtype) * u, updates)
        params = optax.apply_updates(params, updates)
        return params, opt_state, update_tables(tables, idx, valid, logits, yb, ce), loss

    return core


def _build(apply_fn: Callable, tx: optax.GradientTransformation, schedule: str | None, batch_size: int,
           kind: str) -> Programs:
    core = _step_core(apply_fn, tx, schedule)
    B = int(batch_size)

    def step(params, opt_state, tables, acc, x, y, order, w_eff, mult, k, j, ts, hp):
        n = y.shape[0]
        pos = j * B + jnp.arange(B, dtype=jnp.int32)
        idx = order[pos]
        valid = pos < k
        src = jnp.minimum(idx, n - 1)
        wb = jnp.where(valid, w_eff[src], 0.0)
        t = ts[0] + ts[1] * j.astype(jnp.float32) / ts[2]  # nominal schedule position (see fit)
        params, opt_state, tables, loss = core(params, opt_state, tables, x[src], y[src], idx, wb, mult[src],
                                               valid, t, hp)
        return params, opt_state, tables, acc + loss

    def epoch(params, opt_state, tables, acc, x, y, order, w_eff, mult, k, ts, hp):
        nb = (k + B - 1) // B

        def body(j, c):
            return step(*c, x, y, order, w_eff, mult, k, j, ts, hp)

        return jax.lax.fori_loop(0, nb, body, (params, opt_state, tables, acc))

    def host_step(params, opt_state, tables, acc, xb, yb, idx, wb, mb, valid, j, ts, hp):
        t = ts[0] + ts[1] * j.astype(jnp.float32) / ts[2]
        params, opt_state, tables, loss = core(params, opt_state, tables, xb, yb, idx, wb, mb, valid, t, hp)
        return params, opt_state, tables, acc + loss

    def plan(base_key, key, pp, member, w, last_loss, seen):
        return plan_epoch(kind, B, base_key, key, pp, member, w, last_loss, seen)

    # the per-example tables (argument 2) are updated in place: fit owns them, nothing else holds them
    return Programs(plan=jax.jit(plan), step=jax.jit(step, donate_argnums=2), epoch=jax.jit(epoch, donate_argnums=2),
                    host_step=jax.jit(host_step, donate_argnums=2), predict=make_predict(apply_fn))


def programs(model_key: Hashable, apply_fn: Callable, opt_key: Hashable, tx: optax.GradientTransformation,
             schedule: str | None, batch_size: int, kind: str, tables_key: Hashable) -> Programs:
    """The cached programs for this configuration (built on a miss; least recently used evicted)."""
    key = (model_key, opt_key, schedule, int(batch_size), kind, tables_key)
    if key in _CACHE:
        _COUNTS["hits"] += 1
        _CACHE.move_to_end(key)
        return _CACHE[key]
    _COUNTS["misses"] += 1
    progs = _build(apply_fn, tx, schedule, batch_size, kind)
    _CACHE[key] = progs
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return progs


def clear_cache() -> None:
    """Drop every cached training program (and the model functions they reference)."""
    _CACHE.clear()


def cache_info() -> dict[str, int]:
    """``{"entries", "hits", "misses", "compiles"}`` since import (compiles counts executables built)."""
    return {"entries": len(_CACHE), **_COUNTS}
