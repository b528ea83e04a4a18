"""The Python-number fast path of forward / value_and_grad (symgrad/emit/floats.py).

Every scalar op row runs on Python floats against the tape (an independent oracle); where Python
would raise (1/0, log(0), exp(1000), a negative base to a fractional power) the call falls back to
the array path and gives NumPy's inf/nan; the array path keeps its checks.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad import tape
from symgrad.emit import floats, load_source

import test_ops as to
from _oracles import rel_err

x, y = to.x, to.y


def _module(expr, name, wrt=(x, y)):
    return load_source(symgrad.generate(symgrad.Model(expr, wrt=list(wrt), name=name)), name)


def _scalar(rng, domain):
    return float(to._sample(rng, (), domain))


@pytest.mark.parametrize("name", sorted(to.SCALAR_ROWS))
def test_every_scalar_row_on_python_floats_matches_the_tape(name):
    expr, dx, dy = to.SCALAR_ROWS[name]
    model = symgrad.Model(expr, wrt=[x, y], name=name)
    src = symgrad.generate(model)
    mod = load_source(src, name)
    rng = np.random.default_rng(11)
    for _ in range(3):
        inputs = {"x": _scalar(rng, dx), "y": _scalar(rng, dy)}
        value, grads = mod.value_and_grad(**inputs)
        t_value, t_grads = tape.value_and_grad(model, **inputs)
        assert rel_err(value, t_value) <= 1e-12 and rel_err(mod.forward(**inputs), t_value) <= 1e-12
        for k in "xy":
            assert rel_err(grads[k], t_grads[k]) <= 1e-12, (k, grads[k], t_grads[k])
        if "_NUMBERS" in src.split("def value_and_grad(")[1]:  # the fast path ran: NumPy float64 scalars
            assert type(value) is np.float64 and all(type(g) is np.float64 for g in grads.values())


def test_every_row_without_special_or_user_functions_has_a_fast_path():
    for k, row in to.SCALAR_ROWS.items():
        src = symgrad.generate(symgrad.Model(row[0], wrt=[x, y], name=k))
        if "_NUMBERS" not in src:  # only scipy.special functions and user Functions have no float form
            assert "_scipy_special." in src or "_user_" in src, k


def test_a_planted_wrong_formula_is_caught_by_the_tape(monkeypatch):
    monkeypatch.setitem(floats.FLOAT, "cos", "math.sin({0})")
    model = symgrad.Model(sp.sin(x) * y, wrt=[x, y], name="planted")
    value, grads = load_source(symgrad.generate(model), "planted").value_and_grad(x=0.4, y=1.5)
    assert rel_err(grads["x"], tape.value_and_grad(model, x=0.4, y=1.5)[1]["x"]) > 1e-3


@pytest.mark.parametrize("expr, at, want", [
    (1 / x, 0.0, math.inf),
    (sp.log(x), 0.0, -math.inf),
    (sp.exp(x), 1000.0, math.inf),
    (sp.sqrt(x), -1.0, math.nan),
    (x ** sp.Rational(1, 3), -8.0, math.nan),
    (sp.asin(x), 2.0, math.nan),
])
def test_where_python_raises_the_array_path_gives_numpys_answer(expr, at, want):
    mod = _module(expr, "edge", wrt=[x])
    with np.errstate(all="ignore"):  # NumPy's inf and nan are the answer here
        value = mod.forward(x=at)
        array_value = mod.forward(x=np.array(at))
    assert (math.isnan(value) and math.isnan(want)) or value == want
    assert (np.isnan(array_value) and math.isnan(want)) or array_value == want


def test_ints_and_bools_bind_as_floats():
    mod = _module(sp.sin(x) * y + x ** 2, "ib")
    value, grads = mod.value_and_grad(x=2, y=True)
    assert value == pytest.approx(math.sin(2) + 4) and grads["y"] == pytest.approx(math.sin(2))
    pytest.raises(TypeError, mod.value_and_grad, x=1j, y=1.0)  # complex: still refused, naming x


def test_a_deep_model_has_no_second_body():
    h = x
    for k in range(floats.MAX_LINES // 2):
        h = sp.tanh(y * h + k)
    assert "_NUMBERS" not in symgrad.generate(symgrad.Model(h, wrt=[x, y], name="deep"))


def test_matrices_special_functions_and_arrays_take_the_array_path():
    X = sp.MatrixSymbol("X", 2, 2)
    assert "_NUMBERS" not in symgrad.generate(symgrad.Model(sp.Trace(X) * x, wrt=[x], name="m"))
    assert "_NUMBERS" not in symgrad.generate(symgrad.Model(sp.erfinv(x) * y, wrt=[x], name="e"))
    mod = _module(sp.sin(x) * y, "arr")
    value, grads = mod.value_and_grad(x=np.float32(0.5), y=np.ones(3, np.float32))
    assert value.dtype == np.float32 and grads["y"].shape == (3,)  # float32 still float32
    with pytest.raises(ValueError):
        mod.value_and_grad(x=np.ones(3), y=np.ones(4))  # shapes that do not broadcast: still an error
