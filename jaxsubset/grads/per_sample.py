"""Exact per-sample gradients ``jit(vmap(grad))``, chunked, optionally sketched."""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxsubset.grads._cache import Entry, compiled
from jaxsubset.grads.chunking import cached_fit_rows, check_labels, check_xy, iter_chunks, oom_hint
from jaxsubset.grads._inputs import check_input_array, raise_nonfinite_rows, with_finite_rows
from jaxsubset.grads._params import Wrt, example_loss, num_outputs, select_leaves
from jaxsubset.grads._trace import Plan, plan_sites, probe_backward, site_factors, site_grad
from jaxsubset.grads.projection import check_projection, project_with_key
from jaxsubset.grads.sharding import data_parallel, replicate, to_numpy
from jaxsubset.types import ApplyFn


def _grads_fn(apply_fn: ApplyFn, params: Any, chosen: list[int]):
    """``g(chosen_leaves, all_leaves, x1, y1) -> list of gradients of the chosen leaves``."""
    treedef = jax.tree_util.tree_structure(params)
    loss1 = example_loss(apply_fn)

    def g(sel: list[jax.Array], leaves: list[jax.Array], x1: jax.Array, y1: jax.Array) -> list[jax.Array]:
        def f(s):
            full = list(leaves)
            for i, leaf in zip(chosen, s):
                full[i] = leaf
            return loss1(jax.tree_util.tree_unflatten(treedef, full), x1, y1)
        return jax.grad(f)(sel)

    return g


METHODS = ("auto", "probe", "vmap")


def prefers_probe(plan: Plan) -> bool:
    """``method="auto"``: the probe pass when a dense layer or a convolution takes it, else ``vmap(grad)``.

    The probe pass hands dense weights' gradients to the host as two factors whose outer
    product is written straight into the result (``assemble``): the device never
    materializes them and no copy follows. Convolution kernels' gradients come from one
    contraction per kernel offset.
    """
    return any(site.kind in ("dot", "conv") for site in plan.sites.values())


def build_plan(apply_fn: ApplyFn, params: Any, x1: Any, y1: Any, chosen: list[int]) -> Plan:
    """Trace the single-example loss and find every parameter's site (see ``_trace.plan_sites``)."""
    return plan_sites(example_loss(apply_fn), params, jnp.asarray(x1), jnp.asarray(y1), chosen)


def cached_plan(apply_fn: ApplyFn, params: Any, x: np.ndarray, y: np.ndarray, chosen: list[int]) -> Plan:
    """``build_plan`` for rows of ``x (n, ...)``, ``y (n,)``, traced once per model function and shapes."""
    entry = compiled("plan", apply_fn, params, (x, y), None, (tuple(chosen),),
                     lambda f: Entry(None, plan=build_plan(f, params, x[0], y[0], chosen)))
    return entry.info["plan"]


def _site_grads_fn(plan: Plan, chosen: list[int], leaf_shapes: list[tuple], factors: bool = False):
    """``g(leaves, x1, y1) -> one tuple per chosen leaf`` from one probe backward pass.

    Each tuple is ``(gradient,)`` in the leaf's shape, or with ``factors`` and a dense
    site ``(u, v)`` whose outer product is the flattened gradient (``site_factors``).
    """
    site_of = {s.leaf: (p, s) for p, s in plan.sites.items()}

    def g(leaves: list, x1: jax.Array, y1: jax.Array) -> list[tuple]:
        acts, g_probes, g_fb = probe_backward(plan, leaves, x1, y1)
        out = []
        for i in chosen:
            if i in site_of:
                p, site = site_of[i]
                uv = site_factors(site, acts[p], g_probes[p]) if factors else None
                out.append(uv if uv is not None else (site_grad(site, acts[p], g_probes[p], leaf_shapes[i]),))
            elif i in g_fb:
                out.append((g_fb[i],))
            else:  # the loss does not depend on this leaf
                out.append((jnp.zeros(leaf_shapes[i], jnp.float32),))
        return out

    return g


