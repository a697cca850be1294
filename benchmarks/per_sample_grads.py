"""Per-sample gradient engine benchmark (not a unit test): time and peak memory, side by side.

For each model, on one batch:
  (a) batched mean-loss gradient            jit(grad(mean loss)), one call on the batch
  (b) per-sample gradients                  jaxsubset.grads.per_sample_grads (default method="auto":
                                            the probe pass, dense layers as host outer products): (n, P)
  (b') the same with the other method
  (c) per-sample norms, ghost               jaxsubset.grads.grad_norms(method="auto"), one call
  (d) per-sample norms, vmap + norm         jaxsubset.grads.grad_norms(method="vmap"), one call
  (e) Python loop of jit(grad), one example at a time
  (f) torch.func.vmap(grad) on the same architecture (only if torch is importable): a dict of
      per-parameter tensors; (f') the same concatenated into one (n, P) matrix like (b)
  (g) public grads.grad_norms(apply_fn, params, x, y), default arguments, a second call
  (h) public grads.per_sample_grads(apply_fn, params, x, y), default arguments, a second call

(g), (h) and (f') get fresh parameter values of the same shapes on every call (as adaptive
re-selection does): they time what a user's second call costs, compilation excluded only
because the compiled function is cached. The first public call (tracing and compiling
included, cache cleared) is reported separately, and so are the compile times of a
first and a second ``train.fit`` of the same shapes (``--fit``).

Times are the best of ``--repeats`` round-robin runs (calls under 0.1 s up to 10 times per
round), compilation excluded. (b) and (b')
are the whole public computation after compiling: chunks of the size ``fit_rows`` picks
(small on CPU: fresh large allocations are slow there), every chunk copied into the
``(n, P)`` host array, finiteness checked. Peak memory is XLA's compiled estimate for one
call: arguments + outputs + temporaries (``Compiled.memory_analysis()``); for (b) it is
one chunk's call (the ``(n, P)`` result comes on top), for (e) one example's call.
Usage::

    python benchmarks/per_sample_grads.py            # MLP b=512, CNN b=256 (+ ResNet-18 on GPU)
    python benchmarks/per_sample_grads.py --quick    # small batches, 2 repeats
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import os
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxsubset import grads
from jaxsubset.grads import _cache, cross_entropy
from jaxsubset.grads._inputs import with_finite_rows
from jaxsubset.grads._params import example_loss
from jaxsubset.grads.ghost import ghost_chunk_fn, vmap_chunk_fn
from jaxsubset.grads.chunking import fit_rows, iter_chunks
from jaxsubset.grads.per_sample import build_plan, chunk_fn, collect_rows, prefers_probe
from jaxsubset.models import create, to_pure

SPECS = {  # name -> (model name, per-example input shape, classes)
    "mlp": ("mlp", (28, 28, 1), 10),
    "cnn": ("cnn", (28, 28, 1), 10),
    "resnet18": ("resnet18", (32, 32, 3), 10),
}


def best_times(fns: dict[str, Callable[[], Any]], repeats: int, fast_s: float = 0.1) -> dict[str, float]:
    """Best wall time of each function; the repeats go round-robin (in a shuffled order
    each time) so that a busy machine slows every method alike. A function faster than
    ``fast_s`` runs several times per round (up to 10, about ``fast_s`` in all): on a
    shared machine a millisecond call needs many tries to find a quiet moment."""
    inner = {}
    for k, fn in fns.items():
        jax.block_until_ready(fn())  # warm-up (and compilation)
        t = time.perf_counter()
        jax.block_until_ready(fn())
        inner[k] = int(min(10, max(1, fast_s // max(time.perf_counter() - t, 1e-6))))
    best = {k: float("inf") for k in fns}
    order = list(fns)
    rng = np.random.default_rng(0)
    for _ in range(repeats):
        rng.shuffle(order)  # a fixed order favoured whichever method ran second in a pair (allocator state)
        for k in order:
            fn = fns[k]
            for _ in range(inner[k]):
                t = time.perf_counter()
                jax.block_until_ready(fn())
                best[k] = min(best[k], time.perf_counter() - t)
    return best


def peak_bytes(jitted: Any, *args: Any) -> float:
    try:
        m = jitted.lower(*args).compile().memory_analysis()
        return float(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                     - m.alias_size_in_bytes)
    except Exception:  # not every backend reports it
        return float("nan")


# --- PyTorch reference (optional) ---------------------------------------------------------------

def torch_call(name: str, x: np.ndarray, y: np.ndarray, flat: bool = False,
               fresh: int = 0) -> Callable[[], Any] | None:
    """``torch.func.vmap(grad)`` of the same architecture on the same batch, or None without torch.

    It returns a dict of per-parameter tensors; with ``flat``, they are concatenated
    into one ``(n, P)`` matrix, the form ``per_sample_grads`` returns. With ``fresh = K``,
    successive calls cycle through ``K`` parameter sets of different values.
    """
    try:
        import torch
    except ImportError:
        return None
    from torch import nn
    from torch.func import functional_call, grad, vmap

    torch.manual_seed(0)
    if name == "mlp":
        net = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                            nn.Linear(256, 10))
        xt = torch.from_numpy(x.reshape(len(x), -1))
    elif name == "cnn":
        net = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                            nn.Linear(7 * 7 * 64, 128), nn.ReLU(), nn.Linear(128, 10))
        xt = torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))
    else:
        return None
    yt = torch.from_numpy(y.astype(np.int64))
    params = {k: v.detach() for k, v in net.named_parameters()}

    def loss1(p, xi, yi):
        out = functional_call(net, p, (xi[None],))
        return nn.functional.cross_entropy(out, yi[None])

    f = vmap(grad(loss1), in_dims=(None, 0, 0))
    sets = [params] + [{k: v * (1.0 + 0.01 * i) for k, v in params.items()} for i in range(1, fresh)]
    nxt = itertools.cycle(sets).__next__
    if not flat:
        return lambda: f(nxt(), xt, yt)
    return lambda: torch.cat([g.reshape(len(xt), -1) for g in f(nxt(), xt, yt).values()], dim=1)


# --- one model ----------------------------------------------------------------------------------

def problem(name: str, batch: int):
    """The benchmark's model (seed 0) and one batch: ``(model, shape, classes, x_np, y_np, x, y, leaves,
    treedef)`` (NumPy and device copies of the batch; the parameters' leaves and tree structure)."""
    model_name, shape, c = SPECS[name]
    m = to_pure(create(model_name, shape, c, seed=0))
    rng = np.random.default_rng(0)
    x_np = rng.normal(size=(batch, *shape)).astype(np.float32)
    y_np = rng.integers(0, c, batch)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np, jnp.int32)
    leaves = jax.tree_util.tree_leaves(m.params)
    treedef = jax.tree_util.tree_structure(m.params)
    return m, shape, c, x_np, y_np, x, y, leaves, treedef


