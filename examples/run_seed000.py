"""Seed 000 ("Gradients, broadcasting and backpropagation") reproduced with symgrad.

    python examples/run_seed000.py [--from-codegen]

The notes build y = x @ W_true + b_true from N=100 random inputs in [-5, 5) (M=4 features, H=2
outputs), start from random weights and zero bias, and train the linear layer on the MSE with the
hand-written backward pass

    mse_grad:  y_pred.g = 2 * (y_pred - y_targ) / N / H
    lin_grad:  b.g = y.g.sum(0);  w.g = x.T @ y.g;  x.g = y.g @ w.T

-- one step with rate 0.1, then 20 steps with rate 0.01, the loss falling at every step (181.8 ->
9.21 -> ... -> 0.4394 in the notes).  torch.rand cannot be replayed here, so the data come from a
seeded NumPy generator; the initial weights are the ones the notes print.  This script replaces the
hand-written backward pass by symgrad's generated ``seed000_lin_mse`` module and checks, at every
step, that its loss and gradients equal the notes' formulas (reimplemented below in NumPy), and that
the training behaves as in the notes.
"""
from __future__ import annotations

import sys

import numpy as np

import _common

W_TRUE = np.array([[1.0, 1.0], [1.5, 1.5], [2.0, 3.0], [2.5, -0.5]])
B_TRUE = np.array([0.0, -1.0])
# the random initial weights the notes print
W_INIT = np.array([[-0.0383, -0.8173], [0.8458, -2.0662], [0.1153, 0.0775], [1.0845, -0.1016]])
# the notes' printed losses: after the first step (rate 0.1) and during the 20 steps (rate 0.01)
SEED_LOSSES = [9.2100, 7.3055, 5.8198, 4.6593, 3.7515, 3.0402, 2.4818, 2.0425, 1.6961, 1.4221,
               1.2048, 1.0318, 0.8936, 0.7827, 0.6933, 0.6208, 0.5616, 0.5130, 0.4729, 0.4394]


# ---- the notes' hand-written forward and backward pass, in NumPy -----------------------------
def lin(x, w, b):
    return x @ w + b


def mse(y_pred, y_targ):
    return ((y_pred - y_targ) ** 2).mean()


def mse_grad(y_pred, y_targ):
    return 2 * (y_pred - y_targ) / y_targ.shape[0] / y_targ.shape[1]


def lin_grad(x, w, b, y_g):
    return {"b": y_g.sum(0), "W": x.T @ y_g, "X": y_g @ w.T}


def make_data(n=100, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 4)) * 10 - 5
    return x, x @ W_TRUE + B_TRUE


def run(from_codegen: bool = False, quiet: bool = False) -> _common.Report:
    mods = _common.load_modules("seed000_linear.py", from_codegen)
    rep = _common.Report("seed 000: linear layer, MSE, gradient descent", quiet=quiet)
    x, y = make_data()
    w, b = W_INIT.copy(), np.zeros((1, 2))

    # the layer alone: gradient of sum(y) is lin_grad with y.g = ones; the bias gradient is a row
    layer = mods["seed000_lin"]
    value, grads = layer.value_and_grad(X=x, W=w, b=b)
    rep.compare("lin(x, w, b)", lin(x, w, b), value)
    ref = lin_grad(x, w, b, np.ones((100, 2)))
    rep.compare("lin: b.g = y.g.sum(0) (a 1x2 row)", ref["b"][None, :], grads["b"])
    rep.compare("lin: w.g = x.T @ y.g", ref["W"], grads["W"])
    rep.compare("lin: x.g = y.g @ w.T", ref["X"], grads["X"])

    m = mods["seed000_lin_mse"]
    # the first loss and hand-written gradients (the notes' "test if all dimensions match")
    loss, grads = m.value_and_grad(X=x, W=w, b=b, Y=y)
    y_pred = lin(x, w, b)
    rep.compare("initial loss mse(lin(x, w, b), y)", mse(y_pred, y), loss)
    ref = lin_grad(x, w, b, mse_grad(y_pred, y))
    rep.compare("w.g  (mse_grad + lin_grad)", ref["W"], grads["W"])
    rep.compare("b.g  (mse_grad + lin_grad)", ref["b"][None, :], grads["b"])
    rep.compare("x.g  (mse_grad + lin_grad)", ref["X"], grads["X"])
    rep.check("gradients have the inputs' shapes",
              grads["W"].shape == w.shape and np.shape(grads["b"]) == b.shape and grads["X"].shape == x.shape,
              f"W {grads['W'].shape}, b {np.shape(grads['b'])}, X {grads['X'].shape}")

    # training, as in the notes: one step at 0.1, then 20 steps at 0.01 (loss printed before each)
    w_ref, b_ref = w.copy(), b.copy()
    w -= 0.1 * grads["W"]
    b = b - 0.1 * grads["b"]
    w_ref -= 0.1 * ref["W"]
    b_ref -= 0.1 * ref["b"]
    losses, ref_losses, worst = [float(loss)], [mse(y_pred, y)], 0.0
    for _ in range(20):
        loss, grads = m.value_and_grad(X=x, W=w, b=b, Y=y)
        yp = lin(x, w_ref, b_ref)
        ref = lin_grad(x, w_ref, b_ref, mse_grad(yp, y))
        losses.append(float(loss))
        ref_losses.append(mse(yp, y))
        worst = max(worst, _common.max_rel_err(grads["W"], ref["W"]),
                    _common.max_rel_err(grads["b"], ref["b"][None, :]))
        w -= 0.01 * grads["W"]
        b = b - 0.01 * grads["b"]
        w_ref -= 0.01 * ref["W"]
        b_ref -= 0.01 * ref["b"]
    final_loss = float(m.forward(X=x, W=w, b=b, Y=y))
    rep.note("losses (symgrad): " + ", ".join(f"{v:.4f}" for v in losses[1:]))
    rep.note("losses (notes):   " + ", ".join(f"{v:.4f}" for v in SEED_LOSSES))
    rep.compare("loss trajectory vs hand-written backward", ref_losses, losses, rtol=1e-12)
    rep.check("hand-written vs symgrad gradients, all steps", worst <= 1e-12, f"max rel.err {worst:.2e}")
    rep.compare("final weights vs hand-written training", w_ref, w, rtol=1e-12)
    rep.check("loss decreases at every step", all(b < a for a, b in zip(losses, losses[1:])),
              f"{losses[0]:.4f} -> {losses[1]:.4f} -> ... -> {losses[-1]:.4f}")
    rep.check("first step (rate 0.1) cuts the loss >5x", losses[1] < losses[0] / 5,
              f"notes: 181.8108 -> 9.2100; here {losses[0]:.4f} -> {losses[1]:.4f}")
    rep.check("20 more steps cut it again >5x", losses[-1] < losses[1] / 5,
              f"notes: 9.2100 -> 0.4394; here {losses[1]:.4f} -> {losses[-1]:.4f}")
    rep.check("weights approach W_true", float(np.max(np.abs(w - W_TRUE))) < 0.5,
              f"max |w - W_true| = {np.max(np.abs(w - W_TRUE)):.3f} (notes: 0.119)")
    rep.note(f"final loss {final_loss:.4f}; w = {np.round(w, 4).tolist()}, b = {np.round(b, 4).tolist()}")
    return rep


def main(argv=None) -> int:
    args = _common.argparser(__doc__.splitlines()[0]).parse_args(argv)
    return run(args.from_codegen).finish()


if __name__ == "__main__":
    sys.exit(main())