def _row_sum(f: jax.Array) -> jax.Array:
    # a matrix-vector product: NaN and inf propagate into it, and XLA:CPU runs it far faster
    # than an isfinite reduction (which re-computes the gradients)
    f = f.reshape(f.shape[0], -1).astype(jnp.float32)
    return f @ jnp.ones((f.shape[1],), jnp.float32)


def _max_product(u: jax.Array, v: jax.Array) -> jax.Array:
    return jnp.max(jnp.abs(u), axis=1) * jnp.max(jnp.abs(v), axis=1)


def chunk_fn(apply_fn: ApplyFn, params: Any, chosen: list[int], project_dim: int | None = None,
             projection: str = "rademacher", dtype: Any = None, plan: Plan | None = None, factors: bool = True):
    """The (unjitted) per-chunk function ``((leaves, key), x (B, ...), y (B,)) -> (blocks, sums)``.

    ``blocks`` is ``[(sketch (B, k),)]`` with ``project_dim``, else one tuple per chosen
    leaf: ``(gradient (B, s_j),)`` flattened, or ``(u (B, d_j), v (B, p_j))`` for a dense
    layer's weight, whose per-row outer product is the flattened gradient
    (``site_factors``; ``assemble`` forms it on the host, straight into the result: the
    device never writes those ``B·d_j·p_j`` numbers). ``sums (B,)`` are non-finite
    wherever a gradient entry is: the rows' sums of the gradients, plus ``max|u|·max|v|``
    for factored leaves (a product overflows exactly when that does); a sum may also
    overflow on its own.

    With a ``plan`` (``build_plan``), layer gradients are formed from the probe pass
    (factors for dense layers, one contraction per kernel offset for convolutions);
    without, by ``vmap(grad)``. Factors are used with ``factors`` (``per_sample_grads``:
    on the CPU backend; on an accelerator copying materialized gradients over is
    faster), without ``project_dim`` and for float32 results only. ``key`` is
    ``jax.random.key(seed)`` (used with ``project_dim`` only), so one compiled function
    serves every seed.
    """
    factors = factors and project_dim is None and np.dtype(dtype or np.float32) == np.float32
    if plan is None:
        g1 = _grads_fn(apply_fn, params, chosen)

        def grads_of(leaves, xb, yb):
            gs = jax.vmap(g1, in_axes=(None, None, 0, 0))([leaves[i] for i in chosen], leaves, xb, yb)
            return [(g,) for g in gs]
    else:
        shapes = [tuple(leaf.shape) for leaf in jax.tree_util.tree_leaves(params)]
        g1 = _site_grads_fn(plan, chosen, shapes, factors)

        def grads_of(leaves, xb, yb):
            return jax.vmap(g1, in_axes=(None, 0, 0))(leaves, xb, yb)

    def chunk(replicated, xb, yb):
        leaves, key = replicated
        parts = grads_of(leaves, xb, yb)
        sums = functools.reduce(jnp.add, [_row_sum(p[0]) if len(p) == 1 else _max_product(*p) for p in parts])
        if project_dim is not None:
            flat = [p[0].reshape(p[0].shape[0], -1) for p in parts]
            out = project_with_key(flat, chosen, project_dim, key, projection)
            return [(out.astype(dtype or jnp.float32),)], sums
        return [(p[0].reshape(p[0].shape[0], -1).astype(dtype or jnp.float32),) if len(p) == 1 else p
                for p in parts], sums

    return chunk


