"""Small problems: where the fixed cost of every call (dispatch, argument handling, allocation), not
the arithmetic, is the time -- an optimiser or a sampler calls the gradient 10^3..10^6 times.

    python -m benchmarks.bench_small [--smoke] [--rounds R]

Rows (each method returns the value and every gradient; the check column compares them with the
hand-written NumPy baseline):

* ``GMM d=2 K=5 n=1000``: ADBench's Gaussian-mixture objective of examples/gmm.py (``gmm_d2_k5``),
  gradient wrt alphas (1x5), means (5x2), icf (5x3); the peers write the published formula
  (logsumexp over the components, Q_k lower triangular with exp(icf[:, :d]) on its diagonal,
  Wishart prior gamma = 1, m = 0); SymPy gets it written per point in 2 + 30 scalar Symbols.
* ``MLP N=64`` / ``N=512``: seed 002's 784-50-1 ReLU MLP + MSE in float64 (bench_mlp.py's methods).
* ``f(x, y) n=100``: seed 003's f(x, y) on 100 float64 elements (bench_fxy.py's methods).
* ``L-BFGS-B Rosenbrock n=50``: one whole ``scipy.optimize.minimize(method="L-BFGS-B", jac=True,
  tol=0, options={"maxiter": 20})`` of the extended Rosenbrock function in 50 variables from
  (-1.2, 1, -1.2, 1, ...), driven by ``symgrad.Objective(module).fun_and_jac`` / a hand-written
  NumPy function / ``jax.jit(value_and_grad)`` with NumPy in and out / PyTorch eager / lambdify; the
  check compares the final point, value and gradient (every method takes the same steps).

Each timed call runs the method REPEAT times in a loop (minimize: once); the table's times are per
call (the timed call's time divided by its REPEAT).
"""
from __future__ import annotations

import numpy as np

from benchmarks import bench_fxy, bench_mlp, bench_sparse, harness

METHODS = [
    ("symgrad", "symgrad (generated module)"),
    ("symgrad_numba", "symgrad --target numba (fused loops)"),
    ("numpy_hand", "hand NumPy"),
    ("jax", "jax.jit(value_and_grad)"),
    ("torch", "PyTorch eager (CPU)"),
    ("sympy_cse", "SymPy diff + lambdify(cse=True)"),
]
GMM = ("alphas", "means", "icf")
TOL = 1e-9
LBFGS = {"n": 50, "maxiter": 20}   # at 30, rounding has moved the final points apart by 4e-9


def cases(settings):
    """(label, case, tol); case["repeat"] is the number of calls in one timed call."""
    def rep(r):
        return 2 if settings.smoke else r
    mlp = {"kind": "mlp", "m": 784, "nh": 50, "dtype": "float64"}
    return [("GMM d=2 K=5 n=1000", {"kind": "gmm", "d": 2, "K": 5, "n": 1000, "repeat": rep(20)}, TOL),
            ("MLP N=64 m=784 nh=50 float64", {**mlp, "N": 64, "repeat": rep(50)}, TOL),
            ("MLP N=512 m=784 nh=50 float64", {**mlp, "N": 512, "repeat": rep(10)}, TOL),
            ("f(x, y) n=100 float64", {"kind": "fxy", "n": 100, "repeat": rep(200)}, TOL),
            (f"L-BFGS-B Rosenbrock n={LBFGS['n']}, {LBFGS['maxiter']} iterations (one minimize)",
             {"kind": "lbfgs", **LBFGS, "repeat": 1}, TOL)]


def repeated(call, n):
    """call() n times in one timed call; the last result is the one checked."""
    def run():
        for _ in range(n - 1):
            call()
        return call()
    return run


