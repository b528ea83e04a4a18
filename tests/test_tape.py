"""The runtime tape (symgrad.tape) against independent oracles: hand-derived numbers from the
seeds, hand-written backprop, central finite differences and sympy.lambdify for values."""
import inspect
import sys

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad import tape
from symgrad.model import SymgradError

x, y, z = sp.symbols("x y z")
N, d, k = sp.symbols("N d k")
rng = np.random.default_rng(0)


def fd_grads(model, inputs, eps=1e-6):
    """Central finite differences of sum(forward) for every wrt input, element by element."""
    grads = {}
    for w in model.wrt:
        base = np.array(inputs[str(w)], dtype=float)
        g = np.zeros_like(base)
        for i in np.ndindex(base.shape):
            def at(h):
                a = base.copy()
                a[i] += h
                return float(np.sum(tape.forward(model, **{**inputs, str(w): a})))
            g[i] = (at(eps) - at(-eps)) / (2 * eps)
        grads[str(w)] = g
    return grads


def check_against_fd(model, inputs, rtol=1e-5, atol=1e-7):
    value, grads = tape.value_and_grad(model, **inputs)
    expected = fd_grads(model, inputs)
    assert set(grads) == {str(w) for w in model.wrt}
    for name, g in expected.items():
        assert np.shape(grads[name]) == np.shape(inputs[name]), name
        np.testing.assert_allclose(grads[name], g, rtol=rtol, atol=atol, err_msg=name)
    return value, grads


# -- hand-derived numbers from the seeds ----------------------------------------------------------
def sigmoid(t):
    return 1 / (1 + sp.exp(-t))


def test_seed_003_sigmoid_ratio():
    model = symgrad.Model((x + sigmoid(y)) / (sigmoid(x) + (x + y) ** 2), wrt=[x, y])
    value, grads = tape.value_and_grad(model, x=2.0, y=-4.0)
    assert grads["x"] == pytest.approx(0.5348320870757595, rel=1e-12)
    assert grads["y"] == pytest.approx(0.342460382923052, rel=1e-12)
    assert np.shape(grads["x"]) == () and np.shape(value) == ()


def test_seed_003_linear_square():
    w0, w1 = sp.symbols("w0 w1")
    model = symgrad.Model((w0 + w1 * x - y) ** 2, wrt=[w0, w1])
    value, grads = tape.value_and_grad(model, x=3.0, y=7.0, w0=-2.0, w1=2.0)
    assert value == 9.0
    assert grads == {"w0": -6.0, "w1": -18.0}


def test_seed_000_linear_mse_matches_hand_backprop():
    X, W = sp.MatrixSymbol("X", N, d), sp.MatrixSymbol("W", d, k)
    b, Y = sp.MatrixSymbol("b", 1, k), sp.MatrixSymbol("Y", N, k)
    R = X * W + sp.OneMatrix(N, 1) * b - Y
    Xv, Wv, bv, Yv = (rng.normal(size=s) for s in [(7, 3), (3, 2), (1, 2), (7, 2)])
    pred = Xv @ Wv + bv
    y_g = 2 * (pred - Yv) / Yv.shape[0] / Yv.shape[1]  # seed 000's mse_grad
    for loss in [sp.Trace(R.T * R) / (N * k), sp.HadamardPower(R, 2) / (N * k)]:  # scalar, summed matrix
        model = symgrad.Model(loss, wrt=[W, b])
        value, grads = tape.value_and_grad(model, X=Xv, W=Wv, b=bv, Y=Yv)
        assert np.sum(value) == pytest.approx(np.mean((pred - Yv) ** 2))
        np.testing.assert_allclose(grads["W"], Xv.T @ y_g)             # W.g = X.T @ y.g
        np.testing.assert_allclose(grads["b"], y_g.sum(0, keepdims=True))  # b.g = y.g.sum(0)


