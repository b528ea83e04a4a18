"""One row per op: generated code == runtime tape == finite differences, in float64.

Scalar rows bind x to a (4, 3) array and y to a (3,) row, so every binary rule is also checked
under broadcasting (y's gradient is summed over rows).  Matrix rows use symbolic dimensions.
A last test proves that every op of the table is exercised by some row.
"""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from sympy.codegen import cfunctions

import symgrad
from symgrad.diff import gradients
from symgrad.ir import topo_order
from symgrad.lower import leaf_shape, lower
from symgrad.ops import OPS
from symgrad.rewrites import graph

from _oracles import assert_matches_oracles, rel_err

x, y = sp.symbols("x y")
sig = lambda t: 1 / (1 + sp.exp(-t))  # noqa: E731

# name -> (expression, domain of x, domain of y); domains: "real" (|v| in [0.2, 1.5], either
# sign: away from kinks at 0), "pos" ([0.5, 2]), "unit" (|v| in [0.1, 0.8])
SCALAR_ROWS = {
    "add": (x + y, "real", "real"),
    "sub": (x - 3 * y, "real", "real"),
    "mul": (x * y, "real", "real"),
    "div": (x / y, "real", "pos"),
    "neg": (-x * sp.exp(y), "real", "real"),
    "pow_int": (x ** 3 + y ** -2, "real", "pos"),
    "pow_var": (x ** y, "pos", "real"),
    "pow_half": (x ** sp.Rational(1, 2) + y ** sp.Rational(-1, 2), "pos", "pos"),
    "exp": (sp.exp(x * y), "real", "real"),
    "log": (sp.log(x) * y, "pos", "real"),
    "sin": (sp.sin(x + y), "real", "real"),
    "cos": (sp.cos(x * y), "real", "real"),
    "tan": (sp.tan(x) + y, "unit", "real"),
    "tanh": (sp.tanh(x * y), "real", "real"),
    "sinh": (sp.sinh(x) * y, "real", "real"),
    "cosh": (sp.cosh(x - y), "real", "real"),
    "arcsin": (sp.asin(x) * y, "unit", "real"),
    "arccos": (sp.acos(x) + y, "unit", "real"),
    "arctan": (sp.atan(x * y), "real", "real"),
    "arcsinh": (sp.asinh(x * y), "real", "real"),
    "arccosh": (sp.acosh(1 + x * x) * y, "real", "real"),
    "arctanh": (sp.atanh(x) + y, "unit", "real"),
    "arctan2": (sp.atan2(y, x), "real", "real"),
    "real_parts": (sp.re(x) * y + sp.im(x) + sp.arg(y) * x + sp.conjugate(y), "real", "real"),
    "ite": (sp.Piecewise((x, sp.ITE(x > 0, y > 0, y < 0)), (y, True)), "real", "real"),
    "sqrt": (sp.sqrt(x + y), "pos", "pos"),
    "abs": (sp.Abs(x) * y, "real", "real"),
    "sign": (sp.sign(x) * y + x, "real", "real"),
    "sigmoid": (sig(x * y), "real", "real"),
    "softplus": (sp.log(1 + sp.exp(x - y)), "real", "real"),
    "log_sigmoid": (sp.log(sig(x)) + sp.log(1 - sig(y)), "real", "real"),
    "maximum": (sp.Max(x, y) + sp.Max(x, 0) + sp.Max(x, -y, y / 2), "real", "real"),  # and three arguments
    "minimum": (sp.Min(x, 2 * y, 1), "real", "real"),
    "piecewise": (sp.Piecewise((x ** 2, x > 0), (y * x, x <= -0.5), (-y, True)), "real", "real"),
    "relations": (sp.Piecewise((x, sp.Eq(x, y) | (x >= y)), (y, sp.Ne(x, 0) & (x < 1)), (x * y, True)),
                  "real", "real"),
    "logic_not": (sp.Piecewise((x, sp.Not((x < 0) & (y > 0))), (y, True)), "real", "real"),
    "heaviside": (sp.Heaviside(x) * y + sp.Heaviside(y, 1) * x, "real", "real"),
    "constants": (sp.pi * x + sp.E * y + sp.Rational(3, 7), "real", "real"),
    "log1p": (sp.log(1 + x * x) * y + cfunctions.log1p(y * y), "real", "real"),
    "expm1": (sp.exp(x * y) - 1 + cfunctions.expm1(y) * x, "real", "real"),
    "log1mexp": (sp.log(1 - sp.exp(-x * x - y * y)), "real", "real"),
    # lowered through the table's ops: cot, sec, csc, sinc; floor / ceiling / frac / Mod (derivative 0
    # or 1 away from their jumps, which the domains keep away from: x in [0.2, 1.5] times 3.1 + 0.05)
    "trig_extras": (sp.cot(x) + sp.sec(x * y) + sp.csc(y + 3), "unit", "unit"),
    "sinc": (sp.sinc(x * y) + sp.sinc(3 * x), "real", "real"),
    "floor": (sp.floor(3.1 * x + 0.05) * y + sp.frac(2.1 * x + 0.05) * y, "real", "real"),
    "ceil": (sp.ceiling(3.1 * x + 0.05) * y * y, "real", "real"),
    "mod": (sp.Mod(7 * x, 2.5 + y) + sp.Mod(y, 0.3) * x, "real", "unit"),
    # a symgrad.Function of the user's (here NumPy's own sinh, with cosh as its derivative)
    "call": (symgrad.Function("user_sinh", "numpy:sinh", derivative="numpy:cosh")(x * y), "real", "real"),
    # special functions (scipy.special in the module; CUDA built-ins, cupyx for polygamma)
    "erf": (sp.erf(x * y) + sp.erfc(x - y), "real", "real"),
    "erfinv": (sp.erfinv(x) * y, "unit", "real"),
    "gamma": (sp.gamma(x + 2) * y, "real", "real"),
    "loggamma": (sp.loggamma(x) + sp.loggamma(x * y + 3), "pos", "real"),
    "polygamma": (sp.digamma(x + y) + sp.polygamma(2, x) * y, "pos", "pos"),
    "beta": (sp.beta(x + 1, y) + sp.beta(y, 2) * x, "pos", "pos"),  # lowered through loggamma
    "bessel": (sp.besselj(1, x * y) + sp.besselj(0, x) * y + sp.besselj(sp.Rational(3, 2), x * x)
               + sp.besseli(2, x - y) + sp.besseli(sp.Rational(1, 2), y * y) * x, "real", "real"),
    "expint": (sp.expint(1, x * y) + sp.expint(3, x) * y + sp.E1(y), "pos", "pos"),
    "lambertw": (sp.LambertW(x * y / 3) + sp.LambertW(x + 2) * y, "unit", "unit"),  # x y / 3 > -1/e
}
# rows whose functions the CuPy target refuses at compile time (cupyx.scipy.special has no jv, iv)
NUMPY_ONLY = {"bessel"}


