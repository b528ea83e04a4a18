"""The bridges of contract 4f: what symgrad.Objective, symgrad.OdeSystem and symgrad.to_torch add.

    python -m benchmarks.bench_bridges [--smoke] [--rounds R]

* ``Objective.fun_and_jac`` against the module's own ``value_and_grad`` (seed 001's logistic NLL,
  k parameters): the cost of the flat vector (copy, cache key, split, concatenate; goal <= 10% at
  k = 1000) -- and against ``jax.jit(jax.value_and_grad)`` of the same NLL over a flat vector
  (``ravel_pytree``), with its result brought back to NumPy as SciPy needs it.  Every call is at a
  new point (two points alternate), so the Objective's cache never answers.
* ``solve_ivp(method="BDF")`` on the diffusion-reaction system of examples/run_stiff_ode.py (n grid
  points): ``OdeSystem``'s ``fun`` and ``jac`` against SciPy differencing the Jacobian and against
  a right-hand side and Jacobian written by hand in NumPy; one timed call is one whole solve; the
  notes give right-hand-side calls (counted, differencing included) and Jacobians.
* One training step (forward, backward, SGD update) of seed 002's 784-50-1 ReLU MLP + MSE: the
  module alone (NumPy update) against ``symgrad.to_torch`` of it inside a ``torch.optim.SGD`` step
  (goal: within 10%), and PyTorch's own eager MLP.
"""
from __future__ import annotations

import numpy as np

from benchmarks import harness

OBJ_METHODS = [
    ("symgrad", "module value_and_grad (the unit)"),
    ("objective", "Objective.fun_and_jac"),
    ("jax", "jax.jit(value_and_grad) + ravel_pytree, to NumPy"),
]
ODE_METHODS = [
    ("numpy_hand", "hand NumPy rhs + Jacobian"),
    ("symgrad", "OdeSystem fun + jac"),
    ("symgrad_fd", "OdeSystem fun, SciPy differences the Jacobian"),
]
STEP_METHODS = [
    ("symgrad", "module value_and_grad + NumPy SGD (the unit)"),
    ("to_torch", "to_torch(module) in a torch.optim.SGD step"),
    ("torch", "PyTorch eager MLP, same step"),
]
MLP = ("w1", "b1", "w2", "b2")
LR = 1e-3


def obj_cases(settings):
    if settings.smoke:
        return [("logreg N=50 k=5", {"N": 50, "k": 5}, 1e-9)]
    return [("logreg N=200 k=10", {"N": 200, "k": 10}, 1e-9),
            ("logreg N=2000 k=1000", {"N": 2000, "k": 1000}, 1e-9)]


def ode_cases(settings):
    if settings.smoke:
        return [("BDF n=10", {"n": 10}, 1e-5)]
    return [("BDF n=50", {"n": 50}, 1e-5), ("BDF n=200", {"n": 200}, 1e-5)]


def step_cases(settings):
    if settings.smoke:
        return [("MLP step N=64 m=16 nh=8", {"N": 64, "m": 16, "nh": 8}, 1e-8)]
    return [("MLP step N=512 m=784 nh=50", {"N": 512, "m": 784, "nh": 50}, 1e-8),
            ("MLP step N=5000 m=784 nh=50", {"N": 5000, "m": 784, "nh": 50}, 1e-8)]


def _alternating(call, a, b):
    """call(a), call(b), call(a), ...: every timed call at a new point."""
    state = [0]

    def run():
        state[0] ^= 1
        return call(a if state[0] else b)
    return run


def setup_objective(method, case):
    import symgrad
    rng = np.random.default_rng(0)
    n, k = case["N"], case["k"]
    Phi, y = rng.standard_normal((n, k)) / np.sqrt(k), (rng.uniform(size=(n, 1)) < 0.5).astype(float)
    w1, w2 = 0.1 * rng.standard_normal((k, 1)), 0.1 * rng.standard_normal((k, 1))
    if method in ("symgrad", "objective"):
        mod = symgrad.compile(harness.symgrad_model("seed001_autodiff.py", "seed001_logreg_nll"))
        if method == "symgrad":
            return _alternating(lambda w: (lambda r: (r[0], {"grad": r[1]["w"]}))(
                mod.value_and_grad(w=w, Phi=Phi, y=y)), w1, w2)
        obj = symgrad.Objective(mod, Phi=Phi, y=y)
        return _alternating(lambda x: (lambda r: (r[0], {"grad": r[1]}))(obj.fun_and_jac(x)),
                            obj.pack(w=w1), obj.pack(w=w2))
    if method == "jax":
        import jax
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp
        from jax.flatten_util import ravel_pytree
        x1, unravel = ravel_pytree({"w": jnp.asarray(w1)})
        x2 = ravel_pytree({"w": jnp.asarray(w2)})[0]
        Pj, yj = jnp.asarray(Phi), jnp.asarray(y)

        def nll(x):
            return -jax.nn.log_sigmoid((2 * yj - 1) * (Pj @ unravel(x)["w"])).sum()
        vg = jax.jit(jax.value_and_grad(nll))

        def call(x):
            v, g = vg(x)
            return float(v), {"grad": np.asarray(g)}
        return _alternating(call, np.asarray(x1), np.asarray(x2))
    raise ValueError(method)


