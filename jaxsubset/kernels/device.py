"""Similarity blocks on the accelerator (jitted JAX), with the metric table of :data:`~jaxsubset.kernels.METRICS`.

The SMI selectors keep kernels and greedy state on the device: :func:`device_kernel` fills a float32
``(na, nb)`` JAX matrix in jitted row blocks from :class:`FeatureRows` (a feature matrix, or last-layer
factors whose inner products are ``(e·e')(h·h' + 1)``), and :func:`pair_block` is the traceable block that
jitted loops call for one column.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsubset.kernels.features import Features, check_features
from jaxsubset.kernels.last_layer import last_layer_mean_grad
from jaxsubset.kernels.similarity import METRICS, rbf_gamma

TINY = 1e-30  # floor of squared norms and residual variances


@dataclasses.dataclass(frozen=True)
class FeatureRows:
    """Validated :data:`~jaxsubset.kernels.features.Features`: ``x (n, D)`` or ``(x=e, h)``, and squared norms."""

    x: np.ndarray
    h: np.ndarray | None
    sq: np.ndarray  # (n,) float32 squared norms of the (possibly factored) vectors

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    def dims(self) -> tuple[int, ...]:
        return (self.x.shape[1],) if self.h is None else (self.x.shape[1], self.h.shape[1])

    def rows(self, idx: Any) -> "FeatureRows":
        return FeatureRows(self.x[idx], None if self.h is None else self.h[idx], self.sq[idx])

    def arrays(self) -> tuple[jax.Array, jax.Array | None, jax.Array]:
        return (jnp.asarray(self.x), None if self.h is None else jnp.asarray(self.h), jnp.asarray(self.sq))


def feature_rows(features: Features, name: str = "features") -> FeatureRows:
    """:class:`FeatureRows` of a matrix ``(n, D)`` or factors ``(e (n, C), h (n, d))`` (validated)."""
    x, h = check_features(features, name)
    sq = np.sum(x.astype(np.float64) ** 2, axis=1)
    if h is not None:
        sq = sq * (np.sum(h.astype(np.float64) ** 2, axis=1) + 1.0)
    return FeatureRows(x, h, sq.astype(np.float32))


def pair_block(metric: str, gamma: Any, xa, ha, sqa, xb, hb, sqb) -> jax.Array:
    """Similarities ``(na, nb)`` (traceable) between two sets of (possibly factored) rows; ``gamma`` for ``"rbf"``."""
    dot = xa @ xb.T
    if ha is not None:
        dot = dot * (ha @ hb.T + 1.0)
    if metric == "dot":
        return dot
    if metric in ("cosine", "shifted_cosine"):
        ra = jax.lax.rsqrt(jnp.maximum(sqa, TINY))
        rb = jax.lax.rsqrt(jnp.maximum(sqb, TINY))
        cos = jnp.clip(dot * ra[:, None] * rb[None, :], -1.0, 1.0)
        return cos if metric == "cosine" else 0.5 * (1.0 + cos)
    d2 = jnp.maximum(sqa[:, None] + sqb[None, :] - 2.0 * dot, 0.0)
    return -jnp.sqrt(d2) if metric == "euclidean" else jnp.exp(-d2 * gamma)


@functools.partial(jax.jit, static_argnames=("metric",))
def _block(xa, ha, sqa, xb, hb, sqb, gamma, *, metric):
    return pair_block(metric, gamma, xa, ha, sqa, xb, hb, sqb)


def device_kernel(fa: FeatureRows, fb: FeatureRows, metric: str, gamma: float = 0.0, chunk: int = 2048) -> jax.Array:
    """Similarity matrix ``(na, nb)`` as a float32 JAX array, computed in jitted row chunks of ``fa``."""
    if metric not in METRICS:
        raise ValueError(f"Unknown metric {metric!r}; choose one of {list(METRICS)}.")
    xb, hb, sqb = fb.arrays()
    parts = []
    for s in range(0, fa.n, chunk):
        xa, ha, sqa = fa.rows(slice(s, s + chunk)).arrays()
        parts.append(_block(xa, ha, sqa, xb, hb, sqb, jnp.float32(gamma), metric=metric))
    return jnp.concatenate(parts, axis=0) if parts else jnp.zeros((0, fb.n), jnp.float32)


def pool_gamma(pool: FeatureRows, gamma: float | None = None) -> float:
    """RBF ``gamma`` (validated), or if None the library's one default, ``1 / (2·mean_i |x_i - x̄|²)`` over
    all pool rows (as :func:`~jaxsubset.kernels.similarity.similarity_op`; about one over the mean squared
    pairwise distance). Factored rows use the mean last-layer gradient ``x̄ = (1/n) Σ e_i ⊗ [h_i, 1]``."""
    if gamma is not None or pool.n == 0:
        return rbf_gamma(gamma, 0.0)
    mean = np.mean(pool.x, axis=0, dtype=np.float64) if pool.h is None else last_layer_mean_grad(pool.x, pool.h)
    return rbf_gamma(None, float(np.mean(pool.sq, dtype=np.float64) - np.sum(mean ** 2)))


__all__ = ["FeatureRows", "feature_rows", "pair_block", "device_kernel", "pool_gamma", "TINY"]
