"""Find, in the jaxpr of a single-example loss, the equations where each parameter enters.

``plan_sites`` traces ``loss1(params, x1, y1)`` and recognizes, for every parameter
leaf used exactly once, the equation that consumes it:

- ``dot_general`` with the parameter as one operand (dense layers, einsum
  projections, with or without a sequence axis);
- ``conv_general_dilated`` with the parameter as the kernel (any stride, padding,
  dilation; ``feature_group_count == batch_group_count == 1``);
- ``add`` / ``sub`` with the (broadcast) parameter (biases, norm shifts);
- ``mul`` with the (broadcast) parameter (norm scales).

Reshapes, transposes, dtype conversions and one ``broadcast_in_dim`` between the
leaf and that equation are followed; ``jit`` calls are entered. Every other use of a
parameter (a second use, a ``scan``, a custom derivative rule, ...) sends that leaf
to the fallback list. ``run_with_probes`` re-evaluates the jaxpr adding a zero
"probe" to the output of every site and returning each site's other operand, so
that one backward pass to the probes yields every output gradient.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jcore

Path = tuple[int, ...]

_TRANSPARENT = frozenset({"convert_element_type", "reshape", "transpose", "copy", "copy_p", "squeeze",
                          "expand_dims", "reduce_precision"})
_CALLS = frozenset({"jit", "pjit", "closed_call", "core_call"})


@dataclasses.dataclass(frozen=True)
class _Origin:
    leaf: int
    bcast: tuple | None = None  # (operand shape, output shape, broadcast_dimensions) of one broadcast_in_dim
    chain: tuple = ()  # reshape-like steps from the leaf: ("reshape", input shape) or ("transpose", perm)


@dataclasses.dataclass(frozen=True)
class Site:
    """One equation that consumes parameter leaf ``leaf`` as operand ``pos``.

    ``kind`` is ``"dot"``, ``"conv"``, ``"add"`` (also ``sub``) or ``"mul"``;
    ``method`` says how the per-example norm is formed: ``"outer"``
    (``||a||²·||g||²``), ``"ghost"`` (``<A Aᵀ, G Gᵀ>``), ``"materialize"``
    (``||Aᵀ G||²``) or ``"reduce"`` (sum the output gradient over broadcast axes).
    """

    leaf: int
    kind: str
    pos: int
    eqn: Any
    method: str
    bcast: tuple | None = None
    chain: tuple = ()


@dataclasses.dataclass
class Plan:
    """The result of ``plan_sites``: the traced jaxpr, its sites and the fallback leaves."""

    jaxpr: Any  # ClosedJaxpr of loss1(params_leaves..., x1, y1)
    sites: dict[Path, Site]
    containers: frozenset  # paths of call equations that contain a site
    fallback: dict[int, str]  # leaf -> why it cannot take the ghost path
    unused: frozenset  # leaves the loss does not depend on


def _inner(eqn) -> Any:
    for key in ("jaxpr", "call_jaxpr"):
        j = eqn.params.get(key)
        if j is not None:
            return j
    return None


def _closed(j) -> tuple[Any, list]:
    if isinstance(j, jcore.ClosedJaxpr):
        return j.jaxpr, list(j.consts)
    return j, []


def _size(shape: Sequence[int]) -> int:
    return int(np.prod(shape)) if len(shape) else 1


def _choose(t: int, d: int, p: int) -> str:
    """Per-example cost: ghost ``T²(D+P)`` against materializing ``T·D·P``."""
    if t == 1:
        return "outer"
    return "ghost" if t * (d + p) < d * p else "materialize"


def _dot_dims(eqn, pos: int) -> tuple[int, int, int]:
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lhs, rhs = (v.aval.shape for v in eqn.invars)
    act, contract, batch = (lhs, lc, lb) if pos == 1 else (rhs, rc, rb)
    par, pcontract, pbatch = (rhs, rc, rb) if pos == 1 else (lhs, lc, lb)
    t = _size([s for i, s in enumerate(act) if i not in contract and i not in batch])
    d = _size([act[i] for i in contract])
    p = _size([s for i, s in enumerate(par) if i not in pcontract and i not in pbatch])
    return t, d, p


def _conv_dims(eqn) -> tuple[int, int, int]:
    rhs = eqn.invars[1].aval.shape
    out = eqn.outvars[0].aval.shape
    dn = eqn.params["dimension_numbers"]
    o_dim = dn.rhs_spec[0]
    t = _size(out) // out[dn.out_spec[1]]
    d = _size(rhs) // rhs[o_dim]
    return t, d, rhs[o_dim]


def _match(eqn, pos: int, origin: _Origin) -> Site | None:
    name = eqn.primitive.name
    if name == "dot_general" and origin.bcast is None:
        return Site(origin.leaf, "dot", pos, eqn, _choose(*_dot_dims(eqn, pos)), None, origin.chain)
    if (name == "conv_general_dilated" and pos == 1 and origin.bcast is None
            and eqn.params["feature_group_count"] == 1 and eqn.params["batch_group_count"] == 1):
        return Site(origin.leaf, "conv", pos, eqn, _choose(*_conv_dims(eqn)), None, origin.chain)
    if name in ("add", "sub") and len(eqn.invars) == 2:
        return Site(origin.leaf, "add", pos, eqn, "reduce", origin.bcast, origin.chain)
    if name == "mul" and len(eqn.invars) == 2:
        return Site(origin.leaf, "mul", pos, eqn, "reduce", origin.bcast, origin.chain)
    return None


def _analyze(jaxpr, origins_in: Sequence[_Origin | None], path: Path, uses: dict[int, list],
             sites: dict[Path, Site], containers: set) -> list[_Origin | None]:
    origin: dict[Any, _Origin] = {v: o for v, o in zip(jaxpr.invars, origins_in) if o is not None}

    def get(v) -> _Origin | None:
        return None if isinstance(v, jcore.Literal) else origin.get(v)

    for i, eqn in enumerate(jaxpr.eqns):
        ins = [get(v) for v in eqn.invars]
        if not any(ins):
            continue
        p = path + (i,)
        name = eqn.primitive.name
        pd = [(k, o) for k, o in enumerate(ins) if o is not None]
        inner = _inner(eqn) if name in _CALLS else None
        if inner is not None:
            n_sites = len(sites)
            outs = _analyze(_closed(inner)[0], ins, p, uses, sites, containers)
            if len(sites) > n_sites:
                containers.add(p)
            for v, o in zip(eqn.outvars, outs):
                if o is not None:
                    origin[v] = o
            continue
        if len(pd) == 1 and pd[0][1].bcast is None and pd[0][0] == 0:
            if name in _TRANSPARENT:
                o = pd[0][1]
                step = (("transpose", tuple(eqn.params["permutation"])) if name == "transpose"
                        else ("reshape", tuple(eqn.invars[0].aval.shape)))
                origin[eqn.outvars[0]] = dataclasses.replace(o, chain=o.chain + (step,))
                continue
            if name == "broadcast_in_dim" and len(eqn.invars) == 1:
                bc = (tuple(eqn.invars[0].aval.shape), tuple(eqn.params["shape"]),
                      tuple(eqn.params["broadcast_dimensions"]))
                origin[eqn.outvars[0]] = dataclasses.replace(pd[0][1], bcast=bc)
                continue
        site = _match(eqn, pd[0][0], pd[0][1]) if len(pd) == 1 else None
        if site is not None:
            sites[p] = site
            uses[site.leaf].append(f"{name}")
        else:
            for _, o in pd:
                uses[o.leaf] += [None, f"unsupported use in `{name}`"]
    return [get(v) for v in jaxpr.outvars]


def plan_sites(loss1: Callable, params: Any, x1: Any, y1: Any, leaves_of_interest: Sequence[int]) -> Plan:
    """Trace ``loss1(params, x1, y1)`` and locate the ghost-norm site of each parameter leaf.

    Only leaves in ``leaves_of_interest`` are tracked; the others are treated as constants.
    """
    closed = jax.make_jaxpr(loss1)(params, x1, y1)
    n_leaves = len(jax.tree_util.tree_leaves(params))
    jaxpr = closed.jaxpr
    if len(jaxpr.invars) != n_leaves + 2:
        raise ValueError("Could not match the traced inputs to the parameter leaves.")
    wanted = set(int(i) for i in leaves_of_interest)
    origins = [_Origin(i) if i in wanted else None for i in range(n_leaves)] + [None, None]
    uses: dict[int, list] = {i: [] for i in wanted}
    sites: dict[Path, Site] = {}
    containers: set = set()
    outs = _analyze(jaxpr, origins, (), uses, sites, containers)
    for o in outs:
        if o is not None:
            uses[o.leaf].append(None)
    fallback: dict[int, str] = {}
    for leaf, u in uses.items():
        if None in u:
            reasons = sorted({r for r in u if r is not None and r.startswith("unsupported")})
            fallback[leaf] = "; ".join(reasons) or "used in an unsupported way"
        elif len(u) > 1:
            fallback[leaf] = f"used {len(u)} times ({', '.join(u)})"
    keep = {p: s for p, s in sites.items() if s.leaf not in fallback}
    # Containers must still lead to a kept site.
    cont = frozenset(c for c in containers if any(p[:len(c)] == c for p in keep))
    unused = frozenset(leaf for leaf, u in uses.items() if not u)
    return Plan(closed, keep, cont, fallback, unused)


def _bind(eqn, invals: list) -> list:
    params = eqn.primitive.get_bind_params(eqn.params)
    subfuns: list = []
    if isinstance(params, tuple):  # older JAX returned (subfuns, params)
        subfuns, params = params
    ctx = getattr(getattr(eqn, "ctx", None), "manager", None)
    if ctx is not None:
        with ctx:
            out = eqn.primitive.bind(*subfuns, *invals, **params)
    else:
        out = eqn.primitive.bind(*subfuns, *invals, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


def _eval(jaxpr, consts: list, args: list, path: Path, plan: Plan, probes: dict, acts: dict) -> list:
    env: dict[Any, Any] = {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    for v, val in zip(jaxpr.constvars, consts):
        env[v] = val
    for v, val in zip(jaxpr.invars, args):
        env[v] = val
    for i, eqn in enumerate(jaxpr.eqns):
        p = path + (i,)
        invals = [read(v) for v in eqn.invars]
        if p in plan.containers:
            inner, inner_consts = _closed(_inner(eqn))
            outvals = _eval(inner, inner_consts, invals, p, plan, probes, acts)
        else:
            outvals = _bind(eqn, invals)
        site = plan.sites.get(p)
        if site is not None:
            acts[p] = invals[1 - site.pos] if site.kind in ("dot", "conv", "mul") else None
            outvals = [outvals[0] + probes[p]]
        for v, val in zip(eqn.outvars, outvals):
            if not isinstance(v, jcore.DropVar):
                env[v] = val
    return [read(v) for v in jaxpr.outvars]


def run_with_probes(plan: Plan, leaves: list, x1: Any, y1: Any, probes: dict) -> tuple[Any, dict]:
    """Evaluate the loss with ``probes[path]`` added to every site's output.

    Returns ``(loss, acts)`` with ``acts[path]`` the site's non-parameter operand.
    """
    acts: dict[Path, Any] = {}
    (loss,) = _eval(plan.jaxpr.jaxpr, list(plan.jaxpr.consts), [*leaves, x1, y1], (), plan, probes, acts)
    return loss, acts


def probe_shapes(plan: Plan) -> dict[Path, jax.ShapeDtypeStruct]:
    """Shape and dtype of the output of every site."""
    return {p: jax.ShapeDtypeStruct(s.eqn.outvars[0].aval.shape, s.eqn.outvars[0].aval.dtype)
            for p, s in plan.sites.items()}


# --- per-example squared norms of one site, from its operand and output gradient -----------------

def _sq(a: jax.Array) -> jax.Array:
    return jnp.sum(jnp.square(a.astype(jnp.float32)))


def _gram_norm(a: jax.Array, g: jax.Array, method: str) -> jax.Array:
    """``||Σ_t a_t ⊗ g_t||²`` for ``a (nb, T, D)``, ``g (nb, T, P)``."""
    a = a.astype(jnp.float32)
    g = g.astype(jnp.float32)
    if method == "outer":  # T = 1; as contractions: XLA:CPU copied a * a out before reducing it
        hi = jax.lax.Precision.HIGHEST
        return jnp.sum(jnp.einsum("btd,btd->b", a, a, precision=hi) * jnp.einsum("btp,btp->b", g, g, precision=hi))
    if method == "ghost":
        aa = jnp.einsum("btd,bsd->bts", a, a)
        gg = jnp.einsum("btp,bsp->bts", g, g)
        return jnp.sum(aa * gg)
    return _sq(jnp.einsum("btd,btp->bdp", a, g))


def _dot_operands(site: Site, act: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array, list[int]]:
    """``A (nb, T, D)``, ``G (nb, T, P)`` and the weight's axes in ``[batch, contract, free]`` order."""
    (lc, rc), (lb, rb) = site.eqn.params["dimension_numbers"]
    lc, rc, lb, rb = map(tuple, (lc, rc, lb, rb))
    nb = len(lb)
    par_nd = len(site.eqn.invars[site.pos].aval.shape)
    if site.pos == 1:  # weight on the right: act is lhs
        contract, batch, wc, wb = lc, lb, rc, rb
    else:
        contract, batch, wc, wb = rc, rb, lc, lb
    wfree = tuple(i for i in range(par_nd) if i not in wc and i not in wb)
    free = tuple(i for i in range(act.ndim) if i not in contract and i not in batch)
    a = jnp.transpose(act, batch + free + contract)
    nbs = _size(a.shape[:nb])
    t = _size(a.shape[nb:nb + len(free)])
    a = a.reshape(nbs, t, -1)
    # dot_general output axes: [batch] + [lhs free] + [rhs free]
    if site.pos == 1:
        order = tuple(range(g.ndim))
    else:
        order = (tuple(range(nb)) + tuple(range(nb + len(wfree), nb + len(wfree) + len(free)))
                 + tuple(range(nb, nb + len(wfree))))
    gg = jnp.transpose(g, order).reshape(nbs, t, -1)
    return a, gg, list(wb + wc + wfree)


