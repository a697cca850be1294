"""The smoothed facility-location LP layer against OR-Tools GLOP, finite differences and its own bounds."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsubset.solvers.convex_layer import dual_objective, fl_relaxation, lp_objective, smoothing_bound

pywraplp = pytest.importorskip("ortools.linear_solver.pywraplp")

B = 8
ITER = 60


def instance(seed: int, b: int = B):
    """Squared distances of 2-D points (mean 1) and opening costs in [0, 0.5)."""
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(b, 2))
    d = ((p[:, None] - p[None]) ** 2).sum(-1)
    return d / d.mean(), rng.uniform(0.0, 0.5, b)


def glop(d: np.ndarray, c: np.ndarray, k: float):
    """The exact LP optimum (value, y) by GLOP."""
    b = d.shape[0]
    s = pywraplp.Solver.CreateSolver("GLOP")
    x = [[s.NumVar(0.0, 1.0, f"x{i}_{j}") for j in range(b)] for i in range(b)]
    y = [s.NumVar(0.0, 1.0, f"y{j}") for j in range(b)]
    for i in range(b):
        s.Add(sum(x[i]) == 1)
        for j in range(b):
            s.Add(x[i][j] <= y[j])
    s.Add(sum(y) == k)
    s.Minimize(sum(float(d[i, j]) * x[i][j] for i in range(b) for j in range(b))
               + sum(float(c[j]) * y[j] for j in range(b)))
    assert s.Solve() == pywraplp.Solver.OPTIMAL
    return s.Objective().Value(), np.array([v.solution_value() for v in y])


@pytest.mark.parametrize("seed,k", [(0, 1), (1, 2), (2, 3), (3, 5), (4, B)])
def test_forward_matches_glop(seed, k):
    """ε = 1e-3 in float64: the LP objective of the layer's (X, y) and the certified lower bound
    G_0(α, λ) both lie within the proven gap ε·log2·B·(k+1), and (stated tolerance) within 2e-3."""
    d, c = instance(seed)
    opt, _ = glop(d, c, k)
    eps = 1e-3
    with jax.enable_x64(True):
        sol = fl_relaxation(jnp.asarray(d), jnp.asarray(c), k, epsilon=eps, iterations=ITER)
        obj = lp_objective(d, c, sol.assign, sol.open)
        lower = float(sol.lower_bound)
        assert float(sol.residual) < 1e-6
    bound = smoothing_bound(B, k, eps)
    assert lower <= opt + 1e-7                     # weak duality: a true lower bound
    assert opt - lower <= bound
    assert abs(obj - opt) <= bound
    assert abs(obj - opt) <= 2e-3 and opt - lower <= 2e-3


def test_converges_to_lp_as_smoothing_vanishes():
    d, c = instance(7)
    k = 3
    opt, _ = glop(d, c, k)
    gaps = []
    with jax.enable_x64(True):
        for eps in (0.3, 0.1, 0.03, 0.01, 0.003, 0.001):
            sol = fl_relaxation(jnp.asarray(d), jnp.asarray(c), k, epsilon=eps, iterations=ITER)
            gap = lp_objective(d, c, sol.assign, sol.open) - opt
            assert -1e-7 <= gap <= smoothing_bound(B, k, eps)
            gaps.append(gap)
    assert all(g2 <= g1 + 1e-9 for g1, g2 in zip(gaps, gaps[1:])), gaps
    assert gaps[0] > 1e-2 and gaps[-1] < 1e-3


def test_constraints_hold_float32():
    d, c = instance(11)
    k = 3
    sol = fl_relaxation(jnp.asarray(d, jnp.float32), c, k, epsilon=0.05, iterations=ITER)
    x, y = np.asarray(sol.assign), np.asarray(sol.open)
    assert x.dtype == np.float32 and np.all(np.isfinite(x)) and np.all(np.isfinite(y))
    assert abs(y.sum() - k) < 1e-4                  # the budget
    assert np.all((y >= 0) & (y <= 1))
    assert np.all(x >= 0) and np.all(x <= y[None, :] + 1e-7)
    np.testing.assert_allclose(x.sum(1), 1.0, atol=1e-3)
    # inside jit (tracer inputs: value checks skipped) it gives the same solution
    jitted = jax.jit(lambda dd, cc: fl_relaxation(dd, cc, k, epsilon=0.05, iterations=ITER).open)
    np.testing.assert_allclose(jitted(jnp.asarray(d, jnp.float32), jnp.asarray(c, jnp.float32)), y, atol=1e-5)


def test_closed_form_gradient_and_hessian_match_autodiff():
    from jaxsubset.solvers.convex_layer import _grad_hess

    d, c = instance(5)
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        z = jnp.asarray(np.concatenate([rng.uniform(0, 1, B), [0.2]]))
        dd, cc, k, eps = jnp.asarray(d), jnp.asarray(c), 3.0, 0.1
        fn = lambda z: dual_objective(z[:-1], z[-1], dd, cc, k, eps)  # noqa: E731
        g, h = _grad_hess(z, dd, cc, jnp.asarray(k), jnp.asarray(eps))
        np.testing.assert_allclose(g, jax.jit(jax.grad(fn))(z), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(h, jax.jit(jax.hessian(fn))(z), rtol=1e-8, atol=1e-10)


def test_gradients_match_finite_differences():
    """Implicit derivatives of a linear read-out of (X, y) w.r.t. D and c vs central differences (float64)."""
    d, c = instance(3)
    rng = np.random.default_rng(1)
    k, eps, h = 3, 0.2, 1e-6
    with jax.enable_x64(True):
        u, v = jnp.asarray(rng.normal(size=B)), jnp.asarray(rng.normal(size=(B, B)))

        @jax.jit
        def f(dd, cc):
            sol = fl_relaxation(dd, cc, k, epsilon=eps, iterations=ITER)
            return jnp.dot(u, sol.open) + jnp.sum(v * sol.assign), sol.open

        dd, cc = jnp.asarray(d), jnp.asarray(c)
        gd, gc = jax.jit(jax.grad(lambda a, b: f(a, b)[0], argnums=(0, 1)))(dd, cc)
        pairs = [(0, 1), (2, 5), (7, 3), (4, 4), (6, 0)]
        ec = np.concatenate([np.eye(B), np.zeros((len(pairs), B))])       # B steps in c, then 5 in D
        ed = np.zeros((B + len(pairs), B, B))
        for t, (i, j) in enumerate(pairs):
            ed[B + t, i, j] = 1.0
        ec, ed = jnp.asarray(np.concatenate([ec, -ec]) * h), jnp.asarray(np.concatenate([ed, -ed]) * h)
        vals, opened = jax.vmap(lambda a, b: f(dd + a, cc + b))(ed, ec)    # one compilation
        vals, opened = np.asarray(vals), np.asarray(opened)
        m = B + len(pairs)
        fd = (vals[:m] - vals[m:]) / (2 * h)
        fd_c, fd_d = fd[:B], fd[B:]
        jac = (opened[:B] - opened[m:m + B]).T / (2 * h)                   # dy_i / dc_j
    scale = float(np.abs(gc).max())
    assert scale > 1e-2                              # the read-out really depends on c
    np.testing.assert_allclose(np.asarray(gc), fd_c, atol=1e-6 * scale)
    np.testing.assert_allclose(np.asarray([gd[i, j] for i, j in pairs]), fd_d, atol=1e-6 * scale)
    # raising a point's opening cost lowers its own selection, and the budget keeps Σ dy = 0
    assert np.all(np.diag(jac) < 0)
    np.testing.assert_allclose(jac.sum(0), 0.0, atol=1e-6)


@pytest.mark.parametrize("budget", [0, -1, B + 1, 0.5, math.nan, math.inf])
def test_budget_outside_range_is_rejected(budget):
    d, c = instance(0)
    with pytest.raises(ValueError, match="budget"):
        fl_relaxation(d, c, budget)


def test_bad_inputs_raise_clear_errors():
    d, c = instance(0)
    with pytest.raises(TypeError, match="budget"):
        fl_relaxation(d, c, "3")
    with pytest.raises(TypeError, match="budget"):
        fl_relaxation(d, c, True)
    with pytest.raises(ValueError, match="square"):
        fl_relaxation(d[:, :-1], c, 2)
    with pytest.raises(ValueError, match="costs must have shape"):
        fl_relaxation(d, c[:-1], 2)
    bad = d.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="dist contains NaN or inf"):
        fl_relaxation(bad, c, 2)
    badc = c.copy()
    badc[0] = np.inf
    with pytest.raises(ValueError, match="costs contains NaN or inf"):
        fl_relaxation(d, badc, 2)
    with pytest.raises(ValueError, match="epsilon"):
        fl_relaxation(d, c, 2, epsilon=0.0)
