"""Seed 002 ("Backpropagation", the 784-50-1 ReLU MLP on MNIST) reproduced with symgrad.

    python examples/run_seed002.py [--small] [--steps K] [--from-codegen]

The notes train ``lin -> relu -> lin`` (m=784 inputs, nh=50 hidden units, 1 output) with an MSE loss
on the 50000 x 784 MNIST training set, initialised with ``w1 = randn(m, nh)``, ``w2 = randn(nh, 1)``,
zero biases (initial loss 4308.76 on MNIST), and write the backward pass by hand:

    out.g = 2 * diff[:, None] / N
    lin_grad(l2, out, w2, b2)      # inp.g = out.g @ w.T;  w.g = inp.T @ out.g;  b.g = out.g.sum(0)
    l1.g = (l1 > 0) * l2.g
    lin_grad(x, l1, w1, b1)

then check it against autograd (``test_close``).  Nothing can be downloaded here, so the data are a
synthetic MNIST look-alike of the same size (pixels in [0, 1], ~80% zeros, labels 0..9 as floats) from
a seeded generator.  The script compares symgrad's generated gradients (w1, b1, w2, b2 and x) with
the hand-written backward pass (to 1e-9 relative in float64), then trains a few gradient-descent
steps with the generated module and checks the loss falls.  ``--small`` uses N=600 samples.
"""
from __future__ import annotations

import sys
import time

import numpy as np

import _common

FULL_N, SMALL_N, M_IN, NH = 50000, 600, 784, 50
SEED_INITIAL_LOSS_MNIST = 4308.76   # the notes' loss on real MNIST (not reproducible here)


