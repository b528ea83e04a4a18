"""Second-order optimisation with generated modules: Newton's method and Hessian-free steps.

    python examples/run_second_order.py [--small] [--from-codegen]

1. Newton's method on seed 001's logistic-regression NLL (``seed001_logreg_nll``, features
   ``Phi = [1, x1**2, x2**2]`` of a noisy circle data set) with the module's ``hessian``:
   ``w <- w - H^-1 g``.  It reaches ``||g|| < 1e-8`` in a handful of iterations (8); gradient
   descent needs hundreds to thousands of steps to get there (over 50x as many: ~1000 with seed
   001's step 0.01, ~600 with the best fixed step, 1 / the largest eigenvalue of H at the optimum,
   which it would have to know) -- and this problem is well conditioned (cond(H) ~ 30).
2. Hessian-free steps on seed 002's 784-50-1 ReLU MLP (``seed002_mlp_mse``, synthetic data):
   each step solves ``(H + lam I) p = -g`` by conjugate gradients on the module's ``hvp``
   (forward over reverse: no Hessian is ever formed), with Levenberg-Marquardt damping.  After
   the same number of steps it is checked to reach a lower loss than gradient descent.

``--small`` uses fewer samples of the MLP (for the tests).  Exits non-zero when a claim fails.
"""
from __future__ import annotations

import numpy as np

import _common

TOL = 1e-8          # both methods run until ||gradient|| < TOL
GD_MAX = 100_000


def noisy_circle(n=400, seed=0):
    """Labels drawn from a logistic model of x1**2 + x2**2 (not separable: the MLE is finite)."""
    rng = np.random.default_rng(seed)
    x12 = rng.uniform(-2, 2, (n, 2))
    p = 1 / (1 + np.exp(-3 * (1.5 - (x12 ** 2).sum(1))))
    y = (rng.uniform(size=n) < p).astype(float)[:, None]
    return np.c_[np.ones(n), x12 ** 2], y


def newton_vs_gd(rep, mod):
    Phi, y = noisy_circle()

    def gradient(w):
        return mod.value_and_grad(w=w, Phi=Phi, y=y)[1]["w"]

    w = np.zeros((3, 1))
    for newton_its in range(1, 51):
        _, grads, H = mod.hessian(w=w, Phi=Phi, y=y)
        w = w - np.linalg.solve(H["w", "w"].reshape(3, 3), grads["w"].ravel()).reshape(3, 1)
        if np.linalg.norm(gradient(w)) < TOL:
            break
    rep.check(f"Newton (generated hessian): ||g|| < {TOL:g}", newton_its <= 10,
              f"{newton_its} iterations, NLL {float(mod.forward(w=w, Phi=Phi, y=y)):.10f}")
    # gradient descent to the same ||g||: with seed 001's step, and with the best fixed step
    # (1 / the largest eigenvalue of H at the optimum -- which it would have to know)
    best_lr = 1 / np.linalg.eigvalsh(mod.hessian(w=w, Phi=Phi, y=y)[2]["w", "w"].reshape(3, 3)).max()
    for label, lr in (("seed 001's step 0.01", 0.01), (f"the best fixed step {best_lr:.3g}", best_lr)):
        wg = np.zeros((3, 1))
        for gd_its in range(GD_MAX):
            g = gradient(wg)
            if np.linalg.norm(g) < TOL:
                break
            wg = wg - lr * g
        rep.check(f"gradient descent ({label})", gd_its >= 50 * newton_its,
                  f"{gd_its} steps to ||g|| < {TOL:g}: {gd_its / newton_its:.0f}x Newton's iterations")
        rep.compare("  its weights vs Newton's", w, wg, rtol=1e-6)


