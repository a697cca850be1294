"""What `jaxsubset run` hands to the main job and what it makes of the rows it gets back.

Training is replaced by a stub (`cli.compare`) that records the `RunConfig` it receives and returns
fixed rows, so each option's path from the command line to the config, the summary table (means and
standard deviations recomputed here with NumPy), the result files and the exit code of each kind of
failure are checked in well under a second each.
"""

import csv
import dataclasses
import json

import numpy as np
import pytest

from jaxsubset import cli, data, selectors
from jaxsubset.workflows.run import RunConfig

ROWS = [{"method": m, "fraction": f, "seed": s, "test_accuracy": a, "selection_time_s": st, "train_time_s": tt,
         "num_examples": k}
        for m, f, k, accs, st, tt in (("loss_hard", 0.2, 20, (0.61, 0.65, 0.70), 1.5, 2.25),
                                      ("random", 0.2, 20, (0.50, 0.58, 0.54), 0.0, 2.0),
                                      ("full", 1.0, 100, (0.90, 0.92, 0.97), 0.0, 8.5))
        for s, a in enumerate(accs)]


@pytest.fixture
def calls(monkeypatch):
    seen = []

    def compare(cfg):
        seen.append(cfg)
        return [dict(r) for r in ROWS]

    monkeypatch.setattr(cli, "compare", compare)
    return seen


def test_every_run_option_reaches_the_config(calls, tmp_path):
    argv = ["run", "--dataset", "mnist1d", "--data-dir", str(tmp_path), "--model", "mlp", "--method", "el2n_hard",
            "--fraction", "0.25", "--epochs", "7", "--seeds", "2", "--batch-size", "48", "--lr", "0.02",
            "--optimizer", "sgd", "--schedule", "constant", "--score-epochs", "0", "--score-models", "4",
            "--dynamic", "infobatch", "--no-progress"]
    assert cli.main(argv) == 0
    assert calls == [RunConfig(dataset="mnist1d", model="mlp", method="el2n_hard", fraction=0.25, epochs=7,
                               seeds=2, batch_size=48, lr=0.02, optimizer="sgd", schedule="constant",
                               score_epochs=0, score_models=4, data_dir=str(tmp_path), progress=False,
                               dynamic="infobatch")]


def test_no_arguments_run_the_default_job(calls):
    assert cli.main([]) == 0
    assert calls == [RunConfig()]  # the documented default: CNN + GEDA on digits, with progress bars


