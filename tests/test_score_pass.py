"""The streaming, sharded, resumable scoring pass (jaxsubset.workflows.score_pass)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from jaxsubset import selectors
from jaxsubset.workflows import quantities
from jaxsubset.data.sources import as_source, iter_chunks
from jaxsubset.models import create, to_pure
from jaxsubset.workflows import check_manifest, load_scores, read_manifest, score_pass
from jaxsubset.workflows.score_pass import data_fingerprint, model_fingerprint

N, D, C, CHUNK = 300, 12, 3, 128  # 3 chunks, the last one ragged
QS = ["loss", "el2n"]


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype(np.float32)
    y = rng.integers(0, C, N)
    model = to_pure(create("mlp", (D,), C, seed=0))
    root = tmp_path_factory.mktemp("scores")
    np.save(root / "x.npy", x)
    ref = quantities.compute(QS, model, x, y)
    full = root / "full"
    score_pass(model, str(root / "x.npy"), y, QS, str(full), chunk_rows=CHUNK, model_name="mlp")
    return x, y, model, root, ref, load_scores(str(full))


def test_pass_equals_in_memory_quantities(problem):
    x, y, model, root, ref, got = problem
    np.testing.assert_array_equal(got["labels"], y)
    for q in QS:
        np.testing.assert_allclose(got[q], ref[q], rtol=1e-6, atol=1e-7)


def test_array_memmap_and_record_sources_agree(problem, tmp_path):
    x, y, model, root, ref, got = problem

    class Records:  # a tfds/ArrayRecord-like source of dict records
        def __len__(self):
            return N

        def __getitem__(self, i):
            return {"image": x[i], "label": y[i]}

    src = as_source(Records(), record=lambda r: r["image"])
    for name, s in (("array", x), ("memmap", np.load(root / "x.npy", mmap_mode="r")), ("records", src)):
        score_pass(model, s, y, QS, str(tmp_path / name), chunk_rows=100)  # other chunk boundaries
        out = load_scores(str(tmp_path / name))
        for q in QS:
            np.testing.assert_allclose(out[q], got[q], rtol=1e-6, atol=1e-7, err_msg=name)


def test_iter_chunks_reads_in_order_with_bounded_chunks(problem):
    x = problem[0]
    got = list(iter_chunks(as_source(x), 64, [4, 0, 2], prefetch=2))
    assert [c for c, _ in got] == [4, 0, 2]
    np.testing.assert_array_equal(got[0][1], x[256:300])
    np.testing.assert_array_equal(got[1][1], x[0:64])


def test_interrupted_pass_resumes_to_identical_scores(problem, tmp_path):
    x, y, model, root, ref, got = problem
    out = str(tmp_path / "s")
    r = score_pass(model, x, y, QS, out, chunk_rows=CHUNK, checkpoint_every=1, max_chunks=1, model_name="mlp")
    assert not r["complete"] and r["chunks_done"] == 1
    with pytest.raises(ValueError, match="unfinished"):
        load_scores(out)
    with pytest.raises(FileExistsError, match="resume"):
        score_pass(model, x, y, QS, out, chunk_rows=CHUNK, model_name="mlp")
    # a chunk written after the last checkpoint (killed before progress was saved) is redone
    prog = json.load(open(os.path.join(r["shard"], "progress.json")))
    assert prog["done"] == [0]
    r = score_pass(model, x, y, QS, out, chunk_rows=CHUNK, resume=True, model_name="mlp")
    assert r["complete"] and r["chunks_done"] == 3
    res = load_scores(out)
    for q in QS:
        np.testing.assert_array_equal(res[q], got[q])


def test_resume_with_other_arguments_is_refused(problem, tmp_path):
    x, y, model, root, ref, got = problem
    out = str(tmp_path / "s")
    score_pass(model, x, y, QS, out, chunk_rows=CHUNK, max_chunks=1)
    with pytest.raises(ValueError, match="chunk_rows"):
        score_pass(model, x, y, QS, out, chunk_rows=64, resume=True)
    with pytest.raises(ValueError, match="data_fingerprint"):
        score_pass(model, x[:-1], y[:-1], QS, out, chunk_rows=CHUNK, resume=True)  # length changed
    other = to_pure(create("mlp", (D,), C, seed=1))
    with pytest.raises(ValueError, match="model_fingerprint"):
        score_pass(other, x, y, QS, out, chunk_rows=CHUNK, resume=True)


def test_manifest_mismatch_and_corrupt_shards_are_refused(problem, tmp_path):
    x, y, model, root, ref, got = problem
    man = read_manifest(str(root / "full"))
    check_manifest(man, data_fingerprint=data_fingerprint(as_source(x), y),
                   model_fingerprint=model_fingerprint(model.params))
    y2 = y.copy()
    y2[0] = (y2[0] + 1) % C
    with pytest.raises(ValueError, match="another data set"):
        check_manifest(man, data_fingerprint=data_fingerprint(as_source(x), y2))
    other = to_pure(create("mlp", (D,), C, seed=1))
    with pytest.raises(ValueError, match="another model"):
        check_manifest(man, model_fingerprint=model_fingerprint(other.params))
    out = str(tmp_path / "s")
    score_pass(model, x, y, QS, out, chunk_rows=CHUNK)
    shard = os.path.join(out, "shard-00000-of-00001")
    with open(os.path.join(shard, "loss.npy"), "wb") as f:
        f.write(b"garbage")
    with pytest.raises(ValueError, match="corrupt"):
        load_scores(out)
    with pytest.raises(ValueError, match="no score manifest"):
        load_scores(str(tmp_path / "nowhere"))


def test_bad_input(problem, tmp_path):
    x, y, model, *_ = problem
    with pytest.raises(ValueError, match="labels"):
        score_pass(model, x, y[:-1], QS, str(tmp_path / "a"))
    with pytest.raises(ValueError, match="whole data set"):
        score_pass(model, x, y, ["learned_value"], str(tmp_path / "b"))
    with pytest.raises(ValueError, match="Unknown quantity"):
        score_pass(model, x, y, ["nope"], str(tmp_path / "c"))
    with pytest.raises(ValueError, match=".npy"):
        as_source(str(tmp_path / "x.csv"))
    with pytest.raises(TypeError, match="len"):
        as_source(object())


def test_select_from_saved_scores_equals_in_memory(problem):
    x, y, model, root, ref, got = problem
    for method in ("loss_hard", "el2n_easy", "random"):
        a = selectors.select(method, got["labels"], 60, {q: got[q] for q in QS}, seed=3, num_classes=C)
        b = selectors.select(method, y, 60, ref, seed=3, num_classes=C)
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.weights, b.weights)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_on_localhost_equal_one(problem, tmp_path):
    """Two jax.distributed processes (coordinator on 127.0.0.1) each score their shard."""
    x, y, model, root, ref, got = problem
    np.save(tmp_path / "y.npy", y)
    out = tmp_path / "two"
    script = textwrap.dedent(f"""
        import sys, numpy as np, jax
        pid = int(sys.argv[1])
        jax.distributed.initialize("127.0.0.1:{_free_port()}", num_processes=2, process_id=pid,
                                   initialization_timeout=60)
        from jaxsubset.models import create, to_pure
        from jaxsubset.workflows import score_pass
        model = to_pure(create("mlp", ({D},), {C}, seed=0))
        r = score_pass(model, {str(root / 'x.npy')!r}, np.load({str(tmp_path / 'y.npy')!r}), {QS!r},
                       {str(out)!r}, chunk_rows={CHUNK}, model_name="mlp")
        assert jax.process_count() == 2 and r["complete"], r
        jax.distributed.shutdown()
    """)
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT) for i in range(2)]
    try:
        outs = [p.communicate(timeout=120)[0].decode() for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), outs
    assert sorted(os.listdir(out)) == ["manifest.json", "shard-00000-of-00002", "shard-00001-of-00002"]
    res = load_scores(str(out))
    for q in QS:
        np.testing.assert_array_equal(res[q], got[q])
