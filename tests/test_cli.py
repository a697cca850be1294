import csv
import json
import os
import subprocess
import sys

import numpy as np

from jaxsubset import selectors
from jaxsubset.cli import main


def test_cli_end_to_end_tiny(tmp_path, capsys):
    out = tmp_path / "res"
    rc = main(["run", "--model", "mlp", "--method", "loss_hard", "--fraction", "0.2", "--epochs", "2",
               "--seeds", "1", "--score-epochs", "1", "--no-progress", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| loss_hard | 0.20 |" in text and "| random | 0.20 |" in text and "| full | 1.00 |" in text
    for f in ("results.csv", "results.json", "summary.md", "accuracy.png"):
        assert (out / f).stat().st_size > 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 3  # 1 seed x (method, random, full)
    assert all(0.0 <= float(r["test_accuracy"]) <= 1.0 and float(r["train_time_s"]) > 0 for r in rows)
    sizes = {r["method"]: int(r["num_examples"]) for r in rows}
    assert sizes == {"loss_hard": 288, "random": 288, "full": 1438}
    js = json.load(open(out / "results.json"))
    accs = [r["test_accuracy"] for r in js["rows"] if r["method"] == "full"]
    summary = {s["method"]: s for s in js["summary"]}
    assert np.isclose(summary["full"]["test_accuracy_mean"], np.mean(accs))


def test_cli_bad_input(capsys):
    assert main(["run", "--method", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown method" in err and "random" in err
    assert main(["run", "--dataset", "nope", "--method", "random"]) == 2
    assert "digits" in capsys.readouterr().err
    try:
        main(["run", "--fraction", "1.5"])
    except SystemExit as e:
        assert e.code == 2
    assert "(0, 1]" in capsys.readouterr().err


def test_console_script_lists_methods():
    exe = os.path.join(os.path.dirname(sys.executable), "jaxsubset")
    out = subprocess.run([exe, "methods"], capture_output=True, text=True, check=True).stdout
    for name in selectors.METHODS:
        assert name in out
