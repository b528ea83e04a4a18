"""Seed 004: one-hidden-layer ReLU network with softmax cross-entropy (rows are samples), the value and
the gradients of W, b1, U, b2 and X (the notes derive all five).

    python -m benchmarks.bench_softmax [--smoke] [--unset-openblas-env] [--rounds R]
"""
from __future__ import annotations

import numpy as np

from benchmarks import harness
from benchmarks.harness import NotApplicable

METHODS = [
    ("symgrad", "symgrad (generated module)"),
    ("symgrad_numba", "symgrad --target numba (fused loops)"),
    ("numpy_hand", "hand NumPy (the notes' delta1/delta2)"),
    ("autograd", "HIPS autograd"),
    ("torch", "PyTorch eager (CPU)"),
    ("jax", "jax.jit(value_and_grad)"),
    ("sympy", "SymPy diff + lambdify"),
]
NAMES = ("W", "b1", "U", "b2", "X")


def cases(settings):
    n, dx, dh, nc = (64, 8, 6, 3) if settings.smoke else (10000, 784, 100, 10)
    dtypes = ("float64",) if settings.smoke else ("float32", "float64")
    return [(f"N={n} Dx={dx} Dh={dh} Nc={nc} {dt}", {"N": n, "Dx": dx, "Dh": dh, "Nc": nc, "dtype": dt},
             harness.tol_for(dt)) for dt in dtypes]


def make_data(case):
    rng = np.random.default_rng(0)
    n, dx, dh, nc = case["N"], case["Dx"], case["Dh"], case["Nc"]
    d = {"X": rng.standard_normal((n, dx)), "W": rng.standard_normal((dh, dx)) / np.sqrt(dx),
         "b1": 0.1 * rng.standard_normal((dh, 1)), "U": rng.standard_normal((nc, dh)) / np.sqrt(dh),
         "b2": 0.1 * rng.standard_normal((nc, 1)), "Y": np.eye(nc)[rng.integers(0, nc, n)]}
    return {k: np.ascontiguousarray(v, dtype=case["dtype"]) for k, v in d.items()}


def hand(X, Y, W, b1, U, b2):
    Z = X @ W.T + b1.T
    H = np.maximum(Z, 0)
    Th = H @ U.T + b2.T
    m = Th.max(axis=1, keepdims=True)
    E = np.exp(Th - m)
    s = E.sum(axis=1, keepdims=True)
    J = (m + np.log(s)).sum() - (Y * Th).sum()
    D1 = E / s - Y                                       # delta1 = y_hat - y
    D2 = (D1 @ U) * (Z > 0)                              # delta2 = delta1 U o sgn(h)
    return J, {"U": D1.T @ H, "b2": D1.sum(0)[:, None], "W": D2.T @ X, "b1": D2.sum(0)[:, None], "X": D2 @ W}


def setup(method, case):
    d = make_data(case)
    if method in ("symgrad", "symgrad_numba"):
        import symgrad
        mod = symgrad.compile(harness.symgrad_model("seed004_softmax.py", "seed004_mlp_ce"),
                              target="numba" if method == "symgrad_numba" else "numpy")
        return lambda: mod.value_and_grad(**d)
    if method == "numpy_hand":
        return lambda: hand(**d)
    if method == "autograd":
        import autograd
        import autograd.numpy as anp
        from autograd.scipy.special import logsumexp

        def loss(params, Y):
            W, b1, U, b2, X = params
            Th = anp.dot(anp.maximum(anp.dot(X, W.T) + b1.T, 0.0), U.T) + b2.T
            return anp.sum(logsumexp(Th, axis=1)) - anp.sum(Y * Th)
        vg = autograd.value_and_grad(loss)
        params = tuple(d[k] for k in NAMES)

        def run():
            v, g = vg(params, d["Y"])
            return v, dict(zip(NAMES, g))
        return run
    if method == "torch":
        import torch
        t = {k: torch.from_numpy(v) for k, v in d.items()}
        params = [t[k].requires_grad_() for k in NAMES]

        def run():
            Th = torch.relu(t["X"] @ t["W"].T + t["b1"].T) @ t["U"].T + t["b2"].T
            J = torch.logsumexp(Th, dim=1).sum() - (t["Y"] * Th).sum()
            return J.detach(), dict(zip(NAMES, torch.autograd.grad(J, params)))
        return run, f"torch intra-op threads={torch.get_num_threads()}"
    if method == "jax":
        import jax
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        def loss(params, Y):
            W, b1, U, b2, X = params
            Th = jnp.maximum(X @ W.T + b1.T, 0.0) @ U.T + b2.T
            return jax.nn.logsumexp(Th, axis=1).sum() - (Y * Th).sum()
        vg = jax.jit(jax.value_and_grad(loss))
        j = {k: jax.device_put(v) for k, v in d.items()}
        params = tuple(j[k] for k in NAMES)

        def run():
            v, g = jax.block_until_ready(vg(params, j["Y"]))
            return v, dict(zip(NAMES, g))
        return run
    if method == "sympy":
        import sympy as sp
        model = harness.symgrad_model("seed004_softmax.py", "seed004_mlp_ce")
        try:
            grads = [sp.diff(model.expr, w) for w in model.wrt]
        except Exception as e:                            # noqa: BLE001
            raise NotApplicable(f"SymPy diff fails on the matrix model: {type(e).__name__}: {e}") from None
        if all(g.is_ZeroMatrix or g == 0 for g in grads):
            raise NotApplicable("SymPy diff returns ZeroMatrix for all 5 gradients (wrong; "
                                "it does not differentiate through applyfunc)")
        raise NotApplicable("SymPy diff of the matrix model does not give lambdify-able expressions")
    raise ValueError(method)


def tables(settings, log=print):
    rows = harness.run_cases("benchmarks.bench_softmax", METHODS, cases(settings), settings, log)
    return harness.runtime_table(rows, "Seed 004: ReLU network + softmax cross-entropy, value and 5 gradients (W, b1, U, b2, X)")


if __name__ == "__main__":
    harness.script_main(tables, __doc__)