def per_sample_grads(apply_fn: ApplyFn, params: Any, x: Any, y: Any, *, wrt: Wrt = None,
                     project_dim: int | None = None, projection: str = "rademacher", seed: int = 0,
                     dtype: Any = None, method: str = "auto", batch_size: int = 256, progress: bool = False,
                     mesh: Mesh | None = None) -> np.ndarray:
    """Per-example gradients of the cross-entropy, flattened: ``(n, P)`` or sketched ``(n, k)``.

    Row ``i`` is ``∇_θ ℓ(f_θ(x_i), y_i)`` for the parameters that ``wrt`` selects,
    the leaves concatenated in ``jax.tree_util.tree_flatten`` order, each flattened
    row-major (``leaf_names(params)`` lists them). The model sees every example as
    a batch of one, exactly as a Python loop of ``jax.grad`` would.

    Args:
      apply_fn: ``apply_fn(params, x (B, ...)) -> logits (B, C)``.
      params: the parameter pytree.
      x: inputs ``(n, ...)``; y: int labels ``(n,)`` in ``[0, C)``.
      wrt: ``None`` (all parameters), a name such as ``"head"``, a list of names, or a
        predicate ``(name, leaf) -> bool`` (see ``select_leaves``).
      project_dim: if set to ``k``, every chunk is multiplied by a Johnson–Lindenstrauss
        matrix ``R (P, k)`` right after it is computed, and ``(n, k)`` is returned.
        ``R`` is generated block by block from ``seed`` and never stored.
      projection: ``"rademacher"`` or ``"gaussian"`` entries.
      seed: seed of the projection.
      dtype: dtype of the returned rows (default float32), e.g. ``jnp.bfloat16`` to halve memory.
      method: ``"probe"``: one batched backward pass to every layer's output (as
        ``grad_norms``), then each layer's per-example gradient in closed form: a dense
        weight's ``a_i ⊗ g_i`` is returned by the device as its two factors and
        multiplied on the host straight into the result (``assemble``), convolution
        kernels by one contraction per kernel offset, biases and scales by sums (the
        leaves ``describe_grad_norms`` lists as ``vmap`` are differentiated with vmap in
        the same pass). ``"vmap"``: plain ``jit(vmap(grad))``. Both give the same
        numbers. ``"auto"`` takes the probe pass when a dense layer or convolution
        allows it (``prefers_probe``).
      batch_size: at most this many examples per chunk, so at most ``batch_size × P``
        gradient entries exist at once; on CPU fewer where one chunk's buffers would
        exceed 16 MiB (``fit_rows``: large fresh allocations are slow there).
      progress: show a progress bar over chunks.
      mesh: optional data-parallel mesh (``data_mesh()``) to split each chunk over devices.

    Returns:
      numpy ``(n, P)`` or ``(n, k)``.
    """
    x, y = check_xy(x, y)
    check_input_array(x)
    check_projection(project_dim, projection)
    chosen = select_leaves(params, wrt)
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose one of {METHODS}.")
    out_dtype = None if dtype is None else np.dtype(dtype).name
    options = (tuple(chosen), method, project_dim, projection, out_dtype)
    entry = compiled("per_sample_grads", apply_fn, params, (x, y), mesh, options,
                     lambda f: _grads_entry(f, params, x, y, chosen, method, project_dim, projection, dtype, mesh))
    check_labels(y, entry.info["width"])
    key = None if project_dim is None else jax.random.key(int(seed))
    run = functools.partial(entry.run, replicate((jax.tree_util.tree_leaves(params), key), mesh))
    rows = cached_fit_rows(entry.rows, run, (x, y), batch_size, mesh)
    return collect_rows(run, x, y, rows=rows, progress=progress, mesh=mesh)


def _grads_entry(apply_fn: ApplyFn, params: Any, x: np.ndarray, y: np.ndarray, chosen: list[int], method: str,
                 project_dim: int | None, projection: str, dtype: Any, mesh: Mesh | None) -> Entry:
    """The jitted ``((leaves, key), x (B, ...), y (B,)) -> ((blocks, sums), finite rows of x)``; ``width``: logits."""
    plan = None if method == "vmap" else build_plan(apply_fn, params, x[0], y[0], chosen)
    if method == "auto" and not prefers_probe(plan):
        plan = None
    fn = chunk_fn(apply_fn, params, chosen, project_dim, projection, dtype, plan,
                  factors=jax.default_backend() == "cpu")
    return Entry(data_parallel(with_finite_rows(fn), mesh, 2), width=num_outputs(apply_fn, params, x[0]))


