"""GLISTER (Killamsetty et al. 2021), last-layer version with the Taylor approximation.

GLISTER picks the subset ``S`` whose one gradient step ``θ_S = θ - η Σ_{j∈S} g_j``
most reduces the validation loss. Greedily, with the first-order Taylor expansion
``L_val(θ_S - η g_i) ≈ L_val(θ_S) - η <g_i, ∇L_val(θ_S)>``, each step adds the
example whose training gradient is most aligned with the current validation gradient,
then moves ``θ_S`` and recomputes that gradient.

Only the linear head ``W (C, d + 1)`` moves (the "last-layer" GLISTER of the paper
and of CORDS): training gradients are the factors ``g_i = e_i ⊗ [h_i, 1]`` at ``θ``,
and after adding ``i`` the validation logits change exactly by
``Δz_v = -η e_i (h_i·h_v + 1)``, so the validation gradient at ``θ_S`` is exact for
the head. Each refresh costs ``O((n + m)·C·d)`` for ``n`` pool and ``m`` validation rows.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from jaxsubset.kernels import as_factors, finite_matrix, last_layer_dot
from jaxsubset.kernels.features import is_factored
from jaxsubset.solvers.greedy import Oracle, greedy
from jaxsubset.subset import Subset, check_budget


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(1, keepdims=True)


def validation_gradient(val_logits: np.ndarray, val_h: np.ndarray, val_labels: np.ndarray) -> np.ndarray:
    """Mean cross-entropy gradient w.r.t. the head, ``(C, d + 1)`` float64 (bias last)."""
    m, C = val_logits.shape
    err = _softmax(val_logits.astype(np.float64))
    err[np.arange(m), val_labels] -= 1.0
    h1 = np.concatenate([val_h.astype(np.float64), np.ones((m, 1))], axis=1)
    return err.T @ h1 / m


def glister(features: tuple, budget: int, *, val_logits: Any, val_h: Any, val_labels: Any, lr: float = 0.01,
            refresh: int = 1) -> Subset:
    """Greedy last-layer GLISTER selection of ``budget`` pool examples.

    Args:
      features: last-layer factors ``(e, h)`` of the pool at the current parameters
        (:data:`~jaxsubset.kernels.features.Features`): ``e (n, C) = softmax(z) - onehot(y)`` and the
        embeddings ``h (n, d)`` feeding the head.
      budget: number of examples ``k``.
      val_logits: ``(m, C)`` validation logits at the current parameters.
      val_h: ``(m, d)`` validation embeddings.
      val_labels: int ``(m,)`` validation labels in ``[0, C)``.
      lr: step size ``η`` of the one-step lookahead, ``> 0``.
      refresh: picks per validation-gradient update (1 = exact greedy; larger is faster).

    Returns:
      An unweighted :class:`Subset` (sorted indices); ``info["order"]`` is the greedy
      order and ``info["gains"]`` each pick's ``η <g_i, ∇L_val(θ_S)>``; ``info["val_loss"]``
      the validation loss at ``θ`` and at ``θ_S``.
    """
    if not is_factored(features):
        raise TypeError("glister needs last-layer factors (e, h) (GLISTER moves only the head); got "
                        f"{type(features).__name__}.")
    E, H = as_factors(features, "(e, h)")
    n, C = E.shape
    k = check_budget(budget, n)
    Z = finite_matrix(val_logits, "val_logits").astype(np.float64)
    Hv = finite_matrix(val_h, "val_h")
    yv = np.asarray(val_labels)
    if Z.shape[1] != C:
        raise ValueError(f"val_logits has {Z.shape[1]} classes but e has {C}; they must match.")
    if Hv.shape[1] != H.shape[1]:
        raise ValueError(f"val_h has dimension {Hv.shape[1]} but h has {H.shape[1]}; they must match.")
    if not (Z.shape[0] == Hv.shape[0] == yv.shape[0]) or yv.ndim != 1:
        raise ValueError(f"val_logits, val_h and val_labels must have the same number of rows; got "
                         f"{Z.shape[0]}, {Hv.shape[0]}, {yv.shape}.")
    if Z.shape[0] == 0:
        raise ValueError("The validation set is empty; GLISTER needs at least one validation example.")
    if not np.issubdtype(yv.dtype, np.integer) or yv.min() < 0 or yv.max() >= C:
        raise ValueError(f"val_labels must be integers in [0, {C}).")
    lr = float(lr)
    if not np.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a positive finite number, got {lr!r}.")
    if isinstance(refresh, bool) or not isinstance(refresh, (int, np.integer)) or refresh < 1:
        raise ValueError(f"refresh must be an integer >= 1, got {refresh!r}.")
    t0 = time.perf_counter()

    def val_loss(Z: np.ndarray) -> float:
        zs = Z - Z.max(1, keepdims=True)
        return float(np.mean(np.log(np.exp(zs).sum(1)) - zs[np.arange(len(yv)), yv]))

    loss0 = val_loss(Z)

    def add(picks: np.ndarray) -> None:  # θ_S -= η Σ g_j  =>  z_v -= η Σ_j e_j (h_j·h_v + 1)
        Z[...] -= lr * ((Hv @ H[picks].T + 1.0).astype(np.float64) @ E[picks].astype(np.float64))

    run = greedy(Oracle(n, lambda c: lr * last_layer_dot(E, H, validation_gradient(Z, Hv, yv))[c], add), k,
                 refresh=int(refresh))
    order, gains = run.order.tolist(), run.gains.tolist()
    idx = np.sort(np.asarray(order, np.int64))
    return Subset.unweighted(idx, method="glister", order=np.asarray(order, np.int64), gains=np.asarray(gains),
                             lr=lr, refresh=int(refresh), val_loss=(loss0, val_loss(Z)),
                             seconds=time.perf_counter() - t0)


__all__ = ["glister", "validation_gradient"]
