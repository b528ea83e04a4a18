"""Per-call overhead on small inputs: value_and_grad of f(x, y) = sin(x)*y + x**2 on Python floats,
and on float64 arrays of 10 and 1000 elements -- where an optimiser that calls a gradient 10^5
times feels the fixed cost of every call, not the arithmetic.

Each timed call runs the method 1000 times in a loop (one perf_counter pair per 1000 calls), so a
time of 1 ms in the table is 1 µs per call.

    python -m benchmarks.bench_overhead [--smoke] [--rounds R]
"""
from __future__ import annotations

import numpy as np

from benchmarks import harness

METHODS = [
    ("symgrad", "symgrad (generated module)"),
    ("symgrad_numba", "symgrad --target numba (fused loops)"),
    ("numpy_hand", "hand NumPy"),
    ("sympy_cse", "SymPy diff + lambdify(cse=True)"),
    ("jax", "jax.jit(value_and_grad)"),
    ("torch", "PyTorch eager (CPU)"),
]
REPEAT = 1000  # calls per timed call


def cases(settings):
    return [("Python floats", {"n": None}, 1e-12), ("n=10 float64", {"n": 10}, 1e-12),
            ("n=1000 float64", {"n": 1000}, 1e-12)]


def make_data(case):
    if case["n"] is None:
        return {"x": 0.3, "y": -0.7}
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal(case["n"]), "y": rng.standard_normal(case["n"])}


def hand(x, y):
    s = np.sin(x)
    return s * y + x * x, {"x": np.cos(x) * y + 2 * x, "y": s}


def _repeated(call):
    def run():
        for _ in range(REPEAT - 1):
            call()
        return call()
    return run


def setup(method, case):
    d = make_data(case)
    if method in ("symgrad", "symgrad_numba"):
        import sympy as sp
        import symgrad
        x, y = sp.symbols("x y")
        mod = symgrad.compile(symgrad.Model(sp.sin(x) * y + x ** 2, wrt=[x, y], name="overhead"),
                              target="numba" if method == "symgrad_numba" else "numpy")
        vg = mod.value_and_grad
        return _repeated(lambda: vg(**d))
    if method == "numpy_hand":
        return _repeated(lambda: hand(**d))
    if method == "sympy_cse":
        import sympy as sp
        x, y = sp.symbols("x y")
        e = sp.sin(x) * y + x ** 2
        fn = sp.lambdify([x, y], [e, sp.diff(e, x), sp.diff(e, y)], "numpy", cse=True)

        def call():
            v, gx, gy = fn(d["x"], d["y"])
            return v, {"x": gx, "y": gy}
        return _repeated(call)
    if method == "jax":
        import jax
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        def f(x, y):
            v = jnp.sin(x) * y + x ** 2
            return v.sum(), v
        vg = jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))
        x, y = d["x"], d["y"]

        def call():
            (_, v), (gx, gy) = jax.block_until_ready(vg(x, y))
            return v, {"x": gx, "y": gy}
        return _repeated(call)
    if method == "torch":
        import torch
        x, y = (torch.tensor(d[k], dtype=torch.float64, requires_grad=True) for k in "xy")

        def call():
            f = torch.sin(x) * y + x ** 2
            gx, gy = torch.autograd.grad(f.sum(), (x, y))
            return f.detach(), {"x": gx, "y": gy}
        return _repeated(call), f"torch intra-op threads={torch.get_num_threads()}"
    raise ValueError(method)


def tables(settings, log=print):
    rows = harness.run_cases("benchmarks.bench_overhead", METHODS, cases(settings), settings, log)
    return harness.runtime_table(rows, f"Per-call overhead: value_and_grad of sin(x)*y + x**2, time of "
                                       f"{REPEAT} calls (1 ms = 1 µs per call)")


if __name__ == "__main__":
    harness.script_main(tables, __doc__)
