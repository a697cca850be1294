"""Targeted subset selection: pick unlabeled pool points that help on a target (query) slice.

The model labels the pool with its own predictions (hypothesized labels ``ŷ = argmax``),
turns pool and query points into per-example features (last-layer gradients, embeddings,
or logit gradients), and maximizes a submodular mutual information between the chosen
pool points and the labeled query set (:func:`jaxsubset.selectors.smi.smi`).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxsubset.checks import check_labels
from jaxsubset.grads.chunking import chunked_map
from jaxsubset.grads.last_layer import softmax_minus_onehot
from jaxsubset.models.pure import PureModel
from jaxsubset.selectors.smi import smi
from jaxsubset.subset import Subset

FEATURES = ("last_layer_grads", "embeddings", "logit_grads")


def _resolve(model: PureModel | Callable[..., Any], params: Any,
             apply_with_embedding: Callable[..., Any] | None) -> tuple[Callable, Callable | None, Any]:
    """``(apply_fn, apply_with_embedding or None, params)`` from a PureModel or a bare apply_fn."""
    if isinstance(model, PureModel):
        return model.apply_fn, apply_with_embedding or model.apply_with_embedding, (
            model.params if params is None else params)
    if not callable(model):
        raise TypeError(f"model must be a PureModel or an apply_fn(params, x) -> logits; got {type(model)}.")
    if params is None:
        raise TypeError("params is required when model is a bare apply_fn.")
    return model, apply_with_embedding, params


def _outputs(apply_fn: Callable, embed_fn: Callable | None, params: Any, x: np.ndarray, *,
             batch_size: int, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits ``(n, C)`` and, with ``embed_fn``, embeddings ``(n, d)``, in jitted chunks."""
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty; it needs at least one example.")
    if embed_fn is None:
        logits = chunked_map(jax.jit(lambda xb: apply_fn(params, xb)), (x,), batch_size=batch_size)
        h = None
    else:
        logits, h = chunked_map(jax.jit(lambda xb: embed_fn(params, xb)), (x,), batch_size=batch_size)
        h = np.asarray(h, np.float32).reshape(h.shape[0], -1)
    logits = np.asarray(logits, np.float32)
    if logits.ndim != 2:
        raise ValueError(f"the model must return logits of shape (n, C); got {logits.shape} for {name}.")
    bad = np.flatnonzero(~np.all(np.isfinite(logits), axis=1))
    if bad.size:
        raise FloatingPointError(f"the model gives NaN or inf logits for {name} rows {bad[:10].tolist()}.")
    return logits, h


def targeted_features(model: PureModel | Callable[..., Any], params: Any, x: Any, y: Any | None = None, *,
                      features: str = "last_layer_grads", batch_size: int = 1024,
                      apply_with_embedding: Callable[..., Any] | None = None) -> tuple[Any, np.ndarray]:
    """Per-example features for targeted selection, and the labels used for them.

    Args:
      model: a :class:`PureModel` or a bare ``apply_fn(params, x) -> logits``.
      params: parameters (None: ``model.params`` of a PureModel).
      x: inputs ``(n, ...)``.
      y: int labels ``(n,)``; None uses the hypothesized labels ``argmax`` of the logits.
      features: ``"last_layer_grads"`` -> the pair ``(e (n, C), h (n, d))`` standing for the
        cross-entropy gradient w.r.t. the linear head, ``e ⊗ [h, 1]`` with ``e = softmax − onehot(y)``
        (needs ``apply_with_embedding``); ``"embeddings"`` -> ``h (n, d)``; ``"logit_grads"`` ->
        ``e (n, C)`` (needs only ``apply_fn``).
      batch_size: rows per jitted forward pass.
      apply_with_embedding: ``(params, x) -> (logits, h)``; defaults to the PureModel's.

    Returns:
      ``(features, labels)`` with labels int64 ``(n,)`` (``y`` or the hypothesized labels).
    """
    if features not in FEATURES:
        raise ValueError(f"Unknown features {features!r}; choose one of {list(FEATURES)}.")
    apply_fn, embed_fn, params = _resolve(model, params, apply_with_embedding)
    if features in ("last_layer_grads", "embeddings") and embed_fn is None:
        raise TypeError(f"features={features!r} needs the penultimate embedding: pass a PureModel with "
                        "apply_with_embedding (jaxsubset.models.to_pure), or apply_with_embedding=..., "
                        "or use features='logit_grads'.")
    x = np.asarray(x)
    logits, h = _outputs(apply_fn, embed_fn if features != "logit_grads" else None, params, x,
                         batch_size=batch_size, name="x")
    c = logits.shape[1]
    if y is None:
        labels = np.argmax(logits, axis=1).astype(np.int64)
    else:
        labels = check_labels(y, x.shape[0], c)
    if features == "embeddings":
        return h, labels
    e = np.asarray(softmax_minus_onehot(jnp.asarray(logits), jnp.asarray(labels)), np.float32)
    return ((e, h) if features == "last_layer_grads" else e), labels