def make_data(n: int, m: int = M_IN, seed: int = 0):
    """A synthetic MNIST look-alike: sparse pixels in [0, 1], labels 0..9 from a hidden rule."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, m))
    x -= 0.8
    np.maximum(x, 0.0, out=x)
    x *= 5.0
    teacher = rng.standard_normal(m)
    score = x @ teacher
    edges = np.quantile(score, np.linspace(0, 1, 11)[1:-1])
    y = np.searchsorted(edges, score).astype(np.float64)    # ten balanced classes 0..9
    return x, y


def init_params(m: int = M_IN, nh: int = NH, seed: int = 1):
    """As in the notes: w1 = randn(m, nh), b1 = zeros(nh), w2 = randn(nh, 1), b2 = zeros(1)."""
    rng = np.random.default_rng(seed)
    return {"w1": rng.standard_normal((m, nh)), "b1": np.zeros((1, nh)),
            "w2": rng.standard_normal((nh, 1)), "b2": np.zeros((1, 1))}


# ---- the notes' hand-written forward and backward pass, in NumPy ------------------------------
def lin(x, w, b):
    return x @ w + b


def relu(x):
    return np.maximum(x, 0.0)


def forward_and_backward(inp, targ, w1, b1, w2, b2, broadcast_wgrad=False):
    """Returns loss and the .g of w1, b1, w2, b2, inp, exactly as the notes compute them."""
    l1 = lin(inp, w1, b1)
    l2 = relu(l1)
    out = lin(l2, w2, b2)
    diff = out[:, 0] - targ
    loss = (diff ** 2).mean()
    out_g = 2.0 * diff[:, None] / inp.shape[0]

    def lin_grad(i, o_g, w):
        i_g = o_g @ w.T
        if broadcast_wgrad:     # the notes' first version: (inp.unsqueeze(-1) * out.g.unsqueeze(1)).sum(0)
            w_g = (i[:, :, None] * o_g[:, None, :]).sum(0)
        else:                   # the refactored Lin.backward: inp.t() @ out.g
            w_g = i.T @ o_g
        return i_g, w_g, o_g.sum(0)

    l2_g, w2_g, b2_g = lin_grad(l2, out_g, w2)
    l1_g = (l1 > 0).astype(l1.dtype) * l2_g
    x_g, w1_g, b1_g = lin_grad(inp, l1_g, w1)
    return loss, {"w1": w1_g, "b1": b1_g[None, :], "w2": w2_g, "b2": b2_g[None, :], "x": x_g}


def run(small: bool = False, steps: int = 3, lr: float = 2e-4, from_codegen: bool = False,
        quiet: bool = False) -> _common.Report:
    n = SMALL_N if small else FULL_N
    mods = _common.load_modules("seed002_mlp.py", from_codegen)
    rep = _common.Report(f"seed 002: {M_IN}-{NH}-1 ReLU MLP, MSE, N={n}", quiet=quiet)
    timings = {}

    t = time.perf_counter()
    x, y = make_data(n)
    p = init_params()
    timings["data"] = time.perf_counter() - t
    y_col = y[:, None]

    t = time.perf_counter()
    ref_loss, ref = forward_and_backward(x, y, **p)
    timings["hand-written forward+backward"] = time.perf_counter() - t

    full = mods["seed002_mlp_mse_xgrad"]
    t = time.perf_counter()
    loss, grads = full.value_and_grad(x=x, y=y_col, **p)
    timings["symgrad value_and_grad (with x.g)"] = time.perf_counter() - t
    rep.compare("loss = mse(model(x), y)", ref_loss, loss, rtol=1e-12)
    rep.note(f"(the notes' initial loss on real MNIST: {SEED_INITIAL_LOSS_MNIST}; same init scheme here)")
    for k in ("w1", "b1", "w2", "b2", "x"):
        rep.compare(f"{k}.g vs hand-written backward, shape {ref[k].shape}", ref[k], grads[k], rtol=1e-9)
    del grads
    tr = mods["seed002_mlp_mse_trace"]
    t = time.perf_counter()
    loss_tr, grads = tr.value_and_grad(x=x, y=y_col, **p)
    timings["symgrad value_and_grad, Trace(E.T*E) form"] = time.perf_counter() - t
    rep.compare("Trace(diff.T*diff)/N form: loss", ref_loss, loss_tr, rtol=1e-12)
    rep.compare("Trace(diff.T*diff)/N form: w1.g", ref["w1"], grads["w1"], rtol=1e-9)
    rep.compare("Trace(diff.T*diff)/N form: x.g", ref["x"], grads["x"], rtol=1e-9)
    del grads
    if n * M_IN * NH <= 3e7:
        _, ref_b = forward_and_backward(x, y, broadcast_wgrad=True, **p)
        for k in ("w1", "w2"):
            rep.compare(f"{k}.g vs notes' broadcast (i * o).sum(0)", ref_b[k], ref[k], rtol=1e-9)

    m = mods["seed002_mlp_mse"]
    t = time.perf_counter()
    loss0, grads = m.value_and_grad(x=x, y=y_col, **p)
    timings["symgrad value_and_grad (params only)"] = time.perf_counter() - t
    for k in ("w1", "b1", "w2", "b2"):
        rep.compare(f"{k}.g (params-only model) vs hand-written", ref[k], grads[k], rtol=1e-9)

    # a few steps of gradient descent with the generated module, mirrored by the hand-written pass
    losses, ref_losses = [float(loss0)], [float(ref_loss)]
    q = {k: v.copy() for k, v in p.items()}
    t = time.perf_counter()
    for _ in range(steps):
        for k in p:
            p[k] = p[k] - lr * grads[k]
            q[k] = q[k] - lr * ref[k]
        loss, grads = m.value_and_grad(x=x, y=y_col, **p)
        losses.append(float(loss))
        ref_loss, ref = forward_and_backward(x, y, **q)
        ref_losses.append(float(ref_loss))
    timings[f"{steps} training steps (symgrad + hand-written)"] = time.perf_counter() - t
    rep.note("training losses (symgrad):      " + ", ".join(f"{v:.4f}" for v in losses))
    rep.note("training losses (hand-written): " + ", ".join(f"{v:.4f}" for v in ref_losses))
    rep.compare("training trajectory vs hand-written", ref_losses, losses, rtol=1e-9)
    rep.check("loss falls at every step", all(b < a for a, b in zip(losses, losses[1:])),
              f"{losses[0]:.2f} -> {losses[-1]:.2f}")
    for k, v in timings.items():
        rep.note(f"time: {k:<44} {v:7.3f} s")
    rep.values["timings"] = timings
    return rep


def main(argv=None) -> int:
    ap = _common.argparser(__doc__.splitlines()[0], small=True)
    ap.add_argument("--steps", type=int, default=3, help="gradient-descent steps (default 3)")
    ap.add_argument("--lr", type=float, default=2e-4, help="learning rate (default 2e-4)")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    rep = run(small=args.small, steps=args.steps, lr=args.lr, from_codegen=args.from_codegen)
    rep.note(f"total wall time {time.perf_counter() - t:.2f} s")
    return rep.finish()


if __name__ == "__main__":
    sys.exit(main())
