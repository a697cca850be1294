"""The ``jaxsubset`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Callable, Sequence

from jaxsubset import data, models, report, selectors
from jaxsubset.cli_scores import add_parsers, dispatch
from jaxsubset.outdir import check_out_dir, write_files
from jaxsubset.workflows.run import RunConfig, compare

RESULT_FILES = ("results.csv", "results.json", "summary.md", "accuracy.png")


def _fraction(s: str) -> float:
    f = float(s)
    if not 0.0 < f <= 1.0:
        raise argparse.ArgumentTypeError(f"fraction must be in (0, 1], got {s}")
    return f


def _lr(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {s!r}") from None
    if not (v > 0 and v < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {s}")
    return v


def _at_least(lo: int, hint: str = "") -> Callable[[str], int]:
    def integer(s: str) -> int:
        if int(s) < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}{hint}, got {s}")
        return int(s)
    return integer


_positive, _non_negative = _at_least(1), _at_least(0, " (0: score at the initial model)")


def build_parser() -> argparse.ArgumentParser:
    d = RunConfig()
    p = argparse.ArgumentParser(prog="jaxsubset", description="Pick the training examples worth keeping.")
    sub = p.add_subparsers(dest="command")
    r = sub.add_parser("run", help="select a subset, train on it, compare with random and full data")
    r.add_argument("--dataset", default=d.dataset, help=f"one of {list(data.DATASETS)} or a .npz path")
    r.add_argument("--data-dir", default=None, help="folder with the data set's standard files")
    r.add_argument("--model", default=d.model, choices=sorted(models.MODELS))
    r.add_argument("--method", default=d.method, help=f"selection method: {sorted(selectors.METHODS)}")
    r.add_argument("--fraction", type=_fraction, default=d.fraction, help="fraction of the training set to keep")
    r.add_argument("--epochs", type=_positive, default=d.epochs)
    r.add_argument("--seeds", type=_positive, default=d.seeds, help="number of seeds (0..seeds-1)")
    r.add_argument("--batch-size", type=_positive, default=d.batch_size)
    r.add_argument("--lr", type=_lr, default=d.lr)
    r.add_argument("--optimizer", default=d.optimizer)
    r.add_argument("--schedule", default=d.schedule)
    r.add_argument("--score-epochs", type=_non_negative, default=d.score_epochs,
                   help="epochs of the surrogate model that scores examples (score-based methods); 0: score at "
                        "the initial parameters of the model that is then trained")
    r.add_argument("--score-models", type=_positive, default=d.score_models,
                   help="surrogates whose scalar scores (EL2N, loss, ...) are averaged")
    r.add_argument("--dynamic", default=None, choices=["infobatch", "random_online", "rs2"],
                   help="instead of a selection method: prune dynamically during training and compare with full "
                        "data and RandomOnline at the same sample-steps (random_online / rs2 use --fraction)")
    r.add_argument("--out", default=None, help="write results.csv, results.json, summary.md and accuracy.png here")
    r.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    r.add_argument("--no-progress", action="store_true", help="hide progress bars")
    e = sub.add_parser("experiment", help="list or run the scripts in experiments/ (e.g. geda_study --quick)")
    e.add_argument("name", nargs="?", help="experiment name; omit to list them")
    e.add_argument("rest", nargs=argparse.REMAINDER, help="arguments passed to the experiment")
    sub.add_parser("methods", help="list the selection methods")
    sub.add_parser("datasets", help="list the data sets")
    add_parsers(sub)
    return p


def _run(args: argparse.Namespace) -> int:
    if args.method not in selectors.METHODS:
        print(f"error: unknown method {args.method!r}; choose one of {sorted(selectors.METHODS)}", file=sys.stderr)
        return 2
    cfg = RunConfig(dataset=args.dataset, model=args.model, method=args.method, fraction=args.fraction,
                    epochs=args.epochs, seeds=args.seeds, batch_size=args.batch_size, lr=args.lr,
                    optimizer=args.optimizer, schedule=args.schedule, score_epochs=args.score_epochs,
                    score_models=args.score_models, data_dir=args.data_dir, progress=not args.no_progress,
                    dynamic=args.dynamic)
    out = check_out_dir(args.out, RESULT_FILES, overwrite=args.overwrite) if args.out else None  # before training
    print(f"jaxsubset run: {cfg.method} on {cfg.dataset} ({cfg.model}), keeping {cfg.fraction:.0%} of the "
          f"training set, {cfg.epochs} epochs, {cfg.seeds} seed(s)", flush=True)
    rows = compare(cfg)
    summary = report.summarize(rows, ["method", "fraction"], ["test_accuracy", "selection_time_s", "train_time_s"])
    table = report.markdown_table(
        ["method", "fraction", "test accuracy", "selection time (s)", "training time (s)"],
        [(s["method"], f"{s['fraction']:.2f}",
          f"{s['test_accuracy_mean']:.4f} ± {s['test_accuracy_std']:.4f}",
          f"{s['selection_time_s_mean']:.2f}", f"{s['train_time_s_mean']:.2f}") for s in summary])
    print(table)
    if out:
        def write_md(path: str) -> None:
            with open(path, "w") as f:
                f.write(table + "\n")

        write_files(out, {  # each file to a temporary name, then renamed into place
            "results.csv": lambda p: report.write_csv(p, rows),
            "results.json": lambda p: report.write_json(
                p, {"config": dataclasses.asdict(cfg), "rows": rows, "summary": summary}),
            "summary.md": write_md,
            "accuracy.png": lambda p: report.bar_plot(
                p, [s["method"] for s in summary], [s["test_accuracy_mean"] for s in summary],
                [s["test_accuracy_std"] for s in summary], ylabel="test accuracy",
                title=f"{cfg.dataset}, {cfg.model}, {cfg.fraction:.0%} subsets"),
        })
        print(f"wrote {args.out}/results.csv, results.json, summary.md, accuracy.png")
    return 0


def _one_line(err: BaseException) -> str:
    """The error's message on one line (file errors keep their path)."""
    text = str(err) or type(err).__name__
    if isinstance(err, OSError) and err.filename and str(err.filename) not in text:
        text = f"{text}: {err.filename}"
    return " ".join(text.split())