# -- one row per scalar construct: value vs lambdify, gradient vs finite differences -------------
SCALAR_OPS = [
    ("add_mul", x * y + 3 * x - y / 2, (-2, 2)),
    ("pow_int", x ** 3 - y ** -2, (0.5, 2)),
    ("pow_variable", x ** y, (0.5, 2)),
    ("sqrt_rational", sp.sqrt(x) + x ** sp.Rational(2, 3) * y, (0.5, 2)),
    ("constants", sp.pi * x + sp.E * y + sp.sqrt(2) + sp.Float("0.25"), (-1, 1)),
    ("exp_log", sp.exp(x) * sp.log(y), (0.5, 2)),
    ("log_base", sp.log(x, y, evaluate=False), (1.5, 3)),
    ("trig", sp.sin(x) * sp.cos(y) + sp.tan(x), (-1, 1)),
    ("hyperbolic", sp.tanh(x) + sp.sinh(y) * sp.cosh(x), (-1, 1)),
    ("inverse_trig", sp.asin(x / 2) + sp.acos(y / 2) + sp.atan(x * y), (-1, 1)),
    ("inverse_hyperbolic", sp.asinh(x) + sp.acosh(y + 2) + sp.atanh(x / 2), (-1, 1)),
    ("atan2", sp.atan2(y, x), (0.5, 2)),
    ("abs_sign", sp.Abs(x) * y + sp.sign(y) * x, (0.5, 2)),
    ("abs_negative", sp.Abs(x - 3) * y, (0.5, 2)),
    ("max_min", sp.Max(x, y, z) + sp.Min(x, 2 * y, 0.1 * z), (-2, 2)),
    ("relu", sp.Max(x, 0) * y, (-2, 2)),
    ("heaviside", sp.Heaviside(x) * y + sp.Heaviside(y, 0) * x, (-2, 2)),
    ("piecewise", sp.Piecewise((x * y, x > y), (x ** 2, x <= -0.5), (sp.sin(y), True)), (-2, 2)),
    ("piecewise_logic", sp.Piecewise((x, sp.And(x > 0, y < 1)), (y ** 2, sp.Or(sp.Eq(x, 1), sp.Not(y > 0.5))),
                                     (x * y, sp.Ne(x, 0)), (z, True)), (-2, 2)),
    ("shared_subexpr", sp.exp(x * y) / (1 + sp.exp(x * y)) + (x * y) ** 2, (-1, 1)),
]


@pytest.mark.parametrize("name, expr, domain", SCALAR_OPS, ids=[r[0] for r in SCALAR_OPS])
def test_scalar_op(name, expr, domain):
    syms = sorted(expr.free_symbols, key=str)
    model = symgrad.Model(expr)
    inputs = {str(s): rng.uniform(*domain, size=5) for s in syms}
    value, _ = check_against_fd(model, inputs)
    # SymPy 1.12's lambdify prints Max(x, 0) as amax((0, x), axis=0): a ragged tuple for arrays
    ragged = {"amax": lambda seq, axis=0: np.maximum.reduce(np.broadcast_arrays(*seq)),
              "amin": lambda seq, axis=0: np.minimum.reduce(np.broadcast_arrays(*seq))}
    expected = sp.lambdify(syms, expr.doit(), [ragged, "numpy"])(*inputs.values())
    np.testing.assert_allclose(value, np.broadcast_to(expected, value.shape), rtol=1e-12)


# -- the non-differentiability policy -------------------------------------------------------------
def test_kinks_have_zero_derivative():
    cases = [(sp.Max(x, 0), 0.0, 0.0), (sp.Abs(x), 0.0, 0.0), (sp.Max(x, y), 1.0, 0.0),
             (sp.Min(x, y), 1.0, 0.0), (sp.sign(x), 0.0, 0.0), (sp.Heaviside(x), 0.0, 0.0)]
    for expr, at, want in cases:
        model = symgrad.Model(expr, wrt=[x])
        inputs = {"x": at, "y": 1.0} if y in expr.free_symbols else {"x": at}
        assert tape.value_and_grad(model, **inputs)[1]["x"] == want, expr
    model = symgrad.Model(sp.Max(x, y), wrt=[x, y])
    _, g = tape.value_and_grad(model, x=np.array([1.0, 2.0, 3.0]), y=np.array([2.0, 2.0, 2.0]))
    np.testing.assert_array_equal(g["x"], [0, 0, 1])
    np.testing.assert_array_equal(g["y"], [1, 0, 0])


