"""Block sizes and blocked row algebra of the kernels, and their input checks.

Every kernel computation walks its rows in blocks sized here (``BLOCK_BYTES`` for contiguous
rows, ``GATHER_BYTES`` for rows gathered from a sub-pool ``rows=``), so temporaries stay near a
few hundred KiB whatever the pool size.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxsubset.checks import FLOAT32_SAFE_NORM, FLOAT32_TINY, check_float32_range

# Bytes of one block of ``rows x n`` float32 similarities (at least 64 rows: large enough for BLAS).
# On benchmarks/matching.py 8 MiB blocks were no faster than 1 MiB and tripled the matrix-free CRAIG
# peak; 256 KiB halved the per-class matrix-free peak again at the same speed (whole pools are
# unchanged: 64 rows already pass 256 KiB from n = 1 024 on).
BLOCK_BYTES = 2**18
# Bytes of one block of rows gathered from a sub-pool (``rows=``), so that selecting within a class
# needs ≈100 KiB temporaries instead of a copy of the class.
GATHER_BYTES = 2**17
GATHER_ITEMS = 64  # items per side of a sub-pool similarity sub-block
# ... but at least 1/16 of the sub-pool per gather, so that large classes are not walked in tiny
# steps (per-pick Gram columns of a 5 000-row class took 2x longer in 64-row gathers).
GATHER_SHARE = 16


def finite_matrix(x: Any, name: str, rows: np.ndarray | None = None) -> np.ndarray:
    """``x`` as a float32 ``(n, D)`` array; raises naming ``name`` if it is not 2-D or has NaN/inf rows.

    With ``rows`` (int indices) only those rows are checked (gathered in small blocks, so a
    sub-pool is validated without copying it); the whole array is still returned.
    """
    a = np.asarray(x, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got shape {a.shape}.")
    # chunked check: a 256 KiB boolean temporary at most (and a 128 KiB gather for a sub-pool)
    m = a.shape[0] if rows is None else rows.size
    step = max(1, 2**18 // max(a.shape[1], 1)) if rows is None else gather_step(a.shape[1], 4, m)
    bad, top = [np.zeros(0, np.int64)], 0.0
    for s in range(0, m, step):
        block = gather(a, rows, slice(s, s + step))
        ok = np.isfinite(block)
        bad.append(np.flatnonzero(~np.all(ok, axis=1)) + s)
        if block.size and not bad[-1].size:
            top = max(top, float(np.max(np.abs(block))))
    bad = np.concatenate(bad)
    if bad.size:
        where = bad if rows is None else rows[bad]
        raise ValueError(f"{name} contain NaN or inf in rows {where[:10].tolist()}"
                         f"{' ...' if bad.size > 10 else ''}; fix the model or drop those rows.")
    check_float32_range(top, a.shape[1], name)
    return a


def gather(a: np.ndarray, rows: np.ndarray | None, idx: Any = None) -> np.ndarray:
    """``a[rows][idx]`` without forming ``a[rows]`` (``None`` = all; ``idx`` an index array or slice)."""
    if rows is None:
        return a if idx is None else a[idx]
    return a[rows if idx is None else rows[idx]]

def check_rows(rows: Any, n: int) -> np.ndarray | None:
    """``rows`` as unique in-range int64 indices into a pool of ``n`` (``None`` passes through)."""
    if rows is None:
        return None
    r = np.asarray(rows)
    if r.ndim != 1 or (r.size and not np.issubdtype(r.dtype, np.integer)):
        raise ValueError(f"rows must be a 1-D array of integer indices, got shape {r.shape} dtype {r.dtype}.")
    r = r.astype(np.int64, copy=False)
    if r.size and (r.min() < 0 or r.max() >= n):
        raise ValueError(f"rows must index the pool of {n} examples; got values in [{r.min()}, {r.max()}].")
    if np.unique(r).size != r.size:
        raise ValueError("rows must not repeat an index.")
    return r

def row_step(width: int, itemsize: int = 8) -> int:
    """Rows per block so that a ``rows × width`` block of ``itemsize``-byte floats stays near ``BLOCK_BYTES``."""
    return max(1, BLOCK_BYTES // (itemsize * max(width, 1)))


def gather_step(width: int, itemsize: int = 8, pool: int = 0) -> int:
    """Rows per gathered (fancy-indexed) block: ``rows × width`` floats near 128 KiB, or 1/16 of a
    sub-pool of ``pool`` rows if that is more."""
    return max(1, GATHER_BYTES // (itemsize * max(width, 1)), pool // GATHER_SHARE)

def rows_dot(a: np.ndarray, v: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """``a[rows] @ v`` in float64 for a float32 ``a (n, D)``, converting small row blocks at a time
    (no float64 copy of ``a``; a float64 ``a`` is multiplied directly)."""
    v = np.asarray(v, np.float64)
    if rows is None and a.dtype == np.float64:
        return a @ v
    m = a.shape[0] if rows is None else rows.size
    out = np.empty(m)
    step = row_step(a.shape[1]) if rows is None else gather_step(a.shape[1], 8, m)
    for s in range(0, m, step):
        out[s:s + step] = gather(a, rows, slice(s, s + step)).astype(np.float64) @ v
    return out


def weighted_row_sum(a: np.ndarray, rows: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``Σ_s w_s a_{rows_s}`` in float64 ``(D,)`` (small gathered row blocks)."""
    out = np.zeros(a.shape[1])
    rows = np.asarray(rows, np.int64)
    w = np.asarray(w, np.float64)
    step = gather_step(a.shape[1])
    for s in range(0, rows.size, step):
        out += w[s:s + step] @ a[rows[s:s + step]].astype(np.float64)
    return out

def default_chunk(ncols: int) -> int:
    """Rows per block so that a ``rows x ncols`` float32 block stays around 256 KiB (at least 64 rows)."""
    return int(max(64, min(1 << 16, BLOCK_BYTES // (4 * max(ncols, 1)))))

__all__ = ["BLOCK_BYTES", "GATHER_BYTES", "GATHER_ITEMS", "GATHER_SHARE", "FLOAT32_SAFE_NORM", "FLOAT32_TINY",
           "finite_matrix", "check_float32_range", "check_rows", "gather", "row_step", "gather_step", "rows_dot",
           "weighted_row_sum", "default_chunk"]
