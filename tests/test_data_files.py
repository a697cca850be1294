"""Fashion-MNIST (gzipped IDX) and CIFAR-100 (python pickles) read from their standard files."""

import gzip
import pickle
import struct

import numpy as np

from jaxsubset import data


def _write_idx(path, arr):
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_from_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    xi, yi = rng.integers(0, 256, (5, 28, 28)), np.array([0, 9, 3, 3, 7])
    xt, yt = rng.integers(0, 256, (2, 28, 28)), np.array([1, 8])
    for name, arr in [("train-images-idx3-ubyte", xi), ("train-labels-idx1-ubyte", yi),
                      ("t10k-images-idx3-ubyte", xt), ("t10k-labels-idx1-ubyte", yt)]:
        (tmp_path / "fashion-mnist").mkdir(exist_ok=True)  # a data_dir's Fashion-MNIST sits in its own folder
        _write_idx(str(tmp_path / "fashion-mnist" / (name + ".gz")), arr)
    ds = data.load("fashion_mnist", data_dir=str(tmp_path))
    assert ds.x_train.shape == (5, 28, 28, 1) and ds.x_test.shape == (2, 28, 28, 1)
    np.testing.assert_allclose(ds.x_train[..., 0] * 255.0, xi, atol=1e-4)
    assert ds.y_train.tolist() == yi.tolist() and ds.y_test.tolist() == yt.tolist()
    assert ds.num_classes == 10 and ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"


def test_cifar100_fine_labels_from_pickles(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    train = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"fine_labels": [0, 57, 99, 3],
             b"coarse_labels": [1, 2, 3, 4]}
    test = {b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"fine_labels": [42, 99],
            b"coarse_labels": [0, 0]}
    meta = {b"fine_label_names": [f"f{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"c{i}".encode() for i in range(20)]}
    for k, v in {"train": train, "test": test, "meta": meta}.items():
        (folder / k).write_bytes(pickle.dumps(v))
    ds = data.load("cifar100", data_dir=str(tmp_path))
    assert ds.x_train.shape == (4, 32, 32, 3) and ds.num_classes == 100 and ds.class_names[57] == "f57"
    assert ds.y_train.tolist() == [0, 57, 99, 3] and ds.y_test.tolist() == [42, 99]  # fine, not coarse labels
    raw = train[b"data"][1]  # channel-first rows become NHWC
    np.testing.assert_allclose(ds.x_train[1, 0, 0] * 255.0, [raw[0], raw[1024], raw[2048]], atol=1e-4)