def test_piecewise_differentiates_selected_branch_only():
    model = symgrad.Model(sp.Piecewise((x ** 2, x > 1), (3 * x, True)), wrt=[x])
    _, g = tape.value_and_grad(model, x=np.array([2.0, 1.0, -1.0]))
    np.testing.assert_array_equal(g["x"], [4.0, 3.0, 3.0])


def test_ties_give_zero_to_every_argument():
    for expr in [sp.Max(x, y), sp.Min(x, y), sp.Max(x, y, z), sp.Min(x, y, z), sp.Max(x, 2 * y - x)]:
        model = symgrad.Model(expr, wrt=[x, y, z])
        _, g = tape.value_and_grad(model, x=1.0, y=1.0, z=1.0)
        assert g == {"x": 0.0, "y": 0.0, "z": 0.0}, expr
    # off the tie the winner gets the whole cotangent, the others exactly 0
    _, g = tape.value_and_grad(symgrad.Model(sp.Max(x, y, z), wrt=[x, y, z]), x=1.0, y=1.0, z=2.0)
    assert g == {"x": 0.0, "y": 0.0, "z": 1.0}
    _, g = tape.value_and_grad(symgrad.Model(sp.Min(x, y, z), wrt=[x, y, z]), x=1.0, y=1.0, z=0.5)
    assert g == {"x": 0.0, "y": 0.0, "z": 1.0}
    _, g = tape.value_and_grad(symgrad.Model(sp.Min(x, y), wrt=[x, y]), x=np.array([1.0, 2.0, 3.0]), y=2.0)
    np.testing.assert_array_equal(g["x"], [1, 0, 0])
    assert g["y"] == 1.0


def test_abs_and_sign_at_zero():
    model = symgrad.Model(sp.Abs(x) + sp.sign(x) * y, wrt=[x, y])
    value, g = tape.value_and_grad(model, x=np.array([-2.0, 0.0, 3.0]), y=5.0)
    np.testing.assert_array_equal(value, [-3.0, 0.0, 8.0])
    np.testing.assert_array_equal(g["x"], [-1.0, 0.0, 1.0])
    assert g["y"] == 0.0  # sign: -1 + 0 + 1


