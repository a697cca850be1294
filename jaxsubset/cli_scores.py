"""``jaxsubset score`` and ``jaxsubset select``: score artifacts on disk, and selection from them."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Any

import numpy as np

from jaxsubset import budget_from_fraction, check_budget, data, selectors
from jaxsubset.data.sources import as_source
from jaxsubset.models import create, to_pure
from jaxsubset.models.weights import load_params
from jaxsubset.workflows import load_scores, read_manifest, score_pass


def add_parsers(sub: Any) -> None:
    """Add the ``score`` and ``select`` sub-commands to the ``jaxsubset`` parser."""
    s = sub.add_parser("score", help="compute per-example scores chunk by chunk into a (resumable) score folder")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="a data set name or .npz path (its training split is scored)")
    src.add_argument("--source", help="a .npy file of examples (n, ...), read memory-mapped")
    s.add_argument("--labels", help="with --source: a .npy file of int labels (n,)")
    s.add_argument("--data-dir", default=None, help="folder with the data set's standard files")
    s.add_argument("--scale", type=float, default=1.0, help="with --source: multiply examples by this (1/255 for "
                                                            "raw uint8 pixels)")
    s.add_argument("--num-classes", type=int, default=None, help="with --source: classes (default: max label + 1)")
    s.add_argument("--model", default="mlp", help="registered model name")
    s.add_argument("--params", default=None, help=".npz of the model's parameters (from models.weights."
                                                  "save_params); default: the initial parameters for --seed")
    s.add_argument("--seed", type=int, default=0, help="initialization seed when --params is not given")
    s.add_argument("--quantities", nargs="+", default=["loss", "el2n"], help="per-example quantities")
    s.add_argument("--out", required=True, help="score folder (manifest.json + one shard per process)")
    s.add_argument("--resume", action="store_true", help="continue an interrupted pass in --out")
    s.add_argument("--chunk-rows", type=int, default=4096)
    s.add_argument("--checkpoint-every", type=int, default=4, help="chunks between progress checkpoints")
    t = sub.add_parser("select", help="select a subset from a score folder written by `jaxsubset score`")
    t.add_argument("--scores", required=True, help="score folder")
    t.add_argument("--method", required=True, help="a registered method whose needs the folder holds")
    b = t.add_mutually_exclusive_group(required=True)
    b.add_argument("--fraction", type=float)
    b.add_argument("--budget", type=int)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", required=True, help="subset file (.npz: indices, weights)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def _model(args: argparse.Namespace, input_shape: tuple[int, ...], num_classes: int):
    m = to_pure(create(args.model, input_shape, num_classes, seed=args.seed))
    if args.params:
        if not os.path.exists(args.params):
            raise ValueError(f"--params {args.params!r} does not exist.")
        m = m.__class__(m.apply_fn, load_params(m.params, args.params, skip=()), m.apply_with_embedding, m.head_key)
    return m


def run_score(args: argparse.Namespace) -> int:
    if args.dataset:
        ds = data.load(args.dataset, data_dir=args.data_dir, seed=0)
        source, y, shape, c = ds.x_train, ds.y_train, ds.input_shape, ds.num_classes
    else:
        if not args.labels:
            raise ValueError("--source needs --labels (a .npy file of int labels, one per example).")
        scale = float(args.scale)
        source = as_source(args.source, transform=None if scale == 1.0 else (lambda b: b * np.float32(scale)))
        try:
            y = np.load(args.labels)
        except (OSError, ValueError) as e:
            raise ValueError(f"Cannot read --labels {args.labels!r} ({e}).") from e
        shape = source.example_shape
        c = int(args.num_classes or (int(y.max()) + 1 if y.size else 0))
    model = _model(args, tuple(shape), c)
    r = score_pass(model, source, y, args.quantities, args.out, model_name=args.model, chunk_rows=args.chunk_rows,
                   checkpoint_every=args.checkpoint_every, resume=args.resume)
    print(f"{'complete' if r['complete'] else 'partial'}: {r['chunks_done']}/{r['chunks_total']} chunks in "
          f"{r['shard']} ({r['time_s']:.1f} s)")
    return 0


def run_select(args: argparse.Namespace) -> int:
    if args.method not in selectors.METHODS:
        raise ValueError(f"unknown method {args.method!r}; choose one of {sorted(selectors.METHODS)}")
    if os.path.exists(args.out) and not args.overwrite:
        raise ValueError(f"{args.out!r} exists; pass --overwrite to replace it or choose another --out.")
    man = read_manifest(args.scores)
    needs = selectors.get(args.method).needs
    missing = [q for q in needs if q not in man["quantities"]]
    if missing:
        raise ValueError(f"method {args.method!r} needs {list(needs)}, but {args.scores!r} holds "
                         f"{man['quantities']}; score {missing} with `jaxsubset score --quantities ...`.")
    scores = load_scores(args.scores, list(needs))
    y = scores.pop("labels")
    n = y.size
    budget = budget_from_fraction(args.fraction, n) if args.fraction is not None else check_budget(args.budget, n)
    sub = selectors.select(args.method, y, budget, scores, seed=args.seed)
    d = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=d)
    os.close(fd)
    try:
        np.savez(tmp, indices=sub.indices, weights=sub.weights, method=args.method,
                 data_fingerprint=man["data_fingerprint"], model_fingerprint=man["model_fingerprint"])
        os.replace(tmp, args.out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(f"{args.method}: {len(sub)} of {n} examples -> {args.out}")
    return 0


def dispatch(args: argparse.Namespace) -> int:
    """Run ``score`` / ``select``; user mistakes become one-line errors (exit 2)."""
    try:
        return run_score(args) if args.command == "score" else run_select(args)
    except (ValueError, TypeError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
