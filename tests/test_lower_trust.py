"""Lowering SymPy to the IR, issue 25 ("Trust, third round"): constructs that gave a wrong answer,
a bare Python error or a message about something the user never wrote.

Expected numbers come from NumPy written by hand, the runtime tape and float64 central
differences: never from the compiler under test.
"""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad import SymgradError, tape

from _oracles import assert_matches_oracles

x = sp.Symbol("x")


# -- 7. a constant SymPy makes complex is the clear error, naming the constant ----------------------
@pytest.mark.parametrize("const, name", [
    ((-1) ** sp.Rational(1, 3), "(-1)**(1/3)"),                  # a Pow of numbers (a bare TypeError before)
    (sp.Pow(-8, sp.Rational(1, 3), evaluate=False), "(-8)**(1/3)"),
    (sp.exp(sp.I * sp.pi / 3), "exp(I*pi/3)"),
    (sp.sqrt(-2), "sqrt(2)*I"),
    (sp.acos(2), "acos(2)"),                                     # real-looking, complex to SymPy
    (sp.Float(1.5) * sp.I, "1.5*I"),
])
def test_complex_constant_is_a_clear_error(const, name):
    model = symgrad.Model(x + const, wrt=[x], name="cplx")
    with pytest.raises(SymgradError, match="complex numbers are not supported") as info:
        symgrad.generate(model, "numpy")
    assert name in str(info.value) and "cplx" in str(info.value)


def test_complex_constant_times_a_symbol_names_the_term():
    with pytest.raises(SymgradError, match=r"constant I in I\*pi\*x"):  # log(-1) is I*pi
        symgrad.generate(symgrad.Model(x * sp.log(-1), wrt=[x]), "numpy")


def test_real_constant_of_complex_parts_is_its_value():
    half = sp.re(sp.exp(sp.I * sp.pi / 3), evaluate=False)       # 1/2
    model = symgrad.Model(x * half, wrt=[x])
    value, grads = symgrad.compile(model).value_and_grad(x=3.0)
    assert value == pytest.approx(1.5) and grads["x"] == pytest.approx(0.5)


# -- 2. a stepped slice SymPy gives fewer entries than Python is refused, never followed -------------
A3 = sp.MatrixSymbol("A", 3, 3)
A_VAL = np.arange(9.0).reshape(3, 3) ** 1.5


@pytest.mark.parametrize("make, taken", [
    (lambda A: A[::2, :], "rows 0, 2"),
    (lambda A: A[:, ::2], "columns 0, 2"),
    (lambda A: A[0:3:2, 1:], "rows 0, 2"),
])
def test_uneven_stepped_slice_is_refused(make, taken):
    sl = make(A3)
    with pytest.raises(SymgradError) as info:
        symgrad.Model(sl.T * sl, wrt=[A3])      # the tape and the compiler both read the Model
    msg = str(info.value)
    assert str(sl) in msg and taken in msg and str(sl.shape) in msg and "one slice each" in msg


def test_uneven_stepped_slice_of_a_symbolic_dimension_is_refused():
    N = sp.Symbol("N")
    B = sp.MatrixSymbol("B", N, 3)
    with pytest.raises(SymgradError, match=r"B\[::2, :\].*floor\(N/2\)"):
        symgrad.Model(B[::2, :], wrt=[B])


@pytest.mark.parametrize("make, index", [
    (lambda A: A[1::2, :], np.s_[1::2, :]),      # rows 1 (extent 2, step 2: SymPy agrees)
    (lambda A: A[0:2:2, ::1], np.s_[0:2:2, :]),
    (lambda A: A[:, 0:3:3], np.s_[:, 0:3:3]),
])
def test_even_stepped_slice_matches_numpy(make, index):
    sl = make(A3)
    model = symgrad.Model(sp.HadamardPower(sl, 2), wrt=[A3])
    module = symgrad.compile(model)
    assert np.array_equal(module.forward(A=A_VAL), A_VAL[index] ** 2)
    assert_matches_oracles(model, module, {"A": A_VAL})


# -- 9. a scalar Symbol of a model with matrices is one number: an array is refused, naming it --------
s = sp.Symbol("s")
X2 = sp.MatrixSymbol("X", 2, 2)
X_VAL = np.array([[1.0, -2.0], [0.5, 3.0]])


@pytest.mark.parametrize("expr", [s * X2, sp.Trace(s * X2), (X2 * X2.T)[0, 0] + s],
                         ids=["matrix value", "trace", "entry"])
@pytest.mark.parametrize("shape", [(3,), (2, 2), (3, 2, 2), (1, 1, 1)])
@pytest.mark.parametrize("target", ["numpy", "numba"])
def test_scalar_input_of_a_matrix_model_bound_to_an_array_names_it(expr, shape, target):
    pytest.importorskip(target)
    model = symgrad.Model(expr, wrt=[s, X2], name="scaled")
    module = symgrad.compile(model, target)
    for run in (module.forward, module.value_and_grad,
                lambda **kw: tape.value_and_grad(model, **kw)):
        with pytest.raises(ValueError, match=r"input 's' is a scalar Symbol of a model with matrices.*"
                                             + repr(shape).replace("(", r"\(").replace(")", r"\)")):
            run(s=np.ones(shape), X=X_VAL)


@pytest.mark.parametrize("value", [2.5, np.float64(2.5), np.array(2.5), np.float32(2.5), 2])
def test_scalar_input_of_a_matrix_model_as_one_number(value):
    model = symgrad.Model(sp.HadamardPower(s * X2, 2), wrt=[s, X2])
    module = symgrad.compile(model)
    out = module.forward(s=value, X=X_VAL)
    assert np.allclose(out, (float(value) * X_VAL) ** 2)          # NumPy, by hand
    assert_matches_oracles(model, module, {"s": float(value), "X": X_VAL})


def test_scalar_inputs_of_a_scalar_model_still_broadcast():
    model = symgrad.Model(s ** 2 * x, wrt=[s, x])
    value, grads = symgrad.compile(model).value_and_grad(s=np.arange(3.0), x=np.ones((2, 1)))
    assert value.shape == (2, 3) and np.allclose(grads["s"], 2 * np.arange(3.0) * 2)


@pytest.mark.parametrize("shape", [(1,), (1, 1)])
def test_scalar_input_of_a_matrix_model_as_one_entry_broadcasts_like_the_number(shape):
    model = symgrad.Model(sp.HadamardPower(s * X2, 2), wrt=[s, X2])
    module = symgrad.compile(model)
    value, grads = module.value_and_grad(s=np.full(shape, 1.5), X=X_VAL)
    assert value.shape == (2, 2) and np.allclose(value, (1.5 * X_VAL) ** 2)
    assert np.shape(grads["s"]) == shape and np.allclose(grads["s"], np.sum(2 * 1.5 * X_VAL ** 2))
    assert_matches_oracles(model, module, {"s": np.full(shape, 1.5), "X": X_VAL})
