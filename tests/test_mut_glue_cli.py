"""`jaxsubset` command line, found by mutation testing (issue 23): the exact user-visible texts.

argparse's refusals, the help of every option and the printed lines are compared word for word
(a reworded or emptied message is a changed interface); training is replaced by the recorder
the other CLI tests use (`cli.compare`).
"""

from __future__ import annotations

import argparse
import io
import os
import sys

import pytest

from jaxsubset import cli, data, models, selectors
from jaxsubset.workflows.run import RunConfig


def _usage_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as done:
        cli.main(argv)
    assert done.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("option,value,message", [
    ("--fraction", "0", "fraction must be in (0, 1], got 0"),
    ("--fraction", "1.5", "fraction must be in (0, 1], got 1.5"),
    ("--lr", "x", "must be a number, got 'x'"),
    ("--lr", "0", "must be a finite number > 0, got 0"),
    ("--lr", "inf", "must be a finite number > 0, got inf"),
    ("--epochs", "0", "must be >= 1, got 0"),
    ("--seeds", "-2", "must be >= 1, got -2"),
    ("--batch-size", "0", "must be >= 1, got 0"),
    ("--score-models", "0", "must be >= 1, got 0"),
    ("--score-epochs", "-1", "must be >= 0 (0: score at the initial model), got -1"),
])
def test_option_refusals_word_for_word(capsys, option, value, message):
    assert _usage_error(capsys, ["run", option, value]) == f"jaxsubset run: error: argument {option}: {message}"


def test_experiments_dir_is_absolute_and_next_to_the_package(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)   # not the checkout: a relative path would point here
    folder = cli.experiments_dir()
    root = os.path.dirname(os.path.dirname(os.path.abspath(cli.__file__)))
    assert folder == os.path.join(root, "experiments") and os.path.isabs(folder)
    assert os.path.isfile(os.path.join(folder, "_common.py"))


def _actions(parser):
    """dest -> (option strings, default, type, choices, nargs, help) of every argument but -h."""
    return {a.dest: (a.option_strings, a.default, a.type, a.choices, a.nargs, a.help) for a in parser._actions
            if a.dest != "help"}


def _subparsers(parser):
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action


def test_every_option_its_default_type_choices_and_help():
    d = RunConfig()
    p = cli.build_parser()
    assert p.prog == "jaxsubset" and p.description == "Pick the training examples worth keeping."
    sub = _subparsers(p)
    assert sub.dest == "command"
    assert list(sub.choices) == ["run", "experiment", "methods", "datasets", "score", "select"]
    assert {a.dest: a.help for a in sub._choices_actions if a.dest in ("run", "experiment", "methods", "datasets")} == {
        "run": "select a subset, train on it, compare with random and full data",
        "experiment": "list or run the scripts in experiments/ (e.g. geda_study --quick)",
        "methods": "list the selection methods", "datasets": "list the data sets"}
    assert _actions(sub.choices["run"]) == {
        "dataset": (["--dataset"], d.dataset, None, None, None, f"one of {list(data.DATASETS)} or a .npz path"),
        "data_dir": (["--data-dir"], None, None, None, None, "folder with the data set's standard files"),
        "model": (["--model"], d.model, None, sorted(models.MODELS), None, None),
        "method": (["--method"], d.method, None, None, None, f"selection method: {sorted(selectors.METHODS)}"),
        "fraction": (["--fraction"], d.fraction, cli._fraction, None, None, "fraction of the training set to keep"),
        "epochs": (["--epochs"], d.epochs, cli._positive, None, None, None),
        "seeds": (["--seeds"], d.seeds, cli._positive, None, None, "number of seeds (0..seeds-1)"),
        "batch_size": (["--batch-size"], d.batch_size, cli._positive, None, None, None),
        "lr": (["--lr"], d.lr, cli._lr, None, None, None),
        "optimizer": (["--optimizer"], d.optimizer, None, None, None, None),
        "schedule": (["--schedule"], d.schedule, None, None, None, None),
        "score_epochs": (["--score-epochs"], d.score_epochs, cli._non_negative, None, None,
                         "epochs of the surrogate model that scores examples (score-based methods); 0: score at "
                         "the initial parameters of the model that is then trained"),
        "score_models": (["--score-models"], d.score_models, cli._positive, None, None,
                         "surrogates whose scalar scores (EL2N, loss, ...) are averaged"),
        "dynamic": (["--dynamic"], None, None, ["infobatch", "random_online", "rs2"], None,
                    "instead of a selection method: prune dynamically during training and compare with full "
                    "data and RandomOnline at the same sample-steps (random_online / rs2 use --fraction)"),
        "out": (["--out"], None, None, None, None, "write results.csv, results.json, summary.md and accuracy.png here"),
        "overwrite": (["--overwrite"], False, None, None, 0, "replace results already in --out"),
        "no_progress": (["--no-progress"], False, None, None, 0, "hide progress bars"),
    }
    assert _actions(sub.choices["experiment"]) == {
        "name": ([], None, None, None, "?", "experiment name; omit to list them"),
        "rest": ([], None, None, None, argparse.REMAINDER, "arguments passed to the experiment")}
    args = p.parse_args(["run", "--overwrite", "--no-progress", "--model", "mlp"])
    assert (args.overwrite, args.no_progress, args.model) == (True, True, "mlp")
    line = _usage_error_text(p, ["run", "--model", "vit"])   # the quoting of the choices varies with Python
    assert line.startswith("jaxsubset run: error: argument --model: invalid choice: 'vit' (choose from ")
    assert all(name in line for name in models.MODELS)
    assert p.parse_args(["experiment"]).name is None
    assert p.parse_args(["experiment", "geda_study", "--quick", "-x"]).rest == ["--quick", "-x"]


