"""The NumPy target on small problems, where each NumPy call's dispatch is the cost (issue 26):
the ADBench GMM (examples/gmm.py) against the tape and finite differences, the number of Python
calls its value_and_grad makes, and the cheaper spellings of sums and packed matrices held to
NumPy's own results."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad.runtime import numpy_helpers as rt

from _oracles import assert_matches_oracles

GMM = Path(__file__).resolve().parent.parent / "examples" / "gmm.py"
n = sp.Symbol("n", integer=True, positive=True)


@pytest.fixture(scope="module")
def gmm():
    (model,) = [m for m in symgrad.load_models(GMM) if m.name == "gmm_d2_k5"]
    return model, symgrad.compile(model)


def _gmm_inputs(dtype=np.float64, rows=9):
    rng = np.random.default_rng(3)
    return {"alphas": rng.normal(size=(1, 5)).astype(dtype), "means": rng.normal(size=(5, 2)).astype(dtype),
            "icf": (0.3 * rng.normal(size=(5, 3))).astype(dtype), "x": rng.normal(size=(rows, 2)).astype(dtype)}


def test_gmm_matches_tape_and_finite_differences(gmm):
    """Each Q_k one np.array of its entries, grad_icf and grad_alphas one np.array of theirs,
    grad_means one _scatter of its rows (planted: a pack printed before the buffers it reads are
    dead, the rows summed in another order, a Q entry left out -- all caught here)."""
    model, module = gmm
    assert_matches_oracles(model, module, _gmm_inputs())


def test_gmm_float32_stays_float32(gmm):
    model, module = gmm
    value, grads = module.value_and_grad(**_gmm_inputs(np.float32))
    assert value.dtype == np.float32 and all(g.dtype == np.float32 for g in grads.values())
    want, _ = module.value_and_grad(**_gmm_inputs())
    assert abs(float(value) - float(want)) <= 1e-4 * abs(float(want))


def _module_calls(module, fn, inputs) -> int:
    """Python calls (the function itself, the helpers copied into the module) that one call of
    ``fn`` makes into the module's own code: NumPy's calls are the module's lines, not counted."""
    calls = 0
    code_file = module.value_and_grad.__code__.co_filename

    def profile(frame, event, arg):
        nonlocal calls
        if event == "call" and frame.f_code.co_filename == code_file:
            calls += 1
    fn(**inputs)
    sys.setprofile(profile)
    try:
        fn(**inputs)
    finally:
        sys.setprofile(None)
    return calls


def test_gmm_value_and_grad_calls_few_helpers(gmm):
    """111 helper calls before issue 26 (35 _onehot, 5 _unslice, 15 _turns, 10 _matmul, ...), 40
    after (22 of them _scratch): a bound with margin, which the onehot chains alone exceed."""
    _, module = gmm
    assert _module_calls(module, module.value_and_grad, _gmm_inputs()) <= 60
    text = Path(module.__file__).read_text()
    vag = text[text.index("def value_and_grad"):]
    assert "_onehot(" not in vag and "_unslice(" not in vag and ".sum(axis=1" not in vag


@pytest.mark.parametrize("cols", [2, 3, 7, 8])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_narrow_row_sums_are_numpys_bits(cols, dtype):
    """X.exp() * ones(cols, 1) is a sum over each row: fewer than 8 columns are added column by
    column, which gives NumPy's own bits; 8 or more stay NumPy's sum (it adds them pairwise)."""
    X = sp.MatrixSymbol("X", n, cols)
    module = symgrad.compile(symgrad.Model(X.applyfunc(sp.exp) * sp.OneMatrix(cols, 1), wrt=[X], name=f"rows{cols}"))
    x = (np.random.default_rng(cols).normal(size=(37, cols)) * 10.0).astype(dtype)
    got = module.forward(X=x)
    assert got.dtype == dtype
    assert got.tobytes() == np.exp(x).sum(axis=1, keepdims=True).tobytes()
    assert (".sum(axis=1" in Path(module.__file__).read_text()) == (cols >= 8)


@pytest.mark.parametrize("cols", [2, 5])
def test_narrow_column_sums_match_tape(cols):
    """ones(1, n) * X.exp() sums each column over the rows (_colsums: a column's pairwise sum)."""
    X = sp.MatrixSymbol("X", n, cols)
    W = sp.MatrixSymbol("W", cols, 1)
    model = symgrad.Model((sp.OneMatrix(1, n) * X.applyfunc(sp.exp) * W)[0, 0], wrt=[X, W], name="cols")
    module = symgrad.compile(model)
    assert "_colsums(" in Path(module.__file__).read_text()
    rng = np.random.default_rng(1)
    assert_matches_oracles(model, module, {"X": rng.normal(size=(6, cols)), "W": rng.normal(size=(cols, 1))})


def test_colsums_is_a_sum_over_rows():
    a = np.random.default_rng(0).normal(size=(1001, 3)) * 1e3
    got = rt._colsums(a)
    assert got.shape == (1, 3) and got.dtype == a.dtype
    exact = [math.fsum(a[:, j]) for j in range(3)]
    assert np.allclose(got[0], exact, rtol=1e-14, atol=0)
    assert rt._colsums(a.astype(np.float32)).dtype == np.float32


