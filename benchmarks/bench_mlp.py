"""Seed 002: the 784-50-1 ReLU MLP with the MSE loss -- value and the gradients of w1, b1, w2, b2.

    python -m benchmarks.bench_mlp [--smoke] [--unset-openblas-env] [--rounds R]
"""
from __future__ import annotations

import numpy as np

from benchmarks import harness
from benchmarks.harness import NotApplicable

METHODS = [
    ("symgrad", "symgrad (generated module)"),
    ("symgrad_numba", "symgrad --target numba (fused loops)"),
    ("symgrad_torch", "symgrad --target torch (CPU tensors)"),
    ("numpy_hand", "hand NumPy, w1.g = x.T @ g"),
    ("numpy_hand_gT", "hand NumPy, w1.g = (g.T @ x).T"),
    ("autograd", "HIPS autograd"),
    ("torch", "PyTorch eager (CPU)"),
    ("jax", "jax.jit(value_and_grad)"),
    ("sympy", "SymPy diff + lambdify"),
    ("sympy_cse", "SymPy diff + lambdify(cse=True)"),
]
PARAMS = ("w1", "b1", "w2", "b2")


def cases(settings):
    m, nh = (16, 8) if settings.smoke else (784, 50)
    sizes = (64,) if settings.smoke else (50000, 512)
    return [(f"N={n} m={m} nh={nh} {dt}", {"N": n, "m": m, "nh": nh, "dtype": dt}, harness.tol_for(dt))
            for n in sizes for dt in ("float32", "float64")]


def make_data(case):
    rng = np.random.default_rng(0)
    n, m, nh, dt = case["N"], case["m"], case["nh"], case["dtype"]
    d = {"x": rng.standard_normal((n, m)), "w1": rng.standard_normal((m, nh)) / np.sqrt(m),
         "b1": 0.1 * rng.standard_normal((1, nh)), "w2": rng.standard_normal((nh, 1)) / np.sqrt(nh),
         "b2": 0.1 * rng.standard_normal((1, 1)), "y": rng.standard_normal((n, 1))}
    return {k: np.ascontiguousarray(v, dtype=dt) for k, v in d.items()}


def hand(x, y, w1, b1, w2, b2):
    """The seed's forward_and_backward / Lin.backward, without the unused x.g."""
    l1 = x @ w1 + b1
    l2 = np.maximum(l1, 0)
    out = l2 @ w2 + b2
    diff = out - y
    loss = (diff ** 2).mean()
    out_g = 2 * diff / x.shape[0]
    g = {"w2": l2.T @ out_g, "b2": out_g.sum(0, keepdims=True)}
    l1_g = (l1 > 0) * (out_g @ w2.T)
    g["w1"] = x.T @ l1_g
    g["b1"] = l1_g.sum(0, keepdims=True)
    return loss, g


def hand_gT(x, y, w1, b1, w2, b2):
    """The same backprop with the weight gradients written (g.T @ inp).T."""
    l1 = x @ w1 + b1
    l2 = np.maximum(l1, 0)
    out = l2 @ w2 + b2
    diff = out - y
    loss = (diff ** 2).mean()
    out_g = 2 * diff / x.shape[0]
    g = {"w2": (out_g.T @ l2).T, "b2": out_g.sum(0, keepdims=True)}
    l1_g = (l1 > 0) * (out_g @ w2.T)
    g["w1"] = (l1_g.T @ x).T
    g["b1"] = l1_g.sum(0, keepdims=True)
    return loss, g


def setup(method, case):
    d = make_data(case)
    if method in ("symgrad", "symgrad_numba"):
        import symgrad
        mod = symgrad.compile(harness.symgrad_model("seed002_mlp.py", "seed002_mlp_mse"),
                              target="numba" if method == "symgrad_numba" else "numpy")
        return lambda: mod.value_and_grad(**d)
    if method == "symgrad_torch":  # the same BLAS as PyTorch eager's row, tensors in and out
        import symgrad
        import torch
        mod = symgrad.compile(harness.symgrad_model("seed002_mlp.py", "seed002_mlp_mse"), target="torch")
        t = {k: torch.from_numpy(v) for k, v in d.items()}
        return (lambda: mod.value_and_grad(**t)), f"torch intra-op threads={torch.get_num_threads()}"
    if method in ("numpy_hand", "numpy_hand_gT"):
        f = hand if method == "numpy_hand" else hand_gT
        return lambda: f(**d)
    if method == "autograd":
        import autograd
        import autograd.numpy as anp

        def loss(params, x, y):
            w1, b1, w2, b2 = params
            out = anp.dot(anp.maximum(anp.dot(x, w1) + b1, 0.0), w2) + b2
            return anp.mean((out - y) ** 2)
        vg = autograd.value_and_grad(loss)
        params = tuple(d[k] for k in PARAMS)

        def run():
            v, g = vg(params, d["x"], d["y"])
            return v, dict(zip(PARAMS, g))
        return run
    if method == "torch":
        import torch
        t = {k: torch.from_numpy(v) for k, v in d.items()}
        params = [t[k].requires_grad_() for k in PARAMS]

        def run():
            out = torch.relu(t["x"] @ t["w1"] + t["b1"]) @ t["w2"] + t["b2"]
            loss = ((out - t["y"]) ** 2).mean()
            g = torch.autograd.grad(loss, params)
            return loss.detach(), dict(zip(PARAMS, g))
        return run, f"torch intra-op threads={torch.get_num_threads()}"
    if method == "jax":
        import jax
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        def loss(params, x, y):
            w1, b1, w2, b2 = params
            out = jnp.maximum(x @ w1 + b1, 0.0) @ w2 + b2
            return jnp.mean((out - y) ** 2)
        vg = jax.jit(jax.value_and_grad(loss))
        j = {k: jax.device_put(v) for k, v in d.items()}
        params = tuple(j[k] for k in PARAMS)

        def run():
            v, g = jax.block_until_ready(vg(params, j["x"], j["y"]))
            return v, dict(zip(PARAMS, g))
        return run
    if method in ("sympy", "sympy_cse"):
        import sympy as sp
        model = harness.symgrad_model("seed002_mlp.py", "seed002_mlp_mse")
        try:
            [sp.diff(model.expr, w) for w in model.wrt]
        except Exception as e:                            # noqa: BLE001
            raise NotApplicable(f"SymPy diff fails on the matrix model: {type(e).__name__}: {e}") from None
        raise NotApplicable("SymPy diff of the matrix model does not give lambdify-able expressions")
    raise ValueError(method)


def tables(settings, log=print):
    rows = harness.run_cases("benchmarks.bench_mlp", METHODS, cases(settings), settings, log)
    return harness.runtime_table(rows, "Seed 002: 784-50-1 ReLU MLP + MSE, value and the 4 parameter gradients")


if __name__ == "__main__":
    harness.script_main(tables, __doc__)
