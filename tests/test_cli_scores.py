"""`jaxsubset score` / `jaxsubset select` round trip on a memory-mapped source."""

import numpy as np

from jaxsubset import selectors
from jaxsubset.workflows import quantities
from jaxsubset.cli import main
from jaxsubset.models import create, to_pure
from jaxsubset.models.weights import save_params


def test_score_then_select_equals_in_memory(tmp_path, capsys):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(250, 6, 6), dtype=np.uint8)
    y = rng.integers(0, 4, 250)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    m = to_pure(create("mlp", (6, 6), 4, seed=5))
    save_params(m.params, str(tmp_path / "p.npz"))
    out = str(tmp_path / "scores")
    args = ["score", "--source", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"), "--scale",
            str(1 / 255), "--params", str(tmp_path / "p.npz"), "--quantities", "loss", "--out", out,
            "--chunk-rows", "100"]
    assert main(args) == 0
    assert main(args) == 2 and "resume" in capsys.readouterr().err  # never overwrites silently
    assert main(args + ["--resume"]) == 0
    sub_file = str(tmp_path / "sub.npz")
    assert main(["select", "--scores", out, "--method", "loss_hard", "--fraction", "0.2", "--out", sub_file]) == 0
    got = np.load(sub_file)
    ref_loss = quantities.compute(["loss"], m, x.astype(np.float32) * np.float32(1 / 255), y)["loss"]
    ref = selectors.select("loss_hard", y, 50, {"loss": ref_loss})
    np.testing.assert_array_equal(got["indices"], ref.indices)
    np.testing.assert_array_equal(got["weights"], ref.weights)
    capsys.readouterr()
    assert main(["select", "--scores", out, "--method", "loss_hard", "--fraction", "0.2", "--out", sub_file]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["select", "--scores", out, "--method", "el2n_hard", "--budget", "5", "--out",
                 str(tmp_path / "b.npz")]) == 2
    assert "el2n" in capsys.readouterr().err
