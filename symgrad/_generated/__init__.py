"""The generated modules of ``symgrad.compile``, importable by name.

This package's folder is the module cache (``symgrad.cache.cache_dir()``), not this directory:
``symgrad.cache`` points ``__path__`` there, so ``symgrad._generated.<stem>`` imports a cached
module in any process that uses the same cache folder.
"""
from symgrad.cache import cache_dir as _cache_dir

__path__ = [str(_cache_dir())]
