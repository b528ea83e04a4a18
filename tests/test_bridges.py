"""The bridges of contract 4f: Objective (scipy.optimize), OdeSystem (solve_ivp), to_torch, to_jax.

Oracles, none of them the code under test: values, gradients and Hessians derived by hand and
written in NumPy here; central finite differences; PyTorch's and JAX's own autodiff of the same
formula written in torch / jax.numpy; SciPy's finite-difference Jacobian in solve_ivp.
"""
from __future__ import annotations

import types

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad.errors import SymgradError

scipy = pytest.importorskip("scipy")
from scipy import optimize, sparse  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402

# ---- models ---------------------------------------------------------------------------------------
N, d, h, n = sp.symbols("N d h n", integer=True, positive=True)


def lsq_model(square=False):
    """sum((X W + 1 b - Y)^2), wrt b then W (not INPUTS order, not sorted order)."""
    X, Y = sp.MatrixSymbol("X", N, d), sp.MatrixSymbol("Y", N, d if square else h)
    W, b = sp.MatrixSymbol("W", d, d if square else h), sp.MatrixSymbol("b", 1, d if square else h)
    E = X * W + sp.OneMatrix(N, 1) * b - Y
    return symgrad.Model(sp.Trace(E.T * E), wrt=[b, W], name="lsq_sq" if square else "lsq")


def fisher_model(wrt=("u",)):
    """Discretised diffusion-reaction du/dt = D L u + k u^2 (1 - u) e^{-t} (L a data matrix)."""
    u, L = sp.MatrixSymbol("u", n, 1), sp.MatrixSymbol("L", n, n)
    D, k, t = sp.symbols("D k t")
    rhs = D * L * u + u.applyfunc(lambda s: k * s ** 2 * (1 - s)) * sp.exp(-t)
    syms = {"u": u, "D": D}
    return symgrad.Model(rhs, wrt=[syms[w] for w in wrt], name="fisher_" + "_".join(wrt))


@pytest.fixture(scope="module")
def lsq():
    return symgrad.compile(lsq_model(), emit="vjp,jvp,hvp,hessian")


@pytest.fixture(scope="module")
def lsq_sq():
    return symgrad.compile(lsq_model(square=True), emit="vjp,jvp,hvp")


@pytest.fixture(scope="module")
def fisher():
    return symgrad.compile(fisher_model(), emit="jacobian")


def lsq_data(seed=0, Nv=7, dv=3, hv=2):
    rng = np.random.default_rng(seed)
    return {"X": rng.standard_normal((Nv, dv)), "Y": rng.standard_normal((Nv, hv)),
            "W": rng.standard_normal((dv, hv)), "b": rng.standard_normal((1, hv))}


def lsq_hand(X, Y, W, b):
    """value, gradients and the Hessian in the layout (b, W), derived by hand."""
    E = X @ W + b - Y
    grads = {"b": 2 * E.sum(0, keepdims=True), "W": 2 * X.T @ E}
    Ih = np.eye(W.shape[1])
    H_bb = 2 * X.shape[0] * Ih
    H_bW = 2 * np.kron(X.sum(0)[None, :], Ih)          # rows b[0, a], columns W[i, c] (C order)
    H_WW = 2 * np.kron(X.T @ X, Ih)
    return float((E ** 2).sum()), grads, np.block([[H_bb, H_bW], [H_bW.T, H_WW]])


def laplacian(m):
    return (np.diag(-2.0 * np.ones(m)) + np.diag(np.ones(m - 1), 1) + np.diag(np.ones(m - 1), -1)) * (m + 1) ** 2


def fisher_hand(t, u, D, k, L):
    f = D * L @ u + k * u ** 2 * (1 - u) * np.exp(-t)
    J = D * L + np.diag((k * (2 * u - 3 * u ** 2) * np.exp(-t)).ravel())
    return f, J


