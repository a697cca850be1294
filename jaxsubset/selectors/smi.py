"""Submodular mutual information (SMI): pick pool points that match a query set.

Given a pool ``V`` (``n`` points), a query set ``Q`` (``q`` points) and a similarity
``s`` in ``[0, 1]``, the SMI functions of Kothawade et al. / Iyer et al. score a subset
``A ⊆ V`` by how much it "shares" with ``Q``:

- FLVMI:    ``Σ_{i∈V} min(max_{j∈A} s_ij, η·max_{j∈Q} s_ij)``
- FLQMI:    ``Σ_{i∈Q} max_{j∈A} s_ij + η·Σ_{j∈A} max_{i∈Q} s_ij``
- GCMI:     ``2λ·Σ_{i∈A} Σ_{j∈Q} s_ij``
- LogDetMI: ``log det(S_A + rI) − log det(S_A + rI − η²·S_{A,Q} (S_Q + rI)⁻¹ S_{A,Q}ᵀ)``

with ``λ = graph_cut_weight``, optionally plus ``w·g(A)`` (``w = diversity_weight``) with a
diversity term ``g``: facility location ``Σ_{i∈V} max_{j∈A} s_ij`` or log-determinant
``log det(S_A + rI)`` (``r`` = ``ridge``). Every function is 0 on the empty set.

:func:`smi` maximizes ``I_f(A; Q) + w·g(A)`` under ``|A| = budget`` through the greedy engine
(:mod:`jaxsubset.solvers.greedy`): its jitted loop with incremental gains, or lazy greedy (no
``n × n`` kernel in memory). The function objects (:class:`FLVMI`, :class:`FLQMI`, ...) evaluate
the same formulas on any set in float64, e.g. built by :func:`smi_objective`.

Similarities (:data:`jaxsubset.kernels.METRICS`, computed on the device by
:mod:`jaxsubset.kernels.device`): ``"shifted_cosine"`` ``(1 + cos)/2`` (in ``[0, 1]``, positive
semi-definite; a zero vector has cosine 0 with everything) or ``"rbf"`` ``exp(-gamma |a - b|²)``
with ``gamma = 1/(2·mean_i |x_i - x̄|²)`` over the pool unless given (the default of every RBF in the library). Features are
:data:`~jaxsubset.kernels.features.Features`: an array ``(n, d)`` or last-layer factors ``(e, h)``.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import warnings
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsubset.kernels.device import TINY as _TINY, FeatureRows, device_kernel, feature_rows, pool_gamma, pair_block
from jaxsubset.kernels.features import Features
from jaxsubset.selectors.facility import facility_value
from jaxsubset.solvers.greedy import fori_greedy, greedy
from jaxsubset.subset import Subset

FUNCTIONS = ("flvmi", "flqmi", "gcmi", "logdetmi")
DIVERSITIES = ("facility_location", "logdet")
METRICS = ("shifted_cosine", "rbf")  # the non-negative kernels of jaxsubset.kernels.METRICS
OPTIMIZERS = ("auto", "greedy", "lazy")

_DENSE_LIMIT = 16384          # largest pool for which the greedy optimizer holds an n x n kernel
_QUERY_RCOND = 1e-6           # smallest allowed eig(S_Q + rI) / max eig before jitter is added


def smi_similarity(a: Features, b: Features | None = None, *, metric: str = "shifted_cosine",
                   gamma: float | None = None, chunk: int = 2048) -> np.ndarray:
    """The similarity of the SMI selectors, as a float32 NumPy matrix ``(na, nb)``.

    Args:
      a: features ``(na, d)`` or a pair ``(e (na, C), h (na, d))`` of factored last-layer gradients.
      b: same kind of features ``(nb, ...)``; defaults to ``a``.
      metric: ``"shifted_cosine"`` (``(1 + cos)/2``) or ``"rbf"`` (``exp(-gamma |a - b|²)``).
      gamma: RBF scale; None uses ``1 / (2·mean_i |a_i - ā|²)`` (as ``similarity_op``).
      chunk: rows of ``a`` per jitted block.
    """
    _check_choice(metric, METRICS, "metric")
    fa = feature_rows(a, "a")
    fb = fa if b is None else feature_rows(b, "b")
    if fa.dims() != fb.dims():
        raise ValueError(f"a and b have different feature dimensions {fa.dims()} and {fb.dims()}.")
    return np.asarray(device_kernel(fa, fb, metric, pool_gamma(fa, gamma) if metric == "rbf" else 0.0, chunk))


# ----------------------------------------------------------------------------- validation helpers

def _check_choice(value: str, choices: Sequence[str], name: str) -> str:
    if value not in choices:
        raise ValueError(f"Unknown {name} {value!r}; choose one of {list(choices)}.")
    return value


def _check_nonneg(value: float, name: str) -> float:
    v = float(value)
    if not np.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    return v


def _check_kernel(k: Any, name: str, shape: tuple[int | None, int | None], nonneg: bool) -> np.ndarray:
    a = np.asarray(k, np.float64)
    if a.ndim != 2 or any(s is not None and s != t for s, t in zip(shape, a.shape)):
        want = tuple("n" if s is None else s for s in shape)
        raise ValueError(f"{name} must have shape {want}, got {a.shape}.")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf.")
    if nonneg and a.size and a.min() < 0:
        raise ValueError(f"{name} has negative similarities (min {a.min():.3g}); facility-location "
                         "functions need s >= 0. Use metric='shifted_cosine' ((1+cos)/2) or 'rbf'.")
    return a


def _query_factor(query_kernel: np.ndarray, ridge: float, *, warn: bool = True) -> tuple[np.ndarray, float]:
    """Cholesky factor of ``S_Q + (ridge + jitter)·I`` and the ``jitter`` that made it well conditioned.

    ``jitter > 0`` (with a warning) when the smallest eigenvalue of ``S_Q + ridge·I`` is below
    ``1e-6`` times the largest, e.g. for duplicated query points and a tiny ridge.
    """
    a = 0.5 * (query_kernel + query_kernel.T) + ridge * np.eye(query_kernel.shape[0])
    w = np.linalg.eigvalsh(a)
    floor = _QUERY_RCOND * max(float(w[-1]), _TINY)
    jitter = 0.0 if w[0] >= floor else floor - float(w[0])
    if jitter > 0 and warn:
        warnings.warn(f"LogDetMI: the query kernel S_Q + ridge*I is singular or ill-conditioned (smallest "
                      f"eigenvalue {w[0]:.3g}, largest {w[-1]:.3g}); regularized it by adding {jitter:.3g} to "
                      "its diagonal. Pass a larger ridge, or remove duplicated query points, to avoid this.",
                      RuntimeWarning, stacklevel=3)
    return np.linalg.cholesky(a + jitter * np.eye(a.shape[0])), jitter


# ----------------------------------------------------------------------------- function objects

def _as_set(A: Any, n: int) -> np.ndarray:
    idx = np.asarray(list(A) if not isinstance(A, np.ndarray) else A, np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"set elements must lie in [0, {n}); got range [{idx.min()}, {idx.max()}].")
    return np.unique(idx)


class _SetFunction:
    """Shared ``gain`` for the set functions below (``n`` ground-set elements)."""

    n: int

    def __call__(self, A: Any) -> float:  # pragma: no cover - overridden
        raise NotImplementedError

    def gain(self, A: Any, j: int) -> float:
        """``f(A ∪ {j}) − f(A)``."""
        a = _as_set(A, self.n)
        return self(np.append(a, j)) - self(a)


@dataclasses.dataclass(frozen=True, eq=False)
class FacilityLocation(_SetFunction):
    """``f(A) = Σ_i max_{j∈A} K[i, j]`` (0 for ``A = ∅``) over a non-negative kernel ``(r, n)``.

    Rows ``i`` are the points to be represented, columns ``j`` the ground set.
    """

    kernel: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "kernel", _check_kernel(self.kernel, "kernel", (None, None), True))

    @property
    def n(self) -> int:
        return self.kernel.shape[1]

    def __call__(self, A: Any) -> float:
        a = _as_set(A, self.n)
        return facility_value(self.kernel.T, a, 0.0)


@dataclasses.dataclass(frozen=True, eq=False)
class LogDet(_SetFunction):
    """``f(A) = log det(S_A + ridge·I)`` over a PSD pool kernel ``(n, n)``."""

    kernel: np.ndarray
    ridge: float = 1.0

    def __post_init__(self) -> None:
        k = _check_kernel(self.kernel, "kernel", (None, None), False)
        if k.shape[0] != k.shape[1]:
            raise ValueError(f"kernel must be square (n, n), got {k.shape}.")
        if not float(self.ridge) > 0:
            raise ValueError(f"ridge must be > 0 for log-det functions, got {self.ridge!r}.")
        object.__setattr__(self, "kernel", k)

    @property
    def n(self) -> int:
        return self.kernel.shape[0]

    def __call__(self, A: Any) -> float:
        a = _as_set(A, self.n)
        if not a.size:
            return 0.0
        sign, logdet = np.linalg.slogdet(self.kernel[np.ix_(a, a)] + self.ridge * np.eye(a.size))
        return float(logdet) if sign > 0 else float("-inf")


@dataclasses.dataclass(frozen=True, eq=False)
class FLVMI(_SetFunction):
    """``I(A; Q) = Σ_{i∈V} min(max_{j∈A} s_ij, η·max_{j∈Q} s_ij)``.

    Args:
      pool_kernel: ``(n, n)`` non-negative pool similarities.
      pool_query: ``(n, q)`` pool-to-query similarities.
      eta: ``η >= 0``.
    """

    pool_kernel: np.ndarray
    pool_query: np.ndarray
    eta: float = 1.0

    def __post_init__(self) -> None:
        pk = _check_kernel(self.pool_kernel, "pool_kernel", (None, None), True)
        pq = _check_kernel(self.pool_query, "pool_query", (pk.shape[0], None), True)
        if pk.shape[0] != pk.shape[1]:
            raise ValueError(f"pool_kernel must be square (n, n), got {pk.shape}.")
        if pq.shape[1] == 0:
            raise ValueError("the query set is empty; FLVMI needs at least one query point.")
        object.__setattr__(self, "pool_kernel", pk)
        object.__setattr__(self, "pool_query", pq)
        object.__setattr__(self, "eta", _check_nonneg(self.eta, "eta"))

    @property
    def n(self) -> int:
        return self.pool_kernel.shape[0]

    def __call__(self, A: Any) -> float:
        a = _as_set(A, self.n)
        if not a.size:
            return 0.0
        cap = self.eta * self.pool_query.max(axis=1)
        return float(np.minimum(self.pool_kernel[:, a].max(axis=1), cap).sum())


@dataclasses.dataclass(frozen=True, eq=False)
class _QueryFunction(_SetFunction):
    """A set function defined by pool-to-query similarities ``pool_query (n, q)`` and one scalar."""

    def _validate(self, scalar: str, nonneg_kernel: bool) -> None:
        pq = _check_kernel(self.pool_query, "pool_query", (None, None), nonneg_kernel)
        if pq.shape[1] == 0:
            raise ValueError(f"the query set is empty; {type(self).__name__} needs at least one query point.")
        object.__setattr__(self, "pool_query", pq)
        object.__setattr__(self, scalar, _check_nonneg(getattr(self, scalar), scalar))

    @property
    def n(self) -> int:
        return self.pool_query.shape[0]


@dataclasses.dataclass(frozen=True, eq=False)
class FLQMI(_QueryFunction):
    """``I(A; Q) = Σ_{i∈Q} max_{j∈A} s_ij + η·Σ_{j∈A} max_{i∈Q} s_ij`` from ``pool_query (n, q)``."""

    pool_query: np.ndarray
    eta: float = 1.0

    def __post_init__(self) -> None:
        self._validate("eta", nonneg_kernel=True)

    def __call__(self, A: Any) -> float:
        a = _as_set(A, self.n)
        if not a.size:
            return 0.0
        s = self.pool_query[a]
        return float(s.max(axis=0).sum() + self.eta * s.max(axis=1).sum())


@dataclasses.dataclass(frozen=True, eq=False)
class GCMI(_QueryFunction):
    """``I(A; Q) = 2λ·Σ_{i∈A} Σ_{j∈Q} s_ij`` (``λ = graph_cut_weight``) from ``pool_query (n, q)`` (modular in ``A``)."""

    pool_query: np.ndarray
    graph_cut_weight: float = 1.0

    def __post_init__(self) -> None:
        self._validate("graph_cut_weight", nonneg_kernel=False)

    def __call__(self, A: Any) -> float:
        a = _as_set(A, self.n)
        return float(2.0 * self.graph_cut_weight * self.pool_query[a].sum())


@dataclasses.dataclass(frozen=True, eq=False)
class LogDetMI(_SetFunction):
    """``I(A; Q) = log det(S_A + rI) − log det(S_A + rI − η² S_{A,Q} (S_Q + rI)⁻¹ S_{A,Q}ᵀ)``.

    ``r`` is ``ridge`` (> 0). If ``S_Q + rI`` is numerically singular, ``query_jitter`` is
    added to its diagonal with a warning (see :attr:`query_jitter`). ``0 <= η <= 1`` keeps the
    second matrix positive definite for any PSD joint kernel.

    Args:
      pool_kernel: ``(n, n)``; pool_query: ``(n, q)``; query_kernel: ``(q, q)`` similarities
        from one PSD kernel over ``V ∪ Q``.
    """

    pool_kernel: np.ndarray
    pool_query: np.ndarray
    query_kernel: np.ndarray
    eta: float = 1.0
    ridge: float = 1.0
    query_jitter: float = dataclasses.field(default=0.0, init=False)

    def __post_init__(self) -> None:
        pk = _check_kernel(self.pool_kernel, "pool_kernel", (None, None), False)
        n = pk.shape[0]
        if pk.shape[1] != n:
            raise ValueError(f"pool_kernel must be square (n, n), got {pk.shape}.")
        pq = _check_kernel(self.pool_query, "pool_query", (n, None), False)
        q = pq.shape[1]
        if q == 0:
            raise ValueError("the query set is empty; LogDetMI needs at least one query point.")
        qk = _check_kernel(self.query_kernel, "query_kernel", (q, q), False)
        eta = _check_nonneg(self.eta, "eta")
        if eta > 1:
            raise ValueError(f"LogDetMI needs 0 <= eta <= 1 (larger values can make "
                             f"S_A - eta^2 S_AQ S_Q^-1 S_QA indefinite); got eta={eta}.")
        if not float(self.ridge) > 0:
            raise ValueError(f"ridge must be > 0 for LogDetMI, got {self.ridge!r}.")
        chol, jitter = _query_factor(qk, float(self.ridge))
        b = np.linalg.solve(chol, pq.T).T                       # (n, q): S_VQ L^-T
        for name, v in (("pool_kernel", pk), ("pool_query", pq), ("query_kernel", qk), ("eta", eta),
                        ("query_jitter", jitter), ("_schur", pk - eta * eta * (b @ b.T))):
            object.__setattr__(self, name, v)

    @property
    def n(self) -> int:
        return self.pool_kernel.shape[0]

    def __call__(self, A: Any) -> float:
        a = _as_set(A, self.n)
        if not a.size:
            return 0.0
        eye = self.ridge * np.eye(a.size)
        s1, l1 = np.linalg.slogdet(self.pool_kernel[np.ix_(a, a)] + eye)
        s2, l2 = np.linalg.slogdet(self._schur[np.ix_(a, a)] + eye)
        if s1 <= 0 or s2 <= 0:
            raise FloatingPointError("LogDetMI: a log-det argument is not positive definite; increase ridge.")
        return float(l1 - l2)


@dataclasses.dataclass(frozen=True, eq=False)
class Objective(_SetFunction):
    """``F(A) = mi(A) + diversity_weight·diversity(A)``."""

    mi: _SetFunction
    diversity: _SetFunction | None = None
    diversity_weight: float = 0.0

    @property
    def n(self) -> int:
        return self.mi.n

    def __call__(self, A: Any) -> float:
        v = self.mi(A)
        if self.diversity is not None and self.diversity_weight:
            v += self.diversity_weight * self.diversity(A)
        return v


def smi_objective(pool_features: Features, query_features: Features, *, function: str = "flqmi", eta: float = 1.0,
                  diversity_weight: float = 0.0, diversity: str = "facility_location", metric: str = "shifted_cosine",
                  gamma: float | None = None, graph_cut_weight: float = 1.0, ridge: float = 1.0) -> Objective:
    """The objective :func:`smi` maximizes, as a float64 function object on dense kernels.

    Meant for small pools (it stores ``n × n``). Arguments as in :func:`smi`.
    """
    cfg = _Config.make(function, eta, diversity_weight, diversity, metric, graph_cut_weight, ridge)
    pool, query = _check_pool_query(pool_features, query_features)
    inv = pool_gamma(pool, gamma) if metric == "rbf" else 0.0
    pq = np.asarray(device_kernel(pool, query, metric, inv), np.float64)
    needs_pool = cfg.function in ("flvmi", "logdetmi") or cfg.diversity_weight > 0
    pk = np.asarray(device_kernel(pool, pool, metric, inv), np.float64) if needs_pool else None
    if cfg.function == "flvmi":
        mi: _SetFunction = FLVMI(pk, pq, cfg.eta)
    elif cfg.function == "flqmi":
        mi = FLQMI(pq, cfg.eta)
    elif cfg.function == "gcmi":
        mi = GCMI(pq, cfg.graph_cut_weight)
    else:
        qk = np.asarray(device_kernel(query, query, metric, inv), np.float64)
        mi = LogDetMI(pk, pq, qk, cfg.eta, cfg.ridge)
    div = None
    if cfg.diversity_weight > 0:
        div = FacilityLocation(pk) if cfg.diversity == "facility_location" else LogDet(pk, cfg.ridge)
    return Objective(mi, div, cfg.diversity_weight)


# ----------------------------------------------------------------------------- configuration

@dataclasses.dataclass(frozen=True)
class _Config:
    function: str
    eta: float
    diversity_weight: float
    diversity: str
    metric: str
    graph_cut_weight: float
    ridge: float

    @classmethod
    def make(cls, function: str, eta: float, diversity_weight: float, diversity: str, metric: str,
             graph_cut_weight: float, ridge: float) -> "_Config":
        _check_choice(function, FUNCTIONS, "function")
        _check_choice(diversity, DIVERSITIES, "diversity")
        if metric == "cosine":
            raise ValueError("metric='cosine' is cos in [-1, 1], but the SMI functions need similarities >= 0; use "
                             "metric='shifted_cosine' ((1 + cos)/2, the SMI default) or 'rbf'.")
        _check_choice(metric, METRICS, "metric")
        eta = _check_nonneg(eta, "eta")
        diversity_weight = _check_nonneg(diversity_weight, "diversity_weight")
        graph_cut_weight = _check_nonneg(graph_cut_weight, "graph_cut_weight")
        ridge = _check_nonneg(ridge, "ridge")
        if function == "logdetmi" and eta > 1:
            raise ValueError(f"LogDetMI needs 0 <= eta <= 1 (larger values can make "
                             f"S_A - eta^2 S_AQ S_Q^-1 S_QA indefinite); got eta={eta}.")
        uses_logdet = function == "logdetmi" or (diversity_weight > 0 and diversity == "logdet")
        if uses_logdet and not ridge > 0:
            raise ValueError("ridge must be > 0 for LogDetMI and the log-det diversity term "
                             "(it is the r in log det(S_A + rI)).")
        return cls(function, eta, diversity_weight, diversity, metric, graph_cut_weight, ridge)

    @property
    def logdet(self) -> bool:
        return self.function == "logdetmi" or (self.diversity_weight > 0 and self.diversity == "logdet")

    @property
    def pool_fl(self) -> bool:
        """Whether a facility-location term over the pool (``n × n``) is present."""
        return self.function == "flvmi" or (self.diversity_weight > 0 and self.diversity == "facility_location")


def _check_pool_query(pool_features: Features, query_features: Features) -> tuple[FeatureRows, FeatureRows]:
    pool = feature_rows(pool_features, "pool_features")
    query = feature_rows(query_features, "query_features")
    if pool.n == 0:
        raise ValueError("pool_features is empty; there is nothing to select from.")
    if query.n == 0:
        raise ValueError("query_features is empty; targeted selection needs at least one query point.")
    if pool.dims() != query.dims():
        raise ValueError(f"pool and query features have different dimensions {pool.dims()} and "
                         f"{query.dims()}; compute both with the same model and feature kind.")
    return pool, query


# ----------------------------------------------------------------------------- gain oracles

@functools.partial(jax.jit, static_argnames=("budget", "metric", "n_fl", "logdet_mode"))
def _greedy_jit(base, fl_mats, fl_ws, pool_x, pool_h, pool_sq, gamma, bq, eta2, ridge, w1, w2, *,
                budget, metric, n_fl, logdet_mode):
    """Exact greedy with incremental gains (:func:`~jaxsubset.solvers.greedy.fori_greedy`).

    Facility-location terms ``t``: ``T_t (n, r_t)`` (candidate-major: row ``j`` holds the
    similarities of candidate ``j`` to the ``r_t`` points it can represent), state
    ``cur_t (r_t,)``, gain of ``j`` ``w_t Σ_i relu(T_t[j, i] − cur_t[i])``. Log-det chains (fast greedy MAP updates of the
    Cholesky factor): ``S + rI`` (``w1·log d1``) and, for LogDetMI, the Schur kernel
    ``S + rI − η² B Bᵀ`` (``w2·log d2``), with ``d`` the residual variances.
    """
    n = base.shape[0]
    ar = jnp.arange(n)
    use_ld = logdet_mode > 0
    use_m = logdet_mode == 2
    # s_jj: 1 for rbf; (1 + cos_jj)/2 = 1 unless the row is zero, then 1/2
    diag = jnp.ones((n,), jnp.float32) if metric == "rbf" else jnp.where(pool_sq > _TINY, 1.0, 0.5).astype(jnp.float32)
    d1 = diag + ridge if use_ld else jnp.ones((n,), jnp.float32)
    d2 = (d1 - eta2 * jnp.sum(bq * bq, axis=1)) if use_m else jnp.ones((n,), jnp.float32)
    c1 = jnp.zeros((n, budget if use_ld else 1), jnp.float32)
    c2 = jnp.zeros((n, budget if use_m else 1), jnp.float32)
    curs = tuple(jnp.zeros((m.shape[1],), jnp.float32) for m in fl_mats)

    def gain(state):
        curs, c1, d1, c2, d2 = state
        g = base
        for t in range(n_fl):
            g = g + fl_ws[t] * jnp.sum(jax.nn.relu(fl_mats[t] - curs[t][None, :]), axis=1)
        if use_ld:
            g = g + w1 * jnp.log(jnp.maximum(d1, _TINY))
        if use_m:
            g = g + w2 * jnp.log(jnp.maximum(d2, _TINY))
        return g

    def update(state, a, k):
        curs, c1, d1, c2, d2 = state
        curs = tuple(jnp.maximum(curs[t], fl_mats[t][a]) for t in range(n_fl))
        if use_ld:
            ha = None if pool_h is None else pool_h[a][None]
            col = pair_block(metric, gamma, pool_x, pool_h, pool_sq, pool_x[a][None], ha, pool_sq[a][None])[:, 0]
            col = col + ridge * (ar == a)
            e1 = (col - c1 @ c1[a]) * jax.lax.rsqrt(jnp.maximum(d1[a], _TINY))
            c1 = c1.at[:, k].set(e1)
            d1 = d1 - e1 * e1
            if use_m:
                colm = col - eta2 * (bq @ bq[a])
                e2 = (colm - c2 @ c2[a]) * jax.lax.rsqrt(jnp.maximum(d2[a], _TINY))
                c2 = c2.at[:, k].set(e2)
                d2 = d2 - e2 * e2
        return curs, c1, d1, c2, d2

    return fori_greedy(gain, update, (curs, c1, d1, c2, d2), n, budget)


@functools.partial(jax.jit, static_argnames=("metric", "kinds"))
def _fl_gains_at(idx, base, pq, cap, curs, ws, pool_x, pool_h, pool_sq, gamma, pool_mat, *, metric, kinds):
    """Exact gains ``(b,)`` of candidates ``idx`` and their kernel rows, for FL-type terms.

    ``kinds[t]`` is ``"query"`` (row ``pq[j] (q,)``), ``"capped"`` (``min(s(j, V), cap)``,
    FLVMI) or ``"pool"`` (``s(j, V)``, facility-location diversity). Pool rows come from the
    symmetric ``pool_mat (n, n)`` if given, else are computed from the features.
    """
    g = base[idx]
    rows = []
    pool_rows = None
    if any(k != "query" for k in kinds):
        if pool_mat is not None:
            pool_rows = pool_mat[idx]
        else:
            ha = None if pool_h is None else pool_h[idx]
            pool_rows = pair_block(metric, gamma, pool_x[idx], ha, pool_sq[idx], pool_x, pool_h, pool_sq)
    for t, kind in enumerate(kinds):
        if kind == "query":
            row = pq[idx]
        elif kind == "capped":
            row = jnp.minimum(pool_rows, cap[None, :])
        else:
            row = pool_rows
        g = g + ws[t] * jnp.sum(jax.nn.relu(row - curs[t][None, :]), axis=1)
        rows.append(row)
    return g, tuple(rows)


class _LazyOracle:
    """Gains of sums of facility-location and modular terms, for the lazy greedy engine.

    Pool-kernel columns are read from ``pool_mat`` if given, else computed on the fly (no
    ``n × n`` kernel in memory, ``O(n·d)`` per gain evaluation). Candidates are evaluated in
    jitted blocks padded to a few sizes (a few compilations).
    """

    def __init__(self, base: jax.Array, pq: jax.Array, cap: jax.Array, kinds: tuple[str, ...],
                 ws: tuple[float, ...], pool: FeatureRows, metric: str, gamma: float, pool_mat: jax.Array | None,
                 batch: int = 16):
        self.n = pool.n
        self._args = (base, pq, cap)
        self._pool = (*pool.arrays(), jnp.float32(gamma), pool_mat)
        self._kinds, self._metric, self._batch = kinds, metric, batch
        self._ws = tuple(jnp.float32(w) for w in ws)
        self.curs = tuple(jnp.zeros((pq.shape[1] if k == "query" else self.n,), jnp.float32) for k in kinds)

    def _evaluate(self, idx: np.ndarray) -> tuple[np.ndarray, tuple]:
        m = idx.size
        size = max(self._batch, 1 << (m - 1).bit_length())
        pad = np.concatenate([idx, np.full(size - m, idx[0], np.int64)]) if m < size else idx
        g, rows = _fl_gains_at(jnp.asarray(pad), *self._args, self.curs, self._ws, *self._pool,
                               metric=self._metric, kinds=self._kinds)
        return np.asarray(g, np.float64)[:m], rows

    def gains(self, cand: np.ndarray) -> np.ndarray:
        return np.concatenate([self._evaluate(cand[s:s + 1024])[0] for s in range(0, cand.size, 1024)])

    def add(self, picks: np.ndarray) -> None:
        for j in picks:
            _, rows = self._evaluate(np.array([j]))
            self.curs = tuple(jnp.maximum(c, row[0]) for c, row in zip(self.curs, rows))


# ----------------------------------------------------------------------------- the selector

def smi(pool_features: Features, query_features: Features, budget: int, *, function: str = "flqmi", eta: float = 1.0,
        diversity_weight: float = 0.0, diversity: str = "facility_location", metric: str = "shifted_cosine",
        gamma: float | None = None, graph_cut_weight: float = 1.0, ridge: float = 1.0, optimizer: str = "auto",
        chunk: int = 2048) -> Subset:
    """Greedily maximize ``I_f(A; Q) + w·g(A)`` (``w = diversity_weight``) over ``A ⊆ pool``, ``|A| = budget``.

    Args:
      pool_features: ``(n, d)`` pool features, or a pair ``(e (n, C), h (n, d))`` of factored
        last-layer gradients (see the module docstring).
      query_features: ``(q, d)`` (or ``(e (q, C), h (q, d))``) features of the target set ``Q``.
      budget: number of pool points to select, ``1 <= budget <= n``.
      function: ``"flqmi"``, ``"flvmi"``, ``"gcmi"`` or ``"logdetmi"``.
      eta: ``η >= 0``, trade-off between query relevance and pool coverage (``<= 1`` for LogDetMI).
      diversity_weight: weight ``w >= 0`` of the diversity term (0 = none).
      diversity: ``"facility_location"`` or ``"logdet"``.
      metric: ``"shifted_cosine"`` (``(1 + cos)/2``) or ``"rbf"`` (``exp(-gamma |a - b|²)``); see
        :data:`jaxsubset.kernels.METRICS`.
      gamma: RBF scale (None: ``1 / (2·mean_i |x_i - x̄|²)`` over the pool, as ``similarity_op``).
      graph_cut_weight: GCMI's ``λ``.
      ridge: ``r`` in the log-det terms (``> 0``).
      optimizer: ``"greedy"`` (jitted loop, all gains recomputed incrementally every step),
        ``"lazy"`` (lazy greedy: re-evaluates only candidates whose stale gain tops the heap;
        facility-location and graph-cut terms only) or ``"auto"`` (lazy when FLVMI or the
        facility-location diversity is present without log-det terms, else greedy). FLVMI and
        the facility-location diversity hold the ``n × n`` pool kernel when ``n <= 16384``; above
        that, lazy computes its columns on the fly and greedy refuses.
      chunk: rows per jitted kernel block.

    Returns:
      A :class:`Subset` with sorted indices and unit weights; ``info`` holds ``order`` (the
      greedy order), ``gains`` (marginal gain of each pick, float32 ``(budget,)``),
      ``objective`` (their sum = ``F(A)``), ``kernel_seconds``, ``select_seconds``,
      ``optimizer``, ``query_jitter`` (LogDetMI regularization added to ``S_Q``) and the settings.
    """
    cfg = _Config.make(function, eta, diversity_weight, diversity, metric, graph_cut_weight, ridge)
    _check_choice(optimizer, OPTIMIZERS, "optimizer")
    pool, query = _check_pool_query(pool_features, query_features)
    n = pool.n
    if isinstance(budget, (bool, np.bool_)) or not isinstance(budget, (int, np.integer)):
        raise TypeError(f"budget must be an integer number of examples, got {budget!r}.")
    budget = int(budget)
    if not 1 <= budget <= n:
        raise ValueError(f"budget must be between 1 and the pool size {n}, got {budget}.")
    if optimizer == "auto":
        optimizer = "lazy" if (cfg.pool_fl and not cfg.logdet) else "greedy"
    if optimizer == "lazy" and cfg.logdet:
        raise ValueError("optimizer='lazy' supports facility-location and graph-cut terms only; use "
                         "optimizer='greedy' for LogDetMI or the log-det diversity term.")
    if optimizer == "greedy" and cfg.pool_fl and n > _DENSE_LIMIT:
        raise ValueError(f"optimizer='greedy' with {cfg.function} / facility-location diversity stores an "
                         f"n x n kernel, too large for n={n} (limit {_DENSE_LIMIT}); use optimizer='lazy' (FL and graph-cut terms only), "
                         "or the log-det diversity term.")

    t0 = time.perf_counter()
    inv2s2 = pool_gamma(pool, gamma) if cfg.metric == "rbf" else 0.0
    pq = device_kernel(pool, query, cfg.metric, inv2s2, chunk)                     # (n, q)
    qmax = jnp.max(pq, axis=1)                                               # (n,)
    base = jnp.zeros((n,), jnp.float32)
    kinds: list[str] = []
    ws: list[float] = []
    cap = jnp.zeros((1,), jnp.float32)
    if cfg.function == "flqmi":
        base = base + cfg.eta * qmax
        kinds.append("query"); ws.append(1.0)
    elif cfg.function == "gcmi":
        base = base + 2.0 * cfg.graph_cut_weight * jnp.sum(pq, axis=1)
    elif cfg.function == "flvmi":
        cap = cfg.eta * qmax
        kinds.append("capped"); ws.append(1.0)
    if cfg.diversity_weight > 0 and cfg.diversity == "facility_location":
        kinds.append("pool"); ws.append(cfg.diversity_weight)
    jitter = 0.0
    bq = jnp.zeros((n, 1), jnp.float32)
    if cfg.function == "logdetmi":
        qk = np.asarray(device_kernel(query, query, cfg.metric, inv2s2, chunk), np.float64)
        chol, jitter = _query_factor(qk, cfg.ridge)
        bq = jnp.asarray(np.linalg.solve(chol, np.asarray(pq, np.float64).T).T.astype(np.float32))
    x, h, sq = pool.arrays()
    fl_mats: list[jax.Array] = []
    pool_mat = None
    if cfg.pool_fl and n <= _DENSE_LIMIT:
        pool_mat = device_kernel(pool, pool, cfg.metric, inv2s2, chunk)           # (n, n), symmetric
    if optimizer == "greedy":
        for kind in kinds:
            if kind == "query":
                fl_mats.append(pq)
            else:
                # candidate-major (n_candidates, n_rows): symmetric S, so row j holds s(j, V)
                fl_mats.append(jnp.minimum(pool_mat, cap[None, :]) if kind == "capped" else pool_mat)
    jax.block_until_ready((pq, base, bq, pool_mat, *fl_mats))
    t1 = time.perf_counter()

    evals = None
    if optimizer == "greedy":
        mode = 0 if not cfg.logdet else (2 if cfg.function == "logdetmi" else 1)
        w1 = (1.0 if cfg.function == "logdetmi" else 0.0) + (cfg.diversity_weight if cfg.diversity == "logdet" else 0.0)
        order, gains = _greedy_jit(base, tuple(fl_mats), tuple(jnp.float32(w) for w in ws), x, h, sq,
                                   jnp.float32(inv2s2), bq, jnp.float32(cfg.eta ** 2), jnp.float32(cfg.ridge),
                                   jnp.float32(w1), jnp.float32(-1.0), budget=budget, metric=cfg.metric,
                                   n_fl=len(fl_mats), logdet_mode=mode)
        order = np.asarray(order, np.int64)
        gains = np.asarray(gains, np.float32)
    else:
        run = greedy(_LazyOracle(base, pq, cap, tuple(kinds), tuple(ws), pool, cfg.metric, inv2s2, pool_mat),
                     budget, optimizer="lazy", batch=16, max_batch=1024, whole_batches=True)
        order, gains, evals = run.order, run.gains.astype(np.float32), run.evaluations
    t2 = time.perf_counter()
    if not np.all(np.isfinite(gains)):
        raise FloatingPointError("SMI greedy produced non-finite gains; increase ridge or check the features.")
    info = dict(method="smi", function=cfg.function, eta=cfg.eta, diversity_weight=cfg.diversity_weight,
                diversity=cfg.diversity if cfg.diversity_weight > 0 else None, metric=cfg.metric,
                graph_cut_weight=cfg.graph_cut_weight,
                ridge=cfg.ridge, optimizer=optimizer, order=order, gains=gains,
                objective=float(np.sum(gains, dtype=np.float64)), query_jitter=jitter,
                kernel_seconds=t1 - t0, select_seconds=t2 - t1)
    if cfg.metric == "rbf":
        info["gamma"] = float(inv2s2)
    if evals is not None:
        info["gain_evaluations"] = evals
    return Subset.unweighted(np.sort(order), **info)


__all__ = ["smi", "smi_objective", "smi_similarity", "FLVMI", "FLQMI", "GCMI", "LogDetMI", "FacilityLocation",
           "LogDet", "Objective", "FUNCTIONS", "DIVERSITIES", "METRICS"]
