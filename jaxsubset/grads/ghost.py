"""Per-sample gradient norms ``||∇θ ℓ_i||₂`` without per-sample gradients (ghost norms).

For a layer ``out = a @ W`` the gradient of example ``i`` is ``a_iᵀ g_i`` with
``g_i = ∂ℓ_i/∂out_i``, so its squared norm is ``||a_i||²·||g_i||²`` when each
example contributes one row, and ``<A_i A_iᵀ, G_i G_iᵀ>`` when it contributes ``T``
rows (sequences; a convolution's ``T`` output positions with ``A_i`` the unfolded
input patches). Per layer we take the cheaper of that "ghost" form (``T²(D+P)``)
and materializing ``A_iᵀ G_i`` (``T·D·P``).

``apply_fn`` is generic, so the layers are found by tracing the single-example
loss to a jaxpr (``jaxsubset.grads._trace``). These parameter uses take the ghost
path:

==========================  ==========================================================
kind                        norm of one example's gradient
==========================  ==========================================================
dense / einsum weight       ``dot_general`` with the weight as an operand: outer, ghost
                            or materialized as above
conv kernel                 ``conv_general_dilated`` (any stride / padding / dilation,
                            ``feature_group_count == 1``): patches, ghost or materialized
bias, norm shift            ``add`` / ``sub`` of the (broadcast) parameter:
                            ``||Σ_broadcast g||²``
norm scale                  ``mul`` by the (broadcast) parameter: ``||Σ_broadcast g⊙u||²``
==========================  ==========================================================

Every other parameter (used twice, inside ``scan`` / ``while`` / a custom derivative,
grouped or depthwise convolutions, ...) falls back to ``vmap(grad)`` for that leaf only,
in the same backward pass. ``describe_grad_norms`` lists the path of each leaf.
The output gradients of all layers come from one batched backward pass to zero
"probe" arrays added to the layer outputs, which needs no parameter gradients.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxsubset.grads._cache import Entry, compiled
from jaxsubset.grads._inputs import check_input_array, check_inputs, with_finite_rows
from jaxsubset.grads.chunking import backend, check_finite_rows, check_labels, check_xy, map_entry
from jaxsubset.grads._params import Wrt, leaf_names, num_outputs, select_leaves
from jaxsubset.grads._trace import Plan, probe_backward, site_sq_norm
from jaxsubset.grads.per_sample import _grads_fn, build_plan, cached_plan
from jaxsubset.grads.sharding import data_parallel
from jaxsubset.types import ApplyFn

METHODS = ("auto", "ghost", "vmap")
_NO_PLAN = Plan(None, {}, frozenset(), {}, frozenset())  # method="vmap": no site, no fallback


def describe_grad_norms(apply_fn: ApplyFn, params: Any, x: Any, y: Any | None = None, *,
                        wrt: Wrt = None) -> dict[str, str]:
    """How ``grad_norms`` handles each parameter: name -> ``"ghost: dense (outer)"``, ``"vmap: <why>"``, ...

    Args:
      apply_fn, params: the model.
      x: inputs ``(n, ...)`` (only the shape and dtype of ``x[0]`` are used).
      y: labels (only the dtype is used); default int32.
      wrt: as in ``grad_norms``.
    """
    x = check_inputs(np.asarray(x))
    y = np.zeros(x.shape[:1], np.int32) if y is None else np.asarray(y)
    chosen = select_leaves(params, wrt)
    plan = cached_plan(apply_fn, params, x, y, chosen)
    names = leaf_names(params)
    kinds = {"dot": "dense", "conv": "conv", "add": "bias", "mul": "scale"}
    out = {}
    for p, s in plan.sites.items():
        out[names[s.leaf]] = f"ghost: {kinds[s.kind]} ({s.method})"
    for leaf, why in plan.fallback.items():
        out[names[leaf]] = f"vmap: {why}"
    for leaf in plan.unused:
        out[names[leaf]] = "unused (zero gradient)"
    return {names[i]: out[names[i]] for i in chosen}


def _sq(a: jax.Array) -> jax.Array:
    return jnp.sum(jnp.square(a.astype(jnp.float32)))


def ghost_chunk_fn(plan: Plan):
    """The (unjitted) per-chunk function ``(leaves, x (B, ...), y (B,)) -> norms (B,)``."""

    def per_example(leaves: list, x1: jax.Array, y1: jax.Array) -> jax.Array:
        acts, g_probes, g_fb = probe_backward(plan, leaves, x1, y1)
        sq = jnp.zeros((), jnp.float32)
        for p, site in plan.sites.items():
            sq = sq + site_sq_norm(site, acts[p], g_probes[p])
        for g in g_fb.values():
            sq = sq + _sq(g)
        return sq

    def chunk(leaves, xb, yb):
        return jnp.sqrt(jax.vmap(per_example, in_axes=(None, 0, 0))(leaves, xb, yb))

    return chunk


def vmap_chunk_fn(apply_fn: ApplyFn, params: Any, chosen: list[int]):
    """Like ``ghost_chunk_fn`` but materializing per-sample gradients (``method='vmap'``)."""
    g1 = _grads_fn(apply_fn, params, chosen)

    def chunk(leaves, xb, yb):
        gs = jax.vmap(g1, in_axes=(None, None, 0, 0))([leaves[i] for i in chosen], leaves, xb, yb)
        sq = sum(jnp.sum(jnp.square(g.astype(jnp.float32)).reshape(g.shape[0], -1), axis=1) for g in gs)
        return jnp.sqrt(sq)

    return chunk


CPU_ROWS = 1024
"""``grad_norms``' default chunk size on the CPU backend (``fit_rows`` then shrinks it to the memory budget)."""