def test_summary_table_holds_mean_and_std_over_seeds(calls, capsys):
    assert cli.main(["run", "--method", "loss_hard", "--fraction", "0.2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("jaxsubset run: loss_hard on digits (cnn), keeping 20% of the training set, 20 epochs, "
                          "3 seed(s)")
    lines = {ln.split("|")[1].strip(): ln for ln in out.splitlines() if ln.startswith("| ") and "---" not in ln}
    for method, fraction, sel, train_s in (("loss_hard", "0.20", "1.50", "2.25"), ("random", "0.20", "0.00", "2.00"),
                                           ("full", "1.00", "0.00", "8.50")):
        acc = np.array([r["test_accuracy"] for r in ROWS if r["method"] == method])
        cells = [c.strip() for c in lines[method].strip("|").split("|")]
        # report.summarize's std: the sample standard deviation (ddof=1) over seeds
        assert cells == [method, fraction, f"{acc.mean():.4f} ± {acc.std(ddof=1):.4f}", sel, train_s], cells
    assert "test accuracy" in lines["method"] and "selection time (s)" in lines["method"]


def test_out_files_hold_the_rows_config_and_table(calls, capsys, tmp_path):
    out = tmp_path / "res"
    assert cli.main(["run", "--method", "loss_hard", "--epochs", "3", "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["method"], float(r["test_accuracy"])) for r in rows] == [(r["method"], r["test_accuracy"])
                                                                         for r in ROWS]
    js = json.load(open(out / "results.json"))
    assert js["config"] == dataclasses.asdict(calls[0]) and js["config"]["epochs"] == 3
    assert js["rows"] == ROWS
    full = {s["method"]: s for s in js["summary"]}["full"]
    assert full["test_accuracy_mean"] == pytest.approx(np.mean([0.90, 0.92, 0.97]))
    table = (out / "summary.md").read_text()
    assert table.strip() and table.strip() in printed
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {out}/results.csv" in printed


@pytest.mark.parametrize("err,code", [(ValueError("bad\n  value"), 2), (TypeError("bad type"), 2),
                                      (OSError(2, "No such file", "/x/y.npz"), 2),
                                      (data.DatasetUnavailableError("get it here"), 3),
                                      (FloatingPointError("loss nan"), 1)])
def test_each_failure_kind_has_its_exit_code_and_one_line(monkeypatch, capsys, err, code):
    def compare(cfg):
        raise err

    monkeypatch.setattr(cli, "compare", compare)
    assert cli.main(["run", "--method", "random", "--no-progress"]) == code
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in lines[0]
    if isinstance(err, OSError):
        assert lines[0] == "error: [Errno 2] No such file: '/x/y.npz'"
    else:
        assert lines[0] == "error: " + " ".join(str(err).split())


def test_interrupt_exits_130_and_an_unknown_method_2_before_any_work(monkeypatch, capsys, calls):
    assert cli.main(["run", "--method", "no_such_method"]) == 2
    assert "unknown method 'no_such_method'" in capsys.readouterr().err and calls == []

    def compare(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "compare", compare)
    assert cli.main(["run", "--method", "random", "--no-progress"]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_one_line_keeps_the_file_name_of_os_errors():
    assert cli._one_line(OSError(2, "No such file", "/a/b")) == "[Errno 2] No such file: '/a/b'"
    class Terse(OSError):  # a message that does not name the file
        def __str__(self):
            return "gone"

    assert cli._one_line(Terse(2, "gone", "/c/d")) == "gone: /c/d"
    assert cli._one_line(Terse(2, "gone")) == "gone"
    assert cli._one_line(ValueError("two\nlines   here")) == "two lines here"
    assert cli._one_line(ValueError()) == "ValueError"


@pytest.mark.parametrize("option,good,bad", [
    ("--fraction", ["1", "0.001"], ["0", "1.5", "-0.2"]),
    ("--epochs", ["1"], ["0", "-3"]),
    ("--seeds", ["1"], ["0"]),
    ("--batch-size", ["1"], ["0"]),
    ("--score-models", ["1"], ["0"]),
    ("--score-epochs", ["0", "2"], ["-1"]),
    ("--lr", ["1e-4", "3"], ["0", "-1", "inf", "nan", "x"]),
])
def test_option_bounds(option, good, bad, capsys):
    parser = cli.build_parser()
    dest = option[2:].replace("-", "_")
    for v in good:
        assert getattr(parser.parse_args(["run", option, v]), dest) == float(v)
    for v in bad:
        with pytest.raises(SystemExit) as done:
            parser.parse_args(["run", option, v])
        assert done.value.code == 2
        assert option in capsys.readouterr().err


def test_methods_and_datasets_are_listed(capsys):
    assert cli.main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == sorted(selectors.METHODS)
    name = sorted(selectors.METHODS)[0]
    assert lines[0] == f"{name:24s} {selectors.METHODS[name].description}"
    assert cli.main(["datasets"]) == 0
    assert capsys.readouterr().out.splitlines() == list(data.DATASETS)


def test_experiment_lists_runs_and_passes_arguments(monkeypatch, tmp_path, capsys):
    (tmp_path / "_common.py").write_text("")
    (tmp_path / "echo.py").write_text("import sys\nprint('ARGS', sys.argv[1:])\nsys.exit(int(sys.argv[1]))\n")
    (tmp_path / "plain.py").write_text("print('PLAIN', __name__)\n")
    monkeypatch.setattr(cli, "experiments_dir", lambda: str(tmp_path))
    assert cli.main(["experiment"]) == 0
    assert capsys.readouterr().out.split() == ["echo", "plain"]      # private modules hidden
    argv = list(__import__("sys").argv)
    assert cli.main(["experiment", "echo", "3", "--quick"]) == 3
    assert "ARGS ['3', '--quick']" in capsys.readouterr().out
    assert __import__("sys").argv == argv                             # restored
    assert cli.main(["experiment", "echo", "0"]) == 0
    assert cli.main(["experiment", "plain"]) == 0
    assert "PLAIN __main__" in capsys.readouterr().out
    assert cli.main(["experiment", "nope"]) == 2
    assert "unknown experiment 'nope'" in capsys.readouterr().err
    monkeypatch.setattr(cli, "experiments_dir", lambda: str(tmp_path / "missing"))
    assert cli.main(["experiment"]) == 0
    assert "no experiments found" in capsys.readouterr().out


def test_experiments_dir_is_the_checkout_folder():
    import os
    assert os.path.isfile(os.path.join(cli.experiments_dir(), "_common.py"))