def run(name: str, batch: int, repeats: int, loop_n: int, use_torch: bool) -> dict[str, tuple[float, float]]:
    m, shape, c, x_np, y_np, x, y, leaves, treedef = problem(name, batch)
    chosen = list(range(len(leaves)))
    plan = build_plan(m.apply_fn, m.params, x_np[0], y_np[0], chosen)

    def mean_loss(lv, xb, yb):
        return jnp.mean(cross_entropy(m.apply_fn(jax.tree_util.tree_unflatten(treedef, lv), xb), yb))

    fns = {
        "a": jax.jit(jax.grad(mean_loss)),
        "c": jax.jit(ghost_chunk_fn(plan)),
        "d": jax.jit(vmap_chunk_fn(m.apply_fn, m.params, chosen)),
    }
    # (b), (b'): what per_sample_grads does after compiling: chunks sized by fit_rows,
    # gradients copied into one (n, P) numpy array, finiteness checked.
    auto = prefers_probe(plan)  # what method="auto" picks for this model
    psg = {"b": jax.jit(with_finite_rows(chunk_fn(m.apply_fn, m.params, chosen, plan=plan if auto else None))),
           "b1": jax.jit(with_finite_rows(chunk_fn(m.apply_fn, m.params, chosen, plan=None if auto else plan)))}
    rows = {k: fit_rows(functools.partial(f, (leaves, None)), (x_np, y_np), batch) for k, f in psg.items()}
    g1 = jax.jit(jax.grad(example_loss(m.apply_fn)))
    n = min(loop_n, batch)

    def loop():
        r = None
        for i in range(n):
            r = g1(m.params, x[i], y[i])
        return r

    calls = {k: (lambda f=f: f(leaves, x, y)) for k, f in fns.items()}
    for k, f in psg.items():
        calls[k] = lambda f=f, k=k: collect_rows(functools.partial(f, (leaves, None)), x_np, y_np, rows=rows[k])
    calls["e"] = loop
    if use_torch:
        for key, flat in (("f", False), ("f1", True)):
            tc = torch_call(name, x_np, y_np, flat, fresh=FRESH if flat else 0)
            if tc is not None:
                calls[key] = tc
    # (g), (h): the public functions as a user calls them, new parameter values every call
    sets = [jax.tree_util.tree_map(lambda a, i=i: a * (1.0 + 0.01 * i), m.params) for i in range(FRESH)]
    nxt = itertools.cycle(sets).__next__
    public = {"g": lambda: grads.grad_norms(m.apply_fn, nxt(), x_np, y_np),
              "h": lambda: grads.per_sample_grads(m.apply_fn, nxt(), x_np, y_np)}
    first = {}
    for k, fn in public.items():  # the first call: tracing and compiling included
        grads.clear_cache()
        t = time.perf_counter()
        fn()
        first[k] = time.perf_counter() - t
    calls.update(public)
    times = best_times(calls, repeats)
    times["e"] *= batch / n  # the loop's time scaled to the whole batch
    out = {k: (times[k], peak_bytes(f, leaves, x, y)) for k, f in fns.items()}
    for k, f in psg.items():  # one chunk's device buffers (the (n, P) host result comes on top)
        out[k] = (times[k], peak_bytes(f, (leaves, None), x[:rows[k]], y[:rows[k]]))
    out["e"] = (times["e"], peak_bytes(g1, m.params, x[0], y[0]))
    for k in ("f", "f1", "g", "h"):
        if k in times:
            out[k] = (times[k], float("nan"))
    order = ["a", "b", "b1", "c", "d", "e", "f", "f1", "g", "h"]
    return {k: out[k] for k in order if k in out}, rows, auto, first