def _sample(rng, shape, domain):
    if domain == "pos":
        return rng.uniform(0.5, 2.0, shape)
    lo, hi = (0.1, 0.8) if domain == "unit" else (0.2, 1.5)
    return rng.uniform(lo, hi, shape) * rng.choice([-1.0, 1.0], shape)


@pytest.mark.parametrize("name", sorted(SCALAR_ROWS))
def test_scalar_op(name):
    expr, dx, dy = SCALAR_ROWS[name]
    model = symgrad.Model(expr, wrt=[x, y], name=name)
    rng = np.random.default_rng(7)
    inputs = {"x": _sample(rng, (4, 3), dx), "y": _sample(rng, (3,), dy)}
    assert_matches_oracles(model, symgrad.compile(model), inputs)


N, d, k = sp.symbols("N d k")
X = sp.MatrixSymbol("X", N, d)
W = sp.MatrixSymbol("W", d, k)
b = sp.MatrixSymbol("b", 1, k)
S = sp.MatrixSymbol("S", d, d)
v = sp.MatrixSymbol("v", N, 1)
lam = sp.Symbol("lam")
Y = sp.MatrixSymbol("Y", N, k)
Z = X * W + sp.OneMatrix(N, 1) * b

P = sp.MatrixSymbol("P", 4, 3)  # integer dimensions: slices with integer bounds
Q = sp.MatrixSymbol("Q", 2, 2)
u = sp.MatrixSymbol("u", d, 1)
xi, wi, ui, yi, Xi = (sp.IndexedBase(n) for n in ("xi", "wi", "ui", "yi", "Xi"))
ci = sp.IndexedBase("ci", shape=(3,))
ii, jj, jx = sp.Symbol("i"), sp.Symbol("jj"), sp.Idx("j", d)