def test_heaviside_at_zero_is_its_h0():
    at = np.array([-1.0, 0.0, 2.0])
    for expr, want in [(sp.Heaviside(x), [0.0, 0.5, 1.0]), (sp.Heaviside(x, 0), [0.0, 0.0, 1.0]),
                       (sp.Heaviside(x, 1), [0.0, 1.0, 1.0]), (sp.Heaviside(x, sp.Rational(1, 4)), [0.0, 0.25, 1.0])]:
        value, g = tape.value_and_grad(symgrad.Model(expr * y, wrt=[x, y]), x=at, y=2.0)
        np.testing.assert_array_equal(value, 2 * np.array(want), err_msg=str(expr))
        np.testing.assert_array_equal(g["x"], [0.0, 0.0, 0.0])
        assert g["y"] == sum(want)
    # older SymPy writes Heaviside(x) with one argument: the same default, 1/2
    np.testing.assert_array_equal(tape.RULES[sp.Heaviside, 1][0](at), [0.0, 0.5, 1.0])
    assert tape.RULES[sp.Heaviside, 1][1] is None
    # a symbolic H0 is an input like any other: H(x, h) is h where x == 0
    _, g = tape.value_and_grad(symgrad.Model(sp.Heaviside(x, y), wrt=[x, y]), x=at, y=0.3)
    assert g["y"] == 1.0 and np.all(g["x"] == 0)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_piecewise_without_a_true_branch_is_nan_where_nothing_holds():
    model = symgrad.Model(sp.Piecewise((x ** 2, x > 0), (-x, x < -1)), wrt=[x])
    value, g = tape.value_and_grad(model, x=np.array([2.0, -0.5, -3.0]))
    np.testing.assert_array_equal(value[[0, 2]], [4.0, 3.0])
    assert np.isnan(value[1])
    np.testing.assert_array_equal(g["x"][[0, 2]], [4.0, -1.0])
    assert np.isnan(tape.forward(model, x=0.0))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_piecewise_guard_guards_the_gradient():
    """Only the selected branch is differentiated: the other branch's NaN/inf local derivatives
    (log of a negative, 1/x at 0) must not leak through the exact zero cotangent it gets."""
    model = symgrad.Model(sp.Piecewise((x * sp.log(x), x > 0), (0, True)), wrt=[x])
    value, g = tape.value_and_grad(model, x=-1.0)
    assert value == 0.0 and g["x"] == 0.0
    value, g = tape.value_and_grad(model, x=np.array([-1.0, 0.0, 2.0]))
    np.testing.assert_array_equal(value, [0.0, 0.0, 2 * np.log(2.0)])
    np.testing.assert_array_equal(g["x"], [0.0, 0.0, np.log(2.0) + 1])
    at = np.array([-2.0, 0.0])
    for expr, want in [(sp.Piecewise((sp.sqrt(x) * y, x > 0), (y, True)), [0.0, 0.0]),  # sqrt'(0) = inf
                       (sp.Piecewise((sp.log(x) ** 2, x > 0), (x, True)), [1.0, 1.0]),  # log of <= 0
                       (sp.Piecewise((0, x <= 0), (sp.asin(x - 1), True)), [0.0, 0.0]),  # asin' off [-1, 1]
                       (sp.Piecewise((1 / x, x > 0), (x ** 2, True)), [-4.0, 0.0])]:    # 1/x at 0
        model = symgrad.Model(expr, wrt=[x])
        _, g = tape.value_and_grad(model, x=at, **({"y": 1.5} if y in expr.free_symbols else {}))
        np.testing.assert_array_equal(g["x"], want, err_msg=str(expr))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_the_losing_argument_of_max_min_gets_exactly_zero():
    for expr, at in [(sp.Max(sp.sqrt(x), 1), 0.0), (sp.Min(-sp.sqrt(x), -1), 0.0),
                     (sp.Max(sp.log(x), -5), 0.0), (sp.Min(1 / x, 2), 0.0), (sp.Max(sp.acosh(x), 3), 1.0)]:
        value, g = tape.value_and_grad(symgrad.Model(expr, wrt=[x]), x=at)
        assert np.isfinite(value) and g["x"] == 0.0, (expr, g)
    # a guarded log inside a matrix product: the NaN-free forward must give a NaN-free backward,
    # the guard's zero cotangent crossing the product (log(-1) sits in column 1 of B)
    A, B = sp.MatrixSymbol("A", 2, 2), sp.MatrixSymbol("B", 2, 2)
    logB = B.applyfunc(lambda t: sp.Piecewise((sp.log(t), t > 0), (0, True)))
    model = symgrad.Model(sp.Trace((A * logB).applyfunc(lambda t: sp.Max(t, 0))), wrt=[A, B])
    Av, Bv = np.array([[1.0, 0.5], [0.25, 1.0]]), np.array([[1.0, -1.0], [np.e, 2.0]])
    value, g = tape.value_and_grad(model, A=Av, B=Bv)
    logBv = np.where(Bv > 0, np.log(np.abs(Bv)), 0)
    mask = (Av @ logBv > 0).astype(float)
    assert value == pytest.approx(np.trace(np.maximum(Av @ logBv, 0)), rel=1e-14)
    np.testing.assert_allclose(g["A"], (np.eye(2) * mask) @ logBv.T, rtol=1e-14)
    np.testing.assert_allclose(g["B"], np.where(Bv > 0, Av.T @ (np.eye(2) * mask) / np.abs(Bv), 0), rtol=1e-14)

    # a NaN inside a matrix product, masked after it: the product's backward drops the NaN terms
    # whose cotangent is exactly 0 (column 1 of A @ log(B) is NaN and the guard sends it 0)
    logB = B.applyfunc(sp.log)
    model = symgrad.Model(sp.Trace((A * logB).applyfunc(lambda t: sp.Piecewise((t, t > 0), (0, True)))), wrt=[A, B])
    value, g = tape.value_and_grad(model, A=Av, B=Bv)
    clean = np.where(Bv > 0, np.log(np.abs(Bv)), 0.0)
    G = np.diag([1.0 if (Av @ clean)[0, 0] > 0 else 0.0, 0.0])
    assert value == pytest.approx(np.trace(Av @ clean * G), rel=1e-14)
    np.testing.assert_allclose(g["A"], G @ clean.T, rtol=1e-14)
    np.testing.assert_allclose(g["B"], np.where(Bv > 0, Av.T @ G / np.abs(Bv), 0), rtol=1e-14)
    model = symgrad.Model(sp.Trace((logB * A).applyfunc(lambda t: sp.Piecewise((t, t > 0), (0, True)))), wrt=[A, B])
    value, g = tape.value_and_grad(model, A=Av, B=Bv)  # now row 0 of log(B) @ A is NaN
    G = np.diag([0.0, 1.0 if (clean @ Av)[1, 1] > 0 else 0.0])
    assert value == pytest.approx(np.trace(clean @ Av * G), rel=1e-14)
    np.testing.assert_allclose(g["A"], clean.T @ G, rtol=1e-14)
    np.testing.assert_allclose(g["B"], np.where(Bv > 0, G @ Av.T / np.abs(Bv), 0), rtol=1e-14)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_power_derivatives_take_their_limits():
    model = symgrad.Model(x ** y, wrt=[x, y])
    _, g = tape.value_and_grad(model, x=0.0, y=2.0)
    assert g == {"x": 0.0, "y": 0.0}  # x**y log(x) -> 0 where x**y == 0
    _, g = tape.value_and_grad(model, x=np.array([0.0, 2.0]), y=3.0)
    np.testing.assert_array_equal(g["x"], [0.0, 12.0])
    assert g["y"] == pytest.approx(8 * np.log(2.0), rel=1e-14)
    _, g = tape.value_and_grad(model, x=0.0, y=0.0)
    assert g["x"] == 0.0  # x**0 == 1 near 0 as well
    _, g = tape.value_and_grad(model, x=-2.0, y=2.0)
    assert g["x"] == -4.0  # negative bases keep their (real) base derivative