# ----------------------------------------------------------------------------------------------
# GMM (examples/gmm.py)
# ----------------------------------------------------------------------------------------------
def gmm_data(case):
    rng = np.random.default_rng(0)
    d, K, n = case["d"], case["K"], case["n"]
    return {"alphas": rng.normal(size=(1, K)), "means": rng.normal(size=(K, d)),
            "icf": 0.3 * rng.normal(size=(K, d * (d + 1) // 2)), "x": rng.normal(size=(n, d))}


def gmm_constant(d, K, n):
    """The terms without parameters: -n d/2 log(2 pi) - K C(d, gamma=1, m=0)."""
    from scipy.special import multigammaln
    C = d * (d + 1) * (-0.5 * np.log(2)) - multigammaln(0.5 * (d + 1), d)
    return -n * d * 0.5 * np.log(2 * np.pi) - K * C


def gmm_hand(alphas, means, icf, x):
    """Forward and reverse by hand: Q_k (K, d, d), the (n, K) logsumexp arguments, their softmax."""
    n, d = x.shape
    K = means.shape[0]
    rows, cols = np.tril_indices(d, -1)                   # below the diagonal, row by row
    qd = icf[:, :d]
    Qdiag = np.exp(qd)
    Q = np.zeros((K, d, d))
    Q[:, np.arange(d), np.arange(d)] = Qdiag
    Q[:, rows, cols] = icf[:, d:]
    xc = x[:, None, :] - means[None]                      # (n, K, d)
    Qx = np.einsum("kij,nkj->nki", Q, xc)
    main = alphas + qd.sum(1) - 0.5 * (Qx * Qx).sum(2)    # (n, K)
    mx = main.max(1, keepdims=True)
    e = np.exp(main - mx)
    s = e.sum(1, keepdims=True)
    p = e / s                                             # d logsumexp / d main
    ea = np.exp(alphas - alphas.max())
    prior = 0.5 * ((Qdiag * Qdiag).sum() + (icf[:, d:] ** 2).sum())
    value = (gmm_constant(d, K, n) + (np.log(s) + mx).sum() - n * (np.log(ea.sum()) + alphas.max())
             + prior)
    pk = p.sum(0)                                         # (K,)
    dQx = -Qx * p[:, :, None]
    dQ = np.einsum("nki,nkj->kij", dQx, xc)
    dicf = np.empty_like(icf)
    dicf[:, :d] = dQ[:, np.arange(d), np.arange(d)] * Qdiag + pk[:, None] + Qdiag * Qdiag
    dicf[:, d:] = dQ[:, rows, cols] + icf[:, d:]
    return value, {"alphas": (pk - n * ea / ea.sum())[None], "icf": dicf,
                   "means": -np.einsum("kij,nki->kj", Q, dQx)}


def gmm_jax(d):
    import jax
    import jax.numpy as jnp
    from jax.scipy.special import logsumexp
    rows, cols = np.tril_indices(d, -1)

    def f(alphas, means, icf, x):
        n, K = x.shape[0], means.shape[0]
        qd = icf[:, :d]
        Q = jnp.zeros((K, d, d)).at[:, np.arange(d), np.arange(d)].set(jnp.exp(qd))
        Q = Q.at[:, rows, cols].set(icf[:, d:])
        Qx = jnp.einsum("kij,nkj->nki", Q, x[:, None, :] - means[None])
        main = alphas + qd.sum(1) - 0.5 * (Qx * Qx).sum(2)
        prior = 0.5 * ((jnp.exp(2 * qd)).sum() + (icf[:, d:] ** 2).sum())
        return (gmm_constant(d, K, n) + logsumexp(main, axis=1).sum() - n * logsumexp(alphas)
                + prior)
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))


def gmm_torch(d):
    import torch
    rows, cols = np.tril_indices(d, -1)

    def f(alphas, means, icf, x):
        n, K = x.shape[0], means.shape[0]
        qd = icf[:, :d]
        Q = torch.diag_embed(torch.exp(qd))
        Q = Q.index_put((torch.arange(K)[:, None], torch.from_numpy(rows), torch.from_numpy(cols)),
                        icf[:, d:], accumulate=True)
        Qx = torch.einsum("kij,nkj->nki", Q, x[:, None, :] - means[None])
        main = alphas + qd.sum(1) - 0.5 * (Qx * Qx).sum(2)
        prior = 0.5 * (torch.exp(2 * qd).sum() + (icf[:, d:] ** 2).sum())
        return (gmm_constant(d, K, n) + torch.logsumexp(main, 1).sum() - n * torch.logsumexp(alphas, 1).sum()
                + prior)
    return f


def gmm_sympy(d, K):
    """The objective written per point in scalar Symbols: a per-point logsumexp (x_0..x_{d-1} bound to
    the columns of x) whose partials are summed over the points, plus the terms without x."""
    import sympy as sp
    xs = sp.symbols(f"x0:{d}")
    a = sp.symbols(f"a0:{K}")
    mu = [sp.symbols(f"mu{k}_0:{d}") for k in range(K)]
    c = [sp.symbols(f"icf{k}_0:{d * (d + 1) // 2}") for k in range(K)]
    params = [*a, *(s for row in mu for s in row), *(s for row in c for s in row)]
    mains = []
    for k in range(K):
        low = iter(c[k][d:])
        Q = sp.Matrix(d, d, lambda r, col: sp.exp(c[k][r]) if r == col else (next(low) if col < r else 0))
        Qx = Q * sp.Matrix([xs[j] - mu[k][j] for j in range(d)])
        mains.append(a[k] + sum(c[k][:d]) - sum(t ** 2 for t in Qx) / 2)
    per_point = sp.log(sum(sp.exp(m) for m in mains))
    n = sp.Symbol("n")
    rest = (-n * sp.log(sum(sp.exp(t) for t in a))
            + sum(sum(sp.exp(2 * t) for t in row[:d]) + sum(t ** 2 for t in row[d:]) for row in c) / 2)
    f_pt = sp.lambdify([params, xs], [per_point, [sp.diff(per_point, p) for p in params]], "numpy", cse=True)
    f_rest = sp.lambdify([params, n], [rest, [sp.diff(rest, p) for p in params]], "numpy", cse=True)
    shapes = {"alphas": (1, K), "means": (K, d), "icf": (K, d * (d + 1) // 2)}

    def call(alphas, means, icf, x):
        nx = x.shape[0]
        p = [*alphas.ravel(), *means.ravel(), *icf.ravel()]
        v, g = f_pt(p, x.T)
        v2, g2 = f_rest(p, nx)
        # a partial that does not depend on x comes back as one number: it counts n times
        flat = np.array([np.sum(gi) if np.ndim(gi) else gi * nx for gi in g]) + np.array(g2, dtype=float)
        grads, at = {}, 0
        for name, shape in shapes.items():
            size = int(np.prod(shape))
            grads[name] = flat[at:at + size].reshape(shape)
            at += size
        return gmm_constant(d, K, nx) + np.sum(v) + v2, grads
    return call


def setup_gmm(method, case):
    data = gmm_data(case)
    d, K = case["d"], case["K"]
    if method in ("symgrad", "symgrad_numba"):
        import symgrad
        mod = symgrad.compile(harness.symgrad_model("gmm.py", f"gmm_d{d}_k{K}"),
                              target="numba" if method == "symgrad_numba" else "numpy")
        return lambda: mod.value_and_grad(**data)
    if method == "numpy_hand":
        return lambda: gmm_hand(**data)
    if method == "jax":
        import jax
        jax.config.update("jax_enable_x64", True)
        vg = gmm_jax(d)
        args = [jax.device_put(data[k]) for k in (*GMM, "x")]

        def run():
            v, g = jax.block_until_ready(vg(*args))
            return v, dict(zip(GMM, g))
        return run
    if method == "torch":
        import torch
        f = gmm_torch(d)
        t = {k: torch.from_numpy(v) for k, v in data.items()}
        params = [t[k].requires_grad_() for k in GMM]

        def run():
            v = f(**t)
            return v.detach(), dict(zip(GMM, torch.autograd.grad(v, params)))
        return run, f"torch intra-op threads={torch.get_num_threads()}"
    if method == "sympy_cse":
        call = gmm_sympy(d, K)
        return lambda: call(**data)
    raise ValueError(method)


# ----------------------------------------------------------------------------------------------
# L-BFGS-B on the extended Rosenbrock function (bench_sparse's model)
# ----------------------------------------------------------------------------------------------
def rosen_hand(x):
    a, b = x[:-1], x[1:]
    r, s = b - a * a, 1 - a
    g = np.zeros_like(x)
    g[1:] += 200 * r
    g[:-1] += -400 * r * a - 2 * s
    return 100 * (r @ r) + s @ s, g


def rosen_fun_and_jac(method, n):
    """A ``fun(x) -> (value, gradient)`` for ``minimize(jac=True)``, NumPy in and out."""
    if method in ("symgrad", "symgrad_numba"):
        import symgrad
        mod = symgrad.compile(bench_sparse.rosenbrock_model(n),
                              target="numba" if method == "symgrad_numba" else "numpy")
        return symgrad.Objective(mod).fun_and_jac
    if method == "numpy_hand":
        return rosen_hand
    if method == "jax":
        import jax
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        def f(x):
            return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()
        vg = jax.jit(jax.value_and_grad(f))

        def fj(x):
            v, g = vg(x)
            return float(v), np.asarray(g)
        return fj
    if method == "torch":
        import torch

        def fj(x):
            xt = torch.from_numpy(x).requires_grad_()
            v = (100 * (xt[1:] - xt[:-1] ** 2) ** 2 + (1 - xt[:-1]) ** 2).sum()
            g, = torch.autograd.grad(v, xt)
            return v.item(), g.numpy()
        return fj
    if method == "sympy_cse":
        import sympy as sp
        xs = sp.symbols(f"x0:{n}")
        f = sum(100 * (xs[i + 1] - xs[i] ** 2) ** 2 + (1 - xs[i]) ** 2 for i in range(n - 1))
        fn = sp.lambdify([xs], [f, [sp.diff(f, s) for s in xs]], "numpy", cse=True)

        def fj(x):
            v, g = fn(x)
            return v, np.array(g)
        return fj
    raise ValueError(method)


def setup_lbfgs(method, case):
    from scipy.optimize import minimize
    fj = rosen_fun_and_jac(method, case["n"])
    x0 = np.tile([-1.2, 1.0], case["n"] // 2)
    options = {"maxiter": case["maxiter"]}

    def run():
        res = minimize(fj, x0, jac=True, method="L-BFGS-B", tol=0, options=options)
        run.info = f"L-BFGS-B ({method}): {res.nit} iterations, {res.nfev} fun_and_jac calls"
        return res.fun, {"x": res.x, "jac": res.jac}
    run()
    return run, run.info


def setup(method, case):
    kind = case["kind"]
    if kind == "gmm":
        out = setup_gmm(method, case)
    elif kind == "lbfgs":
        out = setup_lbfgs(method, case)
    else:                                                 # the seed benchmarks' own methods
        out = (bench_mlp if kind == "mlp" else bench_fxy).setup(method, case)
    fn, info = out if isinstance(out, tuple) else (out, "")
    return repeated(fn, case["repeat"]), info


def tables(settings, log=print):
    cs = cases(settings)
    # the minimize in fresh workers: SciPy's L-BFGS-B runs on SciPy's own OpenBLAS, and with NumPy's
    # pool woken by the rows before it (the GMM's and MLP's matmuls) the two busy-waiting pools made
    # the whole minimize 1 ms -> 140 ms, in whichever worker had used NumPy's threads last
    calls = [c for c in cs if c[1]["kind"] != "lbfgs"]
    rows = [r for part in (calls, [c for c in cs if c not in calls])
            for r in harness.run_cases("benchmarks.bench_small", METHODS, part, settings, log)]
    repeat = {label: case["repeat"] for label, case, _ in cs}
    for r in rows:                                        # per-call times
        r.times = [t / repeat[r.case] for t in r.times]
    reps = ", ".join(f"{case['repeat']}" for _, case, _ in cs)
    return harness.runtime_table(rows, f"Small problems: per-call time of value and gradients (calls per timed "
                                       f"call, by row: {reps}; L-BFGS-B: one whole minimize)")


if __name__ == "__main__":
    harness.script_main(tables, __doc__)