def counting(module, *functions):
    """A stand-in module that counts calls of ``functions`` and forwards everything."""
    ns = types.SimpleNamespace(**{k: getattr(module, k) for k in ("MODEL", "INPUTS", "WRT", "SHAPES", "forward",
                                                                   "value_and_grad") if hasattr(module, k)})
    ns.calls = {f: 0 for f in functions}

    def wrap(f):
        def call(*a, **kw):
            ns.calls[f] += 1
            return getattr(module, f)(*a, **kw)
        return call
    for f in functions:
        setattr(ns, f, wrap(f))
    return ns


def test_scipy_torch_and_jax_are_imported_only_when_used():
    import subprocess
    import sys
    code = ("import sys, symgrad; symgrad.Objective, symgrad.OdeSystem; "
            "print(sorted(m for m in ('scipy', 'torch', 'jax') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


# ---- Objective --------------------------------------------------------------------------------------
def test_objective_layout_is_wrt_order_each_raveled_in_C_order(lsq):
    assert lsq.WRT == ("b", "W")
    d = lsq_data()
    obj = symgrad.Objective(lsq, X=d["X"], Y=d["Y"])
    x = obj.pack(W=d["W"], b=d["b"])
    np.testing.assert_array_equal(x, np.concatenate([d["b"].ravel(), d["W"].ravel()]))
    assert x.dtype == np.float64 and obj.n == x.size == 8
    back = obj.unpack(x)
    assert set(back) == {"b", "W"}
    np.testing.assert_array_equal(back["W"], d["W"])
    back["W"][0, 0] = 99.0                                   # unpack's arrays are the caller's own
    assert x[2] == d["W"][0, 0]
    one = symgrad.Objective(symgrad.compile(symgrad.Model(sp.Symbol("s") ** 2, name="one")))
    s0 = np.array(2.0)
    xs = one.pack(s=s0)
    s0[()] = 5.0                                           # nor is pack's vector a view of its input
    assert xs[0] == 2.0


def test_objective_fun_jac_hess_hessp_against_hand_formulas(lsq):
    d = lsq_data(1)
    obj = symgrad.Objective(lsq, X=d["X"], Y=d["Y"])
    x = obj.pack(W=d["W"], b=d["b"])
    value, grads, H = lsq_hand(**d)
    assert obj.fun(x) == pytest.approx(value, rel=1e-13)
    want = np.concatenate([grads["b"].ravel(), grads["W"].ravel()])
    np.testing.assert_allclose(obj.jac(x), want, rtol=1e-12)
    v, g = obj.fun_and_jac(x)
    assert v == pytest.approx(value, rel=1e-13)
    np.testing.assert_allclose(g, want, rtol=1e-12)
    np.testing.assert_allclose(obj.hess(x), H, rtol=1e-12, atol=1e-12)
    p = np.random.default_rng(2).standard_normal(x.size)
    np.testing.assert_allclose(obj.hessp(x, p), H @ p, rtol=1e-12)
    # and the gradient against central differences of fun itself (a packing that disagrees with
    # the unpacking fails here)
    eps = 1e-6
    fd = [(obj.fun(x + eps * e) - obj.fun(x - eps * e)) / (2 * eps) for e in np.eye(x.size)]
    np.testing.assert_allclose(obj.jac(x), fd, rtol=1e-7)


def test_objective_shapes_inferred_from_fixed_data_before_pack(lsq):
    d = lsq_data()
    obj = symgrad.Objective(lsq, X=d["X"], Y=d["Y"])          # h from Y, d from X
    assert obj.n == 8
    assert obj.fun(np.zeros(8)) == pytest.approx(float((d["Y"] ** 2).sum()), rel=1e-13)


def test_objective_computes_each_point_once(lsq):
    d = lsq_data()
    mod = counting(lsq, "value_and_grad")
    obj = symgrad.Objective(mod, X=d["X"], Y=d["Y"])
    x = obj.pack(W=d["W"], b=d["b"])
    f0 = obj.fun(x)
    g0 = obj.jac(x)
    obj.fun_and_jac(x)
    assert mod.calls["value_and_grad"] == 1
    x0 = x.copy()
    x[0] += 1.0                                            # the caller changes its vector in place
    assert obj.fun(x) != f0 and mod.calls["value_and_grad"] == 2
    x[:] = x0
    assert obj.fun(x) == f0 and mod.calls["value_and_grad"] == 3
    g0[:] = 0                                              # a returned gradient is the caller's
    assert np.abs(obj.jac(x)).max() > 0


def test_minimize_trust_exact_and_trust_ncg_find_least_squares(lsq):
    d = lsq_data(3, Nv=20)
    obj = symgrad.Objective(lsq, X=d["X"], Y=d["Y"])
    A = np.c_[np.ones(20), d["X"]]                         # the normal equations, by hand
    coef = np.linalg.lstsq(A, d["Y"], rcond=None)[0]
    x0 = obj.pack(W=np.zeros((3, 2)), b=np.zeros((1, 2)))
    for kw in ({"method": "trust-exact", "hess": obj.hess}, {"method": "trust-ncg", "hessp": obj.hessp}):
        res = optimize.minimize(obj.fun_and_jac, x0, jac=True, options={"gtol": 1e-7}, **kw)
        assert res.success, res.message
        sol = obj.unpack(res.x)
        np.testing.assert_allclose(sol["b"], coef[:1], atol=1e-7)
        np.testing.assert_allclose(sol["W"], coef[1:], atol=1e-7)


def test_objective_of_array_valued_model_minimises_its_sum():
    x, a = sp.symbols("x a")
    mod = symgrad.compile(symgrad.Model((x - a) ** 2, wrt=[x], name="sqdist"))
    av = np.array([1.0, 2.0, 6.0])
    obj = symgrad.Objective(mod, a=av)
    assert obj.n == 1                                      # a scalar Symbol is a scalar
    assert obj.fun(np.array([0.0])) == pytest.approx(41.0)
    np.testing.assert_allclose(obj.jac(np.array([0.0])), [-18.0])
    res = optimize.minimize(obj.fun_and_jac, np.zeros(1), jac=True, method="BFGS")
    assert res.x[0] == pytest.approx(3.0, abs=1e-6)


def test_objective_hess_uses_sparse_hessian_when_the_module_has_it(lsq):
    d = lsq_data()
    _, _, H = lsq_hand(**d)
    seen = {}

    def sparse_hessian(**inputs):                          # contract 4e's signature
        seen.update(inputs)
        value, grads = lsq.value_and_grad(**inputs)
        return value, grads, sparse.csr_matrix(H)
    fake = types.SimpleNamespace(MODEL="fake", INPUTS=lsq.INPUTS, WRT=lsq.WRT, SHAPES=lsq.SHAPES,
                                 value_and_grad=lsq.value_and_grad, sparse_hessian=sparse_hessian)
    obj = symgrad.Objective(fake, X=d["X"], Y=d["Y"])
    x = obj.pack(W=d["W"], b=d["b"])
    Hs = obj.hess(x)
    assert sparse.issparse(Hs) and Hs.format == "csr"
    np.testing.assert_allclose(Hs.toarray(), H)
    np.testing.assert_array_equal(seen["W"], d["W"])
    res = optimize.minimize(obj.fun_and_jac, x, jac=True, method="trust-constr", hess=obj.hess,
                            options={"gtol": 1e-9})
    assert np.linalg.norm(obj.jac(res.x)) < 1e-6


@pytest.mark.parametrize("fixed,match", [
    ({"X": 1.0, "Y": 1.0, "Z": 1.0}, "'Z' is not an input of lsq"),
    ({"X": 1.0}, r"no value for the input\(s\) \['Y'\]"),
    ({"X": 1.0, "Y": 1.0, "W": 1.0}, "'W' is one of"),
])
def test_objective_binding_errors_name_the_input(lsq, fixed, match):
    with pytest.raises(SymgradError, match=match):
        symgrad.Objective(lsq, **fixed)


def test_objective_vector_and_shape_errors(lsq):
    d = lsq_data()
    obj = symgrad.Objective(lsq, X=d["X"], Y=d["Y"])
    with pytest.raises(SymgradError, match=r"x has shape \(7,\), expected \(8,\)"):
        obj.fun(np.zeros(7))
    with pytest.raises(SymgradError, match=r"p has shape"):
        obj.hessp(np.zeros(8), np.zeros(9))
    with pytest.raises(SymgradError, match="pack\\(\\) takes exactly"):
        obj.pack(W=d["W"])
    with pytest.raises(SymgradError, match="'W' has shape \\(2, 2\\)"):
        obj.pack(W=np.zeros((2, 2)), b=d["b"])
    # a dimension no fixed input has: the shapes are not known until pack
    A, B = sp.MatrixSymbol("A", h, 1), sp.MatrixSymbol("B", N, 1)
    mod = symgrad.compile(symgrad.Model(sp.Trace(A.T * A) + sp.Trace(B.T * B), wrt=[A], name="dimless"))
    obj = symgrad.Objective(mod, B=np.ones((2, 1)))
    with pytest.raises(SymgradError, match="the shape of 'A' is not known: its dimension 'h'"):
        obj.fun(np.zeros(3))
    assert obj.pack(A=np.ones((3, 1))).size == 3 and obj.fun(np.ones(3)) == pytest.approx(5.0)
    with pytest.raises(SymgradError, match="has no hessp|has no hvp"):
        obj.hessp(np.ones(3), np.ones(3))


# ---- OdeSystem --------------------------------------------------------------------------------------
def test_ode_fun_and_dense_jac_against_hand_formulas(fisher):
    m = 6
    L = laplacian(m)
    ode = symgrad.OdeSystem(fisher, state="u", time="t", D=0.1, k=3.0, L=L)
    y = np.linspace(0.1, 0.9, m)
    f, J = fisher_hand(0.3, y[:, None], 0.1, 3.0, L)
    np.testing.assert_allclose(ode.fun(0.3, y), f.ravel(), rtol=1e-12)
    np.testing.assert_allclose(ode.jac(0.3, y), J, rtol=1e-12, atol=1e-12)


def test_solve_ivp_bdf_with_symbolic_jac_matches_finite_difference_jac(fisher):
    m = 20
    L = laplacian(m)
    ode = symgrad.OdeSystem(fisher, state="u", time="t", D=0.05, k=10.0, L=L)
    y0 = ode.pack(u=np.exp(-40 * (np.linspace(0, 1, m) - 0.5) ** 2)[:, None])
    kw = dict(method="BDF", rtol=1e-8, atol=1e-10)
    calls = []                                             # solve_ivp's nfev leaves out differencing

    def rhs(t, y):
        calls.append(t)
        return ode.fun(t, y)
    ours = solve_ivp(rhs, (0, 0.5), y0, jac=ode.jac, **kw)
    ours_calls = len(calls)
    fd = solve_ivp(rhs, (0, 0.5), y0, **kw)
    hand = solve_ivp(lambda t, y: fisher_hand(t, y[:, None], 0.05, 10.0, L)[0].ravel(), (0, 0.5), y0,
                     jac=lambda t, y: fisher_hand(t, y[:, None], 0.05, 10.0, L)[1], **kw)
    assert ours.success and fd.success
    np.testing.assert_allclose(ours.y[:, -1], hand.y[:, -1], rtol=1e-12)
    np.testing.assert_allclose(ours.y[:, -1], fd.y[:, -1], rtol=1e-5)
    assert ours_calls == ours.nfev and len(calls) - ours_calls > fd.nfev + m - 1   # m calls per FD Jacobian


def test_ode_sparse_jacobian_keeps_only_the_state_columns():
    mod = symgrad.compile(fisher_model(("u", "D")), emit="jacobian")
    assert mod.WRT == ("u", "D")
    m, L = 5, laplacian(5)

    def sparse_jacobian(**inputs):                          # contract 4e: columns u (5) then D (1)
        value, J = mod.jacobian(**inputs)
        return value, sparse.csr_matrix(np.hstack([J["u"].reshape(m, m), J["D"].reshape(m, 1)]))
    fake = types.SimpleNamespace(MODEL="fake", INPUTS=mod.INPUTS, WRT=mod.WRT, SHAPES=mod.SHAPES,
                                 forward=mod.forward, sparse_jacobian=sparse_jacobian)
    ode = symgrad.OdeSystem(fake, state="u", time="t", D=0.2, k=1.0, L=L)
    y = np.linspace(0.2, 0.6, m)
    J = ode.jac(1.0, y)
    assert sparse.issparse(J) and J.shape == (m, m)
    np.testing.assert_allclose(J.toarray(), fisher_hand(1.0, y[:, None], 0.2, 1.0, L)[1], rtol=1e-12)


def test_ode_scalar_symbol_state_takes_the_shape_of_y():
    y, r = sp.symbols("y r")
    mod = symgrad.compile(symgrad.Model(r * y * (1 - y), wrt=[y], name="logistic_growth"), emit="jacobian")
    ode = symgrad.OdeSystem(mod, state="y", r=np.array([1.0, 2.0, 3.0]))
    yv = np.array([0.1, 0.5, 0.7])
    np.testing.assert_allclose(ode.fun(0.0, yv), [1, 2, 3] * yv * (1 - yv))
    np.testing.assert_allclose(ode.jac(0.0, yv), np.diag([1, 2, 3] * (1 - 2 * yv)))
    sol = solve_ivp(ode.fun, (0, 2), yv, method="Radau", jac=ode.jac, rtol=1e-10, atol=1e-12)
    exact = 1 / (1 + (1 / yv - 1) * np.exp(-np.array([1, 2, 3]) * 2))
    np.testing.assert_allclose(sol.y[:, -1], exact, rtol=1e-7)


def test_ode_errors(fisher):
    L = laplacian(4)
    with pytest.raises(SymgradError, match="the state 'L' is not a wrt input"):
        symgrad.OdeSystem(fisher, state="L", time="t", D=1.0, k=1.0, u=np.ones((4, 1)))
    with pytest.raises(SymgradError, match="time='s' is not an input"):
        symgrad.OdeSystem(fisher, state="u", time="s", D=1.0, k=1.0, L=L)
    with pytest.raises(SymgradError, match=r"no value for the input\(s\) \['t'\]"):
        symgrad.OdeSystem(fisher, state="u", D=1.0, k=1.0, L=L)
    ode = symgrad.OdeSystem(fisher, state="u", time="t", D=1.0, k=1.0, L=L)
    with pytest.raises(SymgradError, match=r"y has shape \(5,\), expected \(4,\)"):
        ode.fun(0.0, np.ones(5))
    # a right-hand side with fewer entries than the state
    A = sp.MatrixSymbol("A", n, 1)
    mod = symgrad.compile(symgrad.Model(sp.Trace(A.T * A), wrt=[A], name="not_an_rhs"), emit="jacobian")
    ode = symgrad.OdeSystem(mod, state="A")
    ode.pack(A=np.ones((3, 1)))
    with pytest.raises(SymgradError, match="the right-hand side has 1 entries, the state \\['A'\\] has 3"):
        ode.fun(0.0, np.ones(3))


# ---- to_torch ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fisher_vjp():
    return symgrad.compile(fisher_model(), emit="vjp,jvp")


def test_to_torch_matches_torch_autograd_of_the_same_formula(lsq):
    torch = pytest.importorskip("torch")
    d = {k: torch.from_numpy(a) for k, a in lsq_data(4).items()}
    W, b = (d[k].clone().requires_grad_() for k in "Wb")
    X = d["X"].clone().requires_grad_()                     # data: requires grad, gets none
    loss = symgrad.to_torch(lsq)(W=W, b=b, X=X, Y=d["Y"])
    loss.backward()
    W2, b2 = (d[k].clone().requires_grad_() for k in "Wb")
    ref = ((d["X"] @ W2 + b2 - d["Y"]) ** 2).sum()
    ref.backward()
    assert loss.dtype == torch.float64 and loss.shape == ref.shape
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-13, atol=0)
    torch.testing.assert_close(W.grad, W2.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b.grad, b2.grad, rtol=1e-12, atol=1e-12)
    assert X.grad is None


