"""Chunked evaluation of a jitted per-example function over a whole data set (public: train, targeted, tss use it)."""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from jaxsubset.grads._inputs import NonFiniteError, raise_nonfinite_rows
from jaxsubset.grads.sharding import batch_size_for, replicate, shard_batch, to_numpy


def gather_batches(batches: Any) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate an iterable of ``(x_batch (b, ...), y_batch (b,))`` pairs into ``(x, y)``.

    Lets every function of ``jaxsubset.grads`` take a data loader (a generator, a
    ``tf.data`` / TFDS numpy iterator, ...) as ``x`` with ``y=None``; rows keep the
    iterator's order and the computation is then chunked by ``batch_size`` as usual.
    """
    xs, ys = [], []
    try:
        for item in batches:
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                raise TypeError("with y=None, x must be an iterable of (x_batch, y_batch) pairs; got an item "
                                f"of type {type(item).__name__}.")
            xs.append(np.asarray(item[0]))
            ys.append(np.asarray(item[1]).reshape(-1))
    except TypeError as err:
        if "not iterable" in str(err):
            raise TypeError("y is None, so x must be an iterable of (x_batch, y_batch) pairs.") from err
        raise
    if not xs:
        raise ValueError("The iterator of batches was empty.")
    return np.concatenate(xs), np.concatenate(ys)


def check_xy(x: Any, y: Any, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate inputs ``x (n, ...)`` and int labels ``y (n,)``; return them as numpy arrays.

    With ``y=None``, ``x`` is an iterable of ``(x_batch, y_batch)`` pairs (see ``gather_batches``).
    """
    if y is None:
        x, y = gather_batches(x)
    x = np.asarray(x)
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D (n,), got shape {y.shape}.")
    if x.ndim == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0] if x.ndim else 0} rows but y has {y.shape[0]}; they must match.")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"y must hold integer class ids, got dtype {y.dtype}.")
    if num_classes is not None and y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}); found [{int(y.min())}, {int(y.max())}].")
    return x, y


def check_labels(y: np.ndarray, num_classes: int) -> None:
    """Raise if int labels ``y`` fall outside ``[0, num_classes)`` (``num_classes`` = logit width)."""
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}) for a model with {num_classes} outputs; "
                         f"found labels in [{int(y.min())}, {int(y.max())}].")


def check_finite_rows(values: np.ndarray, what: str, offset: int = 0) -> np.ndarray:
    """Raise ``FloatingPointError`` naming the rows of ``values (n, ...)`` that hold NaN or inf."""
    finite = np.isfinite(values)
    if finite.all():  # the common case, checked in one pass
        return values
    bad = np.flatnonzero(~np.all(finite.reshape(values.shape[0], -1), axis=1))
    if bad.size:
        raise NonFiniteError(f"{what} are NaN or inf for rows {(bad + offset)[:10].tolist()}"
                                 f"{' ...' if bad.size > 10 else ''}; check the inputs and parameters.")
    return values


@functools.cache
def backend() -> str:
    """``jax.default_backend()``, looked up once (it cost ≈15 µs per call, twice per public call)."""
    return jax.default_backend()


CPU_CALL_BYTES = 16 * 2**20
"""Budget for one chunk's outputs and temporaries on the CPU backend (see ``fit_rows``)."""

ROW_BYTES_OVERESTIMATE = 3.0
"""The least factor by which the jaxpr's intermediate bytes over-counted XLA's buffers (``fit_rows``)."""


def chunk_cap(n: int, batch_size: int) -> int:
    """Rows of the one chunk used for ``n`` examples when ``n < batch_size``: the next power of two.

    Data sets smaller than ``batch_size`` (classes of different sizes, small pools)
    are padded to a power of two, so that they share at most ``log2(batch_size)``
    compiled chunk shapes instead of compiling one per size; at least ``batch_size``
    examples use chunks of ``batch_size`` rows and pad only the last.
    """
    n, b = int(n), int(batch_size)
    if n >= b:
        return b
    return min(b, 1 << max(0, n - 1).bit_length())


