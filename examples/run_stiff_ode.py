"""A stiff ODE with ``scipy.integrate.solve_ivp(method="BDF")`` and the Jacobian of a generated
module (symgrad.OdeSystem), against letting SciPy difference the Jacobian.

    python examples/run_stiff_ode.py [--small] [--n N]

The system is a discretised 1-D diffusion-reaction equation (Zeldovich's flame front), written in
SymPy with the state a column ``u`` (n x 1) and the discrete Laplacian a data matrix ``L``:

    du/dt = D L u + k u^2 (1 - u) exp(-t / tau)

Diffusion makes it stiff (the eigenvalues of D L reach -4 D (n + 1)^2).  ``OdeSystem(module,
state="u", time="t", D=..., k=..., tau=..., L=...)`` gives ``fun(t, y)`` and ``jac(t, y)``; the
module's ``jacobian`` is dense here (a module with ``sparse_jacobian`` gives a CSR one instead).
Both runs must reach the same solution; the script prints wall time, right-hand-side calls
(counted here: ``sol.nfev`` leaves out the calls SciPy spends on differencing) and Jacobians.
"""
from __future__ import annotations

import time

import numpy as np
import sympy as sp
from scipy.integrate import solve_ivp

import _common
import symgrad

n = sp.Symbol("n", integer=True, positive=True)
u, L = sp.MatrixSymbol("u", n, 1), sp.MatrixSymbol("L", n, n)
D, k, tau, t = sp.symbols("D k tau t")
rhs = D * L * u + u.applyfunc(lambda s: k * s ** 2 * (1 - s)) * sp.exp(-t / tau)
flame = symgrad.Model(rhs, wrt=[u], name="flame_rhs", derivatives="jacobian")


def laplacian(m):
    """Second differences on (0, 1) with zero-flux ends, spacing 1 / (m + 1)."""
    A = np.diag(-2.0 * np.ones(m)) + np.diag(np.ones(m - 1), 1) + np.diag(np.ones(m - 1), -1)
    A[0, 0] = A[-1, -1] = -1.0
    return A * (m + 1) ** 2


def run(small: bool = False, quiet: bool = False, m: int | None = None):
    rep = _common.Report("stiff diffusion-reaction ODE: solve_ivp BDF with symgrad's Jacobian", quiet=quiet)
    m = m or (40 if small else 200)
    ode = symgrad.OdeSystem(symgrad.compile(flame), state="u", time="t", D=1e-3, k=1000.0, tau=1.0, L=laplacian(m))
    xs = np.linspace(0, 1, m)
    y0 = ode.pack(u=(0.5 * np.exp(-200 * xs ** 2))[:, None])
    calls = [0]

    def fun(t_, y):
        calls[0] += 1
        return ode.fun(t_, y)
    out = {}
    for label, jac in (("symgrad jacobian", ode.jac), ("SciPy finite differences", None)):
        calls[0] = 0
        t0 = time.perf_counter()
        sol = solve_ivp(fun, (0.0, 0.3), y0, method="BDF", jac=jac, rtol=1e-6, atol=1e-9)
        dt = time.perf_counter() - t0
        out[label] = (sol, calls[0], dt)
        rep.check(f"{label}: solved", sol.success,
                  f"{dt * 1e3:8.1f} ms, {calls[0]:5d} rhs calls, {sol.njev} Jacobians, {sol.nlu} LU, "
                  f"{sol.t.size} steps")
    (ours, our_calls, our_t), (fd, fd_calls, fd_t) = out.values()
    rep.compare("u(t=0.3): symgrad Jacobian vs differenced", fd.y[:, -1], ours.y[:, -1], rtol=1e-4)
    rep.check("fewer rhs calls with the symbolic Jacobian", our_calls < fd_calls,
              f"{our_calls} vs {fd_calls} ({fd_calls / our_calls:.1f}x); wall {our_t * 1e3:.0f} vs "
              f"{fd_t * 1e3:.0f} ms")
    rep.check("the front has moved (u > 0.5 over a wider region)", (ours.y[:, -1] > 0.5).sum() > (y0 > 0.5).sum(),
              f"{(ours.y[:, -1] > 0.5).sum()} of {m} points above 0.5")
    return rep


def main(argv=None) -> int:
    ap = _common.argparser(__doc__.splitlines()[0], small=True)
    ap.add_argument("--n", type=int, default=None, help="grid points (default 200, 40 with --small)")
    args = ap.parse_args(argv)
    return run(small=args.small, m=args.n).finish()


if __name__ == "__main__":
    raise SystemExit(main())
