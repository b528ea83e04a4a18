"""BLAS layout: ``A @ B`` against ``(B.T @ A.T).T`` (the same product, the other orientation for
BLAS) for the shapes of the seed models' products, float32 and float64, beside what a generated
module does (``_matmul``, which turns a float64 tall-times-narrower product around).  The data
for that static rule (docs/speed.md).

    python -m benchmarks.bench_blas [--smoke] [--rounds R]
"""
from __future__ import annotations

import numpy as np

from benchmarks import harness

METHODS = [("symgrad", "symgrad (generated module: A @ B)"), ("numpy_hand", "A @ B"),
           ("flipped", "(B.T @ A.T).T")]
SHAPES = [(50000, 784, 50), (50000, 50, 10), (50000, 50, 784), (10000, 784, 100), (10000, 100, 784),
          (10000, 100, 10), (2000, 784, 784), (512, 784, 50), (2000, 2000, 2000), (50, 784, 50000)]


def cases(settings):
    shapes = [(64, 32, 8), (8, 32, 64)] if settings.smoke else SHAPES
    return [(f"({m}x{k}) @ ({k}x{n}) {dt}", {"m": m, "k": k, "n": n, "dtype": dt}, harness.tol_for(dt))
            for m, k, n in shapes for dt in ("float32", "float64")]


def setup(method, case):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((case["m"], case["k"])).astype(case["dtype"])
    b = rng.standard_normal((case["k"], case["n"])).astype(case["dtype"])
    if method == "symgrad":
        import sympy as sp
        import symgrad
        m, k, n = sp.symbols("m k n", integer=True, positive=True)
        A, B = sp.MatrixSymbol("A", m, k), sp.MatrixSymbol("B", k, n)
        mod = symgrad.compile(symgrad.Model(A * B, wrt=[], name="blas"))
        return lambda: (mod.forward(A=a, B=b), {})
    if method == "numpy_hand":
        return lambda: (a @ b, {})
    if method == "flipped":
        return lambda: ((b.T @ a.T).T, {})
    raise ValueError(method)


def tables(settings, log=print):
    rows = harness.run_cases("benchmarks.bench_blas", METHODS, cases(settings), settings, log)
    return harness.runtime_table(rows, "BLAS layout: A @ B against (B.T @ A.T).T")


if __name__ == "__main__":
    harness.script_main(tables, __doc__)
