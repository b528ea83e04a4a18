"""Seed 004 ("NN Learning") reproduced with symgrad.

    python examples/run_seed004.py [--small] [--from-codegen]

1. The one-hidden-layer ReLU network with softmax cross-entropy: the notes derive
   delta1 = (y_hat - y)^T, dJ/dU = delta1^T h^T, dJ/db2 = delta1^T, delta2 = delta1 U o sgn(h),
   dJ/dW = delta2^T x^T, dJ/db1 = delta2^T, dJ/dx = (delta2 W)^T.  symgrad's gradients are compared
   with these formulas for one sample (the notes' column-vector setting) and for a batch, the
   identity (7) dJ/dtheta = y_hat - y is checked, and the network is trained by gradient descent.
2. The line fit by gradient descent on sklearn's ``make_blobs(n_samples=1000, random_state=170,
   centers=1)`` stretched by the notes' matrix (make_blobs is re-implemented with the same NumPy
   RandomState calls, so the points are the notes' points): the notes print
   "Starting gradient descent at b = 0, m = 0, error = 2.059703523518794" and
   "After 1000 iterations b = -3.2643663545390273, m = -1.3386872077957057, error = 0.11444715957515363".
3. The Legendre-P3 fit y = a + b P3(c + d x) of sin(x) on 2000 points, 2000 steps at rate 5e-6:
   the notes print the loss every 100 steps (209.958... -> 8.9436...) and
   "Result: y = 4.69e-10 + -2.208526849746704 * P3(2.95e-10 + 0.2554861009120941 x)".  The notes
   run in float32 (torch), this script in float64, so these agree to ~1e-6 relative.
"""
from __future__ import annotations

import math
import sys

import numpy as np

import _common

SEED_LINE_START_ERROR = 2.059703523518794
SEED_LINE_RESULT = {"b": -3.2643663545390273, "m": -1.3386872077957057, "error": 0.11444715957515363}
SEED_LEGENDRE_LOSSES = [209.95831298828125, 144.6602020263672, 100.70250701904297, 71.03519439697266,
                        50.97850799560547, 37.403133392333984, 28.206867218017578, 21.97317886352539,
                        17.745729446411133, 14.877889633178711, 12.93176555633545, 11.610918045043945,
                        10.714245796203613, 10.105476379394531, 9.69210433959961, 9.411376953125,
                        9.220744132995605, 9.091286659240723, 9.003360748291016, 8.943641662597656]
SEED_LEGENDRE_RESULT = {"a": 4.691534383205465e-10, "b": -2.208526849746704,
                        "c": 2.9543581470115043e-10, "d": 0.2554861009120941}
TRANSFORMATION = [[0.60834549, -0.63667341], [-0.40887718, 0.85253229]]


