"""The non-differentiable-point policy (README "Non-differentiable points", ``symgrad/ops.py``'s
header) on the *generated* modules of every target, and on the tape, with exact numbers.

Every row is a model, inputs that sit on its kinks, ties, boundaries or guarded branches, and the
value and gradients the documented policy gives there, derived by hand in the comment beside the
row (nothing here asks symgrad for an expected number).  The policy, as documented:

* ``Max(x, y)`` passes the gradient to the strictly larger argument only, ``Min`` to the strictly
  smaller one: 0 to both at a tie, so ``Max(x, 0)`` and ``Min(x, 0)`` have derivative 0 at 0;
* ``Abs'(0) = sign(0) = 0``; ``sign``, ``Heaviside`` and comparisons have derivative 0;
  ``Heaviside(0) = 1/2``, ``Heaviside(0, H0) = H0``;
* ``Piecewise`` differentiates the branch that is selected (the first true condition), and is
  NaN where no condition holds (SymPy's undefined);
* a branch that is not selected contributes exactly 0, never ``0 * inf = NaN``
  (``Piecewise((x*log(x), x > 0), (0, True))`` at ``x = -1``), and so does the argument of a
  ``Max`` that is not selected; ``d(x**y)/dy`` at ``x = 0`` is its limit, 0.

:func:`check` runs one row on one target -- ``numpy`` (``symgrad.compile``), ``cupy-shim`` (the
CuPy module run by the NumPy stand-in of ``tests/test_cupy_target.py``), ``cupy-gpu`` (real CuPy,
skipped without a device) or ``tape`` -- and raises ``AssertionError`` naming every entry that
differs.  The mutation tests at the end plant known policy bugs into the compiler (in-process,
with ``monkeypatch``), compile again and prove that :func:`check` catches each one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import sys

import numpy as np
import pytest
import sympy as sp

import symgrad
import symgrad.lower
import symgrad.ops
from symgrad import tape
from symgrad.emit import load_source

try:  # the shim's own module, where it lives now; before that it was in test_cupy_target.py
    from _cupy_shim import fake_cupy
except ImportError:
    from test_cupy_target import fake_cupy

x, y, H0 = sp.symbols("x y H0")
N, d, k = sp.symbols("N d k")
X = sp.MatrixSymbol("X", N, d)
W = sp.MatrixSymbol("W", d, k)


def a(*values):
    return np.array(values, dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class Row:
    expr: object
    wrt: tuple
    inputs: dict          # name -> float64 array (wrt inputs and data inputs)
    value: np.ndarray     # the documented value (NaN where it is undefined)
    grads: dict           # name -> the documented gradient of sum(value), shaped like the input


# 3x2 data and 2x2 weights chosen so that X @ W is exact and its (0, 0) entry is exactly 0:
#   X @ W = [[0, 1], [3, -4], [1, -1]]   ->  ReLU = [[0, 1], [3, 0], [1, 0]]
#   mask M = [XW > 0] = [[0, 1], [1, 0], [1, 0]]  (the 0 pre-activation is not > 0)
#   d sum / dW = X.T @ M = [[3, 1], [-1, 1]]      (ReLU'(0) = 1 would give [[4, 1], [0, 1]])
#   d sum / dX = M @ W.T = [[-1, 2], [1, -1], [1, -1]]   (ReLU'(0) = 1: first row [0, 1])
_X = np.array([[1.0, 1.0], [2.0, -1.0], [1.0, 0.0]])
_W = np.array([[1.0, -1.0], [-1.0, 2.0]])

ROWS = {
    # Max(x, 0) at x = -2, 0, 3: value 0, 0, 3; derivative [x > 0] = 0, 0, 1
    "max_zero": Row(sp.Max(x, 0), (x,), {"x": a(-2, 0, 3)}, a(0, 0, 3), {"x": a(0, 0, 1)}),
    # Min(x, 0) at x = -2, 0, 3: value -2, 0, 0; derivative [x < 0] = 1, 0, 0
    "min_zero": Row(sp.Min(x, 0), (x,), {"x": a(-2, 0, 3)}, a(-2, 0, 0), {"x": a(1, 0, 0)}),
    # Max(x, y) at (1.5, 1.5) tie, (2, 1), (-1, 0): d/dx = [x > y], d/dy = [y > x]
    "max_tie": Row(sp.Max(x, y), (x, y), {"x": a(1.5, 2, -1), "y": a(1.5, 1, 0)},
                   a(1.5, 2, 0), {"x": a(0, 1, 0), "y": a(0, 0, 1)}),
    # Min(x, y) at the same points: d/dx = [x < y], d/dy = [y < x]
    "min_tie": Row(sp.Min(x, y), (x, y), {"x": a(1.5, 2, -1), "y": a(1.5, 1, 0)},
                   a(1.5, 1, -1), {"x": a(0, 0, 1), "y": a(0, 1, 0)}),
    # |x| at -2, 0, 3: value 2, 0, 3; derivative sign(x) = -1, 0, 1
    "abs": Row(sp.Abs(x), (x,), {"x": a(-2, 0, 3)}, a(2, 0, 3), {"x": a(-1, 0, 1)}),
    # sign(x) at -2, 0, 3: value -1, 0, 1; derivative 0 everywhere
    "sign": Row(sp.sign(x), (x,), {"x": a(-2, 0, 3)}, a(-1, 0, 1), {"x": a(0, 0, 0)}),
    # Heaviside(x) at -2, 0, 3: value 0, 1/2, 1; derivative 0 everywhere
    "heaviside": Row(sp.Heaviside(x), (x,), {"x": a(-2, 0, 3)}, a(0, 0.5, 1), {"x": a(0, 0, 0)}),
    # Heaviside(x, 1/4): value 0, 1/4, 1 (H0 at 0, distinct from the default 1/2); derivative 0
    "heaviside_h0_const": Row(sp.Heaviside(x, sp.Rational(1, 4)), (x,), {"x": a(-2, 0, 3)},
                              a(0, 0.25, 1), {"x": a(0, 0, 0)}),
    # Heaviside(x, H0) with H0 = 1/4 given as a data input: the same numbers
    "heaviside_h0_data": Row(sp.Heaviside(x, H0), (x,), {"x": a(-2, 0, 3), "H0": np.array(0.25)},
                             a(0, 0.25, 1), {"x": a(0, 0, 0)}),
    # every comparison, through constant branches (the only path to x and y is the comparison):
    # (x, y) = (1, 1) tie: >= 2, <= 8, Eq 16 -> 26; (2, 1): > 1, >= 2, Ne 32 -> 35;
    # (0, 3): < 4, <= 8, Ne 32 -> 44; derivative 0 everywhere, ties included
    "comparisons": Row(sum((sp.Piecewise((c, cond), (0, True)) for c, cond in
                            [(1, x > y), (2, x >= y), (4, x < y), (8, x <= y),
                             (16, sp.Eq(x, y)), (32, sp.Ne(x, y))]), sp.S.Zero),
                       (x, y), {"x": a(1, 2, 0), "y": a(1, 1, 3)}, a(26, 35, 44),
                       {"x": a(0, 0, 0), "y": a(0, 0, 0)}),
    # at x = 1 the first branch (x >= 1) is selected: value 1, derivative 2x = 2 (not 3, not 0);
    # x = 0.5: 3x = 1.5, derivative 3; x = 2: 4, derivative 4
    "piecewise_boundary_closed": Row(sp.Piecewise((x ** 2, x >= 1), (3 * x, True)), (x,),
                                     {"x": a(1, 0.5, 2)}, a(1, 1.5, 4), {"x": a(2, 3, 4)}),
    # with a strict condition the boundary x = 1 selects 3x: value 3, derivative 3
    "piecewise_boundary_open": Row(sp.Piecewise((x ** 2, x > 1), (3 * x, True)), (x,),
                                   {"x": a(1, 0.5, 2)}, a(3, 1.5, 4), {"x": a(3, 3, 4)}),
    # no True branch: at x = 0 no condition holds -> NaN value, and no branch is selected, so no
    # gradient flows (0); x = 2: x**2 = 4, derivative 4; x = -2: 3x = -6, derivative 3
    "piecewise_no_true_branch": Row(sp.Piecewise((x ** 2, x > 1), (3 * x, x < -1)), (x,),
                                    {"x": a(0, 2, -2)}, a(np.nan, 4, -6), {"x": a(0, 4, 3)}),
    # ReLU inside a matrix model; the entry with pre-activation exactly 0 contributes 0 (above)
    "relu_matrix": Row((X * W).applyfunc(lambda t: sp.Max(t, 0)), (W, X), {"X": _X, "W": _W},
                       np.array([[0.0, 1.0], [3.0, 0.0], [1.0, 0.0]]),
                       {"W": np.array([[3.0, 1.0], [-1.0, 1.0]]),
                        "X": np.array([[-1.0, 2.0], [1.0, -1.0], [1.0, -1.0]])}),
    # guarded branch: x*log(x) is selected only for x > 0. x = -1 and x = 0: value 0, and the
    # unselected x*log(x) (NaN, -inf) contributes exactly 0; x = 1: 1*log 1 = 0, derivative
    # log 1 + 1 = 1
    "guarded_xlogx": Row(sp.Piecewise((x * sp.log(x), x > 0), (0, True)), (x,), {"x": a(-1, 0, 1)},
                         a(0, 0, 0), {"x": a(0, 0, 1)}),
    # Max(sqrt(x), 1) at x = 0: value 1, the constant is selected, sqrt'(0) = inf is not: 0;
    # x = 1: tie, 0; x = 4: sqrt = 2, derivative 1 / (2 sqrt 4) = 1/4
    "guarded_max_sqrt": Row(sp.Max(sp.sqrt(x), 1), (x,), {"x": a(0, 1, 4)}, a(1, 1, 2),
                            {"x": a(0, 0, 0.25)}),
    # x**y at (0, 2): value 0, d/dx = y x**(y-1) = 0, d/dy = x**y log x -> 0 (the limit x -> 0+);
    # at (1, 3): value 1, d/dx = 3, d/dy = 1 * log 1 = 0
    "guarded_pow_dy": Row(x ** y, (x, y), {"x": a(0, 1), "y": a(2, 3)}, a(0, 1),
                          {"x": a(0, 3), "y": a(0, 0)}),
    # a cotangent of exactly 0 meeting an infinite partial contributes 0, never 0 * inf = NaN:
    # y*sqrt(x) at (0, 0): d/dx = y / (2 sqrt x) with y = 0 -> 0; d/dy = sqrt 0 = 0; at (4, 3):
    # value 6, d/dx = 3/4, d/dy = 2
    "zero_cotangent_sqrt": Row(y * sp.sqrt(x), (x, y), {"x": a(0, 4), "y": a(0, 3)}, a(0, 6),
                               {"x": a(0, 0.75), "y": a(0, 2)}),
    # Max(x, cosh(2 tanh(sqrt x))) at x = 0: cosh 0 = 1 is selected; its cotangent reaches sqrt
    # through sinh(0) = 0, so sqrt'(0) = inf contributes 0; at x = 4, cosh(2 tanh 2) < 4: x, 1
    "zero_cotangent_max_cosh": Row(sp.Max(x, sp.cosh(2 * sp.tanh(sp.sqrt(x)))), (x,), {"x": a(0, 4)},
                                   a(1, 4), {"x": a(0, 1)}),
    # y * asin(x) at (1, 0): asin'(1) = inf meets y = 0 -> 0; d/dy = asin 1 = pi/2; the cube root
    # y * x**(1/3) at (0, 0): 0 and 0 (x**(-2/3) is inf at 0); at (1, 1): 1, 1/3, 1
    "zero_cotangent_asin": Row(y * sp.asin(x), (x, y), {"x": a(1), "y": a(0)}, a(0),
                               {"x": a(0), "y": a(np.pi / 2)}),
    "zero_cotangent_cbrt": Row(y * x ** sp.Rational(1, 3), (x, y), {"x": a(0, 1), "y": a(0, 1)},
                               a(0, 1), {"x": a(0, 1 / 3), "y": a(0, 1)}),
    # an infinite cotangent meeting the argument of Max that is not selected: still exactly 0.
    # acosh(Max(2y, xy)) at (-2, 1/2): Max(1, -1) = 1, acosh 1 = 0, acosh'(1) = inf reaches 2y
    # (d/dy = 2 inf = inf) and not xy (d/dx = 0, never inf * 0 = NaN)
    "infinite_cotangent_max": Row(sp.acosh(sp.Max(2 * y, x * y)), (x, y), {"x": a(-2), "y": a(0.5)},
                                  a(0), {"x": a(0), "y": a(np.inf)}),
}

TARGETS = ["numpy", "cupy-shim", "cupy-gpu", "tape"]


def model_of(name: str) -> symgrad.Model:
    row = ROWS[name]
    return symgrad.Model(row.expr, wrt=list(row.wrt), name=f"policy_{name}")


@contextlib.contextmanager
def _fake_cupy_installed():
    """``sys.modules["cupy"]`` is the NumPy stand-in for the duration (restored afterwards)."""
    missing = object()
    saved = sys.modules.get("cupy", missing)
    sys.modules["cupy"] = fake_cupy()
    try:
        yield
    finally:
        if saved is missing:
            sys.modules.pop("cupy", None)
        else:
            sys.modules["cupy"] = saved


def _real_cupy():
    try:
        import cupy
    except Exception:  # noqa: BLE001 - not installed, or installed without a driver
        pytest.skip("cupy not installed")
    if getattr(cupy, "ElementwiseKernel", None) is None or not cupy.is_available():
        pytest.skip("no CUDA device")
    return cupy


def evaluate(model, target: str, inputs: dict):
    """``(forward value, value, grads)`` of ``model`` on ``target``, as float64 NumPy arrays."""
    as_np = lambda v: np.asarray(v, dtype=np.float64)  # noqa: E731
    with np.errstate(all="ignore"):
        if target == "tape":
            value, grads = tape.value_and_grad(model, **inputs)
            fwd = tape.forward(model, **inputs)
        elif target == "numpy":
            mod = symgrad.compile(model)
            value, grads = mod.value_and_grad(**inputs)
            fwd = mod.forward(**inputs)
        elif target == "cupy-shim":
            with _fake_cupy_installed():
                mod = load_source(symgrad.generate(model, "cupy"), model.name + "_cupy")
                value, grads = mod.value_and_grad(**inputs)
                fwd = mod.forward(**inputs)
        elif target == "cupy-gpu":
            cupy = _real_cupy()
            mod = symgrad.compile(model, target="cupy")
            dev = {n: cupy.asarray(v) for n, v in inputs.items()}
            value, grads = mod.value_and_grad(**dev)
            fwd = mod.forward(**dev)
            value, fwd = cupy.asnumpy(value), cupy.asnumpy(fwd)
            grads = {n: cupy.asnumpy(g) for n, g in grads.items()}
        else:
            raise ValueError(target)
    return as_np(fwd), as_np(value), {n: as_np(g) for n, g in grads.items()}


def _mismatch(what, got, want):
    if got.shape != want.shape:
        return f"{what}: shape {got.shape}, expected {want.shape}"
    if not np.array_equal(got, want, equal_nan=True):
        return f"{what}: got {got.tolist()}, expected {want.tolist()}"
    return None


def check(name: str, target: str) -> None:
    """Row ``name`` on ``target``: exact value (forward and value_and_grad) and gradients, as the
    policy documents them.  Raises AssertionError listing every mismatch."""
    row = ROWS[name]
    fwd, value, grads = evaluate(model_of(name), target, row.inputs)
    problems = [_mismatch("forward", fwd, row.value), _mismatch("value", value, row.value)]
    if set(grads) != set(row.grads):
        problems.append(f"gradient names {sorted(grads)}, expected {sorted(row.grads)}")
    problems += [_mismatch(f"d/d{n}", grads[n], want) for n, want in row.grads.items() if n in grads]
    problems = [p for p in problems if p]
    if problems:
        raise AssertionError(f"policy row {name!r} on {target}: " + "; ".join(problems))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", list(ROWS))
def test_policy_row(name, target):
    check(name, target)


def test_rows_are_self_consistent():
    """The hand-derived numbers have the inputs' shapes; the gradients name exactly ``wrt``."""
    for name, row in ROWS.items():
        assert set(row.grads) == {str(w) for w in row.wrt}, name
        for n, g in row.grads.items():
            assert g.shape == row.inputs[n].shape, (name, n)
        assert set(row.inputs) == {str(s) for s in model_of(name).inputs}, name