def setup_ode(method, case):
    import sys

    from scipy.integrate import solve_ivp
    import symgrad
    sys.path.insert(0, str(harness.ROOT / "examples"))     # the example's model and Laplacian
    import run_stiff_ode as ex
    m = case["n"]
    params = dict(D=1e-3, k=1000.0, tau=1.0, L=ex.laplacian(m))
    y0 = 0.5 * np.exp(-200 * np.linspace(0, 1, m) ** 2)
    if method == "numpy_hand":
        L, D, k, tau = params["L"], params["D"], params["k"], params["tau"]

        def fun(t, y):
            return D * (L @ y) + k * y ** 2 * (1 - y) * np.exp(-t / tau)

        def jac(t, y):
            J = D * L
            J[np.diag_indices(m)] += k * (2 * y - 3 * y ** 2) * np.exp(-t / tau)
            return J
    else:
        ode = symgrad.OdeSystem(symgrad.compile(ex.flame), state="u", time="t", **params)
        fun, jac = ode.fun, (ode.jac if method == "symgrad" else None)
    calls = [0]

    def counted(t, y):
        calls[0] += 1
        return fun(t, y)

    def run():
        calls[0] = 0
        sol = solve_ivp(counted, (0.0, 0.3), y0, method="BDF", jac=jac, rtol=1e-6, atol=1e-9)
        run.info = f"{method} n={m}: {calls[0]} rhs calls, {sol.njev} Jacobians, {sol.t.size} steps"
        return sol.y[:, -1], {}
    run()
    return run, run.info


def setup_step(method, case):
    rng = np.random.default_rng(0)
    n, m, nh = case["N"], case["m"], case["nh"]
    x, y = rng.standard_normal((n, m)), rng.standard_normal((n, 1))
    p = {"w1": rng.standard_normal((m, nh)) / np.sqrt(m), "b1": np.zeros((1, nh)),
         "w2": rng.standard_normal((nh, 1)) / np.sqrt(nh), "b2": np.zeros((1, 1))}
    if method == "symgrad":
        import symgrad
        mod = symgrad.compile(harness.symgrad_model("seed002_mlp.py", "seed002_mlp_mse"))

        def step():
            value, grads = mod.value_and_grad(x=x, y=y, **p)
            for k_ in MLP:
                p[k_] -= LR * grads[k_]
            return value, grads
        return step
    import torch
    info = f"torch intra-op threads={torch.get_num_threads()}"
    params = [torch.nn.Parameter(torch.from_numpy(p[k_].copy())) for k_ in MLP]
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.SGD(params, lr=LR)
    if method == "to_torch":
        import symgrad
        f = symgrad.to_torch(symgrad.compile(harness.symgrad_model("seed002_mlp.py", "seed002_mlp_mse")))

        def loss_fn():
            return f(x=xt, y=yt, **dict(zip(MLP, params)))
    elif method == "torch":
        def loss_fn():
            w1, b1, w2, b2 = params
            return ((torch.clamp(xt @ w1 + b1, min=0.0) @ w2 + b2 - yt) ** 2).mean()
    else:
        raise ValueError(method)

    def step():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        grads = {k_: q.grad.clone() for k_, q in zip(MLP, params)}   # before the update (for the check)
        opt.step()
        return loss.detach(), grads
    return step, info


def setup(method, case):
    kind = case.get("kind")
    return {"obj": setup_objective, "ode": setup_ode, "step": setup_step}[kind](method, case)


def _tag(cases, kind):
    return [(label, {**case, "kind": kind}, tol) for label, case, tol in cases]


def tables(settings, log=print):
    mod = "benchmarks.bench_bridges"
    obj = harness.run_cases(mod, OBJ_METHODS, _tag(obj_cases(settings), "obj"), settings, log)
    ode = harness.run_cases(mod, ODE_METHODS, _tag(ode_cases(settings), "ode"), settings, log)
    step = harness.run_cases(mod, STEP_METHODS, _tag(step_cases(settings), "step"), settings, log)
    return "\n\n".join([
        harness.runtime_table(obj, "Bridges: Objective.fun_and_jac (seed 001 logistic NLL, k parameters) vs "
                                   "the module's value_and_grad and jax.jit", baseline="symgrad",
                              baseline_name="the module alone", check_ref="symgrad"),
        harness.runtime_table(ode, "Bridges: solve_ivp BDF on the diffusion-reaction system of "
                                   "examples/run_stiff_ode.py (one whole solve per call)"),
        harness.runtime_table(step, "Bridges: a training step of seed 002's MLP, to_torch vs the module alone",
                              baseline="symgrad", baseline_name="the module alone", check_ref="symgrad"),
    ])


if __name__ == "__main__":
    harness.script_main(tables, __doc__)
