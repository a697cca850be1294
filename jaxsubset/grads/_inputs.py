"""Checks of the inputs every public ``jaxsubset.grads`` function receives, on every call.

The shape and dtype checks run on the host before anything is computed; the scan for
NaN/inf runs on the device, fused into the cached jitted chunk function
(``with_finite_rows``), and is raised right after the computation
(``raise_nonfinite_rows``), before any check of the results.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

class NonFiniteError(FloatingPointError, ValueError):
    """A per-example result (loss, gradient, logits) came out NaN or inf; the message names the rows.

    Both a ``FloatingPointError`` (numerics) and a ``ValueError`` (what callers catch for bad
    inputs such as finite values too large for the model).
    """


_CHUNK_ELEMENTS = 1 << 22
"""Elements checked per step (a 4 MiB boolean temporary at most)."""


def check_input_array(x: np.ndarray, *, name: str = "x") -> np.ndarray:
    """Raise unless ``x (n, ...)`` is a numeric array with at least one row; return it as numpy.

    Raises:
      ValueError: ``x`` is empty.
      TypeError: ``x`` is not numeric (object, string, ... dtype).
    """
    x = np.asarray(x)
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"{name} has no rows (shape {x.shape}); pass at least one example.")
    if x.dtype != np.bool_ and not np.issubdtype(x.dtype, np.number):
        raise TypeError(f"{name} must hold numbers, got dtype {x.dtype}; convert it to float32.")
    return x


def raise_nonfinite_rows(ok: np.ndarray, x: np.ndarray | None = None, *, name: str = "x") -> None:
    """Raise ``NonFiniteError`` naming the rows where the bool flags ``ok (n,)`` are False.

    With ``x (n, ...)`` (the host array the flags were computed from), flagged rows are
    first re-checked entry by entry: ``finite_rows`` flags a row whose finite values sum
    past the float range too, and such a row is not an error. A NaN or inf input would
    otherwise reach the model, where ReLU and max-pooling can drop it (XLA returns a
    finite score for a corrupted row) or an input gradient can come out as 0 (the
    "easiest" example).
    """
    ok = np.asarray(ok, bool)
    if ok.all():  # the common case: no host work beyond one reduction
        return
    bad = np.flatnonzero(~ok)
    if x is not None:
        bad = np.asarray([i for i in bad if not np.isfinite(x[i]).all()], np.int64)
    if bad.size:
        raise NonFiniteError(f"{name} contains NaN or inf in rows {bad[:10].tolist()}{' ...' if bad.size > 10 else ''}; "
                             "clean or drop those rows before scoring (a model may silently map them to a finite "
                             "score).")


def finite_rows(xb: jax.Array) -> jax.Array:
    """``(B,)`` bool, False where row ``i`` of ``xb (B, ...)`` may hold NaN or inf (always True for ints).

    The test is whether the row's sum is finite: NaN and inf propagate into it, and XLA:CPU
    computes it as a matrix-vector product, ≈4× faster than an ``isfinite`` reduction (which
    it materializes as a boolean array first; ≈0.2 of the 0.3 ms it took per 256 MNIST rows).
    A row of finite values whose sum overflows is flagged too: ``raise_nonfinite_rows``
    re-checks flagged rows on the host. Half-precision rows are summed in float32.
    """
    if not jnp.issubdtype(xb.dtype, jnp.inexact):
        return jnp.ones(xb.shape[:1], bool)
    flat = xb.reshape(xb.shape[0], -1)
    if jnp.finfo(flat.dtype).bits < 32:
        flat = flat.astype(jnp.float32)
    return jnp.isfinite(flat @ jnp.ones(flat.shape[1:], flat.dtype))


def with_finite_rows(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn(replicated, xb, *rest)`` returning ``(fn(...), finite_rows(xb))``: the input scan, fused."""
    def checked(replicated: Any, xb: jax.Array, *rest: jax.Array) -> tuple[Any, jax.Array]:
        return fn(replicated, xb, *rest), finite_rows(xb)
    return checked


def check_inputs(x: np.ndarray, *, name: str = "x") -> np.ndarray:
    """``check_input_array`` and a host scan for NaN/inf (where no jitted computation runs); return ``x``.

    Raises:
      ValueError: ``x`` is empty.
      NonFiniteError: (a ``ValueError`` and a ``FloatingPointError``) rows holding NaN/inf
        (listed, at most 10).
      TypeError: ``x`` is not numeric (object, string, ... dtype).
    """
    x = check_input_array(x, name=name)
    if x.dtype == np.bool_ or np.issubdtype(x.dtype, np.integer):
        return x
    per_row = max(1, int(np.prod(x.shape[1:], dtype=np.int64)))
    step = max(1, _CHUNK_ELEMENTS // per_row)
    flat = x.reshape(x.shape[0], per_row)
    ok = np.concatenate([np.isfinite(flat[s:s + step]).all(axis=1) for s in range(0, x.shape[0], step)])
    raise_nonfinite_rows(ok, name=name)
    return x
