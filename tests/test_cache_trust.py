"""The module cache of symgrad.compile can be trusted (issue 25): its key covers everything the
generated code depends on (symgrad.Functions' paths included), a broken file in it -- or in
Numba's cache beside it -- heals, an unwritable folder says so and falls back to a private one,
and a symgrad.Function path with a Python keyword is a clear error.  Reuse is on in every test
here (SYMGRAD_CACHE=1); the cache folder is the test's own."""
import hashlib
import os
import pickle
import re
import subprocess
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad import SymgradError, cache

x = sp.Symbol("x", real=True)
X0 = np.array([0.5, -1.25, 2.0])
ROOT = str(Path(symgrad.__file__).resolve().parents[1])   # this checkout, for other processes
SEAL = "\n# symgrad module cache: sha256 "   # the cache file's last line (symgrad/cache.py)


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A cache folder of this test's, reuse on, and a fallback folder of its own (in tmp_path)."""
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SYMGRAD_CACHE", "1")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))   # the fallback: tmp_path/symgrad-cache-<uid>
    return tmp_path / "cache"


# -- 8. a Python keyword in a symgrad.Function path ------------------------------------------------
@pytest.mark.parametrize("impl, derivative, bad", [
    ("numpy:class", None, "numpy:class"),
    ("import.x:f", None, "import.x:f"),
    ("numpy:sin", "numpy:lambda", "numpy:lambda"),
    ("numpy:sin", ["None.y:cos"], "None.y:cos"),
])
def test_a_keyword_in_a_function_path_is_a_clear_error(impl, derivative, bad):
    with pytest.raises(SymgradError, match=rf"{re.escape(repr(bad))} has the Python keyword"):
        symgrad.Function("f", impl, derivative=derivative)
