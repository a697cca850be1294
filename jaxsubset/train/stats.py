"""Per-example statistics updated from the forward pass of each training step (no extra pass).

The training step already computes every batch row's logits and loss; :func:`update_tables`
scatters what a dynamic-pruning policy or the training-dynamics record needs into
device-resident tables of shape ``(n,)`` indexed by training row. Which tables exist is
fixed per fit (static), so an unused feature costs nothing:

- ``last_loss``, ``seen``: the loss at the latest presentation (InfoBatch's score table).
- the dynamics record (``record_dynamics=True``): presentation count, correctness at the
  latest presentation, ever-learned flag, forgetting events, summed margin (AUM), and
  Welford running mean / sum of squared deviations of the loss and of EL2N.

:func:`dynamics` turns the record into the public per-row arrays.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsubset.grads.last_layer import softmax_minus_onehot
from jaxsubset.types import DYNAMICS

_RECORD = ("count", "correct", "learned", "forgets", "margin_sum", "loss_mean", "loss_m2", "el2n_mean", "el2n_m2")
_BOOL = ("seen", "correct", "learned")

Tables = dict[str, jax.Array]


def init_tables(n: int, *, loss_table: bool, record: bool) -> dict[str, np.ndarray]:
    """Zeroed tables ``(n,)`` for the features in use (an empty dict when none is)."""
    names = (("last_loss", "seen") if loss_table else ()) + (_RECORD if record else ())
    return {k: np.zeros(n, bool if k in _BOOL else np.float32) for k in names}


def margins(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Assigned-class logit minus the largest other logit, ``(B,)`` (Pleiss et al. 2020)."""
    own = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
    other = jnp.max(jnp.where(jax.nn.one_hot(y, logits.shape[-1], dtype=bool), -jnp.inf, logits), axis=-1)
    return own - other


def el2n_from_logits(logits: jax.Array, y: jax.Array) -> jax.Array:
    """``‖softmax(z) − onehot(y)‖₂`` per row, ``(B,)`` (Paul et al. 2021)."""
    return jnp.linalg.norm(softmax_minus_onehot(logits, y), axis=-1)


def update_tables(tables: Tables, idx: jax.Array, valid: jax.Array, logits: jax.Array, y: jax.Array,
                  losses: jax.Array) -> Tables:
    """Tables after presenting rows ``idx (B,)`` (only where ``valid``) with these ``logits (B, C)``.

    ``idx`` must not repeat a valid row within one call (a batch is drawn without replacement).
    """
    if not tables:
        return tables
    n = next(iter(tables.values())).shape[0]
    tgt = jnp.where(valid, idx, n)  # invalid slots write out of range and are dropped
    src = jnp.clip(idx, 0, n - 1)
    out = dict(tables)

    def put(name: str, value: jax.Array) -> None:
        out[name] = tables[name].at[tgt].set(value.astype(tables[name].dtype), mode="drop")

    losses = losses.astype(jnp.float32)
    if "last_loss" in tables:
        put("last_loss", losses)
        put("seen", jnp.ones_like(valid))
    if "count" in tables:
        count = tables["count"][src] + 1.0
        correct = jnp.argmax(logits, axis=-1) == y
        put("count", count)
        put("forgets", tables["forgets"][src] + (tables["correct"][src] & ~correct))
        put("correct", correct)
        put("learned", tables["learned"][src] | correct)
        put("margin_sum", tables["margin_sum"][src] + margins(logits.astype(jnp.float32), y))
        for name, v in (("loss", losses), ("el2n", el2n_from_logits(logits, y))):
            mean = tables[f"{name}_mean"][src]
            delta = v - mean
            new_mean = mean + delta / count
            put(f"{name}_mean", new_mean)
            put(f"{name}_m2", tables[f"{name}_m2"][src] + delta * (v - new_mean))
    return out


def dynamics(tables: Any) -> dict[str, np.ndarray]:
    """The training-dynamics record as float arrays ``(n,)`` keyed by :data:`jaxsubset.types.DYNAMICS`.

    Per example, over its presentations during training (one per epoch when every epoch
    uses every row), from the forward pass of the step that presented it (before that
    step's update):

    - ``forgetting``: number of correct -> incorrect transitions between consecutive
      presentations (Toneva et al. 2019). Examples never classified correctly are, in the
      paper, forgotten infinitely often and rank above every learned example; here they
      get their number of presentations, which exceeds any learned example's possible count
      for the same presentations (at most half of them), so arrays stay finite.
    - ``aum``: mean margin (assigned logit minus largest other logit; Pleiss et al. 2020).
    - ``loss_mean``, ``loss_var``, ``el2n_mean``, ``el2n_var``: mean and population
      variance of the cross-entropy and of EL2N.

    Rows never presented (outside the subset, or always pruned) get NaN in every array.
    """
    t = {k: np.asarray(v) for k, v in tables.items()}
    if "count" not in t:
        raise ValueError("No dynamics were recorded; train with fit(..., record_dynamics=True).")
    c = t["count"].astype(np.float64)
    seen = c > 0
    safe = np.where(seen, c, 1.0)
    forgetting = np.where(t["learned"], t["forgets"], c)
    out = {
        "forgetting": forgetting,
        "aum": t["margin_sum"] / safe,
        "loss_mean": t["loss_mean"],
        "loss_var": np.maximum(t["loss_m2"] / safe, 0.0),
        "el2n_mean": t["el2n_mean"],
        "el2n_var": np.maximum(t["el2n_m2"] / safe, 0.0),
    }
    return {k: np.where(seen, out[k], np.nan).astype(np.float32) for k in DYNAMICS}