# -- matrices --------------------------------------------------------------------------------------
A, B = sp.MatrixSymbol("A", N, d), sp.MatrixSymbol("B", N, d)
C, S = sp.MatrixSymbol("C", d, k), sp.MatrixSymbol("S", d, d)
u, v = sp.MatrixSymbol("u", d, 1), sp.MatrixSymbol("v", N, 1)
MATRIX_MODELS = [
    ("matmul_scalar_transpose", 2 * x * (A * C).T, [A, C, x]),
    ("matadd_hadamard", sp.HadamardProduct(A, B) + A - 3 * B, [A, B]),
    ("hadamard_power", sp.HadamardPower(A, 3) + sp.HadamardPower(B, x), [A, x]),
    ("applyfunc_lambda", (A * C).applyfunc(lambda t: sp.tanh(t) * x + t ** 2), [A, C, x]),
    ("applyfunc_class", A.applyfunc(sp.exp), [A]),
    ("trace_identity", sp.Trace(S * S.T + 2 * sp.Identity(d)) + sp.Trace(S) * x, [S, x]),
    ("ones_zeros", sp.OneMatrix(1, N) * A + sp.ZeroMatrix(1, d) + y * sp.OneMatrix(1, d), [A, y]),
    ("matpow", sp.MatPow(S, 3), [S]),
    ("element_of_1x1_sum", ((A * u - v).T * (A * u - v))[0, 0] / N, [A, u]),
    ("element_plain", A.T[1, 0] * x + v[N - 1, 0], [A, v, x]),
    ("element_of_applyfunc", (v.T * (A * u).applyfunc(sp.tanh))[0, 0], [A, u, v]),
    ("dimension_as_number", sp.Trace(A.T * A) / (N * d) + N * x, [A, x]),
]


