"""A Poisson GLM fitted with ``scipy.optimize.minimize`` on a generated module (symgrad.Objective).

    python examples/run_scipy_glm.py [--small]

The model is the Poisson negative log-likelihood ``sum(exp(X w) - y * (X w))`` (the log y! term does
not depend on w).  ``symgrad.Objective`` turns the module into ``fun``/``jac``/``hess``/``hessp`` of
one flat vector, and ``minimize`` runs ``trust-exact`` (the dense Hessian from ``hessian``) and
``trust-ncg`` (Hessian-vector products from ``hvp``).  Both are checked against Newton's method
(IRLS) written out here in NumPy, and against BFGS with SciPy's finite-difference gradient (what
you would get without derivatives: many more function evaluations).
"""
from __future__ import annotations

import time

import numpy as np
import sympy as sp
from scipy.optimize import minimize

import _common
import symgrad

N, k = sp.symbols("N k", integer=True, positive=True)
X, w, y = sp.MatrixSymbol("X", N, k), sp.MatrixSymbol("w", k, 1), sp.MatrixSymbol("y", N, 1)
z = X * w
poisson_nll = symgrad.Model(sp.Trace(sp.OneMatrix(1, N) * (z.applyfunc(sp.exp) - sp.HadamardProduct(y, z))),
                            wrt=[w], name="poisson_nll", derivatives="hessian")


def data(n, kk, seed=0):
    rng = np.random.default_rng(seed)
    Xv = np.c_[np.ones(n), rng.standard_normal((n, kk - 1)) / np.sqrt(kk)]
    w_true = rng.standard_normal((kk, 1)) * 0.5
    return Xv, rng.poisson(np.exp(Xv @ w_true)).astype(float), w_true


def irls(Xv, yv, iters=50):
    """Newton's method on the Poisson NLL, derived by hand: g = X^T (mu - y), H = X^T diag(mu) X."""
    wv = np.zeros((Xv.shape[1], 1))
    for _ in range(iters):
        mu = np.exp(Xv @ wv)
        step = np.linalg.solve(Xv.T @ (mu * Xv), Xv.T @ (mu - yv))
        wv -= step
        if np.abs(step).max() < 1e-12:
            break
    return wv


def run(small: bool = False, quiet: bool = False):
    rep = _common.Report("Poisson GLM with scipy.optimize.minimize and symgrad.Objective", quiet=quiet)
    Xv, yv, w_true = data(*((500, 5) if small else (5000, 20)))
    obj = symgrad.Objective(symgrad.compile(poisson_nll), X=Xv, y=yv)
    x0 = obj.pack(w=np.zeros((Xv.shape[1], 1)))
    want = irls(Xv, yv).ravel()
    for label, kw in (("trust-exact (hess)", dict(jac=True, hess=obj.hess)),
                      ("trust-ncg (hessp)", dict(jac=True, hessp=obj.hessp)),
                      ("BFGS, finite-difference gradient", dict())):
        method = label.split()[0].rstrip(",")
        fun = obj.fun_and_jac if kw.get("jac") else obj.fun
        t0 = time.perf_counter()
        res = minimize(fun, x0, method=method, options={"gtol": 1e-8} if method != "BFGS" else {}, **kw)
        dt = time.perf_counter() - t0
        rep.note(f"{label:<34} {res.nit:4d} iterations {res.nfev:6d} evaluations {dt * 1e3:8.1f} ms")
        rep.compare(f"{method}: w vs Newton/IRLS by hand", want, res.x, rtol=1e-5 if method == "BFGS" else 1e-8)
    rep.compare("fitted w vs the true w (sampling error)", w_true.ravel(), want, rtol=0.5)
    return rep


def main(argv=None) -> int:
    args = _common.argparser(__doc__.splitlines()[0], small=True).parse_args(argv)
    return run(small=args.small).finish()


if __name__ == "__main__":
    raise SystemExit(main())
