"""One bounded cache of the compiled per-chunk functions of ``jaxsubset.grads``.

Every public function of ``jaxsubset.grads`` builds a per-chunk function around the
model function (``apply_fn``) and jits it. Building it afresh on every call made ``jit``
trace and compile again each time (≈0.3 s for an MLP, seconds for a CNN), even for new
parameter *values* of the same shapes. Here each built function is kept under a key
made of

- the kind of computation and its static options (``wrt`` leaves, method, projection
  size and kind, output dtype, ...),
- the model function, held by a **weak reference** (``FnRef``),
- the parameter tree structure and every leaf's shape and dtype,
- the per-example input shape and dtype and the label dtype,
- the mesh,

so a second call that shares all of them reuses the jitted function, and ``jit`` in
turn reuses its compiled executable for every chunk of the same size. Parameters are
arguments of the jitted function, never constants in it, so new values never recompile.
Entries also keep what was derived from shapes alone: the traced ghost-norm plan, the
number of logits, and the chunk size ``fit_rows`` picked for each requested size.

The cache holds at most ``max_size()`` entries (default ``DEFAULT_MAX_ENTRIES`` = 64),
evicting the least recently used one. An entry does not keep its model function alive:
the built functions reach it through the weak reference, and entries whose function
was garbage-collected are dropped. ``clear_cache()`` empties it (and so frees the
compiled executables), ``cache_info()`` reports its size and hit counts and
``set_cache_size(n)`` changes its bound.
"""

from __future__ import annotations

import inspect
import threading
import weakref
from collections import OrderedDict
from typing import Any, Callable, Hashable

import jax
import numpy as np

DEFAULT_MAX_ENTRIES = 64

_entries: "OrderedDict[Hashable, Any]" = OrderedDict()
_lock = threading.RLock()
_max = DEFAULT_MAX_ENTRIES
_stats = {"hits": 0, "misses": 0, "evictions": 0}
_dead = [False]  # set when a referenced model function is collected: the next lookup purges


def _mark_dead(_ref: Any, _flag: list = _dead) -> None:  # bound early: still callable at interpreter exit
    _flag[0] = True


class FnRef:
    """A hashable reference to a model function that does not keep it alive.

    Bound methods are held with ``weakref.WeakMethod`` (a bound method object is made
    afresh on every attribute access); other callables with ``weakref.ref``. The few
    callables that cannot be weakly referenced are held strongly, which only the
    cache's bound then limits. Two references are equal while both targets are alive
    and equal (``==``: identity for functions and partials, ``__eq__`` for callable objects).
    Calling the reference calls the target (``TypeError`` once it has been collected).
    """

    __slots__ = ("_ref", "_hash", "_by_value", "__weakref__")

    def __init__(self, fn: Callable) -> None:
        if not callable(fn):
            raise TypeError(f"expected a callable model function, got {type(fn).__name__}.")
        if inspect.ismethod(fn):
            self._ref = weakref.WeakMethod(fn, _mark_dead)
        else:
            try:
                self._ref = weakref.ref(fn, _mark_dead)
            except TypeError:
                self._ref = lambda f=fn: f
        try:
            self._hash = hash(fn)
            self._by_value = True
        except TypeError:  # an unhashable callable object: compared by identity
            self._hash = id(fn)
            self._by_value = False

    def target(self) -> Callable | None:
        """The referenced function, or ``None`` once it has been garbage-collected."""
        return self._ref()

    @property
    def alive(self) -> bool:
        return self._ref() is not None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        fn = self._ref()
        if fn is None:
            raise TypeError("the model function of this cached computation was garbage-collected.")
        return fn(*args, **kwargs)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FnRef):
            return NotImplemented
        a, b = self._ref(), other._ref()
        if a is None or b is None:
            return False
        return a is b or (self._by_value and other._by_value and bool(a == b))


def tree_signature(tree: Any, flat: tuple[list, Any] | None = None) -> tuple:
    """``(treedef, ((shape, dtype), ...))`` of a pytree of arrays: what a compiled function depends on.

    ``flat``: ``tree``'s ``(leaves, treedef)`` when the caller has flattened it already.
    """
    leaves, treedef = jax.tree_util.tree_flatten(tree) if flat is None else flat
    return treedef, tuple(_leaf_signature(leaf) for leaf in leaves)


