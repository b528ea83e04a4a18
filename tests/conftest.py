"""Test-session settings: the module cache of symgrad.compile goes to a temporary folder (so the
suite neither reads modules an earlier checkout cached nor leaves files in ~/.cache), with reuse
off (SYMGRAD_CACHE=0): tests plant bugs in the compiler at run time, which the cache key cannot
see.  tests/test_compiler.py and tests/test_cache_trust.py turn reuse on where they test the cache
itself."""
import os
import shutil
import tempfile

import pytest

_CACHE = None


def pytest_configure(config):
    global _CACHE
    if "SYMGRAD_CACHE_DIR" not in os.environ:
        _CACHE = tempfile.mkdtemp(prefix="symgrad-test-cache-")
        os.environ["SYMGRAD_CACHE_DIR"] = _CACHE
    os.environ.setdefault("SYMGRAD_CACHE", "0")


def pytest_unconfigure(config):
    if _CACHE is not None:
        os.environ.pop("SYMGRAD_CACHE_DIR", None)
        shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture
def jax64():
    """JAX with float64 on (a global setting: restored after the test); skips without JAX."""
    jax = pytest.importorskip("jax")
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield jax
    jax.config.update("jax_enable_x64", old)
