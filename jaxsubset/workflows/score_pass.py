"""A streaming, sharded, resumable scoring pass, and the score artifacts it writes.

``score_pass(model, source, labels, quantities, out_dir)`` computes per-example quantities
(:data:`PER_EXAMPLE` names of :mod:`jaxsubset.workflows.quantities`) chunk by chunk from a random-access
source (:mod:`jaxsubset.data.sources`): host memory is bounded by the chunk size and Grain's
prefetch, not by ``n``.

**Several processes** (JAX's own runtime: call ``jax.distributed.initialize()`` first, or pass
``process_index`` / ``process_count``): the ``C = ceil(n / chunk_rows)`` chunks are split into
``P`` contiguous ranges; process ``p`` reads only its range and writes its own shard
``shard-p-of-P/`` (one ``.npy`` per quantity plus the example ids ``ids.npy`` and the labels).
Per-example quantities never mix examples, so each process computes its rows on its local
devices and no global array is assembled.

**Resumable.** Every ``checkpoint_every`` chunks the shard's outputs are flushed to disk and
then ``progress.json`` (the finished chunk ids) is replaced atomically, so a killed pass,
restarted with the same arguments, skips finished chunks and produces identical scores (a
chunk finished after the last checkpoint is recomputed, to the same values). A restart with
other arguments (data set, labels, model parameters, quantities, chunk size, process count)
is refused.

**Artifacts.** ``manifest.json`` (written once, atomically) records the data set's
fingerprint, the model's, the quantities, the chunking and the library version;
:func:`load_scores` reads every shard back, checks that the ids cover ``0..n-1`` exactly
once, and returns the quantities in id order.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from jaxsubset import __version__
from jaxsubset.data.sources import Source, as_source, chunk_bounds, iter_chunks, num_chunks
from jaxsubset.models.pure import PureModel
from jaxsubset.workflows.quantities import GROUPS, QUANTITIES, compute

FORMAT = 1
#: Quantities of :mod:`jaxsubset.workflows.quantities` that depend on one example alone (a chunk at a time is exact).
PER_EXAMPLE = ("loss", "el2n", "grad_norm", "input_grad_norm", "grads", "grads_projected", "last_layer_e",
               "last_layer_h", "probs", "embedding")
MANIFEST = "manifest.json"
PROGRESS = "progress.json"


# ----------------------------------------------------------------------------- fingerprints

def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:32]


def data_fingerprint(source: Source, labels: np.ndarray, *, samples: int = 64) -> str:
    """Hash of ``n``, the example shape, all labels and ``samples`` evenly spaced examples."""
    n = len(source)
    idx = np.unique(np.linspace(0, n - 1, num=min(samples, n)).astype(np.int64))
    rows = b"".join(source.read(int(i), int(i) + 1).tobytes() for i in idx)
    return _digest(n, list(source.example_shape), np.ascontiguousarray(labels).tobytes(), rows)


def model_fingerprint(params: Any) -> str:
    """Hash of the parameter tree's structure, shapes, dtypes and values."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    arrs = [np.asarray(a) for a in leaves]
    return _digest(str(treedef), [(a.shape, str(a.dtype)) for a in arrs], *[a.tobytes() for a in arrs])


# ----------------------------------------------------------------------------- small file helpers

