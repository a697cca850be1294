"""`jaxsubset run` as a good citizen: one-line errors, a checked --out, atomic result files (issue 16)."""

import gzip
import os

import pytest

from jaxsubset import cli, report

FILES = ("results.csv", "results.json", "summary.md", "accuracy.png")


def _fake_rows(acc: float):
    return [{"method": m, "fraction": f, "seed": s, "test_accuracy": acc + 0.01 * s, "selection_time_s": 0.1,
             "train_time_s": 0.2, "num_examples": 10}
            for m, f in (("random", 0.3), ("full", 1.0)) for s in range(2)]


@pytest.fixture
def fake_compare(monkeypatch):
    """Replace training by a stub that records its calls and returns fixed rows."""
    calls = []

    def compare(cfg):
        calls.append(cfg)
        return _fake_rows(0.5 + 0.1 * len(calls))

    monkeypatch.setattr(cli, "compare", compare)
    return calls


def _run(*extra):
    return cli.main(["run", "--method", "random", "--epochs", "1", "--seeds", "1", "--no-progress", *extra])


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    return lines[0]


def test_missing_npz_is_one_line(tmp_path, capsys):
    assert _run("--dataset", str(tmp_path / "missing.npz")) == 2
    assert "missing.npz" in _one_line_error(capsys)


def test_corrupt_npz_and_gz_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 broken")
    assert _run("--dataset", str(bad)) == 2
    assert "bad.npz" in _one_line_error(capsys)
    d = tmp_path / "mnist"
    d.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        with gzip.open(d / (name + ".gz"), "wb") as f:
            f.write(bytes([0, 0, 8, 1, 0, 0, 0, 4, 1, 2, 3, 4]))
    blob = (d / "train-images-idx3-ubyte.gz").read_bytes()
    (d / "train-images-idx3-ubyte.gz").write_bytes(blob[:-6])  # truncated download
    assert _run("--dataset", "mnist", "--data-dir", str(d), "--model", "mlp") == 2
    line = _one_line_error(capsys)
    assert "train-images-idx3-ubyte.gz" in line and "truncated or corrupt" in line


@pytest.mark.parametrize("lr", ["nan", "inf", "-1", "0", "abc"])
def test_bad_learning_rate_is_a_usage_error(lr, capsys):
    with pytest.raises(SystemExit) as done:
        _run("--lr", lr)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "--lr" in err and "Traceback" not in err


def test_out_is_checked_before_training(tmp_path, capsys, fake_compare):
    f = tmp_path / "a_file"
    f.write_text("keep me")
    assert _run("--out", str(f)) == 2
    assert "existing file" in _one_line_error(capsys)
    assert fake_compare == [] and f.read_text() == "keep me"
    assert _run("--out", str(f / "sub")) == 2        # a folder cannot be created under a file
    _one_line_error(capsys)
    assert fake_compare == []


def test_out_refuses_to_overwrite_without_flag(tmp_path, capsys, fake_compare):
    out = tmp_path / "res"
    assert _run("--out", str(out)) == 0
    assert len(fake_compare) == 1
    first = {f: (out / f).read_bytes() for f in FILES}
    capsys.readouterr()
    assert _run("--out", str(out)) == 2
    assert "--overwrite" in _one_line_error(capsys)
    assert len(fake_compare) == 1                   # refused before training
    assert {f: (out / f).read_bytes() for f in FILES} == first
    assert _run("--out", str(out), "--overwrite") == 0
    assert len(fake_compare) == 2
    assert (out / "results.csv").read_bytes() != first["results.csv"]
    # an unrelated file in the folder does not block a run and is left alone
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert _run("--out", str(other)) == 0
    assert (other / "notes.txt").read_text() == "mine" and (other / "results.csv").exists()


def test_results_are_written_atomically(tmp_path, capsys, fake_compare, monkeypatch):
    out = tmp_path / "res"
    assert _run("--out", str(out)) == 0
    before = {f: (out / f).read_bytes() for f in FILES}

    def broken_plot(path, *a, **k):
        raise OSError(28, "No space left on device", path)

    monkeypatch.setattr(report, "bar_plot", broken_plot)
    capsys.readouterr()
    assert _run("--out", str(out), "--overwrite") == 2   # fails while writing the last file
    assert "No space left" in _one_line_error(capsys)
    # every file is still the old one, and no temporary file is left behind
    assert {f: (out / f).read_bytes() for f in FILES} == before
    assert sorted(os.listdir(out)) == sorted(FILES)
