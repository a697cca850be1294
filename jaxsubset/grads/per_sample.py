"""Exact per-sample gradients ``jit(vmap(grad))``, chunked, optionally sketched."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxsubset.grads._chunk import call_chunk, check_finite_rows, check_labels, check_xy, iter_chunks
from jaxsubset.grads._params import ApplyFn, Wrt, example_loss, num_outputs, select_leaves
from jaxsubset.grads._trace import Plan, plan_sites, probe_backward, site_grad
from jaxsubset.grads.projection import check_projection, project
from jaxsubset.grads.sharding import data_parallel, replicate


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


METHODS = ("vmap", "probe")


def build_plan(apply_fn: ApplyFn, params: Any, x1: Any, y1: Any, chosen: list[int]) -> Plan:
    """Trace the single-example loss and find every parameter's site (see ``_trace.plan_sites``)."""
    return plan_sites(example_loss(apply_fn), params, jnp.asarray(x1), jnp.asarray(y1), chosen)


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

    It returns the sketch ``(B, k)`` with ``project_dim``, else one flattened
    ``(B, s_j)`` block per chosen leaf (concatenating on the host saves a device copy).

    With a ``plan`` (``build_plan``), layer gradients are formed from the probe pass
    (``a ⊗ g`` for dense layers, patches for convolutions); without, by ``vmap(grad)``.
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

    def chunk(leaves, xb, yb):
        gs = grads_of(leaves, xb, yb)
        flat = [g.reshape(g.shape[0], -1) for g in gs]
        if project_dim is not None:
            out = project(flat, chosen, project_dim, seed=seed, kind=projection)
            return out.astype(dtype or jnp.float32)
        return [f.astype(dtype or jnp.float32) for f in flat]

    return chunk


def per_sample_grads(apply_fn: ApplyFn, params: Any, x: Any, y: Any, *, wrt: Wrt = None,
                     project_dim: int | None = None, projection: str = "rademacher", seed: int = 0,
                     dtype: Any = None, method: str = "vmap", batch_size: int = 256, progress: bool = False,
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
      method: ``"vmap"``: plain ``jit(vmap(grad))``; ``"probe"``: one batched backward
        pass to every layer's output (as ``grad_norms``), then each layer's per-example
        gradient in closed form (``a_i ⊗ g_i`` for dense layers, unfolded patches for
        convolutions, sums for biases and scales; the leaves ``describe_grad_norms``
        lists as ``vmap`` are differentiated with vmap in the same pass). Both give
        the same numbers; their speed is similar on CPU (see the benchmark).
      batch_size: examples per chunk; at most ``batch_size × P`` gradient entries exist at once.
      progress: show a progress bar over chunks.
      mesh: optional data-parallel mesh (``data_mesh()``) to split each chunk over devices.

    Returns:
      numpy ``(n, P)`` or ``(n, k)``.
    """
    x, y = check_xy(x, y)
    check_projection(project_dim, projection)
    check_labels(y, num_outputs(apply_fn, params, x[0]))
    chosen = select_leaves(params, wrt)
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose one of {METHODS}.")
    plan = build_plan(apply_fn, params, x[0], y[0], chosen) if method == "probe" else None
    chunk = chunk_fn(apply_fn, params, chosen, project_dim, projection, seed, dtype, plan)
    leaves = replicate(jax.tree_util.tree_leaves(params), mesh)
    run = functools.partial(data_parallel(chunk, mesh, 2), leaves)
    out = None
    for s, e, batch in iter_chunks((x, y), batch_size=batch_size, progress=progress, desc="per-sample grads",
                                   mesh=mesh):
        blocks = call_chunk(run, batch, e - s)
        if project_dim is not None:
            blocks = [blocks]
        if out is None:  # one (n, P) array, filled chunk by chunk: no concatenation copies
            out = np.empty((x.shape[0], sum(b.shape[1] for b in blocks)), blocks[0].dtype)
        col = 0
        for blk in blocks:
            out[s:e, col:col + blk.shape[1]] = blk
            col += blk.shape[1]
    return check_finite_rows(out, "per-sample gradients")