LABELS = {
    "a": "(a) batched mean-loss gradient",
    "b": "(b) per_sample_grads -> (n, P)",
    "b1": "(b') the other method",
    "c": "(c) per-sample norms, ghost",
    "d": "(d) per-sample norms, vmap + norm",
    "e": "(e) Python loop of jit(grad)",
    "f": "(f) torch.func vmap(grad), dict",
    "f1": "(f') torch.func vmap(grad) -> (n, P)",
    "g": "(g) public grad_norms, 2nd call",
    "h": "(h) public per_sample_grads, 2nd call",
    "g0": "(g0) compiled part of (g)",
}

FRESH = 4
"""Parameter sets (same shapes, different values) that (f'), (g) and (h) cycle through."""

TARGETS = {  # model -> [(label, numerator, denominator, comparison, bound, kind)]
    "mlp": [("(c)/(a) time", "c", "a", "<=", 1.5, 0), ("(d)/(c) time", "d", "c", ">=", 10, 0),
            ("(c)/(a) peak memory", "c", "a", "<=", 1.5, 1), ("(g)/(a) time", "g", "a", "<=", 1.0, 0),
            ("(f')/(h) time", "f1", "h", ">=", 1, 0)],
    "cnn": [("(b)/(a) time", "b", "a", "<=", 3, 0), ("(e)/(b) time", "e", "b", ">=", 30, 0),
            ("(f)/(b) time", "f", "b", ">=", 1, 0), ("(f')/(b) time", "f1", "b", ">=", 1, 0),
            ("(c)/(a) peak memory", "c", "a", "<=", 1.5, 1), ("(h)/(a) time", "h", "a", "<=", 1.5, 0),
            ("(f')/(h) time", "f1", "h", ">=", 1, 0)],
}


def report(name: str, batch: int, res: dict[str, tuple[float, float]], rows: dict[str, int],
           auto: bool, first: dict[str, float]) -> None:
    names = ("probe", "vmap") if auto else ("vmap", "probe")
    print(f"\n{name.upper()} (batch {batch}, {jax.default_backend()}; (b) method=\"auto\" = {names[0]!r}, "
          f"(b') {names[1]!r}; chunks of {rows['b']} / {rows['b1']} rows)")
    print(f"  {'':38s} {'time ms':>10s} {'x (a)':>8s} {'peak MB':>9s}")
    ta = res["a"][0]
    for key, (t, mem) in res.items():
        mem_s = "n/a" if np.isnan(mem) else f"{mem / 2**20:.1f}"
        print(f"  {LABELS[key]:38s} {t * 1e3:10.1f} {t / ta:8.2f} {mem_s:>9s}")
    for key, t in first.items():
        print(f"  {LABELS[key].replace('2nd', '1st') + ' (compiles)':38s} {t * 1e3:10.1f} {t / ta:8.2f}")
    targets = list(TARGETS.get(name, []))
    if name == "mlp":
        targets += [("(f)/(b) time", "f", "b", ">=", 1, 0), ("(f')/(b) time", "f1", "b", ">=", 1, 0)]
    for label, num, den, op, bound, kind in targets:
        if num not in res or den not in res:
            continue
        v = res[num][kind] / res[den][kind]
        ok = v <= bound if op == "<=" else v >= bound
        print(f"  target {label:22s} {op} {bound:<5g} measured {v:8.2f}  {'met' if ok else 'MISSED'}")


