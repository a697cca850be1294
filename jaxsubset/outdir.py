"""A results folder that is checked before the work and written atomically after it (``jaxsubset run --out``)."""

from __future__ import annotations

import os
from typing import Callable, Sequence


class OutDirError(ValueError):
    """The results folder cannot be used as given; the message says what to change."""


def check_out_dir(path: str, files: Sequence[str], *, overwrite: bool = False) -> str:
    """Validate a results folder *before* any work, and return its absolute path.

    Refuses a path that is an existing file, a folder that already holds any of ``files``
    (unless ``overwrite``), and a location that cannot be created or written.

    Raises:
      OutDirError: naming the path and what to change.
    """
    out = os.path.abspath(path)
    if os.path.exists(out) and not os.path.isdir(out):
        raise OutDirError(f"--out {path} is an existing file, not a folder; choose another path.")
    if os.path.isdir(out):
        clash = [f for f in files if os.path.exists(os.path.join(out, f))]
        if clash and not overwrite:
            raise OutDirError(f"--out {path} already holds results ({', '.join(clash)}); pass --overwrite to "
                              "replace them, or choose another folder.")
        if not os.access(out, os.W_OK | os.X_OK):
            raise OutDirError(f"--out {path} is not writable; choose another folder.")
        return out
    parent = out
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise OutDirError(f"--out {path}: {parent} is a file, so the folder cannot be created; choose another "
                          "path.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutDirError(f"--out {path}: cannot create it inside {parent} (not writable); choose another path.")
    return out


def write_files(out: str, writers: dict[str, Callable[[str], None]]) -> list[str]:
    """Write every file atomically: ``writers[name](tmp_path)`` writes a temporary file in ``out``
    (same name with a ``.tmp-<pid>-`` prefix, so the extension is kept), and only when all
    were written are they renamed over ``out/name`` (``os.replace``). An interruption leaves
    each file either old or new, and the temporary files are removed on failure.

    Returns the paths written.
    """
    os.makedirs(out, exist_ok=True)
    tmp = {name: os.path.join(out, f".tmp-{os.getpid()}-{name}") for name in writers}
    try:
        for name, write in writers.items():
            write(tmp[name])
        for name in writers:
            os.replace(tmp[name], os.path.join(out, name))
    finally:
        for p in tmp.values():
            if os.path.exists(p):
                os.remove(p)
    return [os.path.join(out, name) for name in writers]
