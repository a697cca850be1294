"""Fashion-MNIST from the system data folder (Debian's `dataset-fashion-mnist`) without data_dir.

The synthetic tests build a fake system root (``$JAXSUBSET_DATA_PATH``) and always run; the
tests that read the real files run where the package is installed and are skipped, with the
reason printed (``pytest -rs``), where it is not.
"""

import gzip
import os
import struct

import numpy as np
import pytest

from jaxsubset import data
from jaxsubset.data import locations, remote

REAL = "/usr/share/datasets/fashion-mnist"
NAMES = {"train-images-idx3-ubyte": (5, 28, 28), "train-labels-idx1-ubyte": (5,),
         "t10k-images-idx3-ubyte": (3, 28, 28), "t10k-labels-idx1-ubyte": (3,)}
needs_real = pytest.mark.skipif(
    not all(os.path.isfile(os.path.join(REAL, f + ".gz")) for f in NAMES),
    reason=f"Fashion-MNIST is not installed in {REAL}: run `apt-get install -y dataset-fashion-mnist` "
           "(.ci/run does this where apt-get is available)")


def _idx(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.tobytes()


def _fake_root(tmp_path, folder="fashion-mnist", skip=(), truncate=None):
    rng = np.random.default_rng(0)
    d = tmp_path / folder
    d.mkdir(parents=True)
    arrays = {}
    for name, shape in NAMES.items():
        hi = 10 if "labels" in name else 256
        arr = rng.integers(0, hi, size=shape, dtype=np.uint8)
        arrays[name] = arr
        if name in skip:
            continue
        blob = _idx(arr)
        if name == truncate:
            blob = blob[:-7]
        with gzip.open(d / (name + ".gz"), "wb") as f:
            f.write(blob)
    return arrays


@pytest.fixture
def fake_root(tmp_path, monkeypatch):
    monkeypatch.setenv(locations.ENV_VAR, str(tmp_path))
    monkeypatch.setattr(remote, "network_reachable", lambda *a, **k: False)  # never wait on DNS
    return tmp_path


def test_system_folder_is_found_without_data_dir(fake_root):
    arrays = _fake_root(fake_root)
    ds = data.load("fashion_mnist")
    assert ds.x_train.shape == (5, 28, 28, 1) and ds.x_test.shape == (3, 28, 28, 1)
    np.testing.assert_array_equal(ds.x_train[..., 0], arrays["train-images-idx3-ubyte"] / np.float32(255))
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert ds.class_names[9] == "Ankle boot"


def test_underscore_folder_name_is_found_too(fake_root):
    arrays = _fake_root(fake_root, folder="fashion_mnist")
    assert locations.system_dir("fashion_mnist") == str(fake_root / "fashion_mnist")
    np.testing.assert_array_equal(data.load("fashion_mnist").y_train, arrays["train-labels-idx1-ubyte"])


def test_explicit_data_dir_wins_over_the_system_folder(fake_root, tmp_path_factory):
    _fake_root(fake_root)
    other = tmp_path_factory.mktemp("mine")
    mine = _fake_root(other, folder="fashion-mnist")  # a data_dir's Fashion-MNIST lives in its own subfolder
    ds = data.load("fashion_mnist", data_dir=str(other))
    np.testing.assert_array_equal(ds.y_train, mine["train-labels-idx1-ubyte"])


def test_mnist_never_falls_back_to_the_fashion_folder(fake_root):
    _fake_root(fake_root)
    assert locations.system_dir("mnist") is None
    with pytest.raises(data.DatasetUnavailableError, match="'mnist'"):
        data.load("mnist")


def test_offline_error_names_the_debian_package_and_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(locations.ENV_VAR, str(tmp_path))  # an empty root: nothing installed
    monkeypatch.setattr(remote, "network_reachable", lambda *a, **k: False)
    with pytest.raises(data.DatasetUnavailableError) as err:
        data.load("fashion_mnist")
    msg = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "data_dir" in msg
    assert "train-images-idx3-ubyte.gz" in msg


def test_partial_install_names_the_missing_file(fake_root):
    _fake_root(fake_root, skip=("t10k-labels-idx1-ubyte",))
    with pytest.raises(data.DatasetUnavailableError) as err:
        data.load("fashion_mnist")
    msg = str(err.value)
    assert "t10k-labels-idx1-ubyte.gz" in msg and "dataset-fashion-mnist" in msg
    assert "train-labels" not in msg  # only what is missing


def test_truncated_file_is_named(fake_root):
    _fake_root(fake_root, truncate="train-images-idx3-ubyte")
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz.*truncated"):
        data.load("fashion_mnist")


@pytest.fixture(scope="module")
def real():
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(locations.ENV_VAR, raising=False)  # the default root, /usr/share/datasets
        return data.load("fashion_mnist")


@needs_real
def test_real_fashion_mnist_matches_published_facts(real):
    assert real.x_train.shape == (60_000, 28, 28, 1) and real.x_test.shape == (10_000, 28, 28, 1)
    # balanced: 6 000 train / 1 000 test images per class (Xiao et al. 2017)
    assert np.all(np.bincount(real.y_train, minlength=10) == 6000)
    assert np.all(np.bincount(real.y_test, minlength=10) == 1000)
    # the normalization constants quoted everywhere for Fashion-MNIST: mean 0.2860, std 0.3530
    assert abs(float(real.x_train.mean()) - 0.2860) < 5e-4
    assert abs(float(real.x_train.std()) - 0.3530) < 5e-4
    # first labels as printed in the Keras / TensorFlow classification tutorial
    assert real.y_train[:5].tolist() == [9, 0, 0, 3, 0] and real.y_test[:5].tolist() == [9, 2, 1, 1, 6]
    assert real.class_names == ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                "Sneaker", "Bag", "Ankle boot")


@needs_real
def test_real_files_are_found_by_load_without_data_dir(real):
    explicit = data.load("fashion_mnist", data_dir=REAL)
    np.testing.assert_array_equal(real.y_test, explicit.y_test)
    np.testing.assert_array_equal(real.x_test, explicit.x_test)
