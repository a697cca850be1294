"""Suite-wide settings.

One persistent XLA compilation cache for the whole session (a fresh temporary folder, so CI starts
empty): many tests build new closures (models, optimizers, steps) whose programs are identical to ones
compiled before; XLA then loads the executable instead of compiling it again. Tests that count
compilations count persistent-cache hits as compilations too (a jit cache miss either way).
``JAXSUBSET_TEST_XLA_CACHE=DIR`` keeps the cache in ``DIR`` instead, across sessions (mutation testing
runs one short session per mutant; see README "Mutation testing").
"""

import os

import jax
import pytest

_KEYS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
         "jax_persistent_cache_min_entry_size_bytes")


@pytest.fixture(scope="session", autouse=True)
def _session_xla_cache(tmp_path_factory):
    before = {k: getattr(jax.config, k) for k in _KEYS}
    for k, v in zip(_KEYS, (os.environ.get("JAXSUBSET_TEST_XLA_CACHE") or str(tmp_path_factory.mktemp("xla_cache")),
                            0.0, 0)):
        jax.config.update(k, v)
    yield
    for k, v in before.items():
        jax.config.update(k, v)