MATRIX_ROWS = {
    "matmul_bias": (Z, [W, b]),
    # shifted indices and sums over part of an axis, along both axes (shift, a where selects the part)
    "shift": (sp.Sum(sp.tanh(X[ii + 1, jj]) * X[ii, jj - 1], (ii, 0, N - 2), (jj, 1, d - 1)), [X]),
    "explicit_matrix": (sp.Matrix([[sp.exp(lam), 0], [lam, 1]]) * Q, [Q, lam]),  # onehot per entry
    "entry": (sp.exp(W[1, 0]) * b.T[1, 0] * X, [W, b]),       # integer indices into larger matrices
    "transpose": (sp.Transpose(Z) * X, [W, b, X]),
    "row_sum": (sp.OneMatrix(1, N) * Z.applyfunc(sp.tanh), [W, b]),
    "col_sum": (Z.applyfunc(sp.exp) * sp.OneMatrix(k, 1), [W]),
    "hadamard": (sp.HadamardProduct(Z, Z.applyfunc(sp.sin)), [W, b]),
    "hadamard_power": (sp.HadamardPower(Z, 3), [W, b]),
    "item_dot": ((v.T * v)[0, 0] / N, [v]),
    "item_mse": (((X * W * sp.OneMatrix(k, 1) - v).T * (X * W * sp.OneMatrix(k, 1) - v))[0, 0], [W]),
    "trace_product": (sp.Trace(Z.T * Z) / N, [W, b]),
    "trace_square": (sp.Trace(S) + sp.Trace(S * S), [S]),
    "identity": (S + lam * sp.Identity(d), [S, lam]),
    "scalar_times_matrix": (lam * Z + 2 * X * W, [W, b, lam]),
    "relu": (Z.applyfunc(lambda t: sp.Max(t, 0)), [W, b]),
    "zero_matrix": (X * W + sp.ZeroMatrix(N, k), [W]),
    "matpow": (S ** 2, [S]),
    # slices: integer bounds and steps, or a whole (symbolic) axis; a returned slice is copied
    "slice": (sp.Trace(Z[:, :1].T * Z[:, 1:2]) + sp.Trace(P[1:3, 0:2:2].T * P[::2, 1:2]), [W, b, P]),
    "slice_value": (P[1:, :] * lam + P[:2:2, :].T * P[:1, :], [P, lam]),  # steps divide the extents: NumPy = SymPy
    # diagonals: DiagMatrix of a column and of a row, DiagonalOf a square matrix
    "diag": (sp.Trace(sp.DiagMatrix(X * W * sp.OneMatrix(k, 1)) * sp.DiagMatrix(v)) * lam
             + sp.Trace(sp.DiagonalOf(S).T * S * sp.DiagonalOf(S)) + sp.Trace(sp.DiagMatrix(b) * W.T * W),
             [W, v, S, lam, b]),
    # linear algebra (S + 5 I is diagonally dominant: invertible, det > 0)
    "inverse": ((S + 5 * sp.Identity(d)) ** -1 * lam, [S, lam]),
    "solve": (sp.Trace(X * (S + 5 * sp.Identity(d)) ** -1 * X.T) + sp.Trace(X.T * X * sp.Inverse(S + 5 * sp.Identity(d))), [S, X]),
    "det": (sp.det(S + 5 * sp.Identity(d)) * lam, [S, lam]),
    "logdet": (sp.log(sp.det(S + 5 * sp.Identity(d))), [S]),
    "matpow_negative": ((S + 5 * sp.Identity(d)) ** -2, [S]),
    # Kronecker products: integer dimensions, or a symbolic dimension against a 1 (kron(v, b) is an
    # outer product); three factors, and factors that are expressions themselves
    "kron": (sp.KroneckerProduct(P, Q) * lam + sp.KroneckerProduct(P[:2, :], Q.T, Q[:, :1]).applyfunc(sp.sin),
             [P, Q, lam]),
    "kron_symbolic": (sp.Trace(sp.KroneckerProduct(v, b) * W.T * X.T) + sp.Trace(sp.KroneckerProduct(b, v).T * X * W)
                      + sp.Trace(sp.KroneckerProduct(sp.DiagonalOf(S), b) * W.T)
                      # 2*d x 2*d: a product dimension, also written by the model (OneMatrix(1, 2*d))
                      + sp.Trace(sp.KroneckerProduct(Q, S) * sp.KroneckerProduct(S, Q).T)
                      + sp.Trace(sp.OneMatrix(1, 2 * d) * sp.KroneckerProduct(S, Q).applyfunc(sp.sin)
                                 * sp.OneMatrix(2 * d, 1)), [v, b, S, W, Q]),
    # Sums over IndexedBase entries: matrix products and reductions in disguise (a one-index base is
    # a column); lengths read from the Sums' bounds, or from the base's own shape; an Idx index
    "indexed_dot": (sp.Sum(xi[ii] * wi[ii], (ii, 0, N - 1)) * sp.Sum(sp.exp(wi[ii]), (ii, 0, N - 1)), [wi, xi]),
    "indexed_matvec": (sp.Sum((sp.Sum(Xi[ii, jx] * ui[jx], jx) - yi[ii]) ** 2, (ii, 0, N - 1)) / N, [ui, Xi]),
    "element_sum": (sp.Sum(sp.tanh(sp.Sum(X[ii, jj] * u[jj, 0], (jj, 0, d - 1))) * v[ii, 0], (ii, 0, N - 1)), [u, v]),
    "indexed_shaped": (ci[0] * ci[2] + sp.Sum(ci[ii] ** 2 * xi[ii], (ii, 0, 2)), [ci, xi]),
    "unused_wrt": (X * W, [W, b]),
    "softmax_ce": ((sp.OneMatrix(1, N) * ((Z.applyfunc(sp.exp) * sp.OneMatrix(k, 1)).applyfunc(sp.log)
                                          - sp.HadamardProduct(Y, Z) * sp.OneMatrix(k, 1)))[0, 0] / N, [W, b]),
}


