"""One greedy engine over a gain oracle: naive, lazy, stochastic, sampling and jitted greedy.

A selector states *what* it maximizes as a :class:`GainOracle` (gains of candidates given the picks so
far, and how a pick moves them); :func:`greedy` decides *how* to pick: ``"naive"`` (every candidate every
step; ``refresh`` best per evaluation), ``"lazy"`` (Minoux 1978: stale gains of a submodular function
are upper bounds, so only the top of a priority queue is re-evaluated; the same picks as naive),
``"stochastic"`` (Mirzasoleiman et al. 2015: ``⌈(n/k)·ln(1/ε)⌉`` random candidates per step) or
``"sample"`` (draw proportionally to the gains: k-means++'s ``D²`` sampling). Ties go to the lowest
index. :func:`fori_greedy` is the exact greedy as a ``lax.fori_loop`` over pure functions, traced
inside a jitted caller.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from typing import Any, Callable, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

OPTIMIZERS = ("naive", "lazy", "stochastic", "sample")


class GainOracle(Protocol):
    """Marginal gains of the candidates ``0..n-1`` given the picks so far (the state)."""

    n: int

    def gains(self, cand: np.ndarray) -> np.ndarray:
        """Gains ``(len(cand),)`` of candidates ``cand`` (int64) at the current state."""

    def add(self, picks: np.ndarray) -> None:
        """Move the state by the picks ``(r,)`` (int64) taken together."""


@dataclasses.dataclass(frozen=True)
class Oracle:
    """A :class:`GainOracle` from two functions (for selectors whose state fits in a closure)."""

    n: int
    gains: Callable[[np.ndarray], np.ndarray]
    add: Callable[[np.ndarray], None]


@dataclasses.dataclass(frozen=True)
class GreedyRun:
    """Picks ``order`` (int64 ``(k,)``) in the order taken, their gains (float64 ``(k,)``, at the step
    each was picked) and the number of candidate gains evaluated."""

    order: np.ndarray
    gains: np.ndarray
    evaluations: int


def greedy(oracle: GainOracle, budget: int, *, optimizer: str = "naive", forced: Sequence[int] = (),
           refresh: int = 1, epsilon: float = 0.01, seed: int = 0, batch: int = 1, max_batch: int | None = None,
           whole_batches: bool = False, initial_gains: np.ndarray | None = None) -> GreedyRun:
    """Pick ``budget`` candidates of ``oracle`` greedily.

    Args:
      oracle: a :class:`GainOracle`.
      budget: number of picks ``k <= oracle.n`` (including ``forced``; checked by the caller).
      optimizer: one of :data:`OPTIMIZERS`.
      forced: picks taken first, in order (``"naive"`` and ``"sample"``), e.g. a random first center.
      refresh: ``"naive"`` takes this many best candidates per evaluation (1 = exact greedy).
      epsilon, seed: ``"stochastic"``'s ``ε`` and the seed of ``"stochastic"`` / ``"sample"``.
      batch, max_batch: ``"lazy"`` re-evaluates up to ``batch`` stale candidates at a time, doubling
        up to ``max_batch`` (default ``batch``) while the top of the queue stays stale.
      whole_batches: ``"lazy"`` re-evaluates the top ``batch`` entries even if some are fresh (fewer,
        larger calls: for oracles with a per-call cost, e.g. a jitted device function).
      initial_gains: ``"lazy"``'s gains on the empty set ``(n,)``, if the caller has them.
    """
    k = int(budget)
    if optimizer == "lazy":
        return _lazy(oracle, k, initial_gains, batch, max_batch or batch, whole_batches)
    if optimizer == "stochastic":
        return _stochastic(oracle, k, epsilon, seed)
    if optimizer not in ("naive", "sample"):
        raise ValueError(f"Unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}.")
    n = oracle.n
    everyone = np.arange(n)
    chosen = np.zeros(n, bool)
    order: list[int] = []
    gains: list[float] = []
    evals = 0
    rng = np.random.default_rng(seed) if optimizer == "sample" else None
    while len(order) < k:
        if len(order) < len(forced):
            picks = np.asarray([forced[len(order)]], np.int64)
            g = np.asarray(oracle.gains(picks), np.float64)
            g_picks = g
        else:
            g = np.asarray(oracle.gains(everyone))
            evals += n
            if rng is not None:
                g = np.where(chosen, 0.0, g)
                total = g.sum()
                j = int(rng.choice(n, p=g / total)) if total > 0 else int(rng.choice(np.flatnonzero(~chosen)))
                picks = np.asarray([j], np.int64)
            else:
                g = np.where(chosen, -np.inf, g)
                r = min(int(refresh), k - len(order))
                picks = np.asarray([int(np.argmax(g))] if r == 1 else np.argsort(-g, kind="stable")[:r], np.int64)
            g_picks = g[picks]
        order.extend(int(j) for j in picks)
        gains.extend(float(v) for v in g_picks)
        chosen[picks] = True
        oracle.add(picks)
    return GreedyRun(np.asarray(order, np.int64), np.asarray(gains, np.float64), evals)


def _lazy(oracle: GainOracle, k: int, g0: np.ndarray | None, batch: int, max_batch: int, whole: bool) -> GreedyRun:
    n = oracle.n
    evals = 0
    if g0 is None:
        g0 = oracle.gains(np.arange(n))
        evals += n
    heap = [(-float(g), j) for j, g in enumerate(np.asarray(g0, np.float64))]
    heapq.heapify(heap)
    stamp = np.zeros(n, np.int64)  # step at which each stored gain was computed
    order, gains = [], []
    for t in range(k):
        size = batch
        while True:
            negg, j = heap[0]
            if stamp[j] == t:
                heapq.heappop(heap)
                break
            popped = [heapq.heappop(heap)[1]]
            while len(popped) < size and heap and (whole or stamp[heap[0][1]] != t):
                popped.append(heapq.heappop(heap)[1])
            size = min(2 * size, max_batch)
            g = np.asarray(oracle.gains(np.asarray(popped, np.int64)), np.float64)
            evals += len(popped)
            for jj, v in zip(popped, g):
                stamp[jj] = t
                heapq.heappush(heap, (-float(v), jj))
        order.append(j)
        gains.append(-negg)
        oracle.add(np.asarray([j], np.int64))
    return GreedyRun(np.asarray(order, np.int64), np.asarray(gains, np.float64), evals)


def _stochastic(oracle: GainOracle, k: int, epsilon: float, seed: int) -> GreedyRun:
    m = oracle.n
    rng = np.random.default_rng(seed)
    sample = min(m, int(math.ceil(m / max(k, 1) * math.log(1.0 / epsilon))))
    remaining = np.arange(m)
    r = m
    order, gains, evals = [], [], 0
    for _ in range(k):
        take = min(sample, r)
        pos = np.sort(rng.choice(r, size=take, replace=False)) if take < r else np.arange(r)
        cand = remaining[pos]
        sort = np.argsort(cand, kind="stable")
        cand, pos = cand[sort], pos[sort]
        g = np.asarray(oracle.gains(cand), np.float64)
        evals += cand.size
        best = int(np.argmax(g))
        j = int(cand[best])
        order.append(j)
        gains.append(float(g[best]))
        oracle.add(np.asarray([j], np.int64))
        p = pos[best]
        remaining[p], remaining[r - 1] = remaining[r - 1], remaining[p]
        r -= 1
    return GreedyRun(np.asarray(order, np.int64), np.asarray(gains, np.float64), evals)


def fori_greedy(gain: Callable[[Any], jax.Array], update: Callable[[Any, jax.Array, jax.Array], Any], state: Any,
                n: int, budget: int) -> tuple[jax.Array, jax.Array]:
    """Exact greedy as a ``lax.fori_loop`` (trace it inside a jitted function).

    ``gain(state)`` returns the ``(n,)`` gains of every candidate, ``update(state, j, t)`` the state
    after picking ``j`` at step ``t``. Returns the picks ``(budget,)`` int32 and their gains float32.
    """
    def body(t, carry):
        state, sel, order, gains = carry
        g = jnp.where(sel, -jnp.inf, gain(state))
        a = jnp.argmax(g)
        return update(state, a, t), sel.at[a].set(True), order.at[t].set(a), gains.at[t].set(g[a])

    init = (state, jnp.zeros((n,), bool), jnp.zeros((budget,), jnp.int32), jnp.zeros((budget,), jnp.float32))
    _, _, order, gains = jax.lax.fori_loop(0, budget, body, init)
    return order, gains


__all__ = ["greedy", "fori_greedy", "GainOracle", "Oracle", "GreedyRun", "OPTIMIZERS"]