@pytest.mark.parametrize("name, expr, wrt", MATRIX_MODELS, ids=[r[0] for r in MATRIX_MODELS])
def test_matrix_model(name, expr, wrt):
    model = symgrad.Model(expr, wrt=wrt)
    sizes = {N: 4, d: 3, k: 2}
    inputs = {str(s): rng.uniform(0.5, 1.5, size=tuple(int(n.subs(sizes)) for n in s.shape))
              for s in model.inputs if isinstance(s, sp.MatrixSymbol)}
    inputs.update({str(s): rng.uniform(0.5, 1.5) for s in model.inputs if not isinstance(s, sp.MatrixSymbol)})
    value, _ = check_against_fd(model, inputs)
    if model.is_matrix:
        assert value.shape == tuple(int(n.subs(sizes)) for n in model.shape)
    else:
        assert value.shape == ()


def test_concrete_shapes_expand_to_elements():
    P, q = sp.MatrixSymbol("P", 3, 2), sp.MatrixSymbol("q", 2, 1)
    model = symgrad.Model(((P * q).T * (P * q))[0, 0], wrt=[P, q])
    inputs = {"P": rng.normal(size=(3, 2)), "q": rng.normal(size=(2, 1))}
    value, _ = check_against_fd(model, inputs)
    assert value == pytest.approx(np.sum((inputs["P"] @ inputs["q"]) ** 2))


# -- broadcasting, dtypes, shapes ------------------------------------------------------------------
def test_scalar_symbols_broadcast_and_gradients_unbroadcast():
    model = symgrad.Model(sp.sin(x) * y + x * z ** 2, wrt=[x, y, z])
    inputs = {"x": rng.normal(size=(3, 1)), "y": rng.normal(size=(4,)), "z": 0.7}
    value, grads = check_against_fd(model, inputs)
    assert value.shape == (3, 4)
    assert grads["x"].shape == (3, 1) and grads["y"].shape == (4,) and np.shape(grads["z"]) == ()


def test_bias_row_gets_a_row_gradient():
    X, b = sp.MatrixSymbol("X", N, d), sp.MatrixSymbol("b", 1, d)
    model = symgrad.Model(sp.HadamardProduct(X, X) + sp.OneMatrix(N, 1) * b, wrt=[b])
    _, grads = tape.value_and_grad(model, X=np.ones((5, 3)), b=np.zeros((1, 3)))
    np.testing.assert_array_equal(grads["b"], np.full((1, 3), 5.0))


def test_float32_in_float32_out():
    X, W = sp.MatrixSymbol("X", N, d), sp.MatrixSymbol("W", d, 1)
    expr = (X * W).applyfunc(lambda t: sp.tanh(t) / 2 + sp.pi * t ** 2 + 1 / N)
    model = symgrad.Model(expr * x, wrt=[W, x])
    inputs = {"X": rng.normal(size=(4, 3)).astype(np.float32),
              "W": rng.normal(size=(3, 1)).astype(np.float32), "x": 1.5}
    value, grads = tape.value_and_grad(model, **inputs)
    assert value.dtype == np.float32 and grads["W"].dtype == np.float32
    assert np.asarray(grads["x"]).dtype == np.float32 and np.shape(grads["x"]) == ()
    value64, grads64 = tape.value_and_grad(model, **{n: np.float64(a) if n == "x" else a.astype(np.float64)
                                                    for n, a in inputs.items()})
    np.testing.assert_allclose(value, value64, rtol=1e-5)
    np.testing.assert_allclose(grads["W"], grads64["W"], rtol=1e-4)


