import gzip
import os
import pickle
import socket
import struct
import tarfile
import time

import numpy as np
import pytest

from jaxsubset import data
from jaxsubset.data import files, remote


def test_digits_shapes_ranges_and_fixed_split():
    a = data.load("digits")
    b = data.load("digits", seed=5)
    assert a.x_train.shape == (1438, 8, 8, 1) and a.x_test.shape == (359, 8, 8, 1)
    assert a.x_train.dtype == np.float32 and a.y_train.dtype == np.int32
    assert 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0 and a.x_train.max() == 1.0
    assert np.array_equal(a.x_test, b.x_test) and np.array_equal(a.y_train, b.y_train)
    # stratified: every class has ~20 % of its examples in the test split
    tot = np.bincount(a.y_train, minlength=10) + np.bincount(a.y_test, minlength=10)
    assert np.all(np.abs(np.bincount(a.y_test, minlength=10) - 0.2 * tot) <= 0.5)
    assert a.num_classes == 10 and len(a.class_names) == 10


def test_mnist1d_deterministic_and_leaves_global_rng_alone():
    np.random.seed(123)
    expected_next = np.random.rand()
    np.random.seed(123)
    a = data.load("mnist1d")
    assert np.random.rand() == expected_next  # the generator's reseeding was undone
    b = data.load("mnist1d")
    c = data.load("mnist1d", seed=1)
    assert a.x_train.shape == (4000, 40, 1) and a.x_test.shape == (1000, 40, 1)
    assert np.array_equal(a.x_train, b.x_train) and not np.array_equal(a.x_train, c.x_train)
    assert set(np.unique(a.y_train)) == set(range(10))


def _write_idx(path, arr):
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[arr.dtype], arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())


def test_idx_parsing_and_mnist_loader(tmp_path):
    rng = np.random.default_rng(0)
    xi = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    yi = rng.integers(0, 10, size=7).astype(np.uint8)
    xt = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    yt = np.array([0, 9, 4], np.uint8)
    d = tmp_path / "mnist"
    d.mkdir()
    for name, arr in [("train-images-idx3-ubyte", xi), ("train-labels-idx1-ubyte", yi),
                      ("t10k-images-idx3-ubyte", xt), ("t10k-labels-idx1-ubyte", yt)]:
        _write_idx(str(d / (name + ".gz")), arr)
    assert np.array_equal(files.read_idx(str(d / "train-images-idx3-ubyte.gz")), xi)
    ds = data.load("mnist", data_dir=str(tmp_path))  # found in data_dir/mnist
    assert ds.x_train.shape == (7, 28, 28, 1) and ds.x_train.dtype == np.float32
    assert np.allclose(ds.x_train[..., 0] * 255.0, xi) and np.array_equal(ds.y_test, yt)
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"\x00\x00\x08\x01" + struct.pack(">I", 10) + b"\x01\x02")
    with pytest.raises(ValueError, match="truncated"):
        files.read_idx(str(bad))


def _cifar_batch(rng, n, label_key):
    x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    return {b"data": x, label_key: rng.integers(0, 10, size=n).tolist()}


@pytest.mark.parametrize("as_tar", [False, True])
def test_cifar10_pickles(tmp_path, as_tar):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = {f"data_batch_{i}": _cifar_batch(rng, 2, b"labels") for i in range(1, 6)}
    batches["test_batch"] = _cifar_batch(rng, 3, b"labels")
    batches["batches.meta"] = {b"label_names": [f"c{i}".encode() for i in range(10)]}
    for k, v in batches.items():
        (folder / k).write_bytes(pickle.dumps(v))
    root = tmp_path
    if as_tar:
        root = tmp_path / "tar"
        root.mkdir()
        with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
            tar.add(folder, arcname="cifar-10-batches-py")
    ds = data.load("cifar10", data_dir=str(root))
    assert ds.x_train.shape == (10, 32, 32, 3) and ds.x_test.shape == (3, 32, 32, 3)
    # channel-first rows of 3072 bytes become NHWC: pixel (0, 0) of image 0, channels R, G, B
    raw = batches["data_batch_1"][b"data"][0]
    assert np.allclose(ds.x_train[0, 0, 0] * 255.0, [raw[0], raw[1024], raw[2048]])
    assert np.allclose(ds.x_train[0, 0, 1, 0] * 255.0, raw[1])
    assert ds.y_test.tolist() == batches["test_batch"][b"labels"] and ds.class_names[3] == "c3"


