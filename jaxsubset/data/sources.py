"""Random-access data sources read in chunks through Grain, with bounded host memory.

A *source* is anything with ``len()`` and integer indexing that returns one example
(``x_i``, an array of a fixed shape): a NumPy array or ``np.memmap``, a path to a ``.npy``
file (opened memory-mapped), a ``tfds.data_source`` / ArrayRecord source or a
``grain.MapDataset`` (``record`` picks the example out of a record, e.g. ``lambda r: r["image"]``;
``transform`` maps each stacked chunk, e.g. ``lambda b: b / 255.0``).

:func:`chunk_dataset` turns a source into a ``grain.MapDataset`` whose item ``j`` is the
``j``-th chunk of ``chunk_rows`` consecutive rows (stacked ``(rows, ...)``, after ``transform``, as float32), and
:func:`iter_chunks` reads a list of chunk ids in order with Grain's thread prefetching, so
at most ``chunk_rows × (prefetch + 1)`` rows are held on the host whatever ``len(source)``
is. Arrays and memmaps are sliced a chunk at a time (one read per chunk); other sources
are read record by record.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
from typing import Any, Callable, Iterator, Sequence

import numpy as np

Transform = Callable[[Any], Any]


def _float(x: Any) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"A data source must give numeric examples; got dtype {a.dtype}.")
    return a.astype(np.float32, copy=False)


@dataclasses.dataclass(frozen=True)
class Source:
    """A validated random-access source.

    Attributes:
      data: the underlying object (array, memmap, or any ``len`` + ``__getitem__``).
      length: number of examples ``n``.
      example_shape: shape of one example (after ``record`` and ``transform``).
      record: applied to each record to get the example (``None``: the record is the example).
      transform: applied to each stacked chunk ``(r, ...) -> (r, ...)`` (``None``: identity).
      sliceable: whether ``data[a:b]`` returns the stacked rows (arrays, memmaps).
    """

    data: Any
    length: int
    example_shape: tuple[int, ...]
    record: Transform | None
    transform: Transform | None
    sliceable: bool

    def __len__(self) -> int:
        return self.length

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` as float32 ``(stop - start, *example_shape)``."""
        if self.sliceable and self.record is None:
            batch = np.array(self.data[start:stop])  # a copy: the mapping's pages can then be released
            _release(self.data)
        else:
            recs = [self.data[i] for i in range(start, stop)]
            if self.record is not None:
                recs = [self.record(r) for r in recs]
            batch = np.stack([np.asarray(r) for r in recs])
        out = _float(batch if self.transform is None else self.transform(batch))
        if out.shape[1:] != self.example_shape:
            raise ValueError(f"Rows {start}..{stop - 1} of the source have shape {out.shape[1:]}, expected "
                             f"{self.example_shape} (every example must have the same shape).")
        return out


def _release(data: Any) -> None:
    """Drop a read-only memmap's pages from this process's resident set (they stay in the page cache).

    Without this, every page of a memory-mapped file that was read counts towards the process's
    RSS until the kernel reclaims it, so a pass over a 10⁶-example file would look ``O(n)``.
    """
    mm = getattr(data, "_mmap", None)
    if mm is not None and getattr(data, "mode", "r") == "r" and hasattr(mm, "madvise"):
        try:
            mm.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError, AttributeError):
            pass


def as_source(data: Any, *, record: Transform | None = None, transform: Transform | None = None) -> Source:
    """Wrap ``data`` (array, memmap, ``.npy`` path, or any ``len`` + ``__getitem__``) as a :class:`Source`.

    Args:
      data: the examples ``(n, ...)`` or a random-access sequence of records.
      record: ``record -> example`` for sources of structured records (``r["image"]``).
      transform: ``batch (r, ...) -> batch (r, ...)``, e.g. ``lambda b: b / 255.0`` for raw pixels.

    Raises:
      TypeError: ``data`` has no length or no indexing.
      ValueError: an empty source, or a ``.npy`` path that cannot be read (named in the message).
    """
    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        if not path.endswith(".npy"):
            raise ValueError(f"A source path must be a .npy file (opened memory-mapped), got {path!r}.")
        try:
            data = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise ValueError(f"Cannot read the source file {path!r} ({e}); re-create it with numpy.save.") from e
    if not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
        raise TypeError(f"A data source needs len() and indexing; got {type(data).__name__}.")
    n = len(data)
    if n == 0:
        raise ValueError("The data source is empty.")
    sliceable = isinstance(data, np.ndarray)  # np.memmap included
    first = np.asarray(data[0] if record is None else record(data[0]))[None]
    if transform is not None:
        first = np.asarray(transform(first))
    return Source(data, int(n), tuple(first.shape[1:]), record, transform, sliceable)


def num_chunks(n: int, chunk_rows: int) -> int:
    """``ceil(n / chunk_rows)``."""
    return -(-int(n) // int(chunk_rows))


def chunk_bounds(n: int, chunk_rows: int, chunk: int) -> tuple[int, int]:
    """Row range ``[start, stop)`` of chunk ``chunk``."""
    start = int(chunk) * int(chunk_rows)
    return start, min(start + int(chunk_rows), int(n))


class _Chunks:
    """A sequence whose item ``j`` is ``(chunk_ids[j], rows of that chunk)``."""

    def __init__(self, source: Source, chunk_rows: int, chunk_ids: Sequence[int]):
        self.source, self.chunk_rows, self.chunk_ids = source, int(chunk_rows), list(chunk_ids)

    def __len__(self) -> int:
        return len(self.chunk_ids)

    def __getitem__(self, j: int) -> tuple[int, np.ndarray]:
        c = self.chunk_ids[j]
        return c, self.source.read(*chunk_bounds(len(self.source), self.chunk_rows, c))


def chunk_dataset(source: Source, chunk_rows: int, chunk_ids: Sequence[int]):
    """A ``grain.MapDataset`` of ``(chunk id, rows (r, ...) float32)`` for ``chunk_ids`` in order."""
    import grain

    return grain.MapDataset.source(_Chunks(source, chunk_rows, chunk_ids))


def iter_chunks(source: Source, chunk_rows: int, chunk_ids: Sequence[int], *,
                prefetch: int = 2) -> Iterator[tuple[int, np.ndarray]]:
    """Read ``chunk_ids`` in order with Grain's thread prefetch (``prefetch`` chunks ahead).

    Yields ``(chunk id, rows)``; host memory holds at most ``prefetch + 1`` chunks.
    """
    import grain

    if not chunk_ids:
        return iter(())
    ds = chunk_dataset(source, chunk_rows, chunk_ids)
    if prefetch <= 0:
        return (ds[j] for j in range(len(ds)))
    opts = grain.ReadOptions(num_threads=1, prefetch_buffer_size=int(prefetch))
    return iter(ds.to_iter_dataset(opts))