def _matrix_inputs(model, rng):
    sizes = {N: 5, d: 3, k: 4}
    out = {}
    for s in model.inputs:
        shape = tuple(int(sp.sympify(n).subs(sizes)) for n in s.shape) if isinstance(s, sp.MatrixSymbol) else ()
        out[str(s)] = _sample(rng, shape, "real") if shape else 0.7
    return out


@pytest.mark.parametrize("name", sorted(MATRIX_ROWS))
def test_matrix_op(name):
    expr, wrt = MATRIX_ROWS[name]
    model = symgrad.Model(expr, wrt=wrt, name=name)
    inputs = _matrix_inputs(model, np.random.default_rng(3))
    assert_matches_oracles(model, symgrad.compile(model), inputs)


@pytest.mark.parametrize("name", ["sigmoid", "piecewise", "maximum", "pow_int", "heaviside", "abs", "bessel",
                                  "expint", "lambertw", "polygamma"])
def test_float32_stays_float32(name):
    expr, dx, dy = SCALAR_ROWS[name]
    model = symgrad.Model(expr, wrt=[x, y], name=name)
    rng = np.random.default_rng(1)
    inputs = {"x": _sample(rng, (4, 3), dx).astype(np.float32), "y": _sample(rng, (3,), dy).astype(np.float32)}
    value, grads = symgrad.compile(model).value_and_grad(**inputs)
    t_value, t_grads = symgrad.tape.value_and_grad(model, **{n: a.astype(np.float64) for n, a in inputs.items()})
    assert value.dtype == np.float32
    assert rel_err(value, t_value) < 1e-5
    for n, g in grads.items():
        assert g.dtype == np.float32, n
        assert rel_err(g, t_grads[n]) < 1e-4


def test_matrix_float32():
    model = symgrad.Model(sp.Trace(Z.applyfunc(lambda t: sp.Max(t, 0)).T * Z) / N + lam * sp.Trace(W.T * W),
                          wrt=[W, b, lam], name="f32")
    inputs = _matrix_inputs(model, np.random.default_rng(2))
    inputs32 = {n: np.float32(a) if np.ndim(a) == 0 else a.astype(np.float32) for n, a in inputs.items()}
    value, grads = symgrad.compile(model).value_and_grad(**inputs32)
    t_value, t_grads = symgrad.tape.value_and_grad(model, **inputs)
    assert value.dtype == np.float32 and rel_err(value, t_value) < 1e-5
    for n, g in grads.items():
        assert np.asarray(g).dtype == np.float32 and rel_err(g, t_grads[n]) < 1e-4


def _ops_of(expr, wrt):
    model = symgrad.Model(expr, wrt=wrt)
    G = graph()
    out = lower(G, model)
    grads, _ = gradients(G, out, [G.input(w.name, leaf_shape(w)) for w in model.wrt])
    return {n.op for n in topo_order([out] + grads)}


def test_every_op_has_a_row():
    covered = set()
    for expr, dx, dy in SCALAR_ROWS.values():
        covered |= _ops_of(expr, [x, y])
    for expr, wrt in MATRIX_ROWS.values():
        covered |= _ops_of(expr, wrt)
    missing = sorted(set(OPS) - covered)
    assert not missing, f"ops without a test row in tests/test_ops.py: {missing}"


def test_logsumexp_is_stable():
    """Softmax cross-entropy with logits in the thousands: exp overflows, the rewrite does not."""
    expr, wrt = MATRIX_ROWS["softmax_ce"]
    model = symgrad.Model(expr, wrt=wrt, name="ce")
    inputs = _matrix_inputs(model, np.random.default_rng(4))
    inputs["X"] = inputs["X"] * 1000.0
    value, grads = symgrad.compile(model).value_and_grad(**inputs)
    z = inputs["X"] @ inputs["W"] + inputs["b"]
    m = z.max(axis=1, keepdims=True)
    lse = m + np.log(np.exp(z - m).sum(axis=1, keepdims=True))
    assert rel_err(value, np.mean(lse[:, 0] - (inputs["Y"] * z).sum(axis=1))) < 1e-12
    softmax = np.exp(z - lse)
    assert rel_err(grads["b"], ((softmax - inputs["Y"]) / len(z)).sum(axis=0, keepdims=True)) < 1e-9


# -- log of a sum of exponentials: a Gaussian mixture's log-likelihood far from its means --------
_MUS = (-1.0, 0.5, 2.0)
_WEIGHTS = (1, 2, sp.Rational(1, 2))  # c * exp(t) is exp(t + log c): the weighted mixture is one too


def _mixture_terms(v, mus, weights):
    return [w * sp.exp(-(v - m) ** 2 / 2) for w, m in zip(weights, mus)]


