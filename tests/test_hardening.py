"""Regression tests for the bad-input audit (issue 16): each reproducer gives the right answer or a clear error."""

import gzip
import os
import tarfile
import time

import numpy as np
import pytest

from jaxsubset import Subset, budget_from_fraction, data, grads, per_class_budget, selectors, train
from jaxsubset.models import create, to_pure
import importlib

geda_mod = importlib.import_module("jaxsubset.selectors.geda.selector")


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


@pytest.fixture(scope="module")
def small_models():
    """A CNN and an MLP on 8x8x1 inputs with 3 classes (pure form)."""
    return {name: to_pure(create(name, (8, 8, 1), 3, seed=0)) for name in ("cnn", "mlp")}


def _idx_bytes(a: np.ndarray) -> bytes:
    a = np.asarray(a, np.uint8)
    head = bytes([0, 0, 0x08, a.ndim]) + np.asarray(a.shape, ">u4").tobytes()
    return head + a.tobytes()


def _write_mnist_like(folder, seed: int, n_train: int = 12, n_test: int = 6) -> dict:
    """Four gzipped IDX files with MNIST's names; returns the arrays written."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 4, 4)),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 4, 4)),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test)}
    for name, a in arrays.items():
        with gzip.open(os.path.join(folder, name + ".gz"), "wb") as f:
            f.write(_idx_bytes(a))
    return arrays


# --------------------------------------------------------------------------- 1. quantile_random

def test_quantile_random_samples_every_quartile_when_budget_is_below_four():
    s = np.random.default_rng(0).lognormal(size=400)
    top = set(np.argsort(s, kind="stable")[300:].tolist())
    hits = [len(top & set(selectors.quantile_random(s, 3, seed=k).indices.tolist())) for k in range(10)]
    assert sum(hits) > 0
    # unbiased: each quartile's expected count is budget / 4 = 0.75 (systematic rounding)
    quart = np.empty(400, int)
    quart[np.argsort(s, kind="stable")] = np.arange(400) // 100
    counts = np.zeros(4)
    trials = 400
    for k in range(trials):
        sub = selectors.quantile_random(s, 3, seed=k)
        assert len(sub) == 3
        counts += np.bincount(quart[sub.indices], minlength=4)
    freq = counts / trials
    # binomial-like sd per quartile <= sqrt(0.75*0.25/400) ~ 0.022; allow 5 sd
    assert np.all(np.abs(freq - 0.75) < 0.11), freq


# --------------------------------------------------------------------------- 2. NaN / inf / empty in grads

@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_grads_reject_nan_inputs_naming_the_row(small_models, name):
    m = small_models[name]
    x = np.random.default_rng(0).random((6, 8, 8, 1)).astype(np.float32)
    x[4, 3, 2, 0] = np.nan
    y = np.array([0, 1, 2, 0, 1, 2])
    calls = [lambda: grads.losses(m.apply_fn, m.params, x, y),
             lambda: grads.el2n((m.apply_fn, m.params), x, y),
             lambda: grads.input_grad_norms(m.apply_fn, m.params, x, y),
             lambda: grads.grad_norms(m.apply_fn, m.params, x, y),
             lambda: grads.per_sample_grads(m.apply_fn, m.params, x, y),
             lambda: grads.last_layer_factors(m.apply_with_embedding, m.params, x, y),
             lambda: grads.gram(m.apply_with_embedding, m.params, x, y)]
    for call in calls:
        with pytest.raises(ValueError, match=r"NaN or inf.*\[4\]"):
            call()
    x[4, 3, 2, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        grads.input_grad_norms(m.apply_fn, m.params, x, y)


def test_grads_reject_empty_inputs(small_models):
    m = small_models["mlp"]
    x, y = np.zeros((0, 8, 8, 1), np.float32), np.zeros(0, np.int32)
    for call in (lambda: grads.losses(m.apply_fn, m.params, x, y),
                 lambda: grads.grad_norms(m.apply_fn, m.params, x, y),
                 lambda: grads.input_grad_norms(m.apply_fn, m.params, x, y),
                 lambda: grads.per_sample_grads(m.apply_fn, m.params, x, y),
                 lambda: grads.last_layer_factors(m.apply_with_embedding, m.params, x, y)):
        with pytest.raises(ValueError, match="no rows"):
            call()


# --------------------------------------------------------------------------- 3. labels

def test_labels_do_not_wrap_or_explode():
    X = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match="y_train"):
        data.from_arrays(X, np.array([2**32 + 1, 0, 2]), X, [0, 1, 2], num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        data.from_arrays(np.zeros((4, 2)), np.array([0, 1, 2, 2_000_000]), X, [0, 1, 2])
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="num_classes"):
        per_class_budget(np.array([0, 1, 10**9]), 2)
    with pytest.raises(ValueError, match="num_classes"):
        selectors.select("random", np.array([0, 1, 10**9]), 2)
    assert time.perf_counter() - t0 < 1.0
    # an explicit, reasonable num_classes larger than the labels still works
    assert per_class_budget(np.array([0, 1, 1, 3]), 2, num_classes=5).tolist() == [1, 1, 0, 0, 0]


# --------------------------------------------------------------------------- 4. all-zero weights

def test_fit_rejects_all_zero_or_underflowing_weights(digits):
    with pytest.raises(ValueError, match="weights"):
        train.fit("mlp", digits, Subset(np.arange(100), np.zeros(100)), epochs=2, progress=False)
    with pytest.raises(ValueError, match="weights"):
        train.fit("mlp", digits, Subset(np.arange(100), np.full(100, 1e-40)), epochs=2, progress=False)


# --------------------------------------------------------------------------- 5. Subset / Dataset aliasing

def test_subset_rejects_boolean_mask_and_copies_weights():
    with pytest.raises(TypeError, match="flatnonzero"):
        Subset(np.array([False, True]), None)
    w = np.ones(3, np.float32)
    s = Subset(np.arange(3), w)
    w[0] = -1.0
    assert s.weights.tolist() == [1.0, 1.0, 1.0]


def test_dataset_copies_float32_inputs():
    x = np.ones((4, 2), np.float32)
    ds = data.from_arrays(x, [0, 1, 0, 1], x, [0, 1, 0, 1])
    x[0, 0] = np.nan
    assert np.all(np.isfinite(ds.x_train)) and np.all(np.isfinite(ds.x_test))


# --------------------------------------------------------------------------- 6. fashion_mnist vs mnist

def test_fashion_mnist_never_falls_back_to_mnist_files(tmp_path):
    mnist = _write_mnist_like(tmp_path / "d", seed=0)
    with pytest.raises((ValueError, data.DatasetUnavailableError), match="fashion"):
        data.load("fashion_mnist", data_dir=str(tmp_path / "d"))
    # the MNIST files at the top level are still MNIST
    ds = data.load("mnist", data_dir=str(tmp_path / "d"))
    np.testing.assert_array_equal(ds.y_train, mnist["train-labels-idx1-ubyte"])
    # a fashion-mnist subfolder (or a folder named so) is Fashion-MNIST, even next to MNIST files
    fashion = _write_mnist_like(tmp_path / "d" / "fashion-mnist", seed=1)
    ds = data.load("fashion_mnist", data_dir=str(tmp_path / "d"))
    np.testing.assert_array_equal(ds.y_train, fashion["train-labels-idx1-ubyte"])
    ds = data.load("fashion_mnist", data_dir=str(tmp_path / "d" / "fashion-mnist"))
    np.testing.assert_array_equal(ds.y_train, fashion["train-labels-idx1-ubyte"])
    # and MNIST is never read from a folder named fashion-mnist
    with pytest.raises((ValueError, data.DatasetUnavailableError), match="mnist"):
        data.load("mnist", data_dir=str(tmp_path / "d" / "fashion-mnist"))


# --------------------------------------------------------------------------- 8. float32 range

def test_features_out_of_float32_range_raise():
    rng = np.random.default_rng(0)
    big = rng.normal(size=(40, 6)) * 1e20
    for call in (lambda: selectors.craig(big, 5), lambda: selectors.craig(big, 5, dense_limit=0),
                 lambda: selectors.herding(big, 5), lambda: selectors.kcenter_greedy(big, 5),
                 lambda: selectors.gradmatch(big, 5)):
        with pytest.raises(ValueError, match="rescale"):
            call()
    tiny = rng.normal(size=(200, 8)) * 1e-25 + 1e-26
    with pytest.raises(ValueError, match="rescale"):
        selectors.gradmatch(tiny, 10)
    # the same data rescaled is fine, and all-zero features are not "too small"
    assert len(selectors.gradmatch(tiny * 1e25, 10)) > 0
    assert len(selectors.herding(np.zeros((10, 3)), 4)) == 4


# --------------------------------------------------------------------------- 9. labels vs model width

def test_fit_checks_labels_against_model_outputs(digits):
    five = create("mlp", digits.input_shape, 5, seed=0)
    with pytest.raises(ValueError, match="5 outputs"):
        train.fit(five, digits, Subset(np.arange(50), None), epochs=1, progress=False)


# --------------------------------------------------------------------------- 10. obscure crashes

def test_truncated_gzip_names_the_file(tmp_path):
    d = tmp_path / "mnist"
    _write_mnist_like(d, seed=0)
    p = d / "train-images-idx3-ubyte.gz"
    blob = p.read_bytes()
    p.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz.*(truncated|corrupt)"):
        data.load("mnist", data_dir=str(d))
    p.write_bytes(b"not a gzip file at all")
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz"):
        data.load("mnist", data_dir=str(d))


def test_corrupt_cifar_archive_names_the_file(tmp_path):
    arc = tmp_path / "cifar-10-python.tar.gz"
    arc.write_bytes(b"\x1f\x8b" + b"garbage" * 20)
    with pytest.raises(ValueError, match="cifar-10-python.tar.gz"):
        data.load("cifar10", data_dir=str(tmp_path))
    # a valid archive whose pickles are corrupt
    folder = tmp_path / "good" / "cifar-10-batches-py"
    os.makedirs(folder)
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / f).write_bytes(b"\x80\x04 not a pickle")
    with pytest.raises(ValueError, match="data_batch_1"):
        data.load("cifar10", data_dir=str(tmp_path / "good"))
    with tarfile.open(tmp_path / "t.tar.gz", "w:gz"):
        pass


def test_empty_split_and_non_integer_epochs(digits):
    with pytest.raises(ValueError, match="x_test has no rows"):
        data.from_arrays(np.zeros((3, 2)), [0, 1, 0], np.zeros((0, 2)), np.zeros(0, int), num_classes=2)
    with pytest.raises(ValueError, match="x_train has no rows"):
        data.from_arrays(np.zeros((0, 2)), np.zeros(0, int), np.zeros((3, 2)), [0, 1, 0])
    with pytest.raises(TypeError, match="epochs must be an integer"):
        train.fit("mlp", digits, Subset(np.arange(20), None), epochs=2.0, progress=False)
    with pytest.raises(TypeError, match="batch_size must be an integer"):
        train.fit("mlp", digits, Subset(np.arange(20), None), epochs=1, batch_size=8.5, progress=False)


# --------------------------------------------------------------------------- 11. GEDA with many nodes

def test_geda_many_nodes_uses_the_closed_form_quickly():
    x = np.random.default_rng(0).lognormal(size=2000)
    t0 = time.perf_counter()
    sub = selectors.geda(x, 50, num_nodes=10_000)
    assert time.perf_counter() - t0 < 5.0
    ref = selectors.geda(x, 50, num_nodes=10_000, solver="exact")
    assert len(sub) == 50 and sub.info["objective"] == pytest.approx(ref.info["objective"], rel=1e-12)
    # an explicitly requested solver with that many nodes and no time limit is refused with advice
    with pytest.raises(ValueError, match="solver='exact'"):
        selectors.geda(x, 50, num_nodes=10_000, solver="cp-sat")


# --------------------------------------------------------------------------- 12. minor

def test_minor_items():
    g = np.random.default_rng(0).normal(size=(4, 3))
    with pytest.raises(ValueError, match="prior"):
        selectors.match_weights(g, g.sum(0), prior=float("nan"))
    with pytest.raises(ValueError, match="prior"):
        selectors.match_weights(g, g.sum(0), prior=float("inf"))
    assert budget_from_fraction(0.5, 0) == 0
    ds = data.from_arrays(np.zeros((6, 2)), [0, 1, 2, 0, 1, 2], np.zeros((3, 2)), [0, 1, 2])
    with pytest.raises(TypeError, match="integer class ids"):
        data.make_imbalanced(ds, classes=[1.7], keep_fraction=0.5)
    kept = data.make_imbalanced(ds, classes=[np.int64(1)], keep_fraction=0.5).y_train
    assert np.bincount(kept).tolist() == [2, 1, 2]
    with pytest.raises(RuntimeError) as err:
        geda_mod._no_solution("UNKNOWN", 1.0, "binned")
    assert "formulation='binned'" not in str(err.value) and "time limit" in str(err.value)
    with pytest.raises(RuntimeError, match="formulation='binned'"):
        geda_mod._no_solution("UNKNOWN", 1.0, "per_item")


def test_dataset_replace_shares_its_read_only_inputs():
    x = np.ones((4, 2), np.float32)
    ds = data.from_arrays(x, [0, 1, 0, 1], x, [0, 1, 0, 1])
    assert not ds.x_train.flags.writeable
    with pytest.raises(ValueError):
        ds.x_train[0, 0] = 5.0
    flipped = ds.replace(y_train=np.array([1, 0, 0, 1]))
    assert flipped.x_train is ds.x_train          # no copy of the inputs for a label change
