"""Seed 001 ("Lecture 6: Deep neural networks and backpropagation") reproduced with symgrad.

    python examples/run_seed001.py [--steps K] [--from-codegen]

The lecture derives reverse-mode differentiation by hand on small examples and then applies it to
the logistic negative log-likelihood of a sigmoid network.  The lecture prints no numbers of its
own, so each example is checked against the lecture's own hand derivation (re-done below in NumPy):

* L = -log sigmoid(w x**2): the chain a, b, c, g, L and its reverse pass;
* a = x**2, b = 5a, c = log a, g = b c, L = -g: "just add the two terms" for a reused value;
* a = x**2, b = 5a, c = a b, L = -c: the total derivative dc/da = 10a, so dL/dx = -160 at x = 2;
* the linear-regression MSE: dL/dw = -2/N (y - X w)^T X and the matrix VJP dL/dX = dL/da w^T;
* the one-hidden-layer network f = sigmoid(X W^T) w0 with NLL = -sum log sigmoid((2y - 1) f),
  which equals -sum[y log p + (1 - y) log(1 - p)], and the 2-hidden-layer network;
* gradient descent on both sets of parameters (w0 and W) for a circular data set, where -- as the
  lecture shows in its plots -- the 3-neuron network does better than a wrong feature transform
  (x1 x2) but worse than the right one (x1**2, x2**2).
"""
from __future__ import annotations

import math
import sys

import numpy as np

import _common


def sig(t):
    return 1.0 / (1.0 + np.exp(-t))


# ---- the lecture's hand derivations, in NumPy ------------------------------------------------------
def ref_log_sigmoid(x, w):
    a = x ** 2
    b = w * a
    c = sig(b)
    g = np.log(c)
    L = -g
    dL_dg = -1.0
    dL_dc = dL_dg / c
    dL_db = dL_dc * c * (1 - c)
    return L, {"x": dL_db * w * 2 * x, "w": dL_db * a}


def ref_reuse(x):
    a = x ** 2
    b = 5 * a
    c = math.log(a)
    g = b * c
    L = -g
    dL_dg = -1.0
    dL_db, dL_dc = dL_dg * c, dL_dg * b
    dL_da = dL_db * 5 + dL_dc / a      # "just add the two terms"
    return L, dL_da * 2 * x


def ref_total(x):
    a = x ** 2
    b = 5 * a
    c = a * b
    dc_da_total = b + a * 5            # partial dc/da + dc/db db/da = 5a + 5a = 10a
    return -c, -dc_da_total * 2 * x


def ref_linreg(X, w, y):
    N = X.shape[0]
    b = y - X @ w
    L = float(np.sum(b ** 2) / N)
    dL_da = -2.0 / N * b               # (N x 1)
    return L, {"w": (-2.0 / N * b.T @ X).T, "X": dL_da @ w.T}


def ref_nll(X, W, w0, y):
    """NLL = -sum log sigmoid((2y-1) sigmoid(X W^T) w0) and its backward pass."""
    H = sig(X @ W.T)
    f = H @ w0
    s = 2 * y - 1
    t = s * f
    L = -np.sum(np.log(sig(t)))
    df = s * (-(1 - sig(t)))
    dz = (df @ w0.T) * H * (1 - H)
    return L, {"w0": H.T @ df, "W": dz.T @ X}


def ref_nll_deep(X, W1, W2, w0, y):
    H1 = sig(X @ W1.T)
    H2 = sig(H1 @ W2.T)
    f = H2 @ w0
    s = 2 * y - 1
    t = s * f
    L = -np.sum(np.log(sig(t)))
    df = s * (-(1 - sig(t)))
    dz2 = (df @ w0.T) * H2 * (1 - H2)
    dz1 = (dz2 @ W2) * H1 * (1 - H1)
    return L, {"w0": H2.T @ df, "W2": dz2.T @ H1, "W1": dz1.T @ X}


def circle_data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    x12 = rng.uniform(-2, 2, (n, 2))
    y = ((x12 ** 2).sum(1) < 1.5).astype(float)[:, None]
    return x12, y