# ---- 1. the notes' softmax / CE backward formulas ---------------------------------------------------
def softmax_rows(theta):
    e = np.exp(theta - theta.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def ref_mlp_ce_sample(x, y, W, b1, U, b2):
    """One sample, column vectors, literally the notes' formulas."""
    z = W @ x + b1
    h = np.maximum(z, 0)
    theta = U @ h + b2
    y_hat = softmax_rows(theta.T).T
    J = float(-(y * np.log(y_hat)).sum())
    delta1 = (y_hat - y).T                         # (1 x Nc)
    delta2 = (delta1 @ U) * np.sign(h).T           # (1 x Dh), sgn(h) = ReLU'(z)
    return J, {"U": delta1.T @ h.T, "b2": delta1.T, "W": delta2.T @ x.T, "b1": delta2.T,
               "x": (delta2 @ W).T}


def ref_mlp_ce(X, Y, W, b1, U, b2):
    """The same formulas for a batch whose rows are samples (summed over the samples)."""
    Z = X @ W.T + b1.T
    H = np.maximum(Z, 0)
    Theta = H @ U.T + b2.T
    Y_hat = softmax_rows(Theta)
    J = float(-(Y * np.log(Y_hat)).sum())
    D1 = Y_hat - Y
    D2 = (D1 @ U) * np.sign(H)
    return J, {"U": D1.T @ H, "b2": D1.sum(0)[:, None], "W": D2.T @ X, "b1": D2.sum(0)[:, None],
               "X": D2 @ W}


def blobs_data(n_classes=3, n_per=40, dx=4, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 2.0, (n_classes, dx))
    labels = np.repeat(np.arange(n_classes), n_per)
    X = centers[labels] + rng.standard_normal((len(labels), dx))
    return X, np.eye(n_classes)[labels], labels


# ---- 2. sklearn's make_blobs(n_samples, random_state=170, centers=1), same RandomState calls ------
def make_blobs_170(n_samples=1000, random_state=170):
    gen = np.random.RandomState(random_state)
    centers = gen.uniform(-10.0, 10.0, size=(1, 2))                  # center_box=(-10, 10)
    X = gen.normal(loc=centers[0], scale=1.0, size=(n_samples, 2))  # cluster_std=1.0
    idx = np.arange(n_samples)                                       # shuffle=True
    gen.shuffle(idx)
    return X[idx]


def run(small: bool = False, from_codegen: bool = False, quiet: bool = False) -> _common.Report:
    mods = _common.load_modules("seed004_softmax.py", from_codegen)
    rep = _common.Report("seed 004: softmax CE network, line fit, Legendre P3", quiet=quiet)

    # -- 1a. one sample, the notes' column-vector formulas
    rng = np.random.default_rng(4)
    Dx, Dh, Nc = 4, 6, 3
    W, b1 = 0.5 * rng.standard_normal((Dh, Dx)), 0.1 * rng.standard_normal((Dh, 1))
    U, b2 = 0.5 * rng.standard_normal((Nc, Dh)), 0.1 * rng.standard_normal((Nc, 1))
    x = rng.standard_normal((Dx, 1))
    y = np.eye(Nc)[:, [1]]
    net = mods["seed004_mlp_ce"]
    J, g = net.value_and_grad(X=x.T, Y=y.T, W=W, b1=b1, U=U, b2=b2)
    J_ref, g_ref = ref_mlp_ce_sample(x, y, W, b1, U, b2)
    rep.compare("CE(y, softmax(U relu(Wx+b1)+b2)), 1 sample", J_ref, J)
    for k, kk in (("U", "U"), ("b2", "b2"), ("W", "W"), ("b1", "b1"), ("X", "x")):
        rep.compare(f"  dJ/d{kk} vs the notes' formula", g_ref[kk].T if k == "X" else g_ref[kk], g[k])

    # -- 1b. a batch; identity (7); training
    X, Yoh, labels = blobs_data()
    J, g = net.value_and_grad(X=X, Y=Yoh, W=W, b1=b1, U=U, b2=b2)
    J_ref, g_ref = ref_mlp_ce(X, Yoh, W, b1, U, b2)
    rep.compare(f"batch CE, N={len(X)}", J_ref, J)
    for k in ("U", "b2", "W", "b1", "X"):
        rep.compare(f"  dJ/d{k} (batch)", g_ref[k], g[k])
    Theta = np.maximum(X @ W.T + b1.T, 0) @ U.T + b2.T
    _, gt = mods["seed004_ce_logits"].value_and_grad(Theta=Theta, Y=Yoh)
    rep.compare("(7) dJ/dtheta = y_hat - y", softmax_rows(Theta) - Yoh, gt["Theta"])
    params = {"W": W, "b1": b1, "U": U, "b2": b2}
    losses = []
    for _ in range(100 if small else 300):
        J, g = net.value_and_grad(X=X, Y=Yoh, **params)
        losses.append(float(J))
        params = {k: v - 0.01 * g[k] for k, v in params.items()}
    Theta = np.maximum(X @ params["W"].T + params["b1"].T, 0) @ params["U"].T + params["b2"].T
    acc = float(np.mean(Theta.argmax(1) == labels))
    rep.check("GD on the CE network: loss falls, fits", losses[-1] < 0.25 * losses[0] and acc > 0.9,
              f"CE {losses[0]:.3f} -> {losses[-1]:.3f}, accuracy {acc:.3f}")

    # -- 2. the line fit of the notes, step for step
    points = np.dot(make_blobs_170(), TRANSFORMATION)
    px, py = points[:, 0], points[:, 1]
    line = mods["seed004_line_fit"]
    error = lambda b, m: 2.0 * float(np.mean(line.forward(b=b, m=m, x=px, y=py)))  # noqa: E731
    rep.compare("line fit: starting error at b = m = 0", SEED_LINE_START_ERROR, error(0.0, 0.0), rtol=1e-13)
    b, m = 0.0, 0.0
    iters = 1000
    for _ in range(iters):
        _, g = line.value_and_grad(b=b, m=m, x=px, y=py)
        b = b - 0.0001 * g["b"]
        m = m - 0.0001 * g["m"]
    rep.compare(f"line fit: b after {iters} iterations", SEED_LINE_RESULT["b"], b, rtol=1e-10)
    rep.compare(f"line fit: m after {iters} iterations", SEED_LINE_RESULT["m"], m, rtol=1e-10)
    rep.compare(f"line fit: error after {iters} iterations", SEED_LINE_RESULT["error"], error(b, m), rtol=1e-10)
    rep.check("line fit: gradients are scalars", np.ndim(g["b"]) == 0 and np.ndim(g["m"]) == 0,
              f"shapes {np.shape(g['b'])}, {np.shape(g['m'])}")

    # -- 3. the Legendre-P3 fit
    leg = mods["seed004_legendre"]
    xs = np.linspace(-math.pi, math.pi, 2000)
    ys = np.sin(xs)
    p = {"a": 0.0, "b": -1.0, "c": 0.0, "d": 0.3}
    printed = []
    for t in range(2000):
        loss, g = leg.value_and_grad(x=xs, y=ys, **p)
        if t % 100 == 99:
            printed.append(float(np.sum(loss)))
        p = {k: v - 5e-6 * g[k] for k, v in p.items()}
    rep.note("loss every 100 steps (symgrad): " + ", ".join(f"{v:.4f}" for v in printed))
    rep.compare("Legendre fit: loss every 100 steps", SEED_LEGENDRE_LOSSES, printed, rtol=2e-6)
    rep.compare("Legendre fit: final loss (step 2000)", SEED_LEGENDRE_LOSSES[-1], printed[-1], rtol=1e-6)
    rep.compare("Legendre fit: b", SEED_LEGENDRE_RESULT["b"], p["b"], rtol=2e-6)
    rep.compare("Legendre fit: d", SEED_LEGENDRE_RESULT["d"], p["d"], rtol=2e-6)
    rep.compare("Legendre fit: a, c (float32 noise in the notes)",
                [SEED_LEGENDRE_RESULT["a"], SEED_LEGENDRE_RESULT["c"]], [p["a"], p["c"]], atol=1e-8)
    rep.note(f"Result: y = {p['a']} + {p['b']} * P3({p['c']} + {p['d']} x)")
    return rep


def main(argv=None) -> int:
    args = _common.argparser(__doc__.splitlines()[0], small=True).parse_args(argv)
    return run(small=args.small, from_codegen=args.from_codegen).finish()


if __name__ == "__main__":
    sys.exit(main())
