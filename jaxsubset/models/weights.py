"""Save and load parameter pytrees as ``.npz`` files keyed by parameter path.

Keys are ``/``-joined paths such as ``stem/kernel`` or ``blocks/0/conv1/kernel``, which
makes it easy to convert weights from other frameworks (e.g. an ImageNet-pretrained
ResNet-18) into this format: one array per key, in the layout of ``jaxsubset.models``
(convolution kernels ``(kh, kw, c_in, c_out)``, dense kernels ``(d_in, d_out)``).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np

PyTree = Any


def _key(path: tuple) -> str:
    parts = []
    for p in path:
        for attr in ("key", "idx", "name"):
            if hasattr(p, attr):
                parts.append(str(getattr(p, attr)))
                break
        else:
            parts.append(str(p))
    if len(parts) > 1 and parts[-1] == "value":  # nnx.Variable wrapper around the array
        parts = parts[:-1]
    return "/".join(parts)


def flatten_params(params: PyTree) -> dict[str, np.ndarray]:
    """``{"path/to/leaf": array}`` for every leaf of ``params``."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return {_key(path): np.asarray(leaf) for path, leaf in leaves}


def save_params(params: PyTree, path: str) -> None:
    """Write ``params`` to ``path`` (``.npz``)."""
    np.savez(path, **flatten_params(params))


def load_params(template: PyTree, path: str, *, skip: Sequence[str] = ("head",), strict: bool = True) -> PyTree:
    """Return ``template`` with leaves replaced by the arrays stored in ``path``.

    Leaves whose path starts with a prefix in ``skip`` (by default the classifier
    ``head``, whose shape depends on the number of classes) keep their template value.
    With ``strict``, a missing key or a shape mismatch raises, naming the leaf.
    """
    with np.load(path) as f:
        stored = {k: f[k] for k in f.files}
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    out, used = [], 0
    for p, leaf in leaves:
        k = _key(p)
        if any(k == s or k.startswith(s + "/") for s in skip):
            out.append(leaf)
            continue
        if k not in stored:
            if strict:
                raise ValueError(f"{path} has no array for parameter {k!r}; keys look like "
                                 f"{sorted(stored)[:3]}.")
            out.append(leaf)
            continue
        if stored[k].shape != np.shape(leaf):
            raise ValueError(f"parameter {k!r}: stored shape {stored[k].shape} != model shape {np.shape(leaf)}.")
        out.append(np.asarray(stored[k], dtype=np.asarray(leaf).dtype))
        used += 1
    if used == 0:
        raise ValueError(f"No parameter of the model was found in {path}.")
    return jax.tree_util.tree_unflatten(treedef, out)
