"""Data-parallel results equal single-device ones (4 simulated CPU devices, in a subprocess)."""

import os
import subprocess
import sys
import textwrap

import pytest

from jaxsubset.grads import data_mesh
from jaxsubset.grads.sharding import batch_size_for

SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from flax import nnx
    from jaxsubset import grads
    from jaxsubset.models import MLP, to_pure

    assert len(jax.devices()) == 4, jax.devices()
    # a small MLP: the sharding wrapper is model-agnostic, and a CNN only costs compile time here
    m = to_pure(MLP(36, 3, hidden=(5, 4), rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 6, 6, 1)).astype(np.float32)   # 10 rows: not a multiple of 4 or of the chunk
    y = rng.integers(0, 3, 10)
    mesh = grads.data_mesh()
    f, p, e = m.apply_fn, m.params, m.apply_with_embedding
    calls = {
        "losses": lambda **k: grads.losses(f, p, x, y, **k),
        "per_sample_grads": lambda **k: grads.per_sample_grads(f, p, x, y, **k),
        "projected": lambda **k: grads.per_sample_grads(f, p, x, y, project_dim=8, seed=3, **k),
        "grad_norms": lambda **k: grads.grad_norms(f, p, x, y, method="ghost", **k),
        "last_layer_grads": lambda **k: grads.last_layer_grads(e, p, x, y, **k),
        "input_grad_norms": lambda **k: grads.input_grad_norms(f, p, x, y, **k),
        "el2n": lambda **k: grads.el2n(f, p, x, y, **k),
        "gram_last_layer": lambda **k: grads.gram(e, p, x, y, x[:7], y[:7], **k),
        "gram_exact": lambda **k: grads.gram(f, p, x, y, method="exact", **k),
    }
    for name, call in calls.items():
        single = call(batch_size=6)
        sharded = call(batch_size=6, mesh=mesh)   # 6 rounds up to 8: 2 rows per device
        assert single.shape == sharded.shape, name
        np.testing.assert_allclose(sharded, single, rtol=1e-5, atol=1e-7, err_msg=name)
    print("OK", len(calls))
""")


def test_four_devices_match_one():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    res = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "OK 9" in res.stdout


def test_mesh_helpers():
    mesh = data_mesh()
    assert mesh.axis_names == ("batch",)
    n = mesh.devices.size
    assert batch_size_for(mesh, 1) == n and batch_size_for(mesh, 2 * n) == 2 * n
    with pytest.raises(TypeError, match="Mesh"):
        batch_size_for("cpu", 4)
