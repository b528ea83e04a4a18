"""symgrad.Function: a function of the user's, with the user's derivative, in value, gradient and
second derivatives, on both targets; --check's finite differences catch a wrong derivative."""
import sys
import textwrap

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad import SymgradError
from symgrad.emit import load_source
from symgrad.verify import check

from _cupy_shim import fake_cupy

x, y = sp.symbols("x y", real=True)
HELPERS = textwrap.dedent("""
    import numpy as np
    def softsign(x): return x / (1 + np.abs(x))
    def dsoftsign(x): return 1 / (1 + np.abs(x)) ** 2
    def ddsoftsign(x): return -2 * np.sign(x) / (1 + np.abs(x)) ** 3
    def hyp(x, y): return np.sqrt(x * x + y * y)
    def hyp_x(x, y): return x / np.sqrt(x * x + y * y)
    def hyp_y(x, y): return y / np.sqrt(x * x + y * y)
    def wrong(x): return 1.01 / (1 + np.abs(x)) ** 2
""")


@pytest.fixture
def helpers(tmp_path, monkeypatch):
    (tmp_path / "sg_user_fns.py").write_text(HELPERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("sg_user_fns", None)


def functions():
    d1 = symgrad.Function("dsoftsign", "sg_user_fns:dsoftsign", derivative="sg_user_fns:ddsoftsign")
    f = symgrad.Function("softsign", "sg_user_fns:softsign", derivative=d1)
    h = symgrad.Function("hyp", "sg_user_fns:hyp", derivative=["sg_user_fns:hyp_x", "sg_user_fns:hyp_y"])
    return f, h


@pytest.mark.parametrize("target", ["numpy", "cupy"])
def test_value_gradient_and_hvp_through_user_functions(helpers, target, monkeypatch):
    if target == "cupy":
        monkeypatch.setitem(sys.modules, "cupy", fake_cupy())
    f, h = functions()
    model = symgrad.Model(f(x * y) + h(x, y + 2), wrt=[x, y], name="user")
    source = symgrad.generate(model, target)
    assert "import sg_user_fns as _user_sg_user_fns" in source and "sg_user_fns at run time" in source
    report = check(model, load_source(source, "u"), calls=target == "numpy")
    assert report.ok, report.problems
    second = symgrad.Model(f(x * y), wrt=[x, y], name="second")   # f' is a Function: f'' exists
    report = check(second, load_source(symgrad.generate(second, target, "hvp"), "s"), calls=False)
    assert report.ok and "hvp" in report.derivatives, report.problems
    xs = np.array([0.5, -2.0])
    _, grads = load_source(source, "u").value_and_grad(x=xs, y=1.0)
    want = 1 / (1 + np.abs(xs)) ** 2 + xs / np.sqrt(xs ** 2 + 9)           # f'(x) * 1 + d hyp / dx
    assert np.allclose(grads["x"], want, rtol=1e-14)


def test_a_wrong_derivative_is_caught_by_check(helpers):
    bad = symgrad.Function("softsign", "sg_user_fns:softsign", derivative="sg_user_fns:wrong")
    model = symgrad.Model(bad(x) * y, wrt=[x, y], name="bad")
    report = check(model, symgrad.compile(model))
    assert not report.ok and any("finite differences" in p for p in report.problems)


def test_missing_derivatives_and_bad_paths_are_clear_errors(helpers):
    f, h = functions()
    with pytest.raises(SymgradError, match="hyp_x has no derivative"):      # hvp needs h's second derivative
        symgrad.generate(symgrad.Model(h(x, y), wrt=[x, y]), emit="hvp")
    plain = symgrad.Function("g", "sg_user_fns:softsign")
    with pytest.raises(SymgradError, match="g has no derivative"):
        symgrad.generate(symgrad.Model(plain(x), wrt=[x]))
    assert symgrad.compile(symgrad.Model(plain(x) * y, wrt=[y])).value_and_grad(x=1.0, y=2.0)[1]["y"] == 0.5
    for bad in ["os.system('x'):f", "mod:f; import os", "no colon", "a:b:c"]:
        with pytest.raises(SymgradError, match="must be a 'module:function' path"):
            symgrad.Function("g", bad)
    with pytest.raises(SymgradError, match="2 arguments but 1 partial"):
        symgrad.Function("g", "m:f", derivative=["m:df"], nargs=2)