def conjugate_gradient(matvec, b, iters=20, tol=1e-6):
    """Solve A x = b for symmetric A given x -> A x; stops at negative curvature."""
    x = np.zeros_like(b)
    r = b.copy()
    p = r.copy()
    rr = r @ r
    for _ in range(iters):
        Ap = matvec(p)
        curv = p @ Ap
        if curv <= 0:
            break
        alpha = rr / curv
        x += alpha * p
        r -= alpha * Ap
        rr_new = r @ r
        if np.sqrt(rr_new) < tol * np.sqrt(b @ b):
            break
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def hessian_free_vs_gd(rep, mod, n, steps=8):
    rng = np.random.default_rng(1)
    m, nh = 784, 50
    x = rng.standard_normal((n, m)) / np.sqrt(m)
    teacher = np.maximum(x @ rng.standard_normal((m, 8)), 0) @ rng.standard_normal((8, 1))
    y = teacher + 0.01 * rng.standard_normal((n, 1))
    start = {"w1": rng.standard_normal((m, nh)) / np.sqrt(m), "b1": np.zeros((1, nh)),
             "w2": rng.standard_normal((nh, 1)) / np.sqrt(nh), "b2": np.zeros((1, 1))}
    names = list(start)
    shapes = {k: v.shape for k, v in start.items()}
    sizes = [int(np.prod(s)) for s in shapes.values()]

    def unflat(v):
        return {k: part.reshape(shapes[k]) for k, part in zip(names, np.split(v, np.cumsum(sizes)[:-1]))}

    def flat(d):
        return np.concatenate([np.ravel(d[k]) for k in names])

    params, lam = dict(start), 1.0
    loss = float(mod.forward(x=x, y=y, **params))
    hf_losses = [loss]
    for _ in range(steps):
        _, g = mod.value_and_grad(x=x, y=y, **params)
        gv = flat(g)
        hv = lambda v: flat(mod.hvp(unflat(v), x=x, y=y, **params)[2]) + lam * v  # noqa: E731
        p = conjugate_gradient(hv, -gv)
        trial = {k: params[k] + d for k, d in unflat(p).items()}
        new = float(mod.forward(x=x, y=y, **trial))
        predicted = gv @ p + 0.5 * p @ (hv(p) - lam * p)
        rho = (new - loss) / predicted if predicted < 0 else -1.0
        if new < loss:
            params, loss = trial, new
        lam = lam * 2 / 3 if rho > 0.75 else lam * 3 / 2 if rho < 0.25 else lam
        hf_losses.append(loss)
    # gradient descent from the same start, best fixed step of a small grid, same number of steps
    best = np.inf
    for lr in (0.01, 0.03, 0.1, 0.3, 1.0):
        pg = dict(start)
        for _ in range(steps):
            _, g = mod.value_and_grad(x=x, y=y, **pg)
            pg = {k: pg[k] - lr * g[k] for k in names}
        with np.errstate(all="ignore"):
            final = float(mod.forward(x=x, y=y, **pg))
        best = min(best, final) if np.isfinite(final) else best
    rep.check(f"Hessian-free ({steps} steps, CG on hvp) beats GD", hf_losses[-1] < best,
              f"MSE {hf_losses[0]:.4f} -> {hf_losses[-1]:.4f} vs GD's best {best:.4f}")
    return hf_losses[-1], best


def run(small: bool = False, from_codegen: bool = False, quiet: bool = False):
    rep = _common.Report("second order: Newton on seed 001, Hessian-free on seed 002", quiet=quiet)
    logreg = _common.load_modules("seed001_autodiff.py", from_codegen)["seed001_logreg_nll"]
    mlp = _common.load_modules("seed002_mlp.py", from_codegen)["seed002_mlp_mse"]
    newton_vs_gd(rep, logreg)
    hessian_free_vs_gd(rep, mlp, n=300 if small else 5000)
    return rep


def main(argv=None) -> int:
    ap = _common.argparser(__doc__.splitlines()[0], small=True)
    args = ap.parse_args(argv)
    return run(small=args.small, from_codegen=args.from_codegen).finish()


if __name__ == "__main__":
    raise SystemExit(main())