def focus(name: str, batch: int, rounds: int) -> None:
    """The two compile-once targets alone: (a) against the public second call, many interleaved rounds.

    For a loaded machine: besides the best wall time, each call's CPU time of the whole
    process (all threads: ``time.process_time``) is recorded, which waiting for a core
    does not inflate. Public calls get new parameter values every time.

    For the MLP a third row, (g0), runs only the compiled part of (g): the cached jitted
    chunk function on the same chunks (NumPy in, as ``grad_norms`` passes them) with the
    results fetched; (g) − (g0) is the public call's fixed host cost (checks, cache
    lookup, chunk planning, result assembly).
    """
    m, shape, c, x_np, y_np, x, y, leaves, treedef = problem(name, batch)

    def mean_loss(lv, xb, yb):
        return jnp.mean(cross_entropy(m.apply_fn(jax.tree_util.tree_unflatten(treedef, lv), xb), yb))

    batched = jax.jit(jax.grad(mean_loss))
    sets = [jax.tree_util.tree_map(lambda a, i=i: a * (1.0 + 0.01 * i), m.params) for i in range(FRESH)]
    nxt = itertools.cycle(sets).__next__
    key, public = ("g", lambda: grads.grad_norms(m.apply_fn, nxt(), x_np, y_np)) if name == "mlp" else \
        ("h", lambda: grads.per_sample_grads(m.apply_fn, nxt(), x_np, y_np))
    fns = {"a": lambda: batched(leaves, x, y), key: public}
    if name == "mlp":
        fns["g0"] = compiled_part_of_grad_norms(m, x_np, y_np)
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for fn in fns.values():
        jax.block_until_ready(fn())
    load_before = _load()
    for r in range(rounds):
        for k in (list(fns) if r % 2 else list(fns)[::-1]):
            t, c0 = time.perf_counter(), time.process_time()
            jax.block_until_ready(fns[k]())
            wall[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - c0)
    print(f"\nFOCUS {name.upper()} (batch {batch}, {rounds} interleaved rounds): {LABELS['a']} vs {LABELS[key]}"
          f"\n  load average (1/5/15 min) before {load_before}, after {_load()}")
    for stat, f in (("best wall", np.min), ("median wall", np.median), ("best CPU", np.min),
                    ("median CPU", np.median)):
        src = wall if "wall" in stat else cpu
        ta, tk = f(src["a"]), f(src[key])
        print(f"  {stat:12s} (a) {ta * 1e3:9.1f} ms  ({key}) {tk * 1e3:9.1f} ms  ratio {tk / ta:6.2f}")
    if "g0" in fns:
        print(f"  {LABELS['g0']}: best wall {np.min(wall['g0']) * 1e3:.2f} ms, median {np.median(wall['g0']) * 1e3:.2f} ms; "
              f"(g) - (g0) medians: wall {(np.median(wall['g']) - np.median(wall['g0'])) * 1e3:.2f} ms, "
              f"CPU {(np.median(cpu['g']) - np.median(cpu['g0'])) * 1e3:.2f} ms")