def collect_rows(run: Any, x: np.ndarray, y: np.ndarray, *, rows: int, progress: bool = False,
                 mesh: Mesh | None = None) -> np.ndarray:
    """Evaluate a per-chunk gradient function over ``(x, y)`` into one ``(n, width)`` numpy array.

    ``run(x_chunk, y_chunk)``, a jitted function (it is handed NumPy chunks), returns
    ``((blocks, sums), x_ok)``: ``chunk_fn``'s result and the finite-row flags of ``x``
    (``with_finite_rows``). The next chunk is
    dispatched before the current one is copied to the host, so the copy overlaps the
    device work. Raises ``NonFiniteError`` naming the rows of ``x`` that hold NaN or inf,
    then ``FloatingPointError`` naming the rows whose gradients are not finite (rows with
    a non-finite sum are re-checked entry by entry, so an overflowing sum alone raises nothing).
    """
    n = x.shape[0]
    out = None
    finite = np.ones(n, bool)
    x_ok = np.ones(n, bool)
    pending = None

    def store(s: int, e: int, result: Any) -> None:
        nonlocal out
        (blocks, ok), xok = result
        with oom_hint(rows):
            blocks = [tuple(to_numpy(b)[:e - s] for b in blk) for blk in blocks]
            finite[s:e] = np.isfinite(to_numpy(ok)[:e - s])
            x_ok[s:e] = to_numpy(xok)[:e - s]
        if out is None:  # one (n, P) array, filled chunk by chunk: no concatenation copies
            out = np.empty((n, sum(_width(blk) for blk in blocks)), blocks[0][0].dtype)
        assemble(blocks, out[s:e])

    for s, e, batch in iter_chunks((x, y), batch_size=rows, progress=progress, desc="per-sample grads",
                                   mesh=mesh, place=False):
        with oom_hint(rows):
            current = (s, e, run(*batch))
        if pending is not None:
            store(*pending)
        pending = current
    store(*pending)
    raise_nonfinite_rows(x_ok, x)
    bad = np.asarray([i for i in np.flatnonzero(~finite) if not np.all(np.isfinite(out[i]))], np.int64)
    if bad.size:
        raise FloatingPointError(f"per-sample gradients are NaN or inf for rows {bad[:10].tolist()}"
                                 f"{' ...' if bad.size > 10 else ''}; check the inputs and parameters.")
    return out


def _width(block: tuple[np.ndarray, ...]) -> int:
    return block[0].shape[1] if len(block) == 1 else block[0].shape[1] * block[1].shape[1]


HOST_THREADS = min(8, os.cpu_count() or 1)
"""Threads that write a chunk's rows into the result (``np.einsum`` and copies release the GIL)."""

_pool: list[ThreadPoolExecutor] = []


def assemble(blocks: list[tuple[np.ndarray, ...]], out: np.ndarray) -> None:
    """Write a chunk's blocks side by side into the rows ``out (b, P)`` (a view of the result).

    ``(g (b, s),)`` is copied; ``(u (b, d), v (b, p))`` becomes the per-row outer product
    ``u_i ⊗ v_i`` flattened row-major, formed straight into ``out`` (no temporary). Rows
    are split over ``HOST_THREADS`` threads when the chunk holds at least 2²⁰ numbers.
    """
    parts = min(HOST_THREADS, out.shape[0])
    if parts <= 1 or out.size < (1 << 20):
        _assemble_rows(blocks, out)
        return
    if not _pool:
        _pool.append(ThreadPoolExecutor(HOST_THREADS, thread_name_prefix="jaxsubset-assemble"))
    cuts = np.linspace(0, out.shape[0], parts + 1).astype(int)
    list(_pool[0].map(lambda se: _assemble_rows([tuple(a[se[0]:se[1]] for a in blk) for blk in blocks],
                                                out[se[0]:se[1]]), zip(cuts[:-1], cuts[1:])))


def _assemble_rows(blocks: list[tuple[np.ndarray, ...]], out: np.ndarray) -> None:
    col = 0
    for blk in blocks:
        w = _width(blk)
        if len(blk) == 1:
            out[:, col:col + w] = blk[0]
        else:
            u, v = blk
            view = np.lib.stride_tricks.as_strided(out[:, col:], shape=(out.shape[0], u.shape[1], v.shape[1]),
                                                   strides=(out.strides[0], v.shape[1] * out.itemsize, out.itemsize))
            np.einsum("bd,bp->bdp", u, v, out=view)
        col += w
