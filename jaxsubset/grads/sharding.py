"""Data parallelism over the batch axis with JAX's own sharding.

Every function of ``jaxsubset.grads`` takes ``mesh=``: pass ``data_mesh()`` and each
chunk of ``batch_size`` examples is split over the mesh's devices while the
parameters are replicated; ``jit`` then runs the per-example computation on every
device in parallel. Per-example quantities never mix examples, so the results equal
the single-device ones (up to float rounding).

Several hosts: call ``jax.distributed.initialize()`` on every process first; then
``data_mesh()`` spans ``jax.devices()`` of all hosts. Each process must pass the same
``x, y`` (every chunk is a global array assembled from the process-local copies), and
every process receives the full result.

The per-chunk function runs under ``shard_map``: each device evaluates the
per-example function on its own rows, with no cross-device communication. (Leaving
the split to the automatic partitioner is not safe here: batched per-example
convolution gradients were partitioned wrongly by XLA on CPU.)
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

BATCH_AXIS = "batch"


def data_mesh(devices: Sequence[jax.Device] | None = None, axis_name: str = BATCH_AXIS) -> Mesh:
    """A 1-D ``Mesh`` over ``devices`` (default: all of ``jax.devices()``) named ``axis_name``."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("data_mesh needs at least one device.")
    return Mesh(np.asarray(devices, dtype=object), (axis_name,))


def _check_mesh(mesh: Mesh) -> None:
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh (see data_mesh()), got {type(mesh).__name__}.")
    if len(mesh.axis_names) != 1:
        raise ValueError(f"mesh must be 1-D (data parallel over the batch); got axes {mesh.axis_names}.")


def batch_size_for(mesh: Mesh, batch_size: int) -> int:
    """``batch_size`` rounded up to a multiple of the number of devices in ``mesh``."""
    _check_mesh(mesh)
    d = mesh.devices.size
    return -(-int(batch_size) // d) * d


def shard_batch(x: Any, mesh: Mesh) -> jax.Array:
    """Place ``x (B, ...)`` with its first axis split over ``mesh``; ``B`` must divide evenly."""
    _check_mesh(mesh)
    x = np.asarray(x)
    if x.shape[0] % mesh.devices.size:
        raise ValueError(f"A chunk of {x.shape[0]} rows cannot be split evenly over {mesh.devices.size} "
                         "devices; use a batch_size that is a multiple of the device count.")
    sharding = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
    if jax.process_count() > 1:
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
    return jax.device_put(x, sharding)


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """Put every leaf of ``tree`` on all devices of ``mesh``; without a mesh, ``tree`` as it is (``jit`` places it)."""
    if mesh is None:
        return tree
    _check_mesh(mesh)
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def to_numpy(x: jax.Array) -> np.ndarray:
    """Fetch ``x`` to host memory; on several hosts, gather the rows of every process."""
    if jax.process_count() > 1 and not x.is_fully_addressable:
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def _shard_map(fn: Callable, mesh: Mesh, in_specs: tuple, out_specs: Any) -> Callable:
    if hasattr(jax, "shard_map"):
        return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    from jax.experimental.shard_map import shard_map  # JAX < 0.6
    return shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False)


def data_parallel(fn: Callable[..., Any], mesh: Mesh | None, num_batched: int) -> Callable[..., Any]:
    """Jit ``fn(replicated, *batched)``; with a mesh, run it on every device's rows of ``batched``.

    ``fn`` must treat rows independently and return a pytree of arrays whose leading
    axis is the rows of ``batched``; ``replicated`` (e.g. the parameters) is the
    same on every device.
    """
    if mesh is None:
        return jax.jit(fn)
    _check_mesh(mesh)
    rows = PartitionSpec(mesh.axis_names[0])
    return jax.jit(_shard_map(fn, mesh, (PartitionSpec(),) + (rows,) * num_batched, rows))