def test_scatter_adds_the_parts_where_they_overlap():
    out = rt._scatter((2, 3), np.float32, ((0, 1), 2.0), ((slice(0, 2), slice(1, 2)), np.array([[1.0], [5.0]])),
                      ((1, 0), np.float64(-3.0)))
    assert out.dtype == np.float32
    assert out.tolist() == [[0.0, 3.0, 0.0], [-3.0, 5.0, 0.0]]


def test_promote_and_dims_pass_right_arrays_through(monkeypatch):
    """Float arrays of one type are the inputs themselves; a static shape as given needs no
    dimension bookkeeping, and a wrong one is still an error."""
    monkeypatch.setattr(rt, "MODEL", "m")
    monkeypatch.setattr(rt, "INPUTS", ("A", "x"))
    monkeypatch.setattr(rt, "SHAPES", {"A": (2, 3), "x": ("N", 3)})
    monkeypatch.setattr(rt, "DIMS", ("N",))
    A, x = np.ones((2, 3)), np.ones((5, 3))
    dt, A2, x2 = rt._promote(A, x)
    assert dt == np.float64 and A2 is A and x2 is x
    assert rt._dims({"A": A, "x": x}) == (5,)
    with pytest.raises(ValueError, match=r"input 'A' has shape \(3, 2\), expected \(2, 3\)"):
        rt._dims({"A": np.ones((3, 2)), "x": x})


def test_packed_slice_gradients_keep_their_arrays_alive():
    """grad_Q is one np.concatenate of three row gradients, printed after all three: each must
    still hold its value there (planted: the buffer planner not told that the pack reads them, so
    the second row's product is written into the first's array)."""
    v, r, Q = sp.MatrixSymbol("v", n, 1), sp.MatrixSymbol("r", 1, 3), sp.MatrixSymbol("Q", 3, 2)
    mixed = sum((r[0, k] * Q[k:k + 1, :] for k in range(3)), sp.ZeroMatrix(1, 2))
    model = symgrad.Model((sp.OneMatrix(1, n) * (v * mixed).applyfunc(sp.tanh) * sp.OneMatrix(2, 1))[0, 0],
                          wrt=[r, Q], name="rows")
    module = symgrad.compile(model)
    assert "grad_Q = np.concatenate((" in Path(module.__file__).read_text()
    rng = np.random.default_rng(6)
    assert_matches_oracles(model, module, {"v": rng.normal(size=(4, 1)), "r": rng.normal(size=(1, 3)),
                                           "Q": rng.normal(size=(3, 2))})


def _python_calls(fn, inputs) -> int:
    """Python function calls anywhere (the module's helpers, NumPy's Python layer) in one call."""
    calls = 0

    def profile(frame, event, arg):
        nonlocal calls
        calls += event == "call"
    fn(**inputs)
    sys.setprofile(profile)
    try:
        fn(**inputs)
    finally:
        sys.setprofile(None)
    return calls - 1  # fn itself


def test_scalar_model_on_arrays_reads_shapes_itself():
    """A model of scalar Symbols called with arrays reads its values' shapes as ``x.shape``
    (np.shape has a Python layer): 69 Python calls per value_and_grad before issue 26, 38 after."""
    path = GMM.parent / "seed004_softmax.py"
    (model,) = [m for m in symgrad.load_models(path) if m.name == "seed004_legendre"]
    module = symgrad.compile(model)
    text = Path(module.__file__).read_text()
    assert "np.shape(" not in text[text.index("def forward"):]
    rng = np.random.default_rng(0)
    inputs = {name: rng.normal(size=(7,)) for name in "abcdxy"}
    assert _python_calls(module.value_and_grad, inputs) <= 50


@pytest.mark.parametrize("entries, printed", [
    ({(0, 0): "a", (3, 2): "b"}, "_scatter((4, 4), _dt, ((0, 0), "),   # few entries: zeros, each added in
    ({(i, j): "a" if i == j else "b" for i in range(4) for j in range(i + 1)}, "np.array([[")])  # half or more
def test_explicit_matrices_of_scalars_as_one_array(entries, printed):
    """An explicit 4 x 4 matrix of two scalars times a data matrix: its gradient reads the entries
    back, its value is one array however many entries it has."""
    a, b = sp.symbols("a b")
    X = sp.MatrixSymbol("X", n, 4)
    M = sp.Matrix(4, 4, lambda i, j: {"a": a, "b": b}.get(entries.get((i, j)), 0))
    model = symgrad.Model(sp.Trace(sp.OneMatrix(1, n) * (X * M).applyfunc(sp.sin) * sp.OneMatrix(4, 1)),
                          wrt=[a, b, X], name="explicit")
    module = symgrad.compile(model)
    assert printed in Path(module.__file__).read_text() and "_onehot(" not in Path(module.__file__).read_text()
    rng = np.random.default_rng(2)
    assert_matches_oracles(model, module, {"a": 0.7, "b": -1.3, "X": rng.normal(size=(5, 4))})