def test_offline_failure_is_fast_and_helpful(tmp_path, monkeypatch):
    import functools
    import inspect
    import threading

    release = threading.Event()

    def no_network(*args, **kwargs):
        release.wait(30)  # a resolver that hangs, as DNS retries do here (released at the end of the test)
        raise OSError("unreachable")

    # the probe gives up after its timeout (3 s by default; 0.2 s here so the test does not wait it out)
    assert inspect.signature(remote.network_reachable).parameters["timeout_s"].default <= 5
    monkeypatch.setattr(remote, "network_reachable", functools.partial(remote.network_reachable, timeout_s=0.2))
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    try:
        t0 = time.perf_counter()
        with pytest.raises(data.DatasetUnavailableError) as err:
            data.load("cifar10", data_dir=str(tmp_path))
        assert time.perf_counter() - t0 < 10
    finally:
        release.set()
    msg = str(err.value)
    assert "data_dir" in msg and "cifar-10-batches-py/data_batch_1" in msg and "digits" in msg and "mnist1d" in msg
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: (_ for _ in ()).throw(OSError("down")))
    with pytest.raises(data.DatasetUnavailableError, match="train-images-idx3-ubyte.gz"):
        data.load("fashion_mnist", data_dir=str(tmp_path))
    assert remote.network_reachable() is False


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="digits"):
        data.load("imagenet")


def test_from_arrays_and_npz_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    ds = data.from_arrays(rng.random((6, 3)), [0, 1, 2, 0, 1, 2], rng.random((2, 3)), [2, 0])
    assert ds.num_classes == 3 and ds.class_names == ("0", "1", "2")
    p = str(tmp_path / "mine.npz")
    data.save_npz(ds, p)
    back = data.load(p)
    assert back.name == "mine" and np.array_equal(back.x_train, ds.x_train) and back.num_classes == 3


@pytest.mark.parametrize("kwargs,match", [
    (dict(x_train=np.full((2, 2), np.nan)), "NaN"),
    (dict(y_train=np.array([0, 5])), r"\[0, 3\)"),
    (dict(y_train=np.array([0, 1, 2])), "same length"),
    (dict(x_test=np.zeros((1, 5)), y_test=np.zeros(1, int)), "differ in shape"),
])
def test_bad_arrays_raise(kwargs, match):
    base = dict(x_train=np.zeros((2, 2)), y_train=np.array([0, 1]), x_test=np.zeros((1, 2)),
                y_test=np.array([2]))
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        data.from_arrays(**base, num_classes=3)


def test_make_imbalanced_and_flip_labels():
    ds = data.load("digits")
    imb = data.make_imbalanced(ds, [1, 7], 0.1, seed=0)
    before = np.bincount(ds.y_train, minlength=10)
    after = np.bincount(imb.y_train, minlength=10)
    assert after[1] == round(0.1 * before[1]) and after[7] == round(0.1 * before[7])
    others = [c for c in range(10) if c not in (1, 7)]
    assert np.array_equal(after[others], before[others]) and np.array_equal(imb.x_test, ds.x_test)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        data.make_imbalanced(ds, [1], 0.0)
    flipped_ds, idx = data.flip_labels(ds, 0.3, seed=2)
    assert idx.size == round(0.3 * ds.y_train.size) and np.unique(idx).size == idx.size
    changed = np.flatnonzero(flipped_ds.y_train != ds.y_train)
    assert np.array_equal(changed, idx)  # every chosen label changed, nothing else did
    assert np.array_equal(data.flip_labels(ds, 0.3, seed=2)[1], idx)