def _dot_norm(site: Site, act: jax.Array, g: jax.Array) -> jax.Array:
    a, gg, _ = _dot_operands(site, act, g)
    return _gram_norm(a, gg, site.method)


def _materialize(a: jax.Array, g: jax.Array) -> jax.Array:
    """``Σ_t a_t ⊗ g_t``: ``(nb, D, P)`` from ``a (nb, T, D)``, ``g (nb, T, P)``."""
    if a.shape[1] == 1:  # a broadcast product beats a matmul with a contraction of size 1
        return a[:, 0, :, None] * g[:, 0, None, :]
    return jnp.einsum("btd,btp->bdp", a, g)


def _to_axes(m: jax.Array, shape: Sequence[int], axes: Sequence[int]) -> jax.Array:
    """Reshape ``m`` to ``[shape[i] for i in axes]`` and move those axes to their positions."""
    m = m.reshape([shape[i] for i in axes])
    return jnp.transpose(m, tuple(np.argsort(axes)))


def _shifted_inputs(lhs: jax.Array, filt: Sequence[int], prm: dict) -> Iterator[jax.Array]:
    """For every kernel offset, the strided view of the padded input that it multiplies.

    ``lhs`` is channels-last ``(N, *spatial, C)``; each yield is ``(N, *out_spatial, C)``.
    Padding, strides and both dilations follow the convolution's parameters, so
    ``conv(lhs, W) = Σ_offset view_offset · W[offset]``.
    """
    s = len(filt)
    pads = [(0, 0, 0)] + [(lo, hi, d - 1) for (lo, hi), d in zip(prm["padding"], prm["lhs_dilation"])] + [(0, 0, 0)]
    x = lax.pad(lhs, jnp.zeros((), lhs.dtype), pads)
    strides, rdil = prm["window_strides"], prm["rhs_dilation"]
    out_sp = [(x.shape[1 + j] - (filt[j] - 1) * rdil[j] - 1) // strides[j] + 1 for j in range(s)]
    for off in np.ndindex(*filt):
        start = [0] + [o * d for o, d in zip(off, rdil)] + [0]
        limit = ([x.shape[0]] + [st + (n - 1) * sd + 1 for st, n, sd in zip(start[1:], out_sp, strides)]
                 + [x.shape[-1]])
        yield lax.slice(x, start, limit, [1, *strides, 1])


def _channels_last(site: Site, act: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array, list[int]]:
    """The convolution's input ``(N, *spatial, C)``, output gradient ``(N, *out_spatial, O)`` and filter size."""
    dn = site.eqn.params["dimension_numbers"]
    rhs_shape = site.eqn.invars[1].aval.shape
    filt = [rhs_shape[i] for i in dn.rhs_spec[2:]]
    lhs = jnp.transpose(act, (dn.lhs_spec[0], *dn.lhs_spec[2:], dn.lhs_spec[1]))
    out = jnp.transpose(g, (dn.out_spec[0], *dn.out_spec[2:], dn.out_spec[1]))
    return lhs, out, filt


def _conv_weight_grad(site: Site, act: jax.Array, g: jax.Array) -> jax.Array:
    """The convolution's kernel gradient ``(*filter, C, O)`` from ``act`` and output gradient ``g``.

    One contraction per kernel offset, ``Σ_{n,t} x[n, t·stride + offset·dilation]ᵀ g[n, t]``,
    each reading a strided view of the padded input: peak memory is one shifted copy
    of the input (``T·C`` per example), not the ``K`` times larger unfolded patches.
    """
    lhs, out, filt = _channels_last(site, act.astype(jnp.float32), g.astype(jnp.float32))
    go = out.reshape(-1, out.shape[-1])  # (N·T, O)
    blocks = [xs.reshape(-1, xs.shape[-1]).T @ go for xs in _shifted_inputs(lhs, filt, site.eqn.params)]
    return jnp.stack(blocks).reshape(*filt, lhs.shape[-1], go.shape[-1])


def _conv_operands(site: Site, act: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array, list[int]]:
    """Patches ``A (1, N·T, K·C)``, ``G (1, N·T, O)`` and the kernel's axes in ``[*spatial, I, O]`` order."""
    lhs, out, filt = _channels_last(site, act, g)
    patches = jnp.stack(list(_shifted_inputs(lhs, filt, site.eqn.params)), axis=-2)  # (N, *out_sp, K, C)
    a = patches.reshape(1, -1, patches.shape[-1] * patches.shape[-2])
    gg = out.reshape(1, -1, out.shape[-1])
    if a.shape[1] != gg.shape[1]:
        raise AssertionError(f"patch count {a.shape[1]} does not match output positions {gg.shape[1]}")
    return a, gg, _kernel_axes(site)


def _kernel_axes(site: Site) -> list[int]:
    """The convolution kernel's axes in ``[*spatial, I, O]`` order (the layout of its weight gradient)."""
    dn = site.eqn.params["dimension_numbers"]
    return [*dn.rhs_spec[2:], dn.rhs_spec[1], dn.rhs_spec[0]]


def _conv_norm(site: Site, act: jax.Array, g: jax.Array) -> jax.Array:
    if site.method == "materialize":
        return _sq(_conv_weight_grad(site, act, g))
    a, gg, _ = _conv_operands(site, act, g)
    return _gram_norm(a, gg, site.method)


def _reduce_to(g: jax.Array, shape: Sequence[int]) -> jax.Array:
    """Sum ``g`` over the axes along which an operand of ``shape`` was broadcast to ``g.shape``."""
    shape = tuple(shape)
    lead = g.ndim - len(shape)
    if lead > 0:
        g = jnp.sum(g, axis=tuple(range(lead)))
    axes = tuple(i for i, (s, t) in enumerate(zip(shape, g.shape)) if s == 1 and t != 1)
    return jnp.sum(g, axis=axes, keepdims=True) if axes else g


def _elementwise_grad(site: Site, other: Any, g: jax.Array) -> jax.Array:
    """Gradient of the parameter-side operand before its broadcast (shape ``bcast[0]`` or operand shape)."""
    grad = g if site.kind == "add" else g * other
    if site.kind == "add" and site.eqn.primitive.name == "sub" and site.pos == 1:
        grad = -grad
    grad = _reduce_to(grad, site.eqn.invars[site.pos].aval.shape)
    if site.bcast is None:
        return grad.reshape(site.eqn.invars[site.pos].aval.shape)
    in_shape, _, bdims = site.bcast
    grad = jnp.sum(grad, axis=tuple(i for i in range(grad.ndim) if i not in bdims))
    axes = tuple(i for i, s in enumerate(in_shape) if s == 1 and grad.shape[i] != 1)
    grad = jnp.sum(grad, axis=axes, keepdims=True) if axes else grad
    return grad.reshape(in_shape)


def _elementwise_norm(site: Site, other: Any, g: jax.Array) -> jax.Array:
    return _sq(_elementwise_grad(site, other, g))


def site_sq_norm(site: Site, act: Any, g: jax.Array) -> jax.Array:
    """Squared norm of one example's gradient for the leaf of ``site``."""
    if site.kind == "dot":
        return _dot_norm(site, act, g)
    if site.kind == "conv":
        return _conv_norm(site, act, g)
    return _elementwise_norm(site, act, g)


def site_grad(site: Site, act: Any, g: jax.Array, leaf_shape: Sequence[int]) -> jax.Array:
    """One example's gradient for the leaf of ``site``, in the leaf's own shape (float32)."""
    if site.kind == "conv":
        grad = _to_axes(_conv_weight_grad(site, act, g), site.eqn.invars[1].aval.shape, _kernel_axes(site))
    elif site.kind == "dot":
        a, gg, axes = _dot_operands(site, act, g)
        m = _materialize(a.astype(jnp.float32), gg.astype(jnp.float32))
        grad = _to_axes(m, site.eqn.invars[site.pos].aval.shape, axes)
    else:
        grad = _elementwise_grad(site, act, g).astype(jnp.float32)
    for kind, arg in reversed(site.chain):
        grad = jnp.transpose(grad, tuple(np.argsort(arg))) if kind == "transpose" else grad.reshape(arg)
    return grad.reshape(leaf_shape)


def site_factors(site: Site, act: Any, g: jax.Array) -> tuple[jax.Array, jax.Array] | None:
    """One example's gradient of a dense site as two vectors ``(u, v)``, or ``None``.

    For a weight used once in a ``dot_general`` with no batch or sequence axis, the
    gradient is the outer product of the other operand and the output gradient, and its
    row-major flattening equals ``outer(u, v).reshape(-1)``: ``(a, g)`` when the weight's
    contracting axes come first, ``(g, a)`` when its free axes do. Other sites (and
    leaves reached through a transpose) return ``None``: their gradient is materialized.
    """
    if site.kind != "dot" or any(kind == "transpose" for kind, _ in site.chain):
        return None
    a, gg, axes = _dot_operands(site, act, g)
    if a.shape[0] != 1 or a.shape[1] != 1:
        return None
    (lc, rc), (lb, rb) = site.eqn.params["dimension_numbers"]
    if len(lb):
        return None
    nc = len(rc if site.pos == 1 else lc)
    if axes == sorted(axes):
        return a.reshape(-1).astype(jnp.float32), gg.reshape(-1).astype(jnp.float32)
    if axes[nc:] + axes[:nc] == sorted(axes):
        return gg.reshape(-1).astype(jnp.float32), a.reshape(-1).astype(jnp.float32)
    return None


def probe_backward(plan: Plan, leaves: list, x1: Any, y1: Any) -> tuple[dict, dict, dict]:
    """One example's backward pass to the probes and the fallback leaves.

    Returns ``(acts, g_probes, g_fallback)``: each site's other operand and output
    gradient (keyed by path), and the gradient of every fallback leaf (keyed by leaf).
    """
    fb = sorted(plan.fallback)

    def f(probes, fb_leaves):
        full = list(leaves)
        for j, leaf in zip(fb, fb_leaves):
            full[j] = leaf
        return run_with_probes(plan, full, x1, y1, probes)

    probes0 = {p: jnp.zeros(s.shape, s.dtype) for p, s in probe_shapes(plan).items()}
    loss, vjp, acts = jax.vjp(f, probes0, [leaves[j] for j in fb], has_aux=True)
    g_probes, g_fb = vjp(jnp.ones_like(loss))
    return acts, g_probes, dict(zip(fb, g_fb))
