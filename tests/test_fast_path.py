"""The Python-number fast path of forward / value_and_grad (symgrad/emit/floats.py).

Every scalar op row runs on Python floats against the tape (an independent oracle); where Python
would raise (1/0, log(0), exp(1000), a negative base to a fractional power) the call falls back to
the array path and gives NumPy's inf/nan; the array path keeps its checks.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad import tape
from symgrad.emit import floats, load_source, printing
from symgrad.ops import OPS

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


# -- every fast-path formula against its array twin, bit for bit (signed zeros, nan, inf) -----
_SPECIAL = [0.0, -0.0, math.inf, -math.inf, math.nan, 1e308, -1e308, 5e-324, -5e-324, 1e-300,
            0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 1.0, -1.0, 2.0, -2.0, 3.0, 710.0, -710.0, 0.7]
_LOGIC = {"where", "and", "or", "not"}  # arguments (the condition) that are booleans
_EXACT = {"add", "sub", "mul", "div", "neg", "abs", "sqrt", "floor", "ceil", "sign", "maximum",
          "minimum", "where", "powlog"}  # correctly rounded or exact: the same bits; libm functions: within _ULPS
_ULPS = 4


def _ordered(v: float) -> int:
    """The float's bits as an integer that counts ulps across zero (-0.0 and +0.0 are 0 apart)."""
    i = int(np.float64(v).view(np.int64))
    return i if i >= 0 else -(i & 0x7FFFFFFFFFFFFFFF)


def _namespace():
    ns = {"math": math, "np": np}
    for op in OPS.values():
        if op.helper:
            exec(op.helper.replace("{m}", "np"), ns)
    return ns


def _twins():
    """(name, float formula, array template, arity) of every fast-path op, the integer powers
    written as multiplications included."""
    for name, text in floats.FLOAT.items():
        arity = 1 + max(int(k) for k in "012" if "{%s}" % k in text)
        yield name, text, OPS[name].code, arity
    for k in range(1, printing.MAX_MULTIPLY + 1):
        yield f"pow{k}", "(" + " * ".join(["{0}"] * k) + ")", "{0} ** %d" % k, 1


def _differs(name, f, r) -> bool:
    if isinstance(f, bool) or r.dtype == bool:
        return bool(f) != bool(r)
    f, r = float(f), float(r)
    if math.isnan(f) or math.isnan(r):
        return math.isnan(f) != math.isnan(r)
    if math.copysign(1, f) != math.copysign(1, r):  # -0.0 vs 0.0 included
        return True
    return abs(_ordered(f) - _ordered(r)) > (0 if name in _EXACT else _ULPS)


@pytest.mark.parametrize("name, text, code, arity", list(_twins()), ids=[t[0] for t in _twins()])
def test_every_fast_path_formula_gives_its_array_twins_bits(name, text, code, arity):
    """A completeness test: each row of floats.FLOAT (a new one included) is run on Python floats
    and, as the array path runs it, on float64 arrays, at every combination of special values.
    Where the formula raises, the module takes the array path (NumPy's answer by construction)."""
    ns, args = _namespace(), [f"a{i}" for i in range(arity)]
    bad = []
    for vals in itertools.product(_SPECIAL, repeat=arity):
        if name in _LOGIC:
            vals = (vals[0] > 0, *vals[1:]) if name == "where" else tuple(v > 0 for v in vals)
        try:
            f = eval(text.format(*args), dict(ns, **dict(zip(args, vals))))
        except (ArithmeticError, ValueError):
            continue
        arrays = {a: np.array([v], bool if type(v) is bool else np.float64) for a, v in zip(args, vals)}
        with np.errstate(all="ignore"):
            r = np.asarray(eval(code.format(*args, m="np"), dict(ns, **arrays))).reshape(-1)[0]
        if _differs(name, f, r):
            bad.append((vals, f, r))
    assert not bad, (name, bad[:5])


def test_a_fast_path_signed_zero_reaches_atan2_as_on_arrays():
    mod = _module(sp.atan2(sp.ceiling(x), y), "signed")
    for fn in (mod.forward, lambda **kw: mod.value_and_grad(**kw)[0]):
        assert fn(x=-0.5, y=-1.0) == fn(x=np.array([-0.5]), y=np.array([-1.0]))[0] == -math.pi
    assert math.copysign(1, mod.forward(x=-0.0, y=1.0)) == -1.0  # atan2(-0.0, 1) is -0.0