def _atomic_json(path: str, obj: Any) -> None:
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read_json(path: str, what: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as e:
        raise ValueError(f"The {what} {path!r} is unreadable or corrupt ({e}); delete the score folder and run "
                         "the scoring pass again.") from e


def shard_name(p: int, count: int) -> str:
    return f"shard-{p:05d}-of-{count:05d}"


def process_chunks(num: int, p: int, count: int) -> range:
    """The contiguous range of chunk ids process ``p`` of ``count`` owns."""
    return range(p * num // count, (p + 1) * num // count)


# ----------------------------------------------------------------------------- the pass

def _check_quantities(quantities: Sequence[str]) -> tuple[str, ...]:
    qs = tuple(dict.fromkeys(quantities))
    if not qs:
        raise ValueError(f"Name at least one quantity to compute; per-example ones are {list(PER_EXAMPLE)}.")
    known = set(QUANTITIES) | {q for g in GROUPS for q in g}
    for q in qs:
        if q not in known:
            raise ValueError(f"Unknown quantity {q!r}; per-example quantities are "
                             f"{[p for p in PER_EXAMPLE if p in known]}.")
        if q not in PER_EXAMPLE:
            raise ValueError(f"Quantity {q!r} depends on the whole data set (not one example at a time), so a "
                             f"chunked pass cannot compute it; choose from {[p for p in PER_EXAMPLE if p in known]}.")
    return qs


def score_pass(model: PureModel, source: Any, labels: Any, quantities: Sequence[str], out_dir: str, *,
               model_name: str = "", chunk_rows: int = 4096, checkpoint_every: int = 4, resume: bool = False,
               batch_size: int = 1024, prefetch: int = 2, process_index: int | None = None,
               process_count: int | None = None, max_chunks: int | None = None) -> dict[str, Any]:
    """Compute ``quantities`` for every example of ``source`` and write this process's score shard.

    Args:
      model: the scoring :class:`PureModel` (its ``params`` are fingerprinted).
      source: an array ``(n, ...)``, memmap, ``.npy`` path or :class:`~jaxsubset.data.sources.Source`.
      labels: int ``(n,)`` labels (kept in memory: 8 bytes per example).
      quantities: names from :data:`PER_EXAMPLE` (see :mod:`jaxsubset.workflows.quantities`).
      out_dir: the score folder (shared by all processes).
      model_name: recorded in the manifest (e.g. ``"mlp"``).
      chunk_rows: rows per chunk (the unit of reading, checkpointing and sharding).
      checkpoint_every: flush outputs and record progress every this many chunks.
      resume: continue an interrupted pass in ``out_dir`` (the same arguments are required); without
        it an existing score folder is refused, never overwritten.
      batch_size: rows per compiled call inside a chunk (see :mod:`jaxsubset.grads`).
      prefetch: chunks read ahead by Grain.
      process_index, process_count: this process's shard (default ``jax.process_index()`` /
        ``jax.process_count()``).
      max_chunks: stop after this many chunks of this call (to interrupt a pass on purpose, e.g. in tests).

    Returns:
      ``{"shard": path, "chunks_done": int, "chunks_total": int, "complete": bool, "time_s": float}``.
    """
    t0 = time.perf_counter()
    src = source if isinstance(source, Source) else as_source(source)
    n = len(src)
    y = np.asarray(labels)
    if y.shape != (n,) or y.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers of shape ({n},) (one per example of the source); got "
                         f"{y.dtype} {y.shape}.")
    y = y.astype(np.int64)
    qs = _check_quantities(quantities)
    if int(chunk_rows) < 1 or int(checkpoint_every) < 1:
        raise ValueError(f"chunk_rows and checkpoint_every must be >= 1; got {chunk_rows}, {checkpoint_every}.")
    p = jax.process_index() if process_index is None else int(process_index)
    count = jax.process_count() if process_count is None else int(process_count)
    if not 0 <= p < count:
        raise ValueError(f"process_index must be in [0, {count}); got {p}.")
    num = num_chunks(n, chunk_rows)
    if count > num:
        raise ValueError(f"{count} processes but only {num} chunks of {chunk_rows} rows; lower chunk_rows.")

    manifest = {"format": FORMAT, "library_version": __version__, "n": n, "example_shape": list(src.example_shape),
                "data_fingerprint": data_fingerprint(src, y), "model": model_name,
                "model_fingerprint": model_fingerprint(model.params), "quantities": list(qs),
                "chunk_rows": int(chunk_rows), "num_chunks": num, "process_count": count}
    os.makedirs(out_dir, exist_ok=True)
    mpath = os.path.join(out_dir, MANIFEST)
    if p == 0:  # process 0 owns the manifest: it refuses a used folder, or checks a resumed one
        if os.path.exists(mpath):
            if not resume:
                raise FileExistsError(f"{out_dir!r} already holds scores ({MANIFEST}); pass resume=True (--resume) "
                                      "to continue that pass, or choose another folder.")
            _check_same(_read_json(mpath, "score manifest"), manifest, out_dir)
        else:
            _atomic_json(mpath, manifest)
    if jax.process_count() > 1:  # the others look only once process 0 has decided
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("jaxsubset.score_pass.manifest")
    if p != 0 and os.path.exists(mpath):
        _check_same(_read_json(mpath, "score manifest"), manifest, out_dir)

    shard = os.path.join(out_dir, shard_name(p, count))
    os.makedirs(shard, exist_ok=True)
    mine = process_chunks(num, p, count)
    row0 = chunk_bounds(n, chunk_rows, mine.start)[0] if len(mine) else 0
    row1 = chunk_bounds(n, chunk_rows, mine.stop - 1)[1] if len(mine) else 0
    ppath = os.path.join(shard, PROGRESS)
    done: set[int] = set()
    if os.path.exists(ppath):
        prog = _read_json(ppath, "shard progress file")
        if prog.get("manifest") != _digest(manifest) and not resume:
            raise FileExistsError(f"{shard!r} holds another pass's progress; use another folder.")
        if prog.get("manifest") != _digest(manifest):
            raise ValueError(f"{shard!r} was written by a pass with other arguments; use another folder.")
        done = set(int(c) for c in prog["done"])
    elif not resume and any(f.endswith(".npy") for f in os.listdir(shard)):
        raise FileExistsError(f"{shard!r} already holds score files; pass resume=True or use another folder.")

    ids_path = os.path.join(shard, "ids.npy")
    if not os.path.exists(ids_path):
        _atomic_npy(ids_path, np.arange(row0, row1, dtype=np.int64))
        _atomic_npy(os.path.join(shard, "labels.npy"), y[row0:row1])
    outs: dict[str, np.ndarray] = {}
    todo = [c for c in mine if c not in done]
    if max_chunks is not None:
        todo = todo[:max(int(max_chunks), 0)]
    since = 0
    for c, xb in iter_chunks(src, chunk_rows, todo, prefetch=prefetch):
        a, b = chunk_bounds(n, chunk_rows, c)
        vals = compute(qs, model, xb, y[a:b], batch_size=batch_size)
        for q in qs:
            v = np.asarray(vals[q])
            if q not in outs:
                outs[q] = _open_output(os.path.join(shard, f"{q}.npy"), (row1 - row0, *v.shape[1:]), v.dtype)
            outs[q][a - row0:b - row0] = v
        done.add(c)
        since += 1
        if since >= checkpoint_every:
            _checkpoint(outs, ppath, manifest, done)
            since = 0
    if since or not os.path.exists(ppath):
        _checkpoint(outs, ppath, manifest, done)
    complete = all(c in done for c in mine)
    return {"shard": shard, "chunks_done": len([c for c in mine if c in done]), "chunks_total": len(mine),
            "complete": complete, "time_s": time.perf_counter() - t0}


def _check_same(old: Mapping[str, Any], manifest: Mapping[str, Any], out_dir: str) -> None:
    diff = sorted(k for k in manifest if k != "library_version" and old.get(k) != manifest[k])
    if diff:
        raise ValueError(f"Cannot resume in {out_dir!r}: {diff} differ from the pass there (e.g. {diff[0]}: "
                         f"{old.get(diff[0])!r} there, {manifest[diff[0]]!r} now). Resume with the same data, "
                         "labels, model parameters, quantities, chunk_rows and processes, or use another folder.")


def _atomic_npy(path: str, a: np.ndarray) -> None:
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npy", dir=d)
    os.close(fd)
    try:
        np.save(tmp, a)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _open_output(path: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    from numpy.lib.format import open_memmap

    if os.path.exists(path):
        try:
            out = open_memmap(path, mode="r+")
        except (OSError, ValueError) as e:
            raise ValueError(f"The score file {path!r} is corrupt ({e}); delete the score folder and run again.") from e
        if out.shape != tuple(shape) or out.dtype != dtype:
            raise ValueError(f"The score file {path!r} has shape {out.shape} {out.dtype}, expected {shape} "
                             f"{np.dtype(dtype)}; it belongs to another pass. Use another folder.")
        return out
    return open_memmap(path, mode="w+", shape=tuple(shape), dtype=dtype)


def _checkpoint(outs: Mapping[str, np.ndarray], ppath: str, manifest: dict, done: set[int]) -> None:
    for a in outs.values():
        a.flush()
    _atomic_json(ppath, {"manifest": _digest(manifest), "done": sorted(done)})


# ----------------------------------------------------------------------------- reading back

def read_manifest(out_dir: str) -> dict[str, Any]:
    """The manifest of a score folder (``ValueError`` naming the folder when absent or corrupt)."""
    path = os.path.join(out_dir, MANIFEST)
    if not os.path.exists(path):
        raise ValueError(f"{out_dir!r} holds no score manifest ({MANIFEST}); run `jaxsubset score` (or "
                         "workflows.score_pass) into it first.")
    return _read_json(path, "score manifest")


def check_manifest(manifest: Mapping[str, Any], *, data_fingerprint: str | None = None,
                   model_fingerprint: str | None = None) -> None:
    """Refuse scores computed on another data set or by another model than expected."""
    for key, want in (("data_fingerprint", data_fingerprint), ("model_fingerprint", model_fingerprint)):
        if want is not None and manifest.get(key) != want:
            what = "data set (or labels)" if key == "data_fingerprint" else "model parameters"
            raise ValueError(f"These scores were computed on another {what} ({key} {manifest.get(key)} != "
                             f"{want}); score this one with `jaxsubset score`.")


def load_scores(out_dir: str, quantities: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Read every shard of a complete pass; ``{"labels": (n,), quantity: (n, ...)}`` in id order.

    Raises:
      ValueError: a shard is missing, unfinished or corrupt, or the ids do not cover ``0..n-1``
        exactly once (the message names the shard and what to do).
    """
    man = read_manifest(out_dir)
    n, count, num = int(man["n"]), int(man["process_count"]), int(man["num_chunks"])
    want = list(man["quantities"]) if quantities is None else list(quantities)
    for q in want:
        if q not in man["quantities"]:
            raise ValueError(f"{out_dir!r} holds {man['quantities']}, not {q!r}.")
    parts: dict[str, list[np.ndarray]] = {q: [] for q in ["labels", *want]}
    ids = []
    for p in range(count):
        shard = os.path.join(out_dir, shard_name(p, count))
        ppath = os.path.join(shard, PROGRESS)
        if not os.path.exists(ppath):
            raise ValueError(f"Shard {shard!r} is missing; run the scoring pass of process {p} (with --resume).")
        prog = _read_json(ppath, "shard progress file")
        if prog.get("manifest") != _digest(man):
            raise ValueError(f"Shard {shard!r} belongs to another pass than {MANIFEST}; re-run it into a new folder.")
        missing = [c for c in process_chunks(num, p, count) if c not in set(prog["done"])]
        if missing:
            raise ValueError(f"Shard {shard!r} is unfinished ({len(missing)} chunks left); resume the pass of "
                             f"process {p} with --resume.")
        try:
            ids.append(np.load(os.path.join(shard, "ids.npy")))
            for q in parts:
                parts[q].append(np.load(os.path.join(shard, f"{q}.npy"), mmap_mode="r"))
        except (OSError, ValueError) as e:
            raise ValueError(f"Shard {shard!r} has a missing or corrupt file ({e}); delete the folder and run the "
                             "scoring pass again.") from e
    all_ids = np.concatenate(ids)
    counts = np.bincount(all_ids, minlength=n) if all_ids.size and all_ids.min() >= 0 else None
    if counts is None or counts.size != n or not np.all(counts == 1):
        raise ValueError(f"The shards of {out_dir!r} do not cover the example ids 0..{n - 1} exactly once; the "
                         "folder mixes passes. Score into a new folder.")
    order = np.argsort(all_ids, kind="stable")
    out = {}
    for q, ps in parts.items():
        if any(a.shape[0] != i.size for a, i in zip(ps, ids)):
            raise ValueError(f"The {q!r} files of {out_dir!r} do not match their ids; the folder is corrupt.")
        out[q] = np.concatenate([np.asarray(a) for a in ps])[order]
    return out
