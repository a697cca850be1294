"""Coverage-centric coreset selection, CCS (Zheng et al., ICLR 2023).

1. Drop the ``beta`` fraction of the hardest examples (``floor(beta * n)`` rows; mislabeled
   and ambiguous examples gather there).
2. Cut the remaining score range ``[min, max]`` into ``num_strata`` equal-width bins (50 by default).
3. Visit the strata from the sparsest to the densest; stratum number ``j`` (of ``m`` non-visited
   strata, counting empty ones) gets ``min(size, floor(remaining budget / m))``; this spends the
   whole budget whenever the kept pool holds it, and gives the sparse score regions (usually the
   hard tail) the same share as the dense ones, i.e. coverage of the score distribution.
4. Draw each stratum's share uniformly at random.

The score is any difficulty quantity; the paper uses the area under the margin (AUM, lower =
harder), so ``hard="low"`` is the default of the registered ``"ccs"``; EL2N, loss and forgetting
are harder when higher (``hard="high"``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxsubset.checks import as_scores
from jaxsubset.subset import Subset, check_budget

# Hard cutoff beta by pruning rate, following the paper's recommendation that beta grows with
# the pruning rate (its CIFAR-10 settings: no cutoff up to 50 % pruned, 10 % at 70-80 %, 30 % at 90 %).
BETA_BY_PRUNING_RATE = ((0.9, 0.3), (0.7, 0.1), (0.0, 0.0))


def recommended_beta(pruning_rate: float, *, tolerance: float = 1e-12) -> float:
    """The hard cutoff ``beta`` for a pruning rate ``alpha = 1 - budget / n`` (see ``BETA_BY_PRUNING_RATE``).

    ``tolerance``: a rate within it below a threshold counts as reaching it (per-class budgets are
    rounded, so a class keeping "10 %" may keep 1 / n more; :func:`ccs` passes ``1 / n``).
    """
    a = float(pruning_rate)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"pruning_rate must be in [0, 1], got {pruning_rate}.")
    return next(beta for threshold, beta in BETA_BY_PRUNING_RATE if a >= threshold - tolerance)


def auto_beta(budget: int, n: int) -> float:
    """:func:`recommended_beta` of the pool's pruning rate (tolerance ``1 / n``), capped to keep the budget."""
    if n == 0:
        return 0.0
    return min(recommended_beta(1.0 - budget / n, tolerance=1.0 / n), (n - budget) / n)


def strata(scores: np.ndarray, num_strata: int) -> np.ndarray:
    """Stratum id ``(n,)`` in ``[0, num_strata)`` of each score: equal-width bins over ``[min, max]``.

    The maximum falls in the last bin; all scores equal -> all in bin 0.
    """
    s = np.asarray(scores, np.float64)
    if s.size == 0:
        return np.zeros(0, np.int64)
    lo, hi = float(s.min()), float(s.max())
    if hi <= lo:
        return np.zeros(s.size, np.int64)
    b = np.floor((s - lo) / (hi - lo) * num_strata).astype(np.int64)
    return np.minimum(b, num_strata - 1)


