"""Seed 003: f(x, y) = (x + sigmoid(y)) / (sigmoid(x) + (x + y)**2), elementwise on float64 arrays,
the value and both partials (the gradients of sum(f)).

    python -m benchmarks.bench_fxy [--smoke] [--unset-openblas-env] [--rounds R]
"""
from __future__ import annotations

import numpy as np

from benchmarks import harness

METHODS = [
    ("symgrad", "symgrad (generated module)"),
    ("symgrad_numba", "symgrad --target numba (fused loops)"),
    ("numpy_hand", "hand NumPy, shared intermediates"),
    ("numpy_hand_out", "hand NumPy, in-place out= buffers"),
    ("autograd", "HIPS autograd"),
    ("torch", "PyTorch eager (CPU)"),
    ("jax", "jax.jit(value_and_grad)"),
    ("sympy", "SymPy diff + lambdify"),
    ("sympy_cse", "SymPy diff + lambdify(cse=True)"),
]


def cases(settings):
    sizes = (1000,) if settings.smoke else (10 ** 6, 10 ** 7)
    return [(f"n={n:.0e} float64".replace("e+0", "e"), {"n": n}, 1e-8) for n in sizes]


def make_data(case):
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal(case["n"]), "y": rng.standard_normal(case["n"])}


def hand(x, y):
    """The notes' graph (sigy, num, sigx, xpy, sq, denom, f) and its backward pass, sharing values."""
    sigy = 1 / (1 + np.exp(-y))
    num = x + sigy
    sigx = 1 / (1 + np.exp(-x))
    xpy = x + y
    denom = sigx + xpy ** 2
    f = num / denom
    dnum = 1 / denom
    ddenom = -f * dnum                                   # -num / denom**2
    dxpy = 2 * xpy * ddenom
    dx = dnum + dxpy + ddenom * sigx * (1 - sigx)
    dy = dxpy + dnum * sigy * (1 - sigy)
    return f, {"x": dx, "y": dy}


def make_hand_out(n):
    """The same computation into preallocated buffers (results are overwritten by the next call)."""
    sigy, sigx, num, xpy, denom, f, dnum, dden, dx, dy, t = (np.empty(n) for _ in range(11))

    def run(x, y):
        for src, sig in ((y, sigy), (x, sigx)):                          # sig = 1 / (1 + exp(-src))
            np.negative(src, out=sig)
            np.exp(sig, out=sig)
            np.add(sig, 1.0, out=sig)
            np.reciprocal(sig, out=sig)
        np.add(x, sigy, out=num)
        np.add(x, y, out=xpy)
        np.multiply(xpy, xpy, out=denom)
        np.add(denom, sigx, out=denom)
        np.divide(num, denom, out=f)
        np.reciprocal(denom, out=dnum)
        np.multiply(f, dnum, out=dden)
        np.negative(dden, out=dden)                                     # -num / denom**2
        np.multiply(xpy, dden, out=dy)
        np.multiply(dy, 2.0, out=dy)                                    # dy = dxpy
        np.add(dnum, dy, out=dx)                                        # dx = dnum + dxpy
        for sig, up, g in ((sigx, dden, dx), (sigy, dnum, dy)):         # g += up * sig * (1 - sig)
            np.subtract(1.0, sig, out=t)
            np.multiply(t, sig, out=t)
            np.multiply(t, up, out=t)
            np.add(g, t, out=g)
        return f, {"x": dx, "y": dy}
    return run


def setup(method, case):
    d = make_data(case)
    if method in ("symgrad", "symgrad_numba"):
        import symgrad
        mod = symgrad.compile(harness.symgrad_model("seed003_backprop.py", "seed003_sigmoid_ratio"),
                              target="numba" if method == "symgrad_numba" else "numpy")
        return lambda: mod.value_and_grad(**d)
    if method == "numpy_hand":
        return lambda: hand(**d)
    if method == "numpy_hand_out":
        run = make_hand_out(case["n"])
        return lambda: run(**d)
    if method == "autograd":
        import autograd
        import autograd.numpy as anp

        def f(xy):
            x, y = xy
            return (x + 1 / (1 + anp.exp(-y))) / (1 / (1 + anp.exp(-x)) + (x + y) ** 2)
        make = autograd.make_vjp(f)

        def run():
            vjp, val = make((d["x"], d["y"]))
            gx, gy = vjp(np.ones_like(val))
            return val, {"x": gx, "y": gy}
        return run
    if method == "torch":
        import torch
        x, y = (torch.from_numpy(d[k]).requires_grad_() for k in "xy")

        def run():
            f = (x + 1 / (1 + torch.exp(-y))) / (1 / (1 + torch.exp(-x)) + (x + y) ** 2)
            gx, gy = torch.autograd.grad(f.sum(), (x, y))
            return f.detach(), {"x": gx, "y": gy}
        return run, f"torch intra-op threads={torch.get_num_threads()}"
    if method == "jax":
        import jax
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        def f(x, y):
            v = (x + 1 / (1 + jnp.exp(-y))) / (1 / (1 + jnp.exp(-x)) + (x + y) ** 2)
            return v.sum(), v
        vg = jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))
        x, y = jax.device_put(d["x"]), jax.device_put(d["y"])

        def run():
            (_, v), (gx, gy) = jax.block_until_ready(vg(x, y))
            return v, {"x": gx, "y": gy}
        return run
    if method in ("sympy", "sympy_cse"):
        import sympy as sp
        x, y = sp.symbols("x y")
        e = (x + 1 / (1 + sp.exp(-y))) / (1 / (1 + sp.exp(-x)) + (x + y) ** 2)
        fn = sp.lambdify([x, y], [e, sp.diff(e, x), sp.diff(e, y)], "numpy", cse=method == "sympy_cse")

        def run():
            v, gx, gy = fn(d["x"], d["y"])
            return v, {"x": gx, "y": gy}
        return run
    raise ValueError(method)


def tables(settings, log=print):
    rows = harness.run_cases("benchmarks.bench_fxy", METHODS, cases(settings), settings, log)
    return harness.runtime_table(rows, "Seed 003: f(x, y) = (x + sigmoid(y)) / (sigmoid(x) + (x + y)^2), value and both partials")


if __name__ == "__main__":
    harness.script_main(tables, __doc__)