def test_to_torch_gradcheck_and_gradgradcheck(lsq_sq, fisher_vjp):
    torch = pytest.importorskip("torch")
    d = {k: torch.from_numpy(a) for k, a in lsq_data(5, dv=3, hv=3).items()}
    f = symgrad.to_torch(lsq_sq)                            # W square: a transposed gradient fits its shape

    def loss(W, b):
        return f(W=W, b=b, X=d["X"], Y=d["Y"])
    args = (d["W"].clone().requires_grad_(), d["b"].clone().requires_grad_())
    assert torch.autograd.gradcheck(loss, args)
    assert torch.autograd.gradgradcheck(loss, args)
    # a matrix-valued model: the cotangent is a real vector
    L = torch.from_numpy(laplacian(5))
    g = symgrad.to_torch(fisher_vjp)
    u = torch.linspace(0.1, 0.9, 5, dtype=torch.float64).reshape(5, 1).requires_grad_()
    assert torch.autograd.gradcheck(lambda u: g(u=u, L=L, D=0.3, k=2.0, t=0.1), (u,))


def test_to_torch_forward_mode_uses_the_module_jvp(fisher_vjp):
    torch = pytest.importorskip("torch")
    import torch.autograd.forward_ad as fwAD
    L = torch.from_numpy(laplacian(5))
    u = torch.linspace(0.1, 0.9, 5, dtype=torch.float64).reshape(5, 1)
    v = torch.from_numpy(np.random.default_rng(6).standard_normal((5, 1)))
    f = symgrad.to_torch(fisher_vjp)
    with fwAD.dual_level():
        out = fwAD.unpack_dual(f(u=fwAD.make_dual(u, v), L=L, D=0.3, k=2.0, t=0.1))
        ref = fwAD.unpack_dual((lambda w: 0.3 * L @ w + 2.0 * w ** 2 * (1 - w) * np.exp(-0.1))(
            fwAD.make_dual(u, v)))
    torch.testing.assert_close(out.primal, ref.primal, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(out.tangent, ref.tangent, rtol=1e-12, atol=1e-12)


def test_to_torch_shares_cpu_memory_and_refuses_what_it_cannot_do(lsq):
    torch = pytest.importorskip("torch")
    d = {k: torch.from_numpy(a) for k, a in lsq_data().items()}
    seen = {}

    def forward(**inputs):
        seen.update(inputs)
        return lsq.forward(**inputs)
    fake = types.SimpleNamespace(MODEL="fake", INPUTS=lsq.INPUTS, WRT=lsq.WRT, forward=forward,
                                 value_and_grad=lsq.value_and_grad)   # no vjp, no hvp
    f = symgrad.to_torch(fake)
    W = d["W"].clone().requires_grad_()
    f(W=W.detach(), b=d["b"], X=d["X"], Y=d["Y"])
    assert np.shares_memory(seen["X"], d["X"].numpy()) and np.shares_memory(seen["W"], W.detach().numpy())
    loss = f(W=W, b=d["b"], X=d["X"], Y=d["Y"])
    (gW,) = torch.autograd.grad(loss, W, create_graph=True)     # a one-entry value: value_and_grad
    torch.testing.assert_close(gW, 2 * d["X"].T @ (d["X"] @ d["W"] + d["b"] - d["Y"]), rtol=1e-12, atol=1e-12)
    with pytest.raises(SymgradError, match="fake has no hvp\\(\\): compile it with emit=\"hvp\""):
        torch.autograd.grad(gW.sum(), W)
    with pytest.raises(TypeError, match="takes the inputs"):
        f(W=W)


def test_to_torch_training_step_is_one_value_and_grad(lsq):
    """A loss whose parameters require grad: forward runs value_and_grad, backward only scales its
    gradients (no second forward pass through vjp) -- by any cotangent, any number of times."""
    torch = pytest.importorskip("torch")
    d = {k: torch.from_numpy(a) for k, a in lsq_data(9).items()}
    mod = counting(lsq, "forward", "value_and_grad", "vjp")
    f = symgrad.to_torch(mod)
    W = d["W"].clone().requires_grad_()
    loss = f(W=W, b=d["b"], X=d["X"], Y=d["Y"])
    (3 * loss).backward(retain_graph=True)
    assert mod.calls == {"forward": 0, "value_and_grad": 1, "vjp": 0}
    want = 2 * d["X"].T @ (d["X"] @ d["W"] + d["b"] - d["Y"])
    torch.testing.assert_close(W.grad, 3 * want, rtol=1e-12, atol=1e-12)
    loss.backward()                                        # again: the kept gradients are spent
    torch.testing.assert_close(W.grad, 4 * want, rtol=1e-12, atol=1e-12)
    assert mod.calls["vjp"] == 1
    with torch.no_grad():
        f(W=W, b=d["b"], X=d["X"], Y=d["Y"])
    assert mod.calls["forward"] == 1 and mod.calls["value_and_grad"] == 1


def test_to_torch_cupy_module_on_cuda_tensors():
    torch = pytest.importorskip("torch")
    cupy = pytest.importorskip("cupy")
    if not (torch.cuda.is_available() and cupy.is_available()):
        pytest.skip("no CUDA device")
    mod = symgrad.compile(lsq_model(), target="cupy", emit="vjp")
    d = {k: torch.from_numpy(a).cuda() for k, a in lsq_data().items()}
    W = d["W"].clone().requires_grad_()
    loss = symgrad.to_torch(mod)(W=W, b=d["b"], X=d["X"], Y=d["Y"])
    loss.backward()
    torch.testing.assert_close(W.grad, 2 * d["X"].T @ (d["X"] @ d["W"] + d["b"] - d["Y"]), rtol=1e-10, atol=1e-10)


# ---- to_jax (jax64: tests/conftest.py) ---------------------------------------------------------------
def test_to_jax_grad_under_jit_matches_jax_autodiff_and_check_grads(jax64, lsq):
    jax = jax64
    import jax.numpy as jnp
    from jax.test_util import check_grads
    d = lsq_data(7)
    f = symgrad.to_jax(lsq)

    def ours(W, b):
        return f(W=W, b=b, X=d["X"], Y=d["Y"])

    def ref(W, b):
        return ((jnp.asarray(d["X"]) @ W + b - d["Y"]) ** 2).sum()
    val, grads = jax.jit(jax.value_and_grad(ours, argnums=(0, 1)))(d["W"], d["b"])
    rval, rgrads = jax.value_and_grad(ref, argnums=(0, 1))(d["W"], d["b"])
    assert val.dtype == jnp.float64 and float(val) == pytest.approx(float(rval), rel=1e-13)
    for g, r in zip(grads, rgrads):
        np.testing.assert_allclose(g, r, rtol=1e-12)
    check_grads(ours, (d["W"], d["b"]), order=1, modes=["rev"])
    # vmap over a batch of weight matrices (the callback loops over the batch)
    Ws = np.stack([d["W"], 2 * d["W"], -d["W"]])
    np.testing.assert_allclose(jax.vmap(ours, in_axes=(0, None))(Ws, d["b"]),
                               jax.vmap(ref, in_axes=(0, None))(Ws, d["b"]), rtol=1e-13)
    np.testing.assert_allclose(jax.vmap(jax.grad(ours), in_axes=(0, None))(Ws, d["b"]),
                               jax.vmap(jax.grad(ref), in_axes=(0, None))(Ws, d["b"]), rtol=1e-12)


def test_to_jax_vjp_of_a_matrix_valued_model(jax64, fisher_vjp):
    jax = jax64
    import jax.numpy as jnp
    L = laplacian(5)
    f = symgrad.to_jax(fisher_vjp)
    u = np.linspace(0.1, 0.9, 5)[:, None]
    c = np.random.default_rng(8).standard_normal((5, 1))
    val, pull = jax.vjp(lambda u: f(u=u, L=L, D=0.3, k=2.0, t=0.1), u)
    rval, rpull = jax.vjp(lambda u: 0.3 * jnp.asarray(L) @ u + 2.0 * u ** 2 * (1 - u) * jnp.exp(-0.1), u)
    np.testing.assert_allclose(val, rval, rtol=1e-13)
    np.testing.assert_allclose(pull(c)[0], rpull(c)[0], rtol=1e-12)
    from jax.test_util import check_grads
    check_grads(lambda u: f(u=u, L=L, D=0.3, k=2.0, t=0.1), (u,), order=1, modes=["rev"])
