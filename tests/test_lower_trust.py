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