def _lowerable(fn: Callable[..., Any]) -> tuple[Any, tuple] | None:
    """``(jitted, leading args)`` for a jitted function or a ``functools.partial`` of one."""
    lead: tuple = ()
    while isinstance(fn, functools.partial) and not fn.keywords:
        lead = tuple(fn.args) + lead
        fn = fn.func
    return (fn, lead) if hasattr(fn, "lower") else None


def _var_bytes(v: Any) -> int:
    """Bytes of a jaxpr variable's array value (0 for non-array values such as tokens)."""
    shape = getattr(v.aval, "shape", None)
    return 0 if shape is None else int(np.prod(shape)) * np.dtype(v.aval.dtype).itemsize


def _jaxpr_bytes(jaxpr: Any) -> int:
    """Bytes of every equation output in ``jaxpr``, entering nested jaxprs (calls, scans, ...)."""
    total = 0
    for eqn in jaxpr.eqns:
        inner = [getattr(v, "jaxpr", v) for v in eqn.params.values()
                 if hasattr(v, "eqns") or hasattr(getattr(v, "jaxpr", None), "eqns")]
        if inner:
            total += sum(_jaxpr_bytes(j) for j in inner)
            continue
        total += sum(_var_bytes(v) for v in eqn.outvars)
    return total


def fit_rows(fn: Callable[..., Any], arrays: tuple[np.ndarray, ...], batch_size: int,
             mesh: Mesh | None = None, budget: int | None = None) -> int:
    """Rows per call: ``batch_size``, reduced on CPU so that one call's buffers fit ``budget`` bytes.

    XLA:CPU allocates every call's outputs and temporaries afresh; above glibc's
    32 MiB ``mmap`` threshold each allocation is new pages that the kernel must fault
    in and zero (≈1.3 ns per float here, against ≈0.14 ns for a reused buffer), which
    made large chunks about 2× slower than small ones for per-sample gradients, ghost
    norms and even the batched gradient.

    The size per row is estimated without compiling: the bytes of every intermediate
    in ``fn``'s jaxpr at ``batch_size`` rows, divided by ``ROW_BYTES_OVERESTIMATE``.
    That sum counts values XLA fuses away; against XLA's own memory analysis it was
    3–10× too large for per-sample gradients, ghost norms, vmap norms and losses of
    the MLP and CNN, so the division by 3 still errs towards smaller chunks; the
    outputs themselves are always counted in full. Tracing
    at the caller's size also warms ``jit``'s trace cache for the common case where
    the size is kept. Accelerators, meshes and functions that are not jitted keep
    ``batch_size``. ``budget`` defaults to ``CPU_CALL_BYTES``.
    """
    n = arrays[0].shape[0]
    b = chunk_cap(n, batch_size)
    budget = CPU_CALL_BYTES if budget is None else budget
    if mesh is not None or b <= 1 or backend() != "cpu":
        return b
    target = _lowerable(fn)
    if target is None:
        return b
    jitted, lead = target
    try:
        spec = [jax.ShapeDtypeStruct((b, *a.shape[1:]), a.dtype) for a in arrays]
        jaxpr = jitted.trace(*lead, *spec).jaxpr.jaxpr
        outputs = sum(_var_bytes(v) for v in jaxpr.outvars)
        per_row = max(_jaxpr_bytes(jaxpr) / ROW_BYTES_OVERESTIMATE, outputs) / b
    except Exception:  # tracing failed here: the real call will report it; keep the caller's size
        return b
    return int(max(1, min(b, budget // max(per_row, 1.0))))


def cached_fit_rows(cache: dict | None, fn: Callable[..., Any], arrays: tuple[np.ndarray, ...],
                    batch_size: int, mesh: Mesh | None = None) -> int:
    """``fit_rows`` remembered in ``cache`` (a compiled entry's ``rows``), keyed by the chunk size asked for.

    ``fit_rows`` traces ``fn`` to estimate its buffers; for a cached compiled
    function of fixed shapes the answer depends only on the requested rows and the
    budget, so it is computed once. ``cache=None`` always calls ``fit_rows``.
    """
    if cache is None:
        return fit_rows(fn, arrays, batch_size, mesh)
    key = (chunk_cap(arrays[0].shape[0], batch_size), CPU_CALL_BYTES, ROW_BYTES_OVERESTIMATE, backend())
    if key not in cache:
        cache[key] = fit_rows(fn, arrays, batch_size, mesh)
    return cache[key]


def _is_oom(err: Exception) -> bool:
    msg = str(err)
    return "RESOURCE_EXHAUSTED" in msg or "out of memory" in msg.lower() or isinstance(err, MemoryError)


def iter_chunks(arrays: tuple[np.ndarray, ...], *, batch_size: int, progress: bool = False, desc: str = "",
                mesh: Mesh | None = None, place: bool = True) -> Iterator[tuple[int, int, list[Any]]]:
    """Yield ``(start, stop, chunk)`` over consecutive row-chunks of ``arrays``.

    Every chunk has exactly ``batch_size`` rows (the last is padded by repeating row 0;
    rows ``stop - start`` onwards are padding), placed on the default device or split
    over ``mesh``, so a jitted function sees one shape. ``batch_size`` is capped at the
    power of two at or above ``n`` (``chunk_cap``) and, with a mesh, rounded up to a
    multiple of its size.

    ``place=False`` (no mesh) yields the NumPy chunks themselves, for a jitted function:
    ``jit``'s C++ dispatch moves a NumPy argument to the device far more cheaply than
    ``jax.device_put`` (≈0.02 ms against ≈0.2 ms of host CPU per array on this CPU
    machine; the same dtype canonicalization).
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if not arrays:
        raise ValueError("chunked_map needs at least one array.")
    n = arrays[0].shape[0]
    if n == 0:
        raise ValueError("Cannot evaluate on an empty data set (n = 0).")
    batch_size = chunk_cap(n, batch_size)
    if mesh is not None:
        batch_size = batch_size_for(mesh, batch_size)
    starts = range(0, n, batch_size)
    for s in (tqdm(starts, desc=desc, leave=False) if progress else starts):
        e = min(s + batch_size, n)
        chunk = []
        for a in arrays:
            c = a[s:e]
            if e - s < batch_size:
                pad = np.repeat(a[:1], batch_size - (e - s), axis=0)
                c = np.concatenate([c, pad], axis=0)
            if mesh is not None:
                c = shard_batch(c, mesh)
            elif place:  # device_put, not jnp.asarray: the same dtype canonicalization without an eager op
                c = jax.device_put(c)
            chunk.append(c)
        yield s, e, chunk


@contextlib.contextmanager
def oom_hint(rows: int) -> Iterator[None]:
    """Re-raise an out-of-memory error from a chunk of ``rows`` examples with what to change."""
    try:
        yield
    except Exception as err:  # XLA reports OOM as a RuntimeError/XlaRuntimeError
        if _is_oom(err):
            raise MemoryError(f"A chunk of {rows} examples does not fit in memory; "
                              "pass a smaller batch_size.") from err
        raise


def call_chunk(fn: Callable[..., Any], chunk: list[jax.Array], rows: int) -> Any:
    """``fn(*chunk)`` fetched to numpy and cut to ``rows``; an out-of-memory error says what to change."""
    with oom_hint(chunk[0].shape[0]):
        out = fn(*chunk)
    return fetch_rows(out, rows, chunk[0].shape[0])


def fetch_rows(out: Any, rows: int, chunk_rows: int) -> Any:
    """The pytree ``out`` of one chunk's device arrays, fetched to numpy and cut to its first ``rows`` rows."""
    with oom_hint(chunk_rows):
        return jax.tree_util.tree_map(lambda o: to_numpy(o)[:rows], out)


def chunked_map(fn: Callable[..., Any], arrays: tuple[np.ndarray, ...], *, batch_size: int,
                progress: bool = False, desc: str = "", mesh: Mesh | None = None,
                rows_cache: dict | None = None, place: bool = True) -> Any:
    """Apply jitted ``fn(*chunk)`` to consecutive row-chunks of ``arrays`` and concatenate.

    Every chunk is padded to ``batch_size`` rows (by repeating row 0) so that ``fn``
    compiles once; the padding rows are dropped from the output. ``fn`` must return
    a pytree of arrays with leading axis equal to the chunk size. Chunk ``i + 1`` is
    dispatched before chunk ``i`` is fetched to the host, so the copy overlaps the work.

    Args:
      fn: jitted function of one chunk of every array.
      arrays: arrays with the same leading axis ``n``.
      batch_size: rows per chunk (rounded up to a multiple of the mesh size with ``mesh``);
        on CPU at most this many, fewer where one call's buffers would exceed
        ``CPU_CALL_BYTES`` (see ``fit_rows``).
      progress: show a progress bar over chunks.
      desc: the progress bar's label.
      mesh: a data-parallel mesh (see ``jaxsubset.grads.data_mesh``); every chunk is
        split over its first axis, so each device holds ``batch_size / devices`` rows.
      rows_cache: where to remember the chunk size chosen for ``fn`` (``cached_fit_rows``).
      place: put each chunk on the device before calling ``fn``; ``False`` hands ``fn`` the
        NumPy chunks (cheaper for a jitted ``fn``, see ``iter_chunks``).

    Returns:
      The concatenated pytree of numpy arrays with leading axis ``n``.
    """
    batch_size = cached_fit_rows(rows_cache, fn, arrays, batch_size, mesh)
    outs: list[list[np.ndarray]] = []  # per chunk: the output's leaves on the host, cut to the real rows
    treedef = None
    pending = None
    rows = batch_size
    try:  # one handler for every chunk (a context manager per chunk cost more than the rest of a small call)
        for s, e, chunk in iter_chunks(arrays, batch_size=batch_size, progress=progress, desc=desc, mesh=mesh,
                                       place=place):
            rows = chunk[0].shape[0]
            leaves, treedef = jax.tree_util.tree_flatten(fn(*chunk))
            if pending is not None:  # the next chunk is dispatched before this one is fetched: they overlap
                outs.append([to_numpy(o)[:pending[1]] for o in pending[0]])
            pending = (leaves, e - s)
        outs.append([to_numpy(o)[:pending[1]] for o in pending[0]])
    except Exception as err:  # XLA reports OOM as a RuntimeError/XlaRuntimeError
        if _is_oom(err):
            raise MemoryError(f"A chunk of {rows} examples does not fit in memory; "
                              "pass a smaller batch_size.") from err
        raise
    leaves = outs[0] if len(outs) == 1 else [np.concatenate(o, axis=0) for o in zip(*outs)]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def map_entry(entry: Any, params: Any, arrays: tuple[np.ndarray, ...], *, batch_size: int,
              progress: bool = False, desc: str = "", mesh: Mesh | None = None) -> Any:
    """Run a cached entry's ``run(params, *chunk) -> (out, finite_rows)`` over ``arrays``; return ``out``.

    ``entry.run`` is a ``with_finite_rows`` function (the NaN/inf scan of the first
    array fused into it): rows of ``arrays[0]`` holding NaN or inf raise
    ``NonFiniteError`` here, before the caller checks the results.
    """
    run = functools.partial(entry.run, replicate(params, mesh))
    out, ok = chunked_map(run, arrays, batch_size=batch_size, progress=progress, desc=desc, mesh=mesh,
                          rows_cache=entry.rows, place=False)
    raise_nonfinite_rows(ok, arrays[0])
    return out
