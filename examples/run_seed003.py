"""Seed 003 ("Notes on backpropagation") reproduced with symgrad's generated modules.

    python examples/run_seed003.py [--from-codegen]

1. f(x, y) = (x + sigmoid(y)) / (sigmoid(x) + (x + y)**2) at (2, -4):
   the notes' computational graph prints df/dx = 0.5348320870757595, df/dy = 0.342460382923052.
2. f = (w0 + w1*x - y)**2 at x=3, y=7, w0=-2, w1=2: df/dw0 = -6, df/dw1 = -18 (the text adds
   -df/dy = -6, i.e. df/dy = 6; the chain rule gives df/dx = 2*c*w1 = -12).
3. 50 steps of gradient descent (rate 0.1) on x**2 + y**2 + 400x + 8y from (0, 0):
   "Minimum: -199.9971455046146 -3.9999429100922916"; the exact minimum is (-200, -4).
"""
from __future__ import annotations

import math
import sys

import _common

SEED_SIGMOID_RATIO_GRAD = {"x": 0.5348320870757595, "y": 0.342460382923052}
SEED_LINEAR_SQ_GRAD = {"w0": -6.0, "w1": -18.0, "y": 6.0}
SEED_GD_MINIMUM = (-199.9971455046146, -3.9999429100922916)


def reference_sigmoid_ratio(x: float, y: float):
    """The notes' graph (sigy, num, sigx, xpy, sq, denom, f), forward then backward, by hand."""
    sigy = 1.0 / (1.0 + math.exp(-y))
    num = x + sigy
    sigx = 1.0 / (1.0 + math.exp(-x))
    xpy = x + y
    sq = xpy * xpy
    denom = sigx + sq
    f = num / denom
    dnum = 1.0 / denom
    ddenom = -num / denom ** 2
    dsigx, dsq = ddenom, ddenom
    dxpy = 2 * xpy * dsq
    dsigy = dnum
    dx = dnum + (1 - sigx) * sigx * dsigx + dxpy
    dy = (1 - sigy) * sigy * dsigy + dxpy
    return f, {"x": dx, "y": dy}


def run(from_codegen: bool = False, quiet: bool = False) -> _common.Report:
    mods = _common.load_modules("seed003_backprop.py", from_codegen)
    rep = _common.Report("seed 003: notes on backpropagation", quiet=quiet)

    # 1. the sigmoid ratio
    m = mods["seed003_sigmoid_ratio"]
    value, grads = m.value_and_grad(x=2.0, y=-4.0)
    f_ref, g_ref = reference_sigmoid_ratio(2.0, -4.0)
    rep.compare("f(2, -4)  [hand forward pass]", f_ref, value)
    rep.compare("f(2, -4)  forward() == value_and_grad value", value, m.forward(x=2.0, y=-4.0), rtol=0)
    for k in ("x", "y"):
        rep.compare(f"df/d{k} at (2, -4)", SEED_SIGMOID_RATIO_GRAD[k], grads[k], rtol=1e-12)
        rep.compare(f"df/d{k} at (2, -4)  [hand backward pass]", g_ref[k], grads[k], rtol=1e-12)

    # 2. (w0 + w1*x - y)**2
    m = mods["seed003_linear_sq"]
    value, grads = m.value_and_grad(x=3.0, y=7.0, w0=-2.0, w1=2.0)
    rep.compare("(w0 + w1*x - y)**2 at x=3, y=7, w0=-2, w1=2", 9.0, value)
    for k, v in SEED_LINEAR_SQ_GRAD.items():
        rep.compare(f"df/d{k}", v, grads[k], rtol=0)
    rep.compare("df/dx  [chain rule: 2*c*w1]", 2 * (-3.0) * 2.0, grads["x"], rtol=0)

    # 3. gradient descent to the minimum of x**2 + y**2 + 400x + 8y
    m = mods["seed003_quadratic"]
    x, y = 0.0, 0.0
    values = []
    for _ in range(50):
        value, grads = m.value_and_grad(x=x, y=y, a=400.0, b=8.0)
        values.append(float(value))
        x -= grads["x"] * 0.1
        y -= grads["y"] * 0.1
    rep.compare("GD minimum x after 50 steps", SEED_GD_MINIMUM[0], x, rtol=1e-12)
    rep.compare("GD minimum y after 50 steps", SEED_GD_MINIMUM[1], y, rtol=1e-12)
    rep.compare("GD minimum vs exact (-200, -4)", [-200.0, -4.0], [float(x), float(y)], rtol=2e-5)
    rep.check("objective decreases at every step", all(b < a for a, b in zip(values, values[1:])),
              f"{values[0]:.1f} -> {values[-1]:.6f} (exact min -40016)")
    return rep


def main(argv=None) -> int:
    args = _common.argparser(__doc__.splitlines()[0]).parse_args(argv)
    return run(args.from_codegen).finish()


if __name__ == "__main__":
    sys.exit(main())
