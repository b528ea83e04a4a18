"""Lowering SymPy to the IR, issue 25 ("Trust, third round"): constructs that gave a wrong answer,
a bare Python error or a message about something the user never wrote.

Expected numbers come from NumPy written by hand, the runtime tape and float64 central
differences: never from the compiler under test.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad import SymgradError, tape

from _oracles import assert_matches_oracles

x = sp.Symbol("x")
i, j, k = sp.symbols("i j k", integer=True)


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


@pytest.mark.parametrize("expr", [s * X2, sp.Trace(s * X2), sp.Trace(X2.applyfunc(lambda t: sp.exp(s * t))),
                                  sp.Sum(s * X2[i, 0], (i, 0, 1))],
                         ids=["matrix value", "trace", "applyfunc", "indexed sum"])
@pytest.mark.parametrize("shape", [(3,), (2, 2), (3, 2, 2), (1, 1, 1)])
@pytest.mark.parametrize("target", ["numpy", "numba"])
def test_scalar_input_of_a_matrix_model_bound_to_an_array_names_it(expr, shape, target):
    pytest.importorskip(target)
    model = symgrad.Model(expr, wrt=[s, X2], name="scaled")
    module = symgrad.compile(model, target)
    for run in (module.forward, module.value_and_grad,
                lambda **kw: tape.value_and_grad(model, **kw)):
        with pytest.raises(ValueError, match=r"input 's' is a scalar Symbol used inside a matrix expression.*"
                                             + repr(shape).replace("(", r"\(").replace(")", r"\)")):
            run(s=np.ones(shape), X=X_VAL)


@pytest.mark.parametrize("value", [2.5, np.float64(2.5), np.array(2.5), np.float32(2.5), 2])
def test_scalar_input_of_a_matrix_model_as_one_number(value):
    model = symgrad.Model(sp.HadamardPower(s * X2, 2), wrt=[s, X2])
    module = symgrad.compile(model)
    out = module.forward(s=value, X=X_VAL)
    assert np.allclose(out, (float(value) * X_VAL) ** 2)          # NumPy, by hand
    assert_matches_oracles(model, module, {"s": float(value), "X": X_VAL})


def test_scalar_inputs_outside_matrices_still_broadcast():
    model = symgrad.Model(s ** 2 * x + sp.Trace(X2.T * X2) * x, wrt=[s, x, X2])
    inputs = {"s": np.arange(3.0), "x": np.ones((2, 1)), "X": X_VAL}
    value, grads = symgrad.compile(model).value_and_grad(**inputs)
    assert value.shape == (2, 3) and np.allclose(grads["s"], 2 * np.arange(3.0) * 2)
    assert_matches_oracles(model, symgrad.compile(model), inputs)


@pytest.mark.parametrize("shape", [(1,), (1, 1)])
def test_scalar_input_of_a_matrix_model_as_one_entry_broadcasts_like_the_number(shape):
    model = symgrad.Model(sp.HadamardPower(s * X2, 2), wrt=[s, X2])
    module = symgrad.compile(model)
    value, grads = module.value_and_grad(s=np.full(shape, 1.5), X=X_VAL)
    assert value.shape == (2, 2) and np.allclose(value, (1.5 * X_VAL) ** 2)
    assert np.shape(grads["s"]) == shape and np.allclose(grads["s"], np.sum(2 * 1.5 * X_VAL ** 2))
    assert_matches_oracles(model, module, {"s": np.full(shape, 1.5), "X": X_VAL})


# -- 12. IndexedBase sums over a fixed second index, explicit matrices of expressions ----------------
NS = sp.Symbol("N")
K_, D_ = 3, 2


def _gmm_like():
    """An ADBench-style Gaussian-mixture objective: K and d fixed, N symbolic; each component's
    precision factor is diagonal exp(icf[k, 0..d-1]) plus icf[k, d] below the diagonal (packed)."""
    X = sp.IndexedBase("X", shape=(NS, D_))
    means, icf = sp.IndexedBase("means", shape=(K_, D_)), sp.IndexedBase("icf", shape=(K_, D_ + 1))
    alphas = sp.IndexedBase("alphas", shape=(K_,))
    d0, d1 = X[i, 0] - means[k, 0], X[i, 1] - means[k, 1]
    q0 = sp.exp(icf[k, 0]) * d0                                # (Q_k (x_i - mu_k))_0
    q1 = icf[k, 2] * d0 + sp.exp(icf[k, 1]) * d1               # (Q_k (x_i - mu_k))_1
    inner = alphas[k] + icf[k, 0] + icf[k, 1] - (q0 ** 2 + q1 ** 2) / 2
    expr = sp.Sum(sp.log(sp.Sum(sp.exp(inner), (k, 0, K_ - 1))), (i, 0, NS - 1))
    return symgrad.Model(expr, wrt=[alphas, means, icf], name="gmm")


def _gmm_numpy(X, means, icf, alphas):
    out = 0.0
    for x in X:
        terms = []
        for kk in range(K_):
            Q = np.array([[np.exp(icf[kk, 0]), 0.0], [icf[kk, 2], np.exp(icf[kk, 1])]])
            q = Q @ (x - means[kk])
            terms.append(alphas[kk, 0] + icf[kk, 0] + icf[kk, 1] - q @ q / 2)
        out += np.log(np.sum(np.exp(terms)))
    return out


def test_indexed_sum_over_fixed_columns_and_three_indices():
    """Before: "X[i, 0] picks column 0 of X ... SymPy writes a product over an integer dimension" and
    "a value with more than two free indices (k, j, i) is not a matrix"."""
    model = _gmm_like()
    module = symgrad.compile(model)
    rng = np.random.default_rng(3)
    inputs = {"X": rng.standard_normal((7, D_)), "means": rng.standard_normal((K_, D_)),
              "icf": 0.3 * rng.standard_normal((K_, D_ + 1)), "alphas": rng.standard_normal((K_, 1))}
    assert module.forward(**inputs) == pytest.approx(_gmm_numpy(**inputs), rel=1e-12)
    assert_matches_oracles(model, module, inputs)


def test_squared_distance_sum_over_three_indices():
    X, means = sp.IndexedBase("X", shape=(NS, D_)), sp.IndexedBase("means", shape=(K_, D_))
    expr = sp.Sum(sp.exp(-sp.Sum((X[i, j] - means[k, j]) ** 2, (j, 0, D_ - 1))), (k, 0, K_ - 1), (i, 0, NS - 1))
    model = symgrad.Model(expr, wrt=[means], name="rbf")
    module = symgrad.compile(model)
    rng = np.random.default_rng(4)
    inputs = {"X": rng.standard_normal((6, D_)), "means": rng.standard_normal((K_, D_))}
    want = np.exp(-((inputs["X"][:, None, :] - inputs["means"][None]) ** 2).sum(-1)).sum()
    assert module.forward(**inputs) == pytest.approx(want, rel=1e-12)
    assert_matches_oracles(model, module, inputs)


a_, b_, c_ = sp.symbols("a b c")


@pytest.mark.parametrize("target", ["numpy", "numba"])
def test_explicit_matrix_of_expressions_inside_a_matrix_expression(target):
    """Before: "unsupported SymPy construct ImmutableDenseMatrix"."""
    pytest.importorskip(target)
    Y = sp.MatrixSymbol("Y", NS, 2)
    L = sp.Matrix([[sp.exp(a_), 0], [b_, sp.exp(c_)]])        # a Cholesky factor, packed
    E = Y * L
    model = symgrad.Model(sp.Trace(E.T * E) / 2 - sp.log(sp.Determinant(L))
                          + sp.Trace(sp.Matrix([[a_, b_]]) * Y.T * Y * sp.Matrix([[c_], [1]])),
                          wrt=[a_, b_, c_, Y], name="chol")
    module = symgrad.compile(model, target)
    rng = np.random.default_rng(5)
    inputs = {"a": 0.3, "b": -0.7, "c": 0.1, "Y": rng.standard_normal((5, 2))}
    Lv = np.array([[np.exp(0.3), 0.0], [-0.7, np.exp(0.1)]])
    want = (np.sum((inputs["Y"] @ Lv) ** 2) / 2 - np.log(np.linalg.det(Lv))
            + np.array([[0.3, -0.7]]) @ inputs["Y"].T @ inputs["Y"] @ np.array([[0.1], [1.0]]))
    assert np.allclose(module.forward(**inputs), want, rtol=1e-12, atol=0)
    assert_matches_oracles(model, module, inputs)
    assert_matches_oracles(model, module, {**inputs, "b": np.array([[-0.7]])})   # one entry, (1, 1)


# -- 12. shifted indices: Rosenbrock's sum, one compile for every n ------------------------------------
n_ = sp.Symbol("n")


def _rosenbrock():
    x_ = sp.IndexedBase("x")
    expr = sp.Sum(100 * (x_[i + 1] - x_[i] ** 2) ** 2 + (1 - x_[i]) ** 2, (i, 0, n_ - 2))
    return symgrad.Model(expr, name="rosen")


def test_rosenbrock_sum_value_and_gradient_at_every_n():
    """Before: refused, the message naming x[i + 1, 0] (an index the model never wrote)."""
    model = _rosenbrock()
    module = symgrad.compile(model)                    # one module, n read from x at call time
    for n in (2, 3, 10):
        v = np.random.default_rng(n).uniform(-1.5, 1.5, (n, 1))
        want = sum(100 * (v[t + 1, 0] - v[t, 0] ** 2) ** 2 + (1 - v[t, 0]) ** 2 for t in range(n - 1))
        grad = np.zeros(n)                             # by hand
        for t in range(n - 1):
            grad[t] += -400 * v[t, 0] * (v[t + 1, 0] - v[t, 0] ** 2) - 2 * (1 - v[t, 0])
            grad[t + 1] += 200 * (v[t + 1, 0] - v[t, 0] ** 2)
        value, grads = module.value_and_grad(x=v)
        assert value == pytest.approx(want, rel=1e-13)
        assert np.allclose(grads["x"][:, 0], grad, rtol=1e-12, atol=1e-12)
        assert_matches_oracles(model, module, {"x": v})


def test_a_part_of_an_axis_never_reads_past_it():
    """log(x[i + 1]) summed for i up to n - 2: the shifted x is 0 past its end, where log is -inf;
    the part summed selects it away, in the value and the gradient."""
    x_ = sp.IndexedBase("x")
    model = symgrad.Model(sp.Sum(sp.log(x_[i + 1]) * x_[i], (i, 0, n_ - 2)), name="logshift")
    module = symgrad.compile(model)
    v = np.array([[0.5], [2.0], [3.0], [1.5]])
    with np.errstate(divide="ignore", invalid="ignore"):
        value, grads = module.value_and_grad(x=v)
    assert value == pytest.approx(sum(np.log(v[t + 1, 0]) * v[t, 0] for t in range(3)), rel=1e-13)
    assert np.all(np.isfinite(grads["x"]))
    assert_matches_oracles(model, module, {"x": v})


@pytest.mark.parametrize("target", ["numpy", "numba"])
def test_a_part_of_an_axis_is_never_computed_from_the_padding(target):
    """Before: the shifted x is 0 past its end, and log(0), 1/0 were computed there (then selected
    away): a divide-by-zero warning on every call at valid inputs, a FloatingPointError under
    np.seterr(all="raise").  Now those entries are computed from entries inside the part."""
    pytest.importorskip(target)
    x_ = sp.IndexedBase("x")
    body = sp.log(x_[i + 1]) / x_[i - 1] + sp.sqrt(x_[i - 1]) * sp.log(x_[i + 1] - x_[i])
    model = symgrad.Model(sp.Sum(body, (i, 1, n_ - 2)), name="padding")
    module = symgrad.compile(model, target, emit=["grad", "jvp", "hvp"])
    v = np.array([[0.5], [2.0], [3.0], [4.5], [6.0]])           # increasing: log(x[i+1] - x[i]) defined
    u = np.array([[0.3], [-1.0], [0.7], [0.2], [-0.4]])
    want = sum(np.log(v[t + 1, 0]) / v[t - 1, 0] + np.sqrt(v[t - 1, 0]) * np.log(v[t + 1, 0] - v[t, 0])
               for t in range(1, 4))
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        value, grads = module.value_and_grad(x=v)
        forward = module.forward(x=v)
        jvp = module.jvp({"x": u}, x=v)
        hvp = module.hvp({"x": u}, x=v)
    assert value == pytest.approx(want, rel=1e-13) and forward == pytest.approx(want, rel=1e-13)
    assert np.all(np.isfinite(hvp[-1]["x"]))
    assert float(np.ravel(jvp[-1])[0]) == pytest.approx(float(np.sum(grads["x"] * u)), rel=1e-12)
    assert_matches_oracles(model, module, {"x": v})


@pytest.mark.parametrize("entry", [
    lambda: sp.IndexedBase("X", shape=(NS, 2))[i, -1],
    lambda: sp.MatrixSymbol("X", NS, 2)[i, -1],
    lambda: sp.MatrixSymbol("X", 2, NS)[-1, i],
])
def test_a_negative_fixed_index_under_a_sum_is_refused(entry):
    """Before: X[i, -1] became the slice X[:, -1:0], empty: a bare NumPy ValueError from matmul at
    call time ("mismatch in its core dimension")."""
    with pytest.raises(SymgradError, match=r"X\[.*-1.*negative index -1"):
        symgrad.generate(symgrad.Model(sp.Sum(entry() ** 2, (i, 0, NS - 1)), name="neg"), "numpy")


def test_two_sums_over_one_dummy_with_other_bounds_read_their_own_lengths():
    """Before: the lengths of IndexedBases without a shape were read from one range per dummy (the
    last Sum's), so A's rows came out n, not m: "dimension m ... is not a dimension of any
    MatrixSymbol input"."""
    x_, A_ = sp.IndexedBase("x"), sp.IndexedBase("A")
    m_ = sp.Symbol("m")
    expr = (sp.Sum(A_[i + 1, j] * A_[i, j] ** 2, (i, 0, m_ - 2), (j, 0, n_ - 1))
            + sp.Sum(sp.log(x_[i + 1]) * x_[i], (i, 0, n_ - 2)))
    model = symgrad.Model(expr, name="twodummies")
    module = symgrad.compile(model)
    rng = np.random.default_rng(8)
    inputs = {"A": rng.uniform(0.5, 2.0, (3, 5)), "x": rng.uniform(0.5, 2.0, (5, 1))}
    A, v = inputs["A"], inputs["x"][:, 0]
    want = np.sum(A[1:] * A[:-1] ** 2) + np.sum(np.log(v[1:]) * v[:-1])
    assert module.forward(**inputs) == pytest.approx(want, rel=1e-13)
    assert_matches_oracles(model, module, inputs)


@pytest.mark.parametrize("body, bounds, why", [
    (lambda x_: x_[2 * i], (0, n_ - 1), r"x\[2\*i\].*summation index plus an integer"),
    (lambda x_: x_[i + 2] * x_[i], (0, n_ - 2), r"x\[i \+ 2\] runs past an end"),
])
def test_unsupported_shifts_name_the_entry_as_written(body, bounds, why):
    x_ = sp.IndexedBase("x", shape=(n_,))
    with pytest.raises(SymgradError, match=why):
        symgrad.generate(symgrad.Model(sp.Sum(body(x_), (i, *bounds)), name="bad"), "numpy")


def test_product_over_an_integer_dimension_written_out_entry_by_entry():
    """SymPy writes (ones*tanh(v*r*Q)*ones)[0, 0] with Q 3 x 2 as Sums over Q[0, j], Q[1, j], Q[2, j]
    (before: "SymPy writes a product over an integer dimension out entry by entry")."""
    v = sp.MatrixSymbol("v", NS, 1)
    r, Q = sp.MatrixSymbol("r", 1, 3), sp.MatrixSymbol("Q", 3, 2)
    expr = (sp.OneMatrix(1, NS) * (v * r * Q).applyfunc(sp.tanh) * sp.OneMatrix(2, 1))[0, 0]
    assert isinstance(expr, sp.Sum)
    model = symgrad.Model(expr, wrt=[r, Q])
    module = symgrad.compile(model)
    rng = np.random.default_rng(6)
    inputs = {"v": rng.standard_normal((4, 1)), "r": rng.standard_normal((1, 3)), "Q": rng.standard_normal((3, 2))}
    assert module.forward(**inputs) == pytest.approx(np.tanh(inputs["v"] @ inputs["r"] @ inputs["Q"]).sum(), rel=1e-13)
    assert_matches_oracles(model, module, inputs)
