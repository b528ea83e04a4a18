"""A large stiff ODE with ``scipy.integrate.solve_ivp(method="BDF")`` and the generated
``sparse_jacobian`` (symgrad.OdeSystem), against the dense ``jacobian`` and SciPy's differencing.

    python examples/run_sparse_ode.py [--small] [--cells C] [--no-dense]

Robertson's chemical kinetics (the textbook stiff system: rate constants 0.04, 3e7 and 1e4) in
``C`` cells whose first rate differs from cell to cell; the state is ``u`` (C x 3, one row per
cell: the three concentrations), 3C unknowns:

    du1/dt = -k1 u1 + k3 u2 u3,   du2/dt = k1 u1 - k3 u2 u3 - k2 u2^2,   du3/dt = k2 u2^2

The Jacobian is block diagonal (3 x 3 per cell): ``sparse_jacobian`` finds it from the graph and
takes 3 ``jvp`` calls per Jacobian, whatever ``C``; the dense ``jacobian`` takes one ``jvp`` per
unknown and hands BDF a dense matrix to factorise; SciPy's differencing takes one right-hand side
per unknown (or 3 with ``jac_sparsity``, here given symgrad's pattern).  All runs must reach the
same solution; the script prints wall time, right-hand-side calls (counted here: ``sol.nfev``
leaves out the calls SciPy spends on differencing), Jacobians and LU factorisations.
"""
from __future__ import annotations

import time

import numpy as np
import sympy as sp
from scipy.integrate import solve_ivp

import _common
import symgrad

C = sp.Symbol("C", integer=True, positive=True)
u, k1 = sp.MatrixSymbol("u", C, 3), sp.MatrixSymbol("k1", C, 1)
k2, k3 = sp.symbols("k2 k3")
u1, u2, u3 = u[:, :1], u[:, 1:2], u[:, 2:]
r1 = sp.HadamardProduct(k1, u1)                      # k1 u1, per cell
r2 = k3 * sp.HadamardProduct(u2, u3)                 # k3 u2 u3
r3 = k2 * u2.applyfunc(lambda s: s ** 2)             # k2 u2^2
rhs = ((r2 - r1) * sp.Matrix([[1, 0, 0]]) + (r1 - r2 - r3) * sp.Matrix([[0, 1, 0]])
       + r3 * sp.Matrix([[0, 0, 1]]))
robertson = symgrad.Model(rhs, wrt=[u], name="robertson_cells")


def run(small: bool = False, quiet: bool = False, cells: int | None = None, dense: bool = True):
    rep = _common.Report("Robertson kinetics in many cells: solve_ivp BDF with sparse_jacobian", quiet=quiet)
    cells = cells or (20 if small else 700)
    rates = (0.04 * (1 + 0.5 * np.sin(np.arange(cells))))[:, None]
    params = {"k1": rates, "k2": 3e7, "k3": 1e4}
    sparse = symgrad.OdeSystem(symgrad.compile(robertson, emit=("sparse_jacobian",)), state="u", **params)
    y0 = sparse.pack(u=np.tile([1.0, 0.0, 0.0], (cells, 1)))
    pattern = sparse.jac(0.0, y0).copy()   # its stored entries, for SciPy's jac_sparsity
    pattern.data[:] = 1
    runs = [("symgrad sparse_jacobian", sparse.jac, None)]
    if dense:
        full = symgrad.OdeSystem(symgrad.compile(robertson, emit=("jacobian",)), state="u", **params)
        runs += [("symgrad dense jacobian", full.jac, None), ("SciPy differencing (dense)", None, None)]
    runs += [("SciPy differencing + jac_sparsity", None, pattern)]
    calls = [0]

    def fun(t_, y):
        calls[0] += 1
        return sparse.fun(t_, y)
    rep.note(f"{cells} cells, {y0.size} unknowns; Jacobian {pattern.nnz} stored, "
             f"{sparse.module.sparsity_info(**sparse.unpack(y0), **params)['jacobian']['colors']} jvps each")
    out = {}
    for label, jac, sparsity in runs:
        calls[0] = 0
        t0 = time.perf_counter()
        sol = solve_ivp(fun, (0.0, 100.0), y0, method="BDF", jac=jac, jac_sparsity=sparsity, rtol=1e-6,
                        atol=1e-10)
        dt = time.perf_counter() - t0
        out[label] = (sol, calls[0], dt)
        rep.check(f"{label}: solved", sol.success,
                  f"{dt * 1e3:8.1f} ms, {calls[0]:6d} rhs calls, {sol.njev} Jacobians, {sol.nlu} LU, "
                  f"{sol.t.size} steps")
    ours, our_calls, our_t = out["symgrad sparse_jacobian"]
    for label, (sol, n_calls, dt) in out.items():
        if label != "symgrad sparse_jacobian":
            rep.compare(f"u(t=100) vs {label}", sol.y[:, -1], ours.y[:, -1], rtol=1e-4)
    mass = ours.y[:, -1].reshape(cells, 3).sum(axis=1)
    rep.compare("mass conserved in every cell (u1 + u2 + u3 = 1)", np.ones(cells), mass, rtol=1e-6)
    if dense:
        fd_calls, fd_t = out["SciPy differencing (dense)"][1:]
        dense_t = out["symgrad dense jacobian"][2]
        rep.check("fewer rhs calls than dense differencing", our_calls < fd_calls,
                  f"{our_calls} vs {fd_calls} rhs calls; wall {our_t * 1e3:.0f} vs {fd_t * 1e3:.0f} ms "
                  f"(dense jacobian {dense_t * 1e3:.0f} ms)")
    return rep


def main(argv=None) -> int:
    ap = _common.argparser(__doc__.splitlines()[0], small=True)
    ap.add_argument("--cells", type=int, default=None, help="cells (default 700: 2100 unknowns; 20 with --small)")
    ap.add_argument("--no-dense", action="store_true", help="skip the dense runs (for large --cells)")
    args = ap.parse_args(argv)
    return run(small=args.small, cells=args.cells, dense=not args.no_dense).finish()


if __name__ == "__main__":
    raise SystemExit(main())