def _mixture_oracle(points, weights):
    """sum over the points of log(sum_k w_k exp(-(x - mu_k)**2 / 2)) and its gradient in each
    mu_k, sum over the points of softmax_k * (x - mu_k), with mpmath at 60 digits (no underflow)."""
    import mpmath as mp
    mp.mp.dps = 60
    value, grads = mp.mpf(0), [mp.mpf(0)] * 3
    for p in points:
        e = [mp.mpf(float(w)) * mp.exp(-(mp.mpf(p) - m) ** 2 / 2) for w, m in zip(weights, _MUS)]
        value += mp.log(sum(e))
        grads = [g + e_k / sum(e) * (mp.mpf(p) - m) for g, e_k, m in zip(grads, e, _MUS)]
    return float(value), [float(g) for g in grads]


@pytest.mark.parametrize("weights", [(1, 1, 1), _WEIGHTS])
def test_log_of_a_sum_of_exponentials_is_stable_on_scalar_symbols(weights):
    """log(exp(t1) + exp(t2) + exp(t3)), t_k = -(x - mu_k)**2 / 2, with x bound to an array of
    points as far as 60 from every mean: the sum underflows to 0 (-inf, NaN gradient) unless the
    rewrite shifts it by the largest t_k."""
    m = sp.symbols("m1:4")
    module = symgrad.compile(symgrad.Model(sp.log(sp.Add(*_mixture_terms(x, m, weights))), wrt=list(m)))
    points = np.array([-60.0, -35.5, -1.0, 0.2, 1.7, 40.0, 61.0])
    mus = dict(zip(("m1", "m2", "m3"), _MUS))
    value, grads = module.value_and_grad(x=points, **mus)
    want, want_grads = _mixture_oracle(points, weights)
    assert np.all(np.isfinite(module.forward(x=points, **mus)))
    assert rel_err(np.sum(module.forward(x=points, **mus)), want) < 1e-12
    assert rel_err([grads[k] for k in mus], want_grads) < 1e-12
    for p in (-60.0, 0.2, 61.0):  # Python floats: the fast path takes the same form
        v, g = module.value_and_grad(x=p, **mus)
        w, wg = _mixture_oracle([p], weights)
        assert rel_err(v, w) < 1e-12 and rel_err([g[k] for k in mus], wg) < 1e-12


def test_log_of_a_sum_of_exponentials_is_stable_over_columns():
    """The same mixture over an N x 1 column (applyfunc), summed over its rows; and at moderate
    points the gradient matches central differences of the module's value in float64."""
    Xc = sp.MatrixSymbol("X", N, 1)
    m = sp.symbols("m1:4")
    cols = [(Xc - mk * sp.OneMatrix(N, 1)).applyfunc(lambda e: -e ** 2 / 2).applyfunc(sp.exp) for mk in m]
    model = symgrad.Model((sp.OneMatrix(1, N) * (cols[0] + cols[1] + cols[2]).applyfunc(sp.log))[0, 0], wrt=list(m))
    module = symgrad.compile(model)
    mus = dict(zip(("m1", "m2", "m3"), _MUS))
    far = np.array([[-60.0], [-35.5], [0.2], [40.0], [61.0]])
    value, grads = module.value_and_grad(X=far, **mus)
    want, want_grads = _mixture_oracle(far[:, 0], (1, 1, 1))
    assert rel_err(value, want) < 1e-12 and rel_err([grads[k] for k in mus], want_grads) < 1e-12
    near = np.array([[-1.3], [0.4], [2.2]])
    _, grads = module.value_and_grad(X=near, **mus)
    for k in mus:
        h = 1e-6
        up, down = dict(mus, **{k: mus[k] + h}), dict(mus, **{k: mus[k] - h})
        fd = (module.forward(X=near, **up) - module.forward(X=near, **down)) / (2 * h)
        assert abs(grads[k] - fd) < 1e-7 * max(1.0, abs(fd)), k


def test_a_slice_past_a_symbolic_dimension_is_an_error():
    """NumPy cuts X[:, :2] short when X has one column; the module says so instead of summing less."""
    Xs = sp.MatrixSymbol("X", N, d)
    module = symgrad.compile(symgrad.Model(sp.Trace(Xs[:, :2].T * Xs[:, :2]), wrt=[Xs]))
    assert module.value_and_grad(X=np.ones((4, 3)))[0] == 8.0
    with pytest.raises(ValueError, match=r"slice has shape \(4, 1\), the model needs \(4, 2\)"):
        module.value_and_grad(X=np.ones((4, 1)))


