"""Sparse Hessians: the extended Rosenbrock function, symgrad's sparse_hessian against CasADi.

    python -m benchmarks.bench_sparse [--smoke] [--unset-openblas-env] [--rounds R]

f(x) = sum_i 100 (x[i+1] - x[i]**2)**2 + (1 - x[i])**2 with n = 2*10^5 variables (1000 with
``--smoke``): a tridiagonal Hessian (3n - 2 entries).  Each method returns the value, the gradient
and the Hessian as a ``scipy.sparse`` matrix:

* symgrad: ``sparse_hessian`` of the model ``100 (x[1:] - x[:-1]**2)**2 + (1 - x[:-1])**2`` (x a
  MatrixSymbol (n, 1); the function is the sum of the value): the pattern and its star coloring
  (3 colors) are computed on the first call for these shapes and kept, then each call is 3 hvps
  and a gather;
* CasADi: an SX ``Function`` of (f, grad f, hessian f) (``casadi.hessian``), called on the point,
  its Hessian converted with ``DM.sparse()`` to SciPy (and a row of the call alone, its results
  left as CasADi ``DM``s).

The unit (ratio column) is symgrad's ``value_and_grad``.  Setup (the compile, CasADi's build, the
first call) is not timed by the table; its times are in the notes.
"""
from __future__ import annotations

import time

import numpy as np

from benchmarks import harness

METHODS = [
    ("symgrad_vag", "symgrad value_and_grad (1 gradient: the unit)"),
    ("symgrad", "symgrad sparse_hessian (3 hvps + recovery)"),
    ("casadi", "CasADi SX Function (f, grad, hessian) + DM.sparse()"),
    ("casadi_call", "CasADi SX Function call alone (results as CasADi DMs)"),
]


def cases(settings):
    n = 1000 if settings.smoke else 2 * 10 ** 5
    return [(f"Rosenbrock n={n}", {"n": n}, 1e-8)]


def rosenbrock_model(n):
    import sympy as sp
    import symgrad
    x = sp.MatrixSymbol("x", n, 1)
    r = x[1:, :] - x[:-1, :].applyfunc(lambda t: t ** 2)
    terms = 100 * sp.HadamardProduct(r, r) + (sp.OneMatrix(n - 1, 1) - x[:-1, :]).applyfunc(lambda t: t ** 2)
    return symgrad.Model(terms, wrt=[x], name=f"rosenbrock{n}")


def _fp(value, grad, H):
    """What the check column compares: f, the gradient and the Hessian's two diagonals."""
    return float(np.sum(value)), {"grad": np.ravel(grad), "H.diag": H.diagonal(), "H.upper": H.diagonal(1),
                                  "H.lower": H.diagonal(-1)}


def setup(method, case):
    n = case["n"]
    x0 = np.random.default_rng(0).uniform(-1.5, 1.5, (n, 1))
    if method in ("symgrad", "symgrad_vag"):
        import symgrad
        t0 = time.perf_counter()
        mod = symgrad.compile(rosenbrock_model(n), emit=("sparse_hessian",))
        t1 = time.perf_counter()
        mod.sparse_hessian(x=x0)
        t2 = time.perf_counter()
        info = mod.sparsity_info(x=x0)["hessian"]
        note = (f"symgrad: compile {t1 - t0:.2f} s, first sparse_hessian (pattern + star coloring, "
                f"{info['nnz']} entries, {info['colors']} colors) {t2 - t1:.2f} s")
        if method == "symgrad_vag":
            return (lambda: (lambda r: (r[0].sum(), {"grad": r[1]["x"]}))(mod.value_and_grad(x=x0))), ""
        return (lambda: (lambda r: _fp(r[0], r[1]["x"], r[2]))(mod.sparse_hessian(x=x0))), note
    if method in ("casadi", "casadi_call"):
        import casadi as ca
        t0 = time.perf_counter()
        x = ca.SX.sym("x", n)
        f = ca.sum1(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
        H, g = ca.hessian(f, x)
        F = ca.Function("F", [x], [f, g, H])
        t1 = time.perf_counter()
        xd = ca.DM(x0.ravel())
        F(xd)
        t2 = time.perf_counter()
        note = f"CasADi: SX build {t1 - t0:.2f} s, first call {t2 - t1:.2f} s"

        def run():
            fv, gv, Hv = F(xd)
            return _fp(float(fv), np.asarray(gv).ravel(), Hv.sparse().tocsr())
        if method == "casadi":
            return run, note
        first = [run]  # the harness checks the first call's results: converted once, then DMs as they come
        return lambda: first.pop()() if first else F(xd)
    raise ValueError(method)


def tables(settings, log=print):
    rows = harness.run_cases("benchmarks.bench_sparse", METHODS, cases(settings), settings, log)
    return harness.runtime_table(rows, "Sparse Hessians: extended Rosenbrock, sparse_hessian vs CasADi",
                                 baseline="symgrad_vag", baseline_name="symgrad value_and_grad",
                                 check_ref="symgrad")


if __name__ == "__main__":
    harness.script_main(tables, __doc__)
