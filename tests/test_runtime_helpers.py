"""The NumPy-layout modules' run-time helpers as functions (symgrad/runtime/numpy_helpers.py):
called directly, and copied into generated modules as their exact text."""
from __future__ import annotations

import inspect

import numpy as np
import pytest

import symgrad
from symgrad.runtime import numpy_helpers as rt


@pytest.fixture
def model(monkeypatch):
    """The constants a generated module gives its helpers."""
    monkeypatch.setattr(rt, "MODEL", "m")
    monkeypatch.setattr(rt, "INPUTS", ("x", "W"))
    monkeypatch.setattr(rt, "SHAPES", {"W": ("N", 2)})
    monkeypatch.setattr(rt, "DIMS", ("N",))


def test_promote_one_float_type(model):
    dt, x, w = rt._promote(2, np.ones((3, 2), np.float32))
    assert dt == np.float32 and type(x) is np.float32 and w.dtype == np.float32
    dt, x, w = rt._promote(1.5, np.arange(6).reshape(3, 2))
    assert dt == np.float64 and w.dtype == np.float64 and w[2, 1] == 5.0
    with pytest.raises(TypeError, match="m: input 'W' must be real numbers"):
        rt._promote(1.0, np.ones((3, 2), complex))


def test_dims_read_and_checked(model):
    assert rt._dims({"W": np.zeros((4, 2))}) == (4,)
    with pytest.raises(ValueError, match=r"input 'W' has shape \(4, 3\), expected \('N', 2\)"):
        rt._dims({"W": np.zeros((4, 3))})
    with pytest.raises(ValueError, match="input 'W' is empty"):
        rt._dims({"W": np.zeros((0, 2))})


def test_seed_args_and_scalars(model):
    assert rt._seed([[1, 2]], np.float32, "cotangent", (1, 2)).dtype == np.float32
    with pytest.raises(ValueError, match=r"cotangent has shape \(2,\), expected \(3, 2\)"):
        rt._seed([1, 2], np.float64, "cotangent", (3, 1), (2,))
    assert rt._args({"W": 1, "x": 2}) == (2, 1)
    with pytest.raises(TypeError, match=r"missing inputs \['W'\], unexpected inputs \['y'\]"):
        rt._args({"x": 1, "y": 2})
    rt._scalars(a=np.ones((1, 1)))
    with pytest.raises(ValueError, match="input 'a' is a scalar Symbol"):
        rt._scalars(a=np.ones(3))


def test_matmul_turned_for_tall_float64_and_outer_product():
    a, b = np.arange(32.0).reshape(16, 2), np.arange(2.0).reshape(2, 1)
    assert rt._turns(a, b) and not rt._turns(a.astype(np.float32), b)
    assert np.array_equal(rt._matmul(a, b), a @ b)
    col, row = np.arange(3.0).reshape(3, 1), np.arange(2.0).reshape(1, 2)
    assert np.array_equal(rt._matmul(col, row), np.outer(col, row))


def test_scratch_kept_per_key_until_released():
    a = rt._scratch("k", (2, 3), np.float64)
    assert rt._scratch("k", (2, 3), np.float64) is a and rt._scratch("k", (2, 4), np.float64) is not a
    assert rt._scratch("k", (), np.float64) is None
    rt.release_scratch()
    assert rt._scratch("k", (2, 4), np.float64).shape == (2, 4)


def test_generated_modules_carry_the_functions_text():
    import sympy as sp
    W = sp.MatrixSymbol("W", sp.Symbol("N"), 2)
    source = symgrad.generate(symgrad.Model(sp.Trace(W.T * W), name="t"))
    for fn in (rt._promote, rt._dims):
        assert inspect.getsource(fn) in source
