"""A differentiable facility-location LP relaxation over a mini-batch (the convex selection layer).

For ``B`` points with assignment costs ``D (B, B)`` (``D[i, j]``: cost of serving point ``i``
by point ``j``, e.g. an embedding distance), opening costs ``c (B,)`` and a budget ``k``,
the LP relaxation of budgeted facility location (k-median with opening costs) is

    min_{X, y}  Σ_ij D_ij X_ij + Σ_j c_j y_j
    s.t.        Σ_j X_ij = 1 (every point is served),   0 <= X_ij <= y_j (only by open points),
                0 <= y_j <= 1,   Σ_j y_j = k (the budget).

``y_j`` is the (fractional) selection of point ``j`` and ``X`` the assignment of every point
to the selected ones. Its Lagrangian dual, with the box and ``X <= y`` multipliers
eliminated, is an unconstrained concave maximization over ``α (B,)`` and ``λ``:

    G_0(α, λ) = Σ_i α_i - k λ - Σ_j [ Σ_i [α_i - D_ij]_+ - c_j - λ ]_+ .

**Smoothing.** Replacing each ``[t]_+`` by ``ε·softplus(t/ε)`` gives a smooth, strictly concave
``G_ε`` that is the exact dual of the LP with a (jointly convex) binary-entropy regularizer
``-ε (Σ_j H(y_j) + Σ_ij y_j H(X_ij / y_j))``. Its optimum yields the primal in closed form,

    y_j = σ((S_j - c_j - λ)/ε),   X_ij = y_j σ((α_i - D_ij)/ε),   S_j = Σ_i ε·softplus((α_i - D_ij)/ε),

so ``0 < X_ij < y_j < 1`` always, and stationarity of ``G_ε`` gives ``Σ_j X_ij = 1`` and
``Σ_j y_j = k``. As the regularizer lies in ``[0, ε·log 2·B·(k + 1)]``,

    OPT_LP - ε·log 2·B·(k + 1)  <=  G_ε(α*, λ*)  <=  G_0(α*, λ*)  <=  OPT_LP ,

so the smoothed solution converges to the LP as ``ε -> 0``, and ``G_0`` at the returned
multipliers is a certified lower bound on the LP optimum (reported as ``lower_bound``).

**Solver.** Damped Newton ascent on the ``B + 1`` dual variables with the closed-form
gradient and Hessian (``O(B³)`` per step), a fixed number of iterations, and a vectorized
Armijo backtracking line search over step sizes ``2^-m, m = 0..40`` (jit-friendly);
then a few scalar Newton steps on ``λ`` make ``Σ_j y_j = k`` hold to rounding error.

**Differentiation.** Implicit: the Newton iterations run under ``stop_gradient``; then the
Newton step ``Δ = (-H)⁻¹ ∇G_ε(z*; D, c)`` is formed with live ``D, c`` and ``z* + Δ - stop_gradient(Δ)``
returned: the value stays ``z*`` and, as ``∇G_ε(z*) = 0``, the derivative is the
implicit-function-theorem derivative ``dz*/dθ = -H⁻¹ ∂_θ∇G_ε``. Memory does not grow with the
number of iterations. Near-degenerate LPs at tiny ``ε`` have near-singular ``H``: the derivative
is then large (the LP solution itself is nearly discontinuous there).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class FLSolution(NamedTuple):
    """The smoothed facility-location solution of one mini-batch (a pytree).

    Attributes:
      assign: ``X (B, B)``, row ``i`` the fractional assignment of point ``i`` to the open points.
      open: ``y (B,)`` in ``(0, 1)``, the fractional selection; ``Σ y = k``.
      alpha: dual variables ``α (B,)`` of the assignment constraints.
      lam: dual variable ``λ ()`` of the budget.
      objective: LP objective ``Σ D∘X + c·y`` at ``(X, y)``.
      lower_bound: ``G_0(α, λ)``, a certified lower bound on the exact LP optimum.
      residual: ``max_i |Σ_j X_ij - 1|`` (0 at exact convergence).
    """

    assign: jax.Array
    open: jax.Array
    alpha: jax.Array
    lam: jax.Array
    objective: jax.Array
    lower_bound: jax.Array
    residual: jax.Array


def _softplus(t: jax.Array, eps: jax.Array) -> jax.Array:
    return eps * jax.nn.softplus(t / eps)


def dual_objective(alpha: jax.Array, lam: jax.Array, dist: jax.Array, costs: jax.Array, budget: Any,
                   epsilon: Any) -> jax.Array:
    """``G_ε(α, λ)`` (``epsilon > 0``) or the exact LP dual ``G_0`` (``epsilon = 0``); a scalar."""
    if isinstance(epsilon, (int, float)) and epsilon == 0:
        s = jnp.sum(jax.nn.relu(alpha[:, None] - dist), axis=0)
        return jnp.sum(alpha) - budget * lam - jnp.sum(jax.nn.relu(s - costs - lam))
    s = jnp.sum(_softplus(alpha[:, None] - dist, epsilon), axis=0)
    return jnp.sum(alpha) - budget * lam - jnp.sum(_softplus(s - costs - lam, epsilon))


def _primal(z: jax.Array, dist: jax.Array, costs: jax.Array, eps: jax.Array):
    """``(s (B, B), y (B,), S (B,))`` at dual point ``z = (α, λ)``."""
    alpha, lam = z[:-1], z[-1]
    t = (alpha[:, None] - dist) / eps
    s = jax.nn.sigmoid(t)
    S = eps * jnp.sum(jax.nn.softplus(t), axis=0)
    y = jax.nn.sigmoid((S - costs - lam) / eps)
    return s, y, S


def _grad_hess(z: jax.Array, dist: jax.Array, costs: jax.Array, k: jax.Array, eps: jax.Array):
    """Closed-form gradient ``(B+1,)`` and Hessian ``(B+1, B+1)`` of ``G_ε`` at ``z = (α, λ)``."""
    s, y, _ = _primal(z, dist, costs, eps)
    g = jnp.concatenate([1.0 - s @ y, (jnp.sum(y) - k)[None]])
    w = y * (1.0 - y) / eps                                    # dy_j / d(S_j - c_j - λ)
    a = jnp.concatenate([s, -jnp.ones((1, s.shape[1]), s.dtype)], axis=0)   # (B+1, B)
    r = jnp.sum(s * (1.0 - s) * y[None, :], axis=1) / eps      # (B,)
    h = -(a * w[None, :]) @ a.T - jnp.diag(jnp.concatenate([r, jnp.zeros((1,), r.dtype)]))
    return g, h


def _newton_direction(g: jax.Array, h: jax.Array, rel_damping: float) -> jax.Array:
    """``(-H + δI)⁻¹ g`` with ``δ = rel_damping · (1 + mean diag(-H))``: an ascent direction."""
    m = -h
    delta = rel_damping * (1.0 + jnp.trace(m) / m.shape[0])
    factor = jax.scipy.linalg.cho_factor(m + delta * jnp.eye(m.shape[0], dtype=m.dtype))
    return jax.scipy.linalg.cho_solve(factor, g)


def _init(dist: jax.Array, costs: jax.Array, k: jax.Array, eps: jax.Array) -> jax.Array:
    """Start: ``α_i = min_j D_ij`` and ``λ`` splitting ``S - c`` at the budget quantile."""
    alpha = jnp.min(dist, axis=1)
    S = jnp.sum(_softplus(alpha[:, None] - dist, eps), axis=0)
    b = dist.shape[0]
    lam = jnp.quantile(S - costs, jnp.clip(1.0 - k / b, 0.0, 1.0))
    return jnp.concatenate([alpha, lam[None]])


_STEPS = 2.0 ** -np.arange(41)


def _solve_dual(dist: jax.Array, costs: jax.Array, k: jax.Array, eps: jax.Array, iterations: int) -> jax.Array:
    """Damped Newton ascent on ``G_ε`` for a fixed number of iterations; returns ``z = (α, λ)``."""
    steps = jnp.asarray(np.concatenate([_STEPS, [0.0]]), dist.dtype)

    def value(z):
        return dual_objective(z[:-1], z[-1], dist, costs, k, eps)

    def body(_, z):
        g, h = _grad_hess(z, dist, costs, k, eps)
        d = _newton_direction(g, h, 1e-7 if dist.dtype == jnp.float64 else 1e-5)
        d = jnp.where(jnp.all(jnp.isfinite(d)), d, g)
        cand = z[None, :] + steps[:, None] * d[None, :]
        vals = jax.vmap(value)(cand)
        vals = jnp.where(jnp.isfinite(vals), vals, -jnp.inf)
        # Armijo: the longest step with sufficient ascent, up to the rounding error of G itself
        # (near the optimum, float32 cannot resolve the ascent and the full Newton step is taken).
        g0 = vals[-1]
        tol = 4.0 * jnp.finfo(dist.dtype).eps * dist.shape[0] * (1.0 + jnp.abs(g0))
        ok = vals >= g0 + 1e-4 * steps * jnp.dot(g, d) - tol
        best = jnp.where(jnp.any(ok), jnp.argmax(ok), jnp.argmax(vals))
        return cand[best]

    return jax.lax.fori_loop(0, iterations, body, _init(dist, costs, k, eps))


@functools.partial(jax.jit, static_argnames=("iterations", "budget_steps"))
def fl_layer(dist: jax.Array, costs: jax.Array, k: jax.Array, eps: jax.Array, *, iterations: int,
              budget_steps: int) -> FLSolution:
    z = jax.lax.stop_gradient(_solve_dual(jax.lax.stop_gradient(dist), jax.lax.stop_gradient(costs),
                                          k, jax.lax.stop_gradient(eps), iterations))
    # A Newton step with live (D, c) whose value is removed again: the forward point stays z*, and
    # the derivative is that of the step, i.e. the implicit derivative (-H)⁻¹ ∂_θ∇G_ε at z*.
    # H is held constant: its derivative multiplies ∇G_ε(z*) = 0.
    g, h = _grad_hess(z, dist, costs, k, eps)
    step = _newton_direction(g, jax.lax.stop_gradient(h), 1e-12 if dist.dtype == jnp.float64 else 1e-7)
    z = z + (step - jax.lax.stop_gradient(step))
    alpha, lam = z[:-1], z[-1]
    s, _, S = _primal(z, dist, costs, eps)
    for _ in range(budget_steps):                              # scalar Newton: Σ_j y_j = k
        y = jax.nn.sigmoid((S - costs - lam) / eps)
        dlam = (jnp.sum(y) - k) / jnp.maximum(jnp.sum(y * (1.0 - y)) / eps, jnp.finfo(dist.dtype).tiny)
        lam = lam + jnp.clip(dlam, -eps, eps)                  # guard against saturated sigmoids
    y = jax.nn.sigmoid((S - costs - lam) / eps)
    x = s * y[None, :]
    objective = jnp.sum(dist * x) + jnp.dot(costs, y)
    lower = dual_objective(alpha, lam, dist, costs, k, 0)
    residual = jnp.max(jnp.abs(jnp.sum(x, axis=1) - 1.0))
    return FLSolution(x, y, alpha, lam, objective, lower, residual)


def _is_tracer(a: Any) -> bool:
    return isinstance(a, jax.core.Tracer)


def fl_relaxation(dist: Any, costs: Any, budget: float, *, epsilon: float = 0.05, iterations: int = 40,
                  budget_steps: int = 3) -> FLSolution:
    """Solve the entropy-smoothed facility-location LP relaxation of one mini-batch.

    Differentiable with respect to ``dist`` and ``costs`` (implicit differentiation; see the
    module docstring). Works in the dtype of ``dist`` (float32, or float64 under
    ``jax.enable_x64``). Usable inside ``jit``; value checks (finiteness) run only on
    concrete inputs.

    Args:
      dist: ``D (B, B)`` assignment costs, finite (any sign; typically distances scaled to mean ~1).
      costs: ``c (B,)`` opening costs, finite.
      budget: ``k``, the number of points to open, a real number with ``1 <= k <= B``.
      epsilon: smoothing ``ε > 0`` (same units as ``D``); the LP objective of the result is within
        ``ε·log 2·B·(k + 1)`` of the exact LP optimum at convergence.
      iterations: damped Newton iterations (fixed; ~20-40 reach float32 precision for ``ε``
        around 1e-2 of the cost scale, smaller ``ε`` needs more).
      budget_steps: scalar Newton steps on ``λ`` that make ``Σ y = k`` hold to rounding error.

    Returns:
      :class:`FLSolution`.
    """
    dist = jnp.asarray(dist)
    if not jnp.issubdtype(dist.dtype, jnp.floating):
        dist = dist.astype(jnp.float32)
    costs = jnp.asarray(costs, dist.dtype)
    if dist.ndim != 2 or dist.shape[0] != dist.shape[1]:
        raise ValueError(f"dist must be a square (B, B) matrix of assignment costs, got shape {dist.shape}.")
    b = dist.shape[0]
    if b < 1:
        raise ValueError("dist is empty; the mini-batch needs at least one point.")
    if costs.shape != (b,):
        raise ValueError(f"costs must have shape (B,) = ({b},) to match dist, got {costs.shape}.")
    if isinstance(budget, (bool, np.bool_)) or not isinstance(budget, (int, float, np.integer, np.floating)):
        raise TypeError(f"budget must be a number of points, got {budget!r}.")
    k = float(budget)
    if not math.isfinite(k) or not 0.0 < k <= b:
        raise ValueError(f"budget must lie in (0, B] = (0, {b}] for a mini-batch of {b} points, got {budget}.")
    if k < 1.0:
        raise ValueError(f"budget={budget} < 1 leaves the LP infeasible (every point must be served by open "
                         f"mass summing to >= 1); use a budget in [1, {b}].")
    eps = float(epsilon)
    if not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"epsilon must be a finite number > 0, got {epsilon}.")
    if int(iterations) < 1 or int(budget_steps) < 0:
        raise ValueError(f"iterations must be >= 1 and budget_steps >= 0, got {iterations}, {budget_steps}.")
    for name, a in (("dist", dist), ("costs", costs)):
        if not _is_tracer(a) and not bool(jnp.all(jnp.isfinite(a))):
            raise ValueError(f"{name} contains NaN or inf; the facility-location layer needs finite inputs "
                             "(check the features the distances / costs are computed from).")
    return fl_layer(dist, costs, jnp.asarray(k, dist.dtype), jnp.asarray(eps, dist.dtype),
                     iterations=int(iterations), budget_steps=int(budget_steps))


def lp_objective(dist: Any, costs: Any, assign: Any, open_: Any) -> float:
    """``Σ D∘X + c·y`` in float64 (NumPy), for reporting."""
    return float(np.sum(np.asarray(dist, np.float64) * np.asarray(assign, np.float64))
                 + np.dot(np.asarray(costs, np.float64), np.asarray(open_, np.float64)))


def smoothing_bound(batch: int, budget: float, epsilon: float) -> float:
    """``ε·log 2·B·(k + 1)``: the largest gap between the smoothed and the exact LP optimum."""
    return float(epsilon) * math.log(2.0) * int(batch) * (float(budget) + 1.0)


__all__ = ["FLSolution", "fl_relaxation", "dual_objective", "lp_objective", "smoothing_bound"]