# -- mutations: plant each known policy bug, compile again, and the check must fail ------------------
def _heaviside_half_is_one(mp):
    """Heaviside(0) = 1 instead of 1/2 (the one-argument form's default H0)."""
    original = symgrad.lower.Lowering._lower_Heaviside

    def planted(self, e, k):  # SymPy stores Heaviside(x) as Heaviside(x, 1/2); pargs is (x,)
        one_arg = len(getattr(e, "pargs", e.args)) == 1
        return original(self, e, [k[0], self.G.const(1)] if one_arg else k)
    mp.setattr(symgrad.lower.Lowering, "_lower_Heaviside", planted)


def _abs_prime_is_one_at_zero(mp):
    """Abs' = (x >= 0) * 2 - 1 instead of sign(x): 1 at 0."""
    def vjp(G, g, out, x_):
        step = G.sub(G.mul(G.const(2), G.op("ge", x_, G.const(0))), G.const(1))
        return (G.mul(g, step),)
    mp.setitem(symgrad.ops.OPS, "abs", dataclasses.replace(symgrad.ops.OPS["abs"], vjp=vjp))


def _piecewise_undefined_is_zero(mp):
    """A Piecewise without a True branch is 0, not NaN, where no condition holds."""
    def planted(self, e, k):
        G = self.G
        pairs = list(zip(k[0::2], k[1::2]))
        last_val, last_cond = pairs[-1]
        out = last_val if e.args[-1].cond == sp.true else G.where(last_cond, last_val, G.const(0))
        for val, cond in reversed(pairs[:-1]):
            out = G.where(cond, val, out)
        return out
    mp.setattr(symgrad.lower.Lowering, "_lower_Piecewise", planted)