def test_gaussian_nll_matches_its_closed_form():
    """N/2 logdet(S) + 1/2 tr(E S^-1 E^T), E = X - 1 mu: d/dmu = -(1^T E) S^-1 and
    d/dS = N/2 S^-1 - 1/2 S^-1 E^T E S^-1 (S symmetric positive definite); products with S^-1
    are solves, log det is slogdet."""
    n_, dd = sp.symbols("n dd")
    Sg, Xg, mu = sp.MatrixSymbol("S", dd, dd), sp.MatrixSymbol("X", n_, dd), sp.MatrixSymbol("mu", 1, dd)
    E = Xg - sp.OneMatrix(n_, 1) * mu
    model = symgrad.Model(n_ / 2 * sp.log(sp.det(Sg)) + sp.Trace(E * Sg ** -1 * E.T) / 2, wrt=[mu, Sg])
    source = symgrad.generate(model)
    assert "slogdet" in source and "linalg.solve" in source and "linalg.det(" not in source
    rng = np.random.default_rng(5)
    A = rng.standard_normal((3, 3))
    S_, X_, mu_ = A @ A.T + 3 * np.eye(3), rng.standard_normal((40, 3)) + 1, rng.standard_normal((1, 3))
    value, grads = symgrad.compile(model).value_and_grad(S=S_, X=X_, mu=mu_)
    Si, E_ = np.linalg.inv(S_), X_ - mu_
    want = 20 * np.linalg.slogdet(S_)[1] + 0.5 * np.trace(E_ @ Si @ E_.T)
    assert rel_err(value, want) < 1e-12
    assert rel_err(grads["mu"], -E_.sum(0, keepdims=True) @ Si) < 1e-12
    assert rel_err(grads["S"], 20 * Si - 0.5 * Si @ E_.T @ E_ @ Si) < 1e-12
    assert_matches_oracles(model, symgrad.compile(model), {"S": S_, "X": X_, "mu": mu_})


def test_lambertw_at_zero_and_below_its_branch_point():
    """W(0) = 0 with W'(0) = 1 (the limit of W / (x (1 + W))); W(x e^x) = x; below -1/e the real
    principal branch does not exist: NaN, never the real part of the complex value."""
    model = symgrad.Model(sp.LambertW(x), wrt=[x], name="w")
    xs = np.array([0.0, 1.0 * np.e, -0.5 * np.exp(-0.5), -0.4])
    value, grads = symgrad.compile(model).value_and_grad(x=xs)
    assert value[0] == 0 and grads["x"][0] == 1
    assert rel_err(value[1:3], [1.0, -0.5]) < 1e-14
    assert rel_err(grads["x"][1:3], [1 / (2 * np.e), 1 / (np.exp(-0.5) * 0.5)]) < 1e-14
    assert np.isnan(value[3])
    t_value, t_grads = symgrad.tape.value_and_grad(model, x=xs)
    assert t_grads["x"][0] == 1 and np.isnan(t_value[3])


def test_special_function_orders_must_be_constants():
    n = sp.Symbol("n")
    for expr, what in [(sp.besselj(n, x), "besselj must be a real constant"),
                       (sp.expint(sp.Rational(1, 3), x), "expint must be a constant integer >= 1"),
                       (sp.LambertW(x, -1), "principal branch")]:
        with pytest.raises(symgrad.SymgradError, match=what):
            symgrad.generate(symgrad.Model(expr, wrt=[x], name="order"))


def test_kronecker_against_numpy_and_its_symbolic_dimension_limit():
    """kron(A, B) is np.kron; d <kron(A, B), G> / dA is each block of G against B (checked here
    against loops over the blocks, not the module's einsum); a product dimension (2N) is fine
    inside the model, but an input's dimensions are read from its array: Symbols or integers."""
    A, B = sp.MatrixSymbol("A", 2, 3), sp.MatrixSymbol("B", 3, 2)
    Gm = sp.MatrixSymbol("G", 6, 6)
    model = symgrad.Model(sp.Trace(Gm.T * sp.KroneckerProduct(A, B)), wrt=[A, B])
    rng = np.random.default_rng(8)
    a, bb, g = rng.standard_normal((2, 3)), rng.standard_normal((3, 2)), rng.standard_normal((6, 6))
    module = symgrad.compile(model)
    value, grads = module.value_and_grad(A=a, B=bb, G=g)
    assert rel_err(symgrad.compile(symgrad.Model(sp.KroneckerProduct(A, B))).forward(A=a, B=bb), np.kron(a, bb)) == 0
    blocks = {(i, j): g[3 * i:3 * i + 3, 2 * j:2 * j + 2] for i in range(2) for j in range(3)}
    assert rel_err(value, np.sum(g * np.kron(a, bb))) < 1e-14
    assert rel_err(grads["A"], [[np.sum(blocks[i, j] * bb) for j in range(3)] for i in range(2)]) < 1e-14
    assert rel_err(grads["B"], sum(a[i, j] * blocks[i, j] for (i, j) in blocks)) < 1e-14
    D_, E_ = rng.standard_normal((2, 2)), rng.standard_normal((3, 3))
    K = symgrad.compile(symgrad.Model(sp.KroneckerProduct(sp.MatrixSymbol("D", 2, 2), sp.MatrixSymbol("E", N, N))))
    assert rel_err(K.forward(D=D_, E=E_), np.kron(D_, E_)) == 0
    with pytest.raises(symgrad.SymgradError, match=r"unsupported dimension 2\*N of F: use a Symbol or an integer"):
        symgrad.generate(symgrad.Model(sp.Trace(sp.MatrixSymbol("F", 2 * N, 2 * N))))