ACCELERATOR_ROWS = 256
"""``grad_norms``' default chunk size on accelerators (no budget applies there)."""


def default_rows(mesh: Mesh | None = None) -> int:
    """``grad_norms``' chunk size when none is given: ``CPU_ROWS`` on the CPU backend without a mesh, else
    ``ACCELERATOR_ROWS``.

    There ``fit_rows`` caps every chunk at the 16 MiB buffer budget from the traced
    jaxpr, so a large default only applies where the buffers are small, as for ghost
    norms of dense layers; there one 512-row call took 0.75× the wall time of two
    256-row calls (best of 150 on 2 cores: 2.7 against 3.6 ms for the MLP 784-256-256-10):
    the bigger products keep both cores busy.
    """
    return CPU_ROWS if mesh is None and backend() == "cpu" else ACCELERATOR_ROWS


def grad_norms(apply_fn: ApplyFn, params: Any, x: Any, y: Any, *, method: str = "auto", wrt: Wrt = None,
               batch_size: int | None = None, progress: bool = False, mesh: Mesh | None = None) -> np.ndarray:
    """Per-example gradient norms ``||∇θ ℓ(f_θ(x_i), y_i)||₂`` ``(n,)`` (GraNd, GEDA's input).

    Args:
      apply_fn: ``apply_fn(params, x (B, ...)) -> logits (B, C)``; examples must not
        interact (no batch statistics), as for ``per_sample_grads``.
      params: the parameter pytree.
      x: inputs ``(n, ...)``; y: int labels ``(n,)``.
      method: ``"auto"`` (ghost norms where a layer allows it, ``vmap(grad)`` for the
        other leaves), ``"ghost"`` (the same, but raise if any leaf would need the
        fallback) or ``"vmap"`` (materialize per-sample gradients, then take norms).
      wrt: restrict to some parameters (see ``select_leaves``).
      batch_size: the most examples per chunk (default ``default_rows(mesh)``: 1024 on CPU without
        a mesh, where ``fit_rows`` shrinks it to the memory budget, else 256).
      progress: show a progress bar over chunks.
      mesh: optional data-parallel mesh (``data_mesh()``).

    Returns:
      float32 numpy ``(n,)``.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose one of {METHODS}.")
    x, y = check_xy(x, y)
    check_input_array(x)
    flat = jax.tree_util.tree_flatten(params)  # once: the cache key and the jitted call both use the leaves
    chosen = select_leaves(params, wrt, flat[0])
    entry = compiled("grad_norms", apply_fn, params, (x, y), mesh, (tuple(chosen), method == "vmap"),
                     lambda f: _norms_entry(f, params, x, y, chosen, method == "vmap", mesh), flat=flat)
    check_labels(y, entry.info["width"])
    plan = entry.info["plan"]
    if method == "ghost" and plan.fallback:
        names = leaf_names(params)
        why = "; ".join(f"{names[i]}: {r}" for i, r in sorted(plan.fallback.items()))
        raise ValueError(f"method='ghost' cannot handle these parameters ({why}); use method='auto' "
                         "to compute them with vmap, or restrict wrt.")
    out = map_entry(entry, flat[0], (x, y), batch_size=default_rows(mesh) if batch_size is None else batch_size,
                    progress=progress,
                    desc="gradient norms", mesh=mesh)
    return check_finite_rows(out, "per-sample gradient norms")


def _norms_entry(apply_fn: ApplyFn, params: Any, x: np.ndarray, y: np.ndarray, chosen: list[int], vmap: bool,
                 mesh: Mesh | None) -> Entry:
    """The jitted chunk function ``(leaves, x (B, ...), y (B,)) -> (norms (B,), finite rows of x (B,))``.

    ``info``: ``width`` (logits) and the ghost-norm ``plan`` (``None`` with ``vmap``).
    """
    plan = None if vmap else build_plan(apply_fn, params, x[0], y[0], chosen)
    fn = vmap_chunk_fn(apply_fn, params, chosen) if vmap else ghost_chunk_fn(plan)
    return Entry(data_parallel(with_finite_rows(fn), mesh, 2), width=num_outputs(apply_fn, params, x[0]),
                 plan=plan if plan is not None else _NO_PLAN)