MUTATIONS = {
    "heaviside_half_is_one": (_heaviside_half_is_one, "heaviside"),
    "abs_prime_is_one_at_zero": (_abs_prime_is_one_at_zero, "abs"),
    "piecewise_undefined_is_zero": (_piecewise_undefined_is_zero, "piecewise_no_true_branch"),
}


@pytest.mark.parametrize("target", ["numpy", "cupy-shim"])
@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_planted_bug_is_caught(mutation, target, monkeypatch):
    plant, name = MUTATIONS[mutation]
    cg_target = "numpy" if target == "numpy" else "cupy"
    model = model_of(name)
    before = symgrad.generate(model, cg_target)
    symgrad.compile(model)  # would prime a compile cache, if there were one
    with monkeypatch.context() as mp:
        plant(mp)
        planted = symgrad.generate(model_of(name), cg_target)
        assert planted != before, "the planted bug did not change the generated module"
        with pytest.raises(AssertionError, match=f"policy row {name!r} on {target}"):
            check(name, target)
        check(name, "tape")  # the tape has its own rules: the planted bug is not in it
    # nothing leaks out of the context, and no cache keeps the planted module
    assert symgrad.generate(model_of(name), cg_target) == before
    fresh = symgrad.compile(model_of(name))
    assert fresh is not symgrad.compile(model_of(name))