def test_indexed_sums_are_matrix_products_and_name_what_is_not():
    """Sum(X[i, j] w[j]) over an IndexedBase is X @ w in the module (no loop), its gradient the
    closed form; a Sum that is no matrix expression (a shifted index), an IndexedBase of three
    indices or of a length no Sum gives, is an error naming it."""
    source = symgrad.generate(symgrad.Model(MATRIX_ROWS["indexed_matvec"][0], wrt=[ui]))
    assert "_matmul(Xi, ui" in source or "_matmul_work(Xi, ui" in source or "np.matmul(Xi, ui" in source or "Xi @ ui" in source
    model = symgrad.Model(MATRIX_ROWS["indexed_matvec"][0], wrt=[ui])
    rng = np.random.default_rng(9)
    X_, u_, y_ = rng.standard_normal((6, 3)), rng.standard_normal((3, 1)), rng.standard_normal((6, 1))
    value, grads = symgrad.compile(model).value_and_grad(Xi=X_, ui=u_, yi=y_)
    assert rel_err(value, np.sum((X_ @ u_ - y_) ** 2) / 6) < 1e-14
    assert rel_err(grads["ui"], 2 * X_.T @ (X_ @ u_ - y_) / 6) < 1e-14
    for expr, why in [(sp.Sum(xi[ii] * xi[ii + 1], (ii, 0, N - 1)), r"xi .*run up to N and to N - 1.*shape=\(N,\)"),
                      (sp.Sum(ci[ii] * ci[ii + 1], (ii, 0, 2)), r"ci\[i \+ 1\] runs past an end of ci \(length 3\)"),
                      (sp.Sum(sp.IndexedBase("T")[ii, ii, ii], (ii, 0, N - 1)), "IndexedBase T has 3 indices"),
                      (sp.Sum(xi[ii], (ii, 1, N)), r"length of axis 0 of the IndexedBase xi .*shape=\(N,\)")]:
        with pytest.raises(symgrad.SymgradError, match=why):
            symgrad.generate(symgrad.Model(expr, name="bad"))


def test_closed_form_ridge_and_its_loss():
    """w* = (X^T X + lam I)^-1 X^T y as a model value (a solve, never an inverse): its value is
    NumPy's solve, d sum(w*)/d lam = -1^T A^-1 w* and d sum(w*)/dy = X A^-1 1 (A = X^T X + lam I);
    the ridge loss ||X w - y||^2 + lam ||w||^2 has gradient 2 X^T (X w - y) + 2 lam w, which
    vanishes at that w*."""
    n_, dd = sp.symbols("n dd")
    Xr, yr, wr, lr = sp.MatrixSymbol("X", n_, dd), sp.MatrixSymbol("y", n_, 1), sp.MatrixSymbol("w", dd, 1), sp.Symbol("lam")
    A = Xr.T * Xr + lr * sp.Identity(dd)
    ridge = symgrad.Model(A ** -1 * Xr.T * yr, wrt=[lr, yr], name="ridge")
    source = symgrad.generate(ridge)
    assert "linalg.solve" in source and "linalg.inv" not in source
    rng = np.random.default_rng(11)
    X_, y_, lam_ = rng.standard_normal((30, 4)), rng.standard_normal((30, 1)), 0.7
    A_ = X_.T @ X_ + lam_ * np.eye(4)
    w_star, grads = symgrad.compile(ridge).value_and_grad(X=X_, y=y_, lam=lam_)
    assert rel_err(w_star, np.linalg.solve(A_, X_.T @ y_)) < 1e-12
    assert rel_err(grads["lam"], -np.sum(np.linalg.solve(A_, w_star))) < 1e-12
    assert rel_err(grads["y"], X_ @ np.linalg.solve(A_, np.ones((4, 1)))) < 1e-12
    assert_matches_oracles(ridge, symgrad.compile(ridge), {"lam": lam_, "y": y_, "X": X_})
    r = Xr * wr - yr
    loss = symgrad.Model((r.T * r)[0, 0] + lr * (wr.T * wr)[0, 0], wrt=[wr], name="ridge_loss")
    module = symgrad.compile(loss)
    _, g_star = module.value_and_grad(w=w_star, X=X_, y=y_, lam=lam_)
    w_ = rng.standard_normal((4, 1))
    _, g = module.value_and_grad(w=w_, X=X_, y=y_, lam=lam_)
    hand = 2 * X_.T @ (X_ @ w_ - y_) + 2 * lam_ * w_
    assert rel_err(g["w"], hand) < 1e-12
    assert np.max(np.abs(g_star["w"])) < 1e-12 * np.max(np.abs(hand))