def test_python_numbers_bools_and_integer_arrays_bind_as_float64():
    model = symgrad.Model(x ** 2 * y + sp.exp(y), wrt=[x, y])
    want_v, want_g = tape.value_and_grad(model, x=np.array([1.0, 2.0, 3.0]), y=np.float64(1.0))
    for xv, yv in [(np.array([1, 2, 3]), 1), (np.array([1, 2, 3], dtype=np.int8), True),
                   (np.array([1.0, 2.0, 3.0]), 1.0), ([1, 2, 3], np.int64(1)), (np.array([1, 2, 3], np.uint16), 1.0)]:
        value, g = tape.value_and_grad(model, x=xv, y=yv)
        assert value.dtype == np.float64 and all(a.dtype == np.float64 for a in g.values()), (xv, yv)
        np.testing.assert_array_equal(value, want_v)
        np.testing.assert_array_equal(g["x"], want_g["x"])
        assert np.shape(g["y"]) == () and g["y"] == want_g["y"]
    value, g = tape.value_and_grad(model, x=np.array([True, False]), y=2)
    np.testing.assert_array_equal(value, [2.0 + np.exp(2.0), np.exp(2.0)])
    np.testing.assert_array_equal(g["x"], [4.0, 0.0])
    assert tape.value_and_grad(model, x=3, y=0)[1] == {"x": 0.0, "y": 10.0}
    assert tape.forward(symgrad.Model(x / 2), x=3).dtype == np.float64  # no integer division


def test_float32_stays_float32_but_integer_arrays_count_as_float64():
    model = symgrad.Model(x * y, wrt=[x, y])
    f32 = np.ones(3, np.float32)
    for other, dt in [(2, np.float32), (2.5, np.float32), (True, np.float32), (np.float32(2), np.float32),
                      (np.ones(3, np.float32), np.float32), (np.arange(3), np.float64),
                      (np.float64(2), np.float64), (np.ones(3), np.float64)]:
        value, g = tape.value_and_grad(model, x=f32, y=other)
        assert value.dtype == dt and g["x"].dtype == dt and np.asarray(g["y"]).dtype == dt, (other, dt)
        assert np.shape(g["y"]) == np.shape(other)


@pytest.mark.parametrize("bad", [1j, np.complex128(1), np.ones(2, np.complex64), None, "1.0", b"1",
                                 object(), [1.0, "a"], {"a": 1}, np.array(["x"]), np.array([None])],
                         ids=lambda b: type(b).__name__)
def test_complex_and_non_numeric_inputs_are_type_errors_naming_the_input(bad):
    model = symgrad.Model(x * y + sp.Trace(sp.MatrixSymbol("Q", 2, 2)), wrt=[x])
    good = {"x": 1.0, "y": 2.0, "Q": np.eye(2)}
    for name in good:
        for fn in (tape.forward, tape.value_and_grad):
            with pytest.raises(TypeError, match=f"input '{name}'"):
                fn(model, **{**good, name: bad})


def test_results_never_alias_the_inputs():
    X = sp.MatrixSymbol("X", 2, 2)
    xv, Xv = np.array([1.0, 2.0]), np.eye(2)
    value = tape.forward(symgrad.Model(x), x=xv)
    value[...] = 7
    assert xv.tolist() == [1.0, 2.0]
    value, g = tape.value_and_grad(symgrad.Model(X, wrt=[X]), X=Xv)
    value[...] = 7
    g["X"][...] = 7
    assert Xv.tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_wrt_absent_from_expr_gets_zeros():
    model = symgrad.Model(x ** 2, wrt=[x, y])
    _, grads = tape.value_and_grad(model, x=np.array([1.0, 2.0]), y=np.ones((2, 2)))
    np.testing.assert_array_equal(grads["x"], [2.0, 4.0])
    np.testing.assert_array_equal(grads["y"], np.zeros((2, 2)))