def run(steps: int = 2000, lr: float = 0.01, from_codegen: bool = False, quiet: bool = False):
    mods = _common.load_modules("seed001_autodiff.py", from_codegen)
    rep = _common.Report("seed 001: reverse-mode AD, sigmoid network NLL", quiet=quiet)

    # -- scalar chains
    m = mods["seed001_log_sigmoid"]
    L, g = m.value_and_grad(x=1.5, w=0.7)
    L_ref, g_ref = ref_log_sigmoid(1.5, 0.7)
    rep.compare("-log sigmoid(w x^2) at x=1.5, w=0.7", L_ref, L)
    rep.compare("  dL/dx  (chain a->b->c->g->L)", g_ref["x"], g["x"])
    rep.compare("  dL/dw", g_ref["w"], g["w"])
    xs = np.linspace(-2, 2, 9)
    L, g = m.value_and_grad(x=xs, w=0.7)          # x bound to an array, w a scalar
    L_ref, g_ref = ref_log_sigmoid(xs, 0.7)
    rep.compare("  same on an array of 9 x values", L_ref, L)
    rep.compare("  dL/dx elementwise", g_ref["x"], g["x"])
    rep.compare("  dL/dw summed over the array (a scalar)", np.sum(g_ref["w"]), g["w"])

    m = mods["seed001_reuse"]
    L, g = m.value_and_grad(x=2.0)
    L_ref, g_ref = ref_reuse(2.0)
    rep.compare("reuse: L = -(5x^2) log(x^2) at x=2", L_ref, L)
    rep.compare("  dL/dx = dL/db db/da + dL/dc dc/da ...", g_ref, g["x"])
    rep.compare("  closed form -(20 log 4 + 20)", -(20 * math.log(4) + 20), g["x"])

    m = mods["seed001_total"]
    L, g = m.value_and_grad(x=2.0)
    rep.compare("total derivative: L = -a*(5a) at x=2", -80.0, L, rtol=0)
    rep.compare("  dL/dx (dc/da = 10a) = -160", -160.0, g["x"], rtol=1e-15)
    rep.compare("  hand reverse pass", ref_total(2.0)[1], g["x"], rtol=1e-15)

    # -- linear regression MSE and its VJPs
    rng = np.random.default_rng(1)
    X = rng.standard_normal((50, 3))
    w = rng.standard_normal((3, 1))
    y = X @ np.array([[1.0], [-2.0], [0.5]]) + 0.1 * rng.standard_normal((50, 1))
    m = mods["seed001_linreg_mse"]
    L, g = m.value_and_grad(w=w, X=X, y=y)
    L_ref, g_ref = ref_linreg(X, w, y)
    rep.compare("linreg MSE (1/N) sum (y - Xw)^2", L_ref, L)
    rep.compare("  dL/dw = (-2/N (y - Xw)^T X)^T", g_ref["w"], g["w"])
    rep.compare("  dL/dX = dL/da w^T (matrix VJP)", g_ref["X"], g["X"])

    # -- the sigmoid network NLL, both forms, and the deep network
    x12, y = circle_data()
    X = np.c_[np.ones(len(y)), x12]                 # a constant feature for the intercept
    r = np.random.default_rng(10)
    W, w0 = r.standard_normal((3, 3)), r.standard_normal((3, 1))
    m, mb = mods["seed001_nll"], mods["seed001_nll_bernoulli"]
    L, g = m.value_and_grad(W=W, w0=w0, X=X, y=y)
    L_ref, g_ref = ref_nll(X, W, w0, y)
    rep.compare("NLL of sigmoid(X W^T) w0, 3 neurons", L_ref, L)
    rep.compare("  dNLL/dw0", g_ref["w0"], g["w0"])
    rep.compare("  dNLL/dW", g_ref["W"], g["W"])
    Lb, gb = mb.value_and_grad(W=W, w0=w0, X=X, y=y)
    rep.compare("  -sum[y log p + (1-y) log(1-p)] == NLL", L, Lb, rtol=1e-12)
    rep.compare("  ... and its dNLL/dW", g["W"], gb["W"], rtol=1e-9)

    W1, W2, w0d = r.standard_normal((4, 3)), r.standard_normal((3, 4)), r.standard_normal((3, 1))
    L, g = mods["seed001_nll_deep"].value_and_grad(W1=W1, W2=W2, w0=w0d, X=X, y=y)
    L_ref, g_ref = ref_nll_deep(X, W1, W2, w0d, y)
    rep.compare("2-layer NLL sigmoid(sigmoid(X W1^T) W2^T) w0", L_ref, L)
    for k in ("w0", "W2", "W1"):
        rep.compare(f"  dNLL/d{k}", g_ref[k], g[k])

    # -- gradient descent on w0 and W together; compare with feature transforms
    losses = []
    Wt, w0t = W.copy(), w0.copy()
    Wr, w0r = W.copy(), w0.copy()
    for _ in range(steps):
        L, g = m.value_and_grad(W=Wt, w0=w0t, X=X, y=y)
        losses.append(float(L))
        Wt, w0t = Wt - lr * g["W"], w0t - lr * g["w0"]
        _, gr = ref_nll(X, Wr, w0r, y)
        Wr, w0r = Wr - lr * gr["W"], w0r - lr * gr["w0"]
    nn_loss = float(m.forward(W=Wt, w0=w0t, X=X, y=y))
    acc = float(np.mean(((sig(X @ Wt.T) @ w0t) > 0) == (y > 0.5)))
    rep.compare(f"weights after {steps} GD steps vs hand-written", Wr, Wt, rtol=1e-8)
    rep.check("NLL decreases (GD on w0 and W)", losses[-1] < 0.5 * losses[0],
              f"{losses[0]:.3f} -> {nn_loss:.3f}, accuracy {acc:.3f}")
    lr_mod = mods["seed001_logreg_nll"]
    feats = {"x1^2, x2^2": np.c_[np.ones(len(y)), x12 ** 2],
             "x1 x2": np.c_[np.ones(len(y)), x12[:, 0] * x12[:, 1]]}
    final = {}
    for name, Phi in feats.items():
        wf = np.zeros((Phi.shape[1], 1))
        for _ in range(steps):
            _, g = lr_mod.value_and_grad(w=wf, Phi=Phi, y=y)
            wf = wf - lr * g["w"]
        final[name] = float(lr_mod.forward(w=wf, Phi=Phi, y=y))
    rep.check("circle: right transform < network < wrong one",
              final["x1^2, x2^2"] < nn_loss < final["x1 x2"],
              f"NLL with (x1^2, x2^2) {final['x1^2, x2^2']:.3f} < 3-neuron net {nn_loss:.3f} "
              f"< with (x1 x2) {final['x1 x2']:.3f}")
    return rep


def main(argv=None) -> int:
    ap = _common.argparser(__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    args = ap.parse_args(argv)
    return run(steps=args.steps, from_codegen=args.from_codegen).finish()


if __name__ == "__main__":
    sys.exit(main())
