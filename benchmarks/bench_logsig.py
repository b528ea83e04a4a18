"""Seed 001: -log(sigmoid(w * x**2)), elementwise on float64 arrays, the value and both partials
(the gradients of its sum) -- a logistic loss, where the log and the exp dominate.

    python -m benchmarks.bench_logsig [--smoke] [--unset-openblas-env] [--rounds R]
"""
from __future__ import annotations

import numpy as np

from benchmarks import harness
from benchmarks.bench_fxy import cases  # noqa: F401 - the same sizes: 1e6 and 1e7 (smoke: 1e3)

METHODS = [
    ("symgrad", "symgrad (generated module)"),
    ("symgrad_numba", "symgrad --target numba (fused loops)"),
    ("numpy_hand", "hand NumPy, logaddexp"),
    ("torch", "PyTorch eager (CPU)"),
    ("jax", "jax.jit(value_and_grad)"),
    ("sympy_cse", "SymPy diff + lambdify(cse=True)"),
]


def make_data(case):
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal(case["n"]), "w": rng.standard_normal(case["n"])}


def hand(x, w):
    """-log(sigmoid(z)) = logaddexp(0, -z) for z = w x**2; its derivative in z is sigmoid(z) - 1."""
    sq = x * x
    z = w * sq
    dz = -1 / (1 + np.exp(z))                            # sigmoid(z) - 1 = -sigmoid(-z)
    return np.logaddexp(0, -z), {"x": dz * 2 * w * x, "w": dz * sq}


def setup(method, case):
    d = make_data(case)
    if method in ("symgrad", "symgrad_numba"):
        import symgrad
        mod = symgrad.compile(harness.symgrad_model("seed001_autodiff.py", "seed001_log_sigmoid"),
                              target="numba" if method == "symgrad_numba" else "numpy")
        return lambda: mod.value_and_grad(**d)
    if method == "numpy_hand":
        return lambda: hand(**d)
    if method == "torch":
        import torch
        x, w = (torch.from_numpy(d[k]).requires_grad_() for k in "xw")

        def run():
            f = torch.nn.functional.softplus(-(w * x ** 2))
            gx, gw = torch.autograd.grad(f.sum(), (x, w))
            return f.detach(), {"x": gx, "w": gw}
        return run, f"torch intra-op threads={torch.get_num_threads()}"
    if method == "jax":
        import jax
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        def f(x, w):
            v = jax.nn.softplus(-(w * x ** 2))
            return v.sum(), v
        vg = jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))
        x, w = jax.device_put(d["x"]), jax.device_put(d["w"])

        def run():
            (_, v), (gx, gw) = jax.block_until_ready(vg(x, w))
            return v, {"x": gx, "w": gw}
        return run
    if method == "sympy_cse":
        import sympy as sp
        x, w = sp.symbols("x w")
        e = -sp.log(1 / (1 + sp.exp(-w * x ** 2)))
        fn = sp.lambdify([x, w], [e, sp.diff(e, x), sp.diff(e, w)], "numpy", cse=True)

        def run():
            v, gx, gw = fn(d["x"], d["w"])
            return v, {"x": gx, "w": gw}
        return run
    raise ValueError(method)


def tables(settings, log=print):
    rows = harness.run_cases("benchmarks.bench_logsig", METHODS, cases(settings), settings, log)
    return harness.runtime_table(rows, "Seed 001: -log(sigmoid(w x^2)), value and both partials")


if __name__ == "__main__":
    harness.script_main(tables, __doc__)