def targeted_select(model: PureModel | Callable[..., Any], params: Any, pool_x: Any, query_x: Any,
                    query_y: Any | None, budget: int, *, function: str = "flqmi", eta: float = 1.0,
                    gamma: float = 0.0, diversity: str = "facility_location",
                    features: str = "last_layer_grads", metric: str = "cosine", batch_size: int = 1024,
                    apply_with_embedding: Callable[..., Any] | None = None, **smi_kwargs: Any) -> Subset:
    """Choose ``budget`` unlabeled pool points that share the most with a labeled query set.

    Pool points get hypothesized labels (the model's argmax); query points use their true
    labels ``query_y``. Both are mapped to features (see :func:`targeted_features`) and
    :func:`jaxsubset.selectors.smi.smi` maximizes ``I_f(A; Q) + γ·g(A)``.

    Args:
      model: a :class:`PureModel` (``jaxsubset.models.to_pure``) or a bare
        ``apply_fn(params, x) -> logits`` (then only ``features="logit_grads"`` works unless
        ``apply_with_embedding`` is given).
      params: model parameters; None uses ``model.params``.
      pool_x: unlabeled pool inputs ``(n, ...)``.
      query_x: target-slice inputs ``(q, ...)``, same per-example shape.
      query_y: int labels ``(q,)`` of the query set (may be None for ``features="embeddings"``).
      budget: number of pool points to select, ``1 <= budget <= n``.
      function, eta, gamma, diversity, metric: as in :func:`~jaxsubset.selectors.smi.smi`.
      features: ``"last_layer_grads"``, ``"embeddings"`` or ``"logit_grads"``.
      batch_size: rows per jitted forward pass.
      smi_kwargs: forwarded to :func:`~jaxsubset.selectors.smi.smi` (``lam``, ``ridge``,
        ``bandwidth``, ``optimizer``, ``chunk``).

    Returns:
      The :class:`Subset` of pool rows; ``info`` adds ``features``, ``hypothesized_labels``
      (the model's labels for the selected rows, aligned with ``indices``) and
      ``feature_seconds``.
    """
    import time

    if features not in FEATURES:
        raise ValueError(f"Unknown features {features!r}; choose one of {list(FEATURES)}.")
    pool_x = np.asarray(pool_x)
    query_x = np.asarray(query_x)
    if pool_x.shape[1:] != query_x.shape[1:]:
        raise ValueError(f"pool_x examples have shape {pool_x.shape[1:]} but query_x examples have "
                         f"{query_x.shape[1:]}; they must match.")
    if query_x.shape[0] == 0:
        raise ValueError("query_x is empty; targeted selection needs at least one query example.")
    if query_y is None and features != "embeddings":
        raise ValueError(f"query_y is required for features={features!r} (gradients use the true labels).")
    t0 = time.perf_counter()
    pool_f, pool_yhat = targeted_features(model, params, pool_x, None, features=features,
                                          batch_size=batch_size, apply_with_embedding=apply_with_embedding)
    query_f, _ = targeted_features(model, params, query_x, query_y, features=features,
                                   batch_size=batch_size, apply_with_embedding=apply_with_embedding)
    t1 = time.perf_counter()
    sub = smi(pool_f, query_f, budget, function=function, eta=eta, gamma=gamma, diversity=diversity,
              metric=metric, **smi_kwargs)
    info = {**sub.info, "method": "targeted", "features": features,
            "hypothesized_labels": pool_yhat[sub.indices], "feature_seconds": t1 - t0}
    return Subset(sub.indices, sub.weights, info)


__all__ = ["targeted_select", "targeted_features", "FEATURES"]