def test_python_keyword_input_name():
    lam = sp.Symbol("lambda")
    model = symgrad.Model(lam * x ** 2, wrt=[lam])
    _, grads = tape.value_and_grad(model, **{"lambda": 0.5, "x": 3.0})
    assert grads == {"lambda": 9.0}


# -- deep and shared expressions -------------------------------------------------------------------
def test_deep_chain_does_not_recurse():
    depth = 300
    ws, bs = sp.symbols(f"w0:{depth}"), sp.symbols(f"b0:{depth}")
    h = x
    for w, b in zip(ws, bs):
        h = sp.tanh(w * h + b)
    limit = sys.getrecursionlimit()
    try:
        sys.setrecursionlimit(10_000)  # SymPy's own free_symbols (used by Model) recurses
        model = symgrad.Model(h, wrt=[x, *ws[:2], *bs[-2:]])
        # the tape must not: run it with ~100 frames to spare, far fewer than the depth of h
        sys.setrecursionlimit(len(inspect.stack()) + 100)
        wv, bv = rng.uniform(0.5, 1.5, depth), rng.uniform(-0.1, 0.1, depth)
        inputs = {"x": 0.3, **{str(w): a for w, a in zip(ws, wv)}, **{str(b): a for b, a in zip(bs, bv)}}
        value, grads = tape.value_and_grad(model, **inputs)
    finally:
        sys.setrecursionlimit(limit)
    hs = [0.3]  # hand-written forward and backward loops
    for a, c in zip(wv, bv):
        hs.append(np.tanh(a * hs[-1] + c))
    g, gb = 1.0, []
    for i in reversed(range(depth)):
        g_pre = g * (1 - hs[i + 1] ** 2)
        gb.append(g_pre)
        if i < 2:
            assert grads[str(ws[i])] == pytest.approx(g_pre * hs[i], rel=1e-10)
        g = g_pre * wv[i]
    assert value == pytest.approx(hs[-1], rel=1e-12)
    assert grads["x"] == pytest.approx(g, rel=1e-10)
    assert grads[str(bs[-1])] == pytest.approx(gb[0], rel=1e-10)


def test_shared_subexpressions_are_evaluated_once(monkeypatch):
    e = x
    for _ in range(12):  # a DAG of 36 operations whose tree has ~2**13 nodes
        e = sp.sin(e) * sp.cos(e)
    calls = []
    real_op = tape._op
    monkeypatch.setattr(tape, "_op", lambda rule, *args: calls.append(rule) or real_op(rule, *args))
    model = symgrad.Model(e, wrt=[x])
    check_against_fd(model, {"x": 0.4})
    assert len(calls) <= 3 * 12 * (1 + 4 * 1)  # one value_and_grad + 4 forwards (fd)


# -- errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("expr, name", [
    (sp.Function("f")(x) + 1, "f"),
    (sp.besselk(1, x) * 2, "besselk"),
    (sp.I * x, "ImaginaryUnit"),
    (sp.Trace(sp.MatPow(sp.MatrixSymbol("M", N, N), sp.Rational(1, 2))), "MatPow"),
])
def test_unsupported_construct_names_it(expr, name):
    model = symgrad.Model(expr)
    inputs = {str(s): np.eye(2) if isinstance(s, sp.MatrixSymbol) else 0.5 for s in model.inputs}
    with pytest.raises(SymgradError, match=name):
        tape.value_and_grad(model, **inputs)


def test_bad_inputs_are_user_errors():
    model = symgrad.Model(x * y, wrt=[x])
    with pytest.raises(SymgradError, match="missing input y"):
        tape.forward(model, x=1.0)
    with pytest.raises(SymgradError, match="unexpected input"):
        tape.forward(model, x=1.0, y=2.0, q=3.0)


def test_sum_to():
    g = np.ones((2, 3, 4))
    np.testing.assert_array_equal(tape.sum_to(g, (3, 1)), np.full((3, 1), 8.0))
    assert tape.sum_to(g, ()).shape == () and tape.sum_to(g, ()) == 24.0
