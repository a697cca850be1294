"""experiments/notebook.ipynb executes end to end (nbclient) on a small slice; a failing cell fails the test."""

import os
import time

import pytest

nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[test]' (nbformat, nbclient, ipykernel)")
nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[test]' (nbclient, ipykernel)")

EXP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")
NB = os.path.join(EXP, "notebook.ipynb")
SLICE = {"JAXSUBSET_NB_TRAIN": "600", "JAXSUBSET_NB_TEST": "300", "JAXSUBSET_NB_EPOCHS": "1",
         "JAXSUBSET_NB_SURROGATE_EPOCHS": "1", "JAXSUBSET_NB_FRACTIONS": "0.3", "JAXSUBSET_NB_SEEDS": "1"}


def _sources(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_notebook_is_paired_with_its_py_script():
    import json
    import subprocess
    import sys

    import importlib.util

    # not imported here: jupytext's import tries `import notebook` (the Jupyter package, absent), and once an
    # experiment has put experiments/ on sys.path (the scripts do, and test_experiments), that import ran
    # experiments/notebook.py, the whole research notebook (61-76 s inside the suite, 1 s alone)
    if importlib.util.find_spec("jupytext") is None:
        pytest.skip("pip install -e '.[test]' (jupytext)")
    ipynb = nbformat.read(NB, as_version=4)
    code = ("import json, sys, jupytext; nb = jupytext.read(sys.argv[1]); "
            "print(json.dumps([[c.cell_type, c.source.strip()] for c in nb.cells]))")
    out = subprocess.run([sys.executable, "-c", code, os.path.join(EXP, "notebook.py")], capture_output=True,
                         text=True, timeout=120, check=True, cwd=os.path.dirname(EXP)).stdout
    py = [tuple(c) for c in json.loads(out)]
    assert _sources(ipynb) == py, "notebook.ipynb and notebook.py differ: jupytext --sync experiments/notebook.py"


def test_committed_notebook_has_outputs_of_a_real_run():
    nb = nbformat.read(NB, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), "commit the notebook executed"
    assert not any(o.get("output_type") == "error" for c in code for o in c.outputs)
    images = sum("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    assert images >= 5  # distributions, per-class, ECDF, images, accuracy vs time
    text = "".join(o.get("text", "") for c in code for o in c.outputs)
    assert "train=(60000, 28, 28, 1)" in text or "Dataset('digits'" in text  # a full-size run, not the slice
    assert "| random_online |" in text


@pytest.mark.smoke  # ~15 s of CPU (a kernel, a surrogate and a grid of fits): `pytest -m smoke`, CI's second command
def test_notebook_executes_on_a_small_slice(monkeypatch):
    for k, v in SLICE.items():
        monkeypatch.setenv(k, v)
    root = os.path.dirname(EXP)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    nb = nbformat.read(NB, as_version=4)
    t0 = time.perf_counter()
    nbclient.NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": EXP}}).execute()
    seconds = time.perf_counter() - t0
    out = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "train=(600," in out  # the slice was applied
    assert "| random_online |" in out and "| geda |" in out and "| el2n_hard |" in out
    print(f"notebook executed in {seconds:.1f} s")