def stratum_budgets(sizes: Any, budget: int) -> np.ndarray:
    """Budgets ``(k,)`` of strata of ``sizes (k,)``: sparsest first, each ``min(size, rest // strata left)``.

    Strata of equal size are visited in index order. The budgets sum to ``min(budget, sum(sizes))``.
    """
    sizes = np.asarray(sizes, np.int64)
    out = np.zeros(sizes.size, np.int64)
    rest = int(budget)
    for j, i in enumerate(np.argsort(sizes, kind="stable")):
        out[i] = min(int(sizes[i]), rest // (sizes.size - j))
        rest -= int(out[i])
    return out


def hard_cutoff(beta: float | None, budget: int, n: int) -> tuple[float, int]:
    """``(beta, number of hardest examples dropped)`` for a pool of ``n``; ``None`` = :func:`auto_beta`.

    Raises ``ValueError`` when the cut leaves fewer than ``budget`` examples (naming the largest beta).
    """
    beta = _check_beta(auto_beta(budget, n) if beta is None else beta)
    num_drop = int(np.floor(beta * n))
    if budget > n - num_drop:
        raise ValueError(f"beta = {beta} drops {num_drop} of {n} examples, leaving fewer than the budget "
                         f"{budget}; lower beta to at most {(n - budget) / n:.4g}.")
    return beta, num_drop


def _check_beta(beta: Any) -> float:
    if isinstance(beta, (bool, np.bool_)) or not isinstance(beta, (int, float, np.integer, np.floating)):
        raise TypeError(f"beta must be a number in [0, 1) or None (chosen from the pruning rate), got {beta!r}.")
    if not 0.0 <= float(beta) < 1.0:
        raise ValueError(f"beta (the fraction of hardest examples dropped) must be in [0, 1), got {beta}; "
                         "pass e.g. beta=0.1, or beta=None to choose it from the pruning rate.")
    return float(beta)


def ccs(scores: Any, budget: int, *, beta: float | None = None, num_strata: int | None = None, hard: str = "low",
        seed: int = 0) -> Subset:
    """CCS: hard cutoff ``beta``, then stratified sampling with budgets to the sparsest strata first.

    Args:
      scores: difficulty score ``(n,)``, finite (AUM, EL2N, forgetting, loss, ...).
      budget: number of examples to keep, ``0 <= budget <= n``.
      beta: fraction of the hardest examples dropped first, in ``[0, 1)``; ``None`` picks it from
        the pruning rate ``1 - budget / n`` (:func:`recommended_beta`), capped so that the kept
        pool still holds the budget.
      num_strata: number of equal-width score bins, ``1 <= num_strata <= n``; ``None``: the paper's
        50, or ``n`` in a pool (class) of fewer than 50 examples.
      hard: ``"low"`` if lower scores are harder (AUM), ``"high"`` if higher are (EL2N, forgetting).
      seed: seed of the NumPy generator. With ``beta=0`` and ``num_strata=1`` the draw equals
        ``selectors.random(n, budget, seed=seed)``.

    Returns:
      Unweighted :class:`Subset`; ``info`` holds ``beta``, ``num_strata`` and the stratum ``budgets``.
    """
    s = as_scores(scores)
    n = s.size
    budget = check_budget(budget, n)
    if hard not in ("low", "high"):
        raise ValueError(f"hard must be 'low' (lower score = harder, e.g. AUM) or 'high' (e.g. EL2N), got {hard!r}.")
    if num_strata is None:
        num_strata = max(1, min(50, n))
    if isinstance(num_strata, (bool, np.bool_)) or not isinstance(num_strata, (int, np.integer)):
        raise TypeError(f"num_strata must be a positive integer, got {num_strata!r}.")
    if num_strata < 1:
        raise ValueError(f"num_strata must be >= 1, got {num_strata}.")
    if num_strata > n:
        raise ValueError(f"num_strata = {num_strata} exceeds the {n} examples of the pool (class); pass "
                         f"num_strata <= {n}.")
    beta, num_drop = hard_cutoff(beta, budget, n)
    # hardest first, ties by the lower index
    order = np.argsort(s if hard == "low" else -s, kind="stable")
    kept = np.sort(order[num_drop:])
    stratum = strata(s[kept], int(num_strata))
    sizes = np.bincount(stratum, minlength=int(num_strata))
    budgets = stratum_budgets(sizes, budget)
    rng = np.random.default_rng(seed)
    parts = [rng.choice(kept[stratum == i], size=int(b), replace=False) for i, b in enumerate(budgets) if b]
    idx = np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
    return Subset.unweighted(idx.astype(np.int64), method="ccs", beta=beta, num_strata=int(num_strata),
                             hard=hard, budgets=budgets.tolist())
