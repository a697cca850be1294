"""Per-example model outputs for selectors: softmax probabilities and penultimate embeddings."""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np

from jaxsubset.grads.chunking import check_finite_rows, chunked_map
from jaxsubset.types import ApplyFn, EmbedFn


def probabilities(apply_fn: ApplyFn, params: Any, x: Any, *, batch_size: int = 1024) -> np.ndarray:
    """Softmax of the logits, float32 ``(n, C)`` (rows sum to 1), for inputs ``x (n, ...)``."""
    x = np.asarray(x)

    @jax.jit
    def fn(p, xb):
        return jax.nn.softmax(apply_fn(p, xb).astype(np.float32), axis=-1)

    out = chunked_map(functools.partial(fn, params), (x,), batch_size=batch_size, desc="probs")
    return check_finite_rows(np.asarray(out, np.float32), "softmax probabilities")


def embeddings(embed_fn: EmbedFn | None, params: Any, x: Any, *, batch_size: int = 1024) -> np.ndarray:
    """Penultimate embeddings float32 ``(n, d)``: the ``h`` of ``embed_fn(params, x) -> (logits, h)``.

    ``embed_fn`` is a :class:`~jaxsubset.models.pure.PureModel`'s ``apply_with_embedding``.
    """
    if embed_fn is None:
        raise ValueError("The 'embedding' quantity needs a model with a linear head (apply_with_embedding); "
                         "the models in jaxsubset.models have one, or build PureModel(..., apply_with_embedding=...).")
    x = np.asarray(x)

    @jax.jit
    def fn(p, xb):
        h = embed_fn(p, xb)[1]
        return h.reshape(h.shape[0], -1).astype(np.float32)

    out = chunked_map(functools.partial(fn, params), (x,), batch_size=batch_size, desc="embedding")
    return check_finite_rows(np.asarray(out, np.float32), "embeddings")