def _leaf_signature(leaf: Any) -> tuple:
    """``(shape, dtype)`` of one leaf (arrays' own attributes: ``np.shape`` is several times slower)."""
    if isinstance(leaf, (jax.Array, np.ndarray)):
        return leaf.shape, leaf.dtype
    return np.shape(leaf), leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype


def rows_signature(*arrays: np.ndarray) -> tuple:
    """Per-row shape and dtype of each array ``(n, ...)`` (the row count ``n`` is left out)."""
    return tuple((a.shape[1:], a.dtype) for a in arrays)


def _purge_dead() -> None:
    if not _dead[0]:
        return
    _dead[0] = False
    dead = [k for k in _entries if any(isinstance(p, FnRef) and not p.alive for p in k)]
    for k in dead:
        del _entries[k]


def cached(key: tuple, build: Callable[[], Any]) -> Any:
    """The value stored under ``key``, built by ``build()`` on a miss (least recently used evicted).

    ``key`` is a flat tuple; its ``FnRef`` members make the entry disappear when their
    function is garbage-collected.
    """
    with _lock:
        _purge_dead()
        if key in _entries:
            _entries.move_to_end(key)
            _stats["hits"] += 1
            return _entries[key]
    value = build()  # outside the lock: tracing can be slow and may re-enter the cache
    with _lock:
        _stats["misses"] += 1
        _entries[key] = value
        _entries.move_to_end(key)
        while len(_entries) > _max:
            _entries.popitem(last=False)
            _stats["evictions"] += 1
    return value


def clear_cache() -> None:
    """Drop every cached per-chunk function of ``jaxsubset.grads`` (and its compiled executables)."""
    with _lock:
        _entries.clear()
        for k in _stats:
            _stats[k] = 0


def cache_info() -> dict[str, int]:
    """``{"size", "max_size", "hits", "misses", "evictions"}`` of the cache (dead entries not counted)."""
    with _lock:
        _purge_dead()
        return {"size": len(_entries), "max_size": _max, **_stats}


def max_size() -> int:
    """The most entries the cache holds."""
    return _max


def set_cache_size(n: int) -> None:
    """Bound the cache to ``n >= 1`` entries (evicting the least recently used ones now)."""
    global _max
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"the cache size must be an int >= 1, got {n!r}.")
    with _lock:
        _max = int(n)
        while len(_entries) > _max:
            _entries.popitem(last=False)
            _stats["evictions"] += 1


class Entry:
    """A cached compiled computation: the jitted per-chunk function and what was derived from shapes.

    ``run(replicated, *batched)`` is the jitted (optionally ``shard_map``-ped) chunk
    function; ``info`` holds shape-only facts (``"width"``: number of logits,
    ``"plan"``: the ghost-norm plan, ...); ``rows`` maps a requested chunk size to the
    one ``fit_rows`` chose.
    """

    __slots__ = ("run", "info", "rows")

    def __init__(self, run: Callable, **info: Any) -> None:
        self.run = run
        self.info = info
        self.rows: dict[Hashable, int] = {}


def compiled(kind: str, fn: Callable, params: Any, arrays: tuple[np.ndarray, ...], mesh: Any,
             options: tuple, build: Callable[[FnRef], Entry], flat: tuple[list, Any] | None = None) -> Entry:
    """The cached ``Entry`` of computation ``kind`` for this model function, shapes, options and mesh.

    ``build(ref)`` makes it on a miss; it must reach the model function only through
    ``ref`` (a callable ``FnRef``), so that the entry does not keep the function alive.
    ``arrays`` are the data ``(n, ...)``; only their per-row shapes and dtypes enter the key.
    ``flat``: ``params``' ``(leaves, treedef)`` when the caller has flattened it already.
    """
    ref = FnRef(fn)
    treedef, leaves = tree_signature(params, flat)
    key = (kind, ref, treedef, leaves, rows_signature(*arrays), mesh, options)
    return cached(key, lambda: build(ref))