def _usage_error_text(parser, argv) -> str:
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit):
        parser.parse_args(argv)
    return err.getvalue().strip().splitlines()[-1]


ROWS = [{"method": m, "fraction": f, "seed": s, "test_accuracy": a, "selection_time_s": 0.5, "train_time_s": 1.25,
         "num_examples": 10} for m, f, a in (("random", 0.3, 0.5), ("full", 1.0, 0.75)) for s in range(2)]


class _Stdout(io.StringIO):
    """Records what had been flushed each time `flush` is called."""

    def __init__(self):
        super().__init__()
        self.flushed = []

    def flush(self):
        self.flushed.append(self.getvalue())
        super().flush()


def test_header_is_flushed_before_training_and_the_table_is_printed(monkeypatch):
    out = _Stdout()
    monkeypatch.setattr(sys, "stdout", out)
    seen = []

    def compare(cfg):  # training starts only after the header line reached the terminal
        seen.append([f for f in out.flushed if "jaxsubset run: random on digits (cnn)" in f])
        return [dict(r) for r in ROWS]

    monkeypatch.setattr(cli, "compare", compare)
    assert cli.main(["run", "--method", "random", "--seeds", "2", "--no-progress"]) == 0
    assert len(seen) == 1 and seen[0], "the header was not flushed before training"
    lines = out.getvalue().splitlines()
    assert lines[0] == ("jaxsubset run: random on digits (cnn), keeping 30% of the training set, 20 epochs, "
                        "2 seed(s)")
    assert lines[1:] == ["| method | fraction | test accuracy | selection time (s) | training time (s) |",
                         "|---|---|---|---|---|",
                         "| random | 0.30 | 0.5000 ± 0.0000 | 0.50 | 1.25 |",
                         "| full | 1.00 | 0.7500 ± 0.0000 | 0.50 | 1.25 |"]


def test_main_reads_sys_argv_without_arguments(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(cli, "compare", lambda cfg: seen.append(cfg) or [dict(r) for r in ROWS])
    monkeypatch.setattr(sys, "argv", ["jaxsubset", "datasets"])
    assert cli.main() == 0
    assert capsys.readouterr().out.splitlines() == list(data.DATASETS) and seen == []
    monkeypatch.setattr(sys, "argv", ["jaxsubset"])          # no command: the default run
    assert cli.main() == 0 and seen == [RunConfig()]


def test_refusals_of_run_word_for_word(monkeypatch, capsys):
    assert cli.main(["run", "--method", "nope"]) == 2
    assert capsys.readouterr().err == f"error: unknown method 'nope'; choose one of {sorted(selectors.METHODS)}\n"

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "compare", interrupted)
    assert cli.main(["run", "--method", "random"]) == 130
    assert capsys.readouterr().err == "interrupted; results already in --out (if any) were left unchanged\n"


@pytest.mark.parametrize("argv", [["score", "--dataset", "digits", "--out", "o"],
                                  ["select", "--scores", "s", "--method", "random", "--budget", "3", "--out", "o.npz"]])
def test_score_and_select_go_to_their_dispatcher(monkeypatch, argv):
    seen = []
    monkeypatch.setattr(cli, "dispatch", lambda args: seen.append(args) or 7)
    monkeypatch.setattr(cli, "compare", lambda cfg: pytest.fail("ran the main job"))
    assert cli.main(argv) == 7
    [args] = seen
    assert args.command == argv[0] and args.out == argv[-1]


def test_accuracy_plot_gets_the_summary_and_its_labels(monkeypatch, tmp_path):
    monkeypatch.setattr(cli, "compare", lambda cfg: [dict(r) for r in ROWS])
    calls = []

    def bar_plot(path, names, means, stds, **kw):
        calls.append((names, means, stds, kw))
        open(path, "wb").write(b"png")

    monkeypatch.setattr(cli.report, "bar_plot", bar_plot)
    assert cli.main(["run", "--method", "random", "--fraction", "0.25", "--model", "mlp", "--no-progress",
                     "--out", str(tmp_path / "o")]) == 0
    assert calls == [(["random", "full"], [0.5, 0.75], [0.0, 0.0],
                      dict(ylabel="test accuracy", title="digits, mlp, 25% subsets"))]