def test_log_determinant_barriers():
    """-log det(S) + tr(C S) has gradient -S^-1 + C^T (S symmetric positive definite), which
    vanishes at S = C^-1; -log det(A - X^T diag(v) X) has d/dv_i = x_i^T M^-1 x_i (x_i the rows of
    X, M = A - X^T diag(v) X) and d/dA = -M^-T."""
    dd, n_ = sp.symbols("dd n")
    Sb, Cb = sp.MatrixSymbol("S", dd, dd), sp.MatrixSymbol("C", dd, dd)
    barrier = symgrad.Model(-sp.log(sp.det(Sb)) + sp.Trace(Cb * Sb), wrt=[Sb], name="barrier")
    assert "slogdet" in symgrad.generate(barrier)
    rng = np.random.default_rng(12)
    B = rng.standard_normal((3, 3))
    S_, C_ = B @ B.T + 3 * np.eye(3), np.linalg.inv(B.T @ B + 2 * np.eye(3))
    module = symgrad.compile(barrier)
    _, grads = module.value_and_grad(S=S_, C=C_)
    assert rel_err(grads["S"], -np.linalg.inv(S_) + C_.T) < 1e-12
    _, at_min = module.value_and_grad(S=np.linalg.inv(C_), C=C_)
    assert np.max(np.abs(at_min["S"])) < 1e-12
    assert_matches_oracles(barrier, module, {"S": S_, "C": C_})
    Ab, Xb, vb = sp.MatrixSymbol("A", dd, dd), sp.MatrixSymbol("X", n_, dd), sp.MatrixSymbol("v", n_, 1)
    M = Ab - Xb.T * sp.DiagMatrix(vb) * Xb
    weighted = symgrad.Model(-sp.log(sp.det(M)), wrt=[vb, Ab], name="weighted_barrier")
    X_, v_ = rng.standard_normal((6, 3)), rng.uniform(0.1, 0.3, (6, 1))
    A_ = X_.T @ X_ + 2 * np.eye(3)
    M_ = A_ - X_.T @ np.diag(v_[:, 0]) @ X_
    value, grads = symgrad.compile(weighted).value_and_grad(A=A_, X=X_, v=v_)
    assert rel_err(value, -np.linalg.slogdet(M_)[1]) < 1e-12
    Mi = np.linalg.inv(M_)
    assert rel_err(grads["v"], np.einsum("ij,jk,ik->i", X_, Mi, X_)[:, None]) < 1e-12
    assert rel_err(grads["A"], -Mi.T) < 1e-12
    assert_matches_oracles(weighted, symgrad.compile(weighted), {"A": A_, "X": X_, "v": v_})


@pytest.mark.parametrize("op", ["kron_a", "kron_b"])
def test_the_kronecker_cotangent_ops_have_right_rules_of_their_own(op):
    """kron_a / kron_b are reached only by differentiating kron; their own reverse and forward rules
    (used past the first derivative) are checked on a graph built directly: f = sum(H * op(G, F)),
    with df/dG = kron(H, F) (or kron(F, H)) and df/dF from the tape's block loops."""
    from symgrad.emit import emit, load_source
    from symgrad.lower import lower_model
    from symgrad.pipeline import differentiate
    from symgrad.tape import _kron_dx, _kron_dy
    Gs, Fs, Hs = sp.MatrixSymbol("G", 6, 6), sp.MatrixSymbol("F", 3, 2), sp.MatrixSymbol("H", 2, 3)
    if op == "kron_b":
        Fs, Hs = sp.MatrixSymbol("F", 2, 3), sp.MatrixSymbol("H", 3, 2)
    program = lower_model(symgrad.Model(sp.Trace(Gs) + sp.Trace(Fs * Hs), wrt=[Gs, Fs], name=op))
    Gr, nodes = program.graph, program.input_nodes
    program.out = Gr.sum(Gr.mul(nodes["H"], Gr.op(op, nodes["G"], nodes["F"], attr=nodes["H"].shape)))
    module = load_source(emit(differentiate(program, ("grad", "hvp")), "numpy"), f"rule_{op}")
    rng = np.random.default_rng(13)
    g_, f_, h_ = rng.standard_normal((6, 6)), rng.standard_normal(Fs.shape), rng.standard_normal(Hs.shape)
    value, grads = module.value_and_grad(G=g_, F=f_, H=h_)
    want_value = np.sum(h_ * (_kron_dx(g_, h_, f_) if op == "kron_a" else _kron_dy(g_, f_, h_)))
    assert rel_err(value, want_value) < 1e-13
    assert rel_err(grads["G"], np.kron(h_, f_) if op == "kron_a" else np.kron(f_, h_)) < 1e-13
    assert rel_err(grads["F"], _kron_dy(g_, h_, f_) if op == "kron_a" else _kron_dx(g_, f_, h_)) < 1e-13
    t_g, t_f = rng.standard_normal((6, 6)), rng.standard_normal(Fs.shape)
    _, _, hv = module.hvp({"G": t_g, "F": t_f}, G=g_, F=f_, H=h_)  # bilinear: H v is exact here
    assert rel_err(hv["G"], np.kron(h_, t_f) if op == "kron_a" else np.kron(t_f, h_)) < 1e-13
    assert rel_err(hv["F"], _kron_dy(t_g, h_, f_) if op == "kron_a" else _kron_dx(t_g, f_, h_)) < 1e-13