def compiled_part_of_grad_norms(m: Any, x_np: np.ndarray, y_np: np.ndarray) -> Callable[[], Any]:
    """(g0): the cached jitted chunk function of ``grad_norms(m.apply_fn, m.params, x, y)`` alone, on the
    chunks the public call makes (default ``batch_size``, the rows ``fit_rows`` picked), results fetched."""
    grads.grad_norms(m.apply_fn, m.params, x_np, y_np)  # fills the cache
    chosen = list(range(len(jax.tree_util.tree_leaves(m.params))))
    entry = _cache.compiled("grad_norms", m.apply_fn, m.params, (x_np, y_np), None, (tuple(chosen), False),
                            lambda f: None)
    rows = next(iter(entry.rows.values()))
    leaves = jax.tree_util.tree_leaves(m.params)
    chunks = [c for _, _, c in iter_chunks((x_np, y_np), batch_size=rows, place=False)]

    def run():
        outs = [entry.run(leaves, *c) for c in chunks]
        return [np.asarray(o) for out in outs for o in out]

    return run


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=None, help="comma list of mlp,cnn,resnet18 (default: mlp,cnn; "
                   "plus resnet18 on a GPU)")
    p.add_argument("--batch-mlp", type=int, default=512)
    p.add_argument("--batch-cnn", type=int, default=256)
    p.add_argument("--batch-resnet", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--loop-examples", type=int, default=10**9,
                   help="examples timed in the Python loop (e); the time is scaled to the batch")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison (f)")
    p.add_argument("--fit", action="store_true", help="also time a first and a second train.fit")
    p.add_argument("--quick", action="store_true", help="smoke run: batch 32, 2 repeats, 8 loop examples")
    p.add_argument("--focus", type=int, default=0, metavar="ROUNDS",
                   help="only the compile-once targets ((a) vs (g) MLP, (a) vs (h) CNN) over ROUNDS "
                        "interleaved rounds, wall and CPU time")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="also write everything printed to FILE, after a header line (UTC time, load average "
                        "before the run, jax version, backend, CPU count); the load after the run ends it")
    a = p.parse_args(argv)
    if a.out:
        with _tee(a.out):
            _main(a)
    else:
        _main(a)


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


@contextlib.contextmanager
def _tee(path: str):
    """Print to stdout and to ``path``; a header says when, on what and under which load it ran."""
    out = open(path, "w")
    real = sys.stdout

    class Tee:
        def write(self, text: str) -> int:
            real.write(text)
            return out.write(text)

        def flush(self) -> None:
            real.flush()
            out.flush()

    cmd = " ".join(["benchmarks/per_sample_grads.py", *sys.argv[1:]])
    print(f"# {cmd}  |  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, jax {jax.__version__}, "
          f"{jax.default_backend()}, {os.cpu_count()} CPUs, load average (1/5/15 min) before: {_load()}",
          file=Tee())
    sys.stdout = Tee()
    try:
        yield
        print(f"# load average after: {_load()}")
    finally:
        sys.stdout = real
        out.close()


def _main(a: argparse.Namespace) -> None:
    models = a.models.split(",") if a.models else ["mlp", "cnn"] + (
        ["resnet18"] if jax.default_backend() == "gpu" else [])
    batches = {"mlp": a.batch_mlp, "cnn": a.batch_cnn, "resnet18": a.batch_resnet}
    repeats, loop_n = a.repeats, a.loop_examples
    if a.quick:
        batches = {k: 32 for k in batches}
        repeats, loop_n = 2, 8
    if a.focus:
        for name in [mn for mn in models if mn in ("mlp", "cnn")]:
            focus(name, batches[name], a.focus)
        return
    for name in models:
        if name not in SPECS:
            raise SystemExit(f"unknown model {name!r}; choose from {sorted(SPECS)}")
        res, rows, auto, first = run(name, batches[name], repeats, loop_n, not a.no_torch)
        report(name, batches[name], res, rows, auto, first)
    if a.fit:
        fit_rows_report()


def fit_rows_report() -> None:
    """``train.fit`` twice with the same shapes (digits CNN, 1 epoch): compile and wall time of each."""
    from jaxsubset import data, train

    ds = data.load("digits")
    print("\nFIT (digits, cnn, 1 epoch, batch 64; the same shapes twice, new seed)")
    first = None
    for i in range(2):
        t = time.perf_counter()
        res = train.fit("cnn", ds, epochs=1, seed=i, progress=False)
        wall = time.perf_counter() - t
        print(f"  fit #{i + 1}: compile {res.compile_time_s * 1e3:8.1f} ms, wall {wall * 1e3:8.1f} ms")
        first = res.compile_time_s if first is None else first
    ratio = res.compile_time_s / first if first else float("nan")
    print(f"  target second/first compile time <= 0.05  measured {ratio:6.2f}  "
          f"{'met' if ratio <= 0.05 else 'MISSED'}")


if __name__ == "__main__":
    main()
