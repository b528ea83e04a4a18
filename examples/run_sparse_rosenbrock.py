"""The extended Rosenbrock function in 10^5 variables, minimised by
``scipy.optimize.minimize(method="trust-constr")`` with the generated ``sparse_hessian``.

    python examples/run_sparse_rosenbrock.py [--small] [--n N]

The variables are the pairs of rows of ``x`` (m x 2, n = 2m; Moré, Garbow and Hillstrom's extended
Rosenbrock function, ACM TOMS 7(1), 1981), the value the vector of terms whose sum is minimised:

    f(x) = sum_r 100 (x[r, 1] - x[r, 0]^2)^2 + (1 - x[r, 0])^2

``m`` is a symbol, read from ``x`` at call time: one compile serves every size.  ``symgrad.Objective``
gives ``fun_and_jac`` (one ``value_and_grad``) and ``hess``, the module's ``scipy.sparse`` CSR
Hessian (2 x 2 blocks: 2 ``hvp`` calls per Hessian, whatever ``n``).  The start is the classic
(-1.2, 1) in every pair, the minimum ``x = 1`` (``f = 0``); the script prints iterations, time and
the error there.  (The chained form ``Sum(100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2)``, tridiagonal,
compiles too, docs/sparse.md; from a far start its Newton steps need a number of iterations that
grows with n.)
"""
from __future__ import annotations

import time

import numpy as np
import sympy as sp
from scipy.optimize import minimize

import _common
import symgrad

m = sp.Symbol("m", integer=True, positive=True)
x = sp.MatrixSymbol("x", m, 2)
a, b = x[:, :1], x[:, 1:]
r = b - a.applyfunc(lambda t: t ** 2)
terms = 100 * sp.HadamardProduct(r, r) + (sp.OneMatrix(m, 1) - a).applyfunc(lambda t: t ** 2)
rosenbrock = symgrad.Model(terms, wrt=[x], name="ext_rosenbrock", derivatives="sparse_hessian")


def run(small: bool = False, quiet: bool = False, size: int | None = None):
    rep = _common.Report("extended Rosenbrock: trust-constr with symgrad's sparse Hessian", quiet=quiet)
    size = size or (200 if small else 100_000)
    t0 = time.perf_counter()
    obj = symgrad.Objective(symgrad.compile(rosenbrock))
    x0 = obj.pack(x=np.tile([-1.2, 1.0], (size // 2, 1)))
    t_compile = time.perf_counter() - t0
    spent = [0.0]  # seconds inside symgrad's functions

    def timed(f):
        def call(*args):
            t = time.perf_counter()
            try:
                return f(*args)
            finally:
                spent[0] += time.perf_counter() - t
        return call
    t0 = time.perf_counter()
    res = minimize(timed(obj.fun_and_jac), x0, jac=True, hess=timed(obj.hess), method="trust-constr",
                   options={"gtol": 1e-8, "xtol": 1e-12, "maxiter": 2000})
    dt = time.perf_counter() - t0
    H = obj.hess(res.x)
    rep.note(f"n = {size}: compile {t_compile:.2f} s; Hessian {H.shape[0]} x {H.shape[1]}, {H.nnz} stored "
             f"({obj.module.sparsity_info(**obj.unpack(x0))['hessian']['colors']} hvps each)")
    rep.check("trust-constr converged", res.status in (1, 2),
              f"{res.nit} iterations, {res.nfev} f+g, {res.njev} g, {res.nhev} Hessians, {dt:.2f} s "
              f"({spent[0]:.2f} s in symgrad's value_and_grad and sparse_hessian); {res.message}")
    rep.check("2 x 2 blocks", H.nnz == 2 * size, f"{H.nnz} stored")
    rep.compare("x at the minimum (all ones)", np.ones(size), res.x, rtol=1e-6)
    rep.compare("f at the minimum", 0.0, res.fun, rtol=0, atol=1e-12)
    rep.note(f"max |x - 1| = {np.max(np.abs(res.x - 1)):.2e}, |grad| = {np.linalg.norm(obj.jac(res.x)):.2e}")
    return rep


def main(argv=None) -> int:
    ap = _common.argparser(__doc__.splitlines()[0], small=True)
    ap.add_argument("--n", type=int, default=None, help="variables (default 100000, 200 with --small)")
    args = ap.parse_args(argv)
    return run(small=args.small, size=args.n).finish()


if __name__ == "__main__":
    raise SystemExit(main())