def experiments_dir() -> str:
    """The repository's ``experiments/`` folder (next to the installed package in a checkout)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")


def _experiment(name: str | None, rest: Sequence[str]) -> int:
    import runpy

    folder = experiments_dir()
    names = sorted(f[:-3] for f in os.listdir(folder) if f.endswith(".py") and not f.startswith("_")) \
        if os.path.isdir(folder) else []
    if name is None:
        print("\n".join(names) if names else f"no experiments found in {folder}")
        return 0
    if name not in names:
        print(f"error: unknown experiment {name!r}; choose one of {names}", file=sys.stderr)
        return 2
    argv = sys.argv
    try:
        sys.argv = [os.path.join(folder, name + ".py"), *rest]
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as done:
        return int(done.code or 0)
    finally:
        sys.argv = argv
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxsubset`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["run"]
    args = build_parser().parse_args(argv)
    if args.command == "methods":
        for name, m in sorted(selectors.METHODS.items()):
            print(f"{name:24s} {m.description}")
        return 0
    if args.command == "experiment":
        return _experiment(args.name, args.rest)
    if args.command in ("score", "select"):
        return dispatch(args)
    if args.command == "datasets":
        print("\n".join(data.DATASETS))
        return 0
    try:
        return _run(args)
    except (ValueError, TypeError, OSError) as err:  # user mistakes: one line, no traceback
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except data.DatasetUnavailableError as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 3
    except FloatingPointError as err:  # training diverged: a setting to change, not a bug
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; results already in --out (if any) were left unchanged", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
