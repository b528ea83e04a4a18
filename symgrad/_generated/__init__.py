"""The generated modules of ``symgrad.compile``, importable by name.

This package's folders are the module cache (``symgrad.cache.search_path()``: the cache folder,
and the fallback where it cannot be written), not this directory: ``symgrad.cache`` points
``__path__`` there, so ``symgrad._generated.<stem>`` imports a cached module in any process that
uses the same cache folder.
"""
from symgrad.cache import search_path as _search_path

__path__ = _search_path()
