"""Exact per-sample gradients ``jit(vmap(grad))``, chunked, optionally sketched."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxsubset.grads._cache import Entry, compiled
from jaxsubset.grads.chunking import cached_fit_rows, check_labels, check_xy, iter_chunks, oom_hint
from jaxsubset.grads._inputs import check_inputs
from jaxsubset.grads._params import Wrt, example_loss, num_outputs, select_leaves
from jaxsubset.grads._trace import Plan, plan_sites, probe_backward, site_grad
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
    """``method="auto"``: the probe pass when a convolution takes it, else plain ``vmap(grad)``.

    On the benchmark's CPU runs the probe pass was as fast or up to 1.3× faster for
    the CNN (per-offset kernel contractions against vmap's batched convolutions); for
    the dense-only MLP both write the same outer products and ran equally fast within
    noise, so the simpler path is kept there.
    """
    return any(site.kind == "conv" for site in plan.sites.values())


def build_plan(apply_fn: ApplyFn, params: Any, x1: Any, y1: Any, chosen: list[int]) -> Plan:
    """Trace the single-example loss and find every parameter's site (see ``_trace.plan_sites``)."""
    return plan_sites(example_loss(apply_fn), params, jnp.asarray(x1), jnp.asarray(y1), chosen)


def cached_plan(apply_fn: ApplyFn, params: Any, x: np.ndarray, y: np.ndarray, chosen: list[int]) -> Plan:
    """``build_plan`` for rows of ``x (n, ...)``, ``y (n,)``, traced once per model function and shapes."""
    entry = compiled("plan", apply_fn, params, (x, y), None, (tuple(chosen),),
                     lambda f: Entry(None, plan=build_plan(f, params, x[0], y[0], chosen)))
    return entry.info["plan"]


def cached_width(apply_fn: ApplyFn, params: Any, x: np.ndarray) -> int:
    """``num_outputs`` (the number of logits ``C``), evaluated once per model function and shapes."""
    entry = compiled("width", apply_fn, params, (x,), None, (),
                     lambda f: Entry(None, width=num_outputs(f, params, x[0])))
    return entry.info["width"]


def _site_grads_fn(plan: Plan, chosen: list[int], leaf_shapes: list[tuple]):
    """``g(leaves, x1, y1) -> gradients of the chosen leaves`` from one probe backward pass."""
    site_of = {s.leaf: (p, s) for p, s in plan.sites.items()}

    def g(leaves: list, x1: jax.Array, y1: jax.Array) -> list[jax.Array]:
        acts, g_probes, g_fb = probe_backward(plan, leaves, x1, y1)
        out = []
        for i in chosen:
            if i in site_of:
                p, site = site_of[i]
                out.append(site_grad(site, acts[p], g_probes[p], leaf_shapes[i]))
            elif i in g_fb:
                out.append(g_fb[i])
            else:  # the loss does not depend on this leaf
                out.append(jnp.zeros(leaf_shapes[i], jnp.float32))
        return out

    return g


def chunk_fn(apply_fn: ApplyFn, params: Any, chosen: list[int], project_dim: int | None = None,
             projection: str = "rademacher", seed: int = 0, dtype: Any = None, plan: Plan | None = None):
    """The (unjitted) per-chunk function ``(leaves, x (B, ...), y (B,))``.

    It returns ``(blocks, sums)``: ``blocks`` is the sketch ``(B, k)`` with
    ``project_dim``, else one flattened ``(B, s_j)`` block per chosen leaf
    (concatenating on the host saves a device copy); ``sums (B,)`` are the rows'
    sums over all entries, non-finite wherever a gradient entry is (or the sum overflows).

    With a ``plan`` (``build_plan``), layer gradients are formed from the probe pass
    (``a ⊗ g`` for dense layers, one contraction per kernel offset for convolutions);
    without, by ``vmap(grad)``. The projection's seed is a constant here; ``keyed_chunk_fn``
    takes its key as an argument instead.
    """
    keyed = keyed_chunk_fn(apply_fn, params, chosen, project_dim, projection, dtype, plan)
    key = jax.random.key(int(seed))

    def chunk(leaves, xb, yb):
        return keyed((leaves, key), xb, yb)

    return chunk


def keyed_chunk_fn(apply_fn: ApplyFn, params: Any, chosen: list[int], project_dim: int | None = None,
                   projection: str = "rademacher", dtype: Any = None, plan: Plan | None = None):
    """``chunk_fn`` as ``((leaves, key), x (B, ...), y (B,)) -> (blocks, sums)``, the seed's key an argument.

    ``key`` is ``jax.random.key(seed)`` (used with ``project_dim`` only), so one
    compiled function serves every seed.
    """
    if plan is None:
        g1 = _grads_fn(apply_fn, params, chosen)

        def grads_of(leaves, xb, yb):
            return jax.vmap(g1, in_axes=(None, None, 0, 0))([leaves[i] for i in chosen], leaves, xb, yb)
    else:
        shapes = [tuple(leaf.shape) for leaf in jax.tree_util.tree_leaves(params)]
        g1 = _site_grads_fn(plan, chosen, shapes)

        def grads_of(leaves, xb, yb):
            return jax.vmap(g1, in_axes=(None, 0, 0))(leaves, xb, yb)

    def chunk(replicated, xb, yb):
        leaves, key = replicated
        gs = grads_of(leaves, xb, yb)
        flat = [g.reshape(g.shape[0], -1) for g in gs]
        # Row sums by matrix-vector products: NaN and inf propagate into them, and XLA:CPU
        # runs them far faster than an isfinite reduction (which re-computes the gradients).
        sums = functools.reduce(jnp.add, [f.astype(jnp.float32) @ jnp.ones((f.shape[1],), jnp.float32)
                                          for f in flat])
        if project_dim is not None:
            out = project_with_key(flat, chosen, project_dim, key, projection)
            return out.astype(dtype or jnp.float32), sums
        return [f.astype(dtype or jnp.float32) for f in flat], sums

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
        ``grad_norms``), then each layer's per-example gradient in closed form
        (``a_i ⊗ g_i`` for dense layers, one contraction per kernel offset for
        convolutions, sums for biases and scales; the leaves ``describe_grad_norms``
        lists as ``vmap`` are differentiated with vmap in the same pass). ``"vmap"``:
        plain ``jit(vmap(grad))``. Both give the same numbers. ``"auto"`` takes the
        probe pass for models with convolutions and vmap otherwise (``prefers_probe``).
      batch_size: at most this many examples per chunk, so at most ``batch_size × P``
        gradient entries exist at once; on CPU fewer where one chunk's buffers would
        exceed 16 MiB (``fit_rows``: large fresh allocations are slow there).
      progress: show a progress bar over chunks.
      mesh: optional data-parallel mesh (``data_mesh()``) to split each chunk over devices.

    Returns:
      numpy ``(n, P)`` or ``(n, k)``.
    """
    x, y = check_xy(x, y)
    check_inputs(x)
    check_projection(project_dim, projection)
    check_labels(y, cached_width(apply_fn, params, x))
    chosen = select_leaves(params, wrt)
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose one of {METHODS}.")
    plan = None if method == "vmap" else cached_plan(apply_fn, params, x, y, chosen)
    if method == "auto" and not prefers_probe(plan):
        plan = None
    out_dtype = None if dtype is None else np.dtype(dtype).name
    options = (tuple(chosen), plan is not None, project_dim, projection, out_dtype)
    entry = compiled("per_sample_grads", apply_fn, params, (x, y), mesh, options, lambda f: Entry(data_parallel(
        keyed_chunk_fn(f, params, chosen, project_dim, projection, dtype, plan), mesh, 2)))
    key = None if project_dim is None else jax.random.key(int(seed))
    run = functools.partial(entry.run, replicate((jax.tree_util.tree_leaves(params), key), mesh))
    rows = cached_fit_rows(entry.rows, run, (x, y), batch_size, mesh)
    return collect_rows(run, x, y, rows=rows, progress=progress, mesh=mesh)


def collect_rows(run: Any, x: np.ndarray, y: np.ndarray, *, rows: int, progress: bool = False,
                 mesh: Mesh | None = None) -> np.ndarray:
    """Evaluate a per-chunk gradient function over ``(x, y)`` into one ``(n, width)`` numpy array.

    ``run(x_chunk, y_chunk)`` returns ``(blocks, sums)`` as ``chunk_fn``'s function
    does. The next chunk is dispatched before the current one is copied to the host,
    so the copy overlaps the device work. Raises ``FloatingPointError`` naming the
    rows whose gradients are not finite (rows with a non-finite sum are re-checked
    entry by entry, so an overflowing sum alone raises nothing).
    """
    n = x.shape[0]
    out = None
    finite = np.ones(n, bool)
    pending = None

    def store(s: int, e: int, result: Any) -> None:
        nonlocal out
        blocks, ok = result
        blocks = list(blocks) if isinstance(blocks, (list, tuple)) else [blocks]
        with oom_hint(rows):
            blocks = [to_numpy(b) for b in blocks]
            finite[s:e] = np.isfinite(to_numpy(ok)[:e - s])
        if out is None:  # one (n, P) array, filled chunk by chunk: no concatenation copies
            out = np.empty((n, sum(b.shape[1] for b in blocks)), blocks[0].dtype)
        col = 0
        for blk in blocks:
            out[s:e, col:col + blk.shape[1]] = blk[:e - s]
            col += blk.shape[1]

    for s, e, batch in iter_chunks((x, y), batch_size=rows, progress=progress, desc="per-sample grads",
                                   mesh=mesh):
        with oom_hint(rows):
            current = (s, e, run(*batch))
        if pending is not None:
            store(*pending)
        pending = current
    store(*pending)
    bad = np.asarray([i for i in np.flatnonzero(~finite) if not np.all(np.isfinite(out[i]))], np.int64)
    if bad.size:
        raise FloatingPointError(f"per-sample gradients are NaN or inf for rows {bad[:10].tolist()}"
                                 f"{' ...' if bad.size > 10 else ''}; check the inputs and parameters.")
    return out
