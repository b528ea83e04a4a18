"""Second derivatives: Hessian-vector products and dense Hessians, symgrad against the alternatives.

    python -m benchmarks.bench_second [--smoke] [--unset-openblas-env] [--rounds R]

* ``hvp`` of seed 003's f(x, y) (elementwise on 1e6 float64 entries) and of seed 002's 784-50-1
  ReLU MLP + MSE (all four parameters, a random direction): symgrad's generated ``hvp`` (forward
  over reverse) vs ``jax.jit`` of ``jax.jvp(jax.value_and_grad(f))``, ``torch.func.jvp`` of
  ``torch.func.grad_and_value``, HIPS autograd's ``hessian_vector_product`` and, for f(x, y), SymPy's
  second derivatives + ``lambdify(cse=True)``.  The ratio column is against symgrad's own
  ``value_and_grad`` on the same inputs: the cost of an HVP in gradients (the goal is <= 4).
* ``hessian`` of seed 001's logistic-regression NLL (N samples, k features) and of seed 002's MLP
  with a small hidden layer (all four parameters): symgrad's generated ``hessian`` (every direction
  in one batched sweep) vs ``jax.jit(jax.hessian)``, ``torch.func.hessian``, autograd's ``hessian``.
* ``jacobian`` of the logistic model's per-sample losses (an N-vector) with respect to w: symgrad's
  ``jacobian`` (a batched jvp) vs ``jax.jit(jax.jacfwd)``, ``torch.func.jacfwd``, autograd's
  ``jacobian``.
"""
from __future__ import annotations

import numpy as np

from benchmarks import harness
from benchmarks.harness import NotApplicable

METHODS = [
    ("symgrad_vag", "symgrad value_and_grad (1 gradient: the unit)"),
    ("symgrad", "symgrad (generated hvp / hessian / jacobian)"),
    ("jax", "jax.jit, jvp of value_and_grad / jax.hessian / jax.jacfwd"),
    ("torch", "torch.func, jvp of grad_and_value / hessian / jacfwd"),
    ("autograd", "HIPS autograd hessian_vector_product / hessian / jacobian"),
    ("sympy", "SymPy second derivatives + lambdify(cse=True)"),
]
MLP = ("w1", "b1", "w2", "b2")


def cases(settings):
    if settings.smoke:
        return [("hvp f(x, y) n=1000", {"w": "fxy", "n": 1000}, 1e-8),
                ("hvp MLP N=64 m=16 nh=8", {"w": "mlp", "N": 64, "m": 16, "nh": 8}, 1e-8),
                ("hessian logreg N=100 k=4", {"w": "logreg", "N": 100, "k": 4}, 1e-8),
                ("jacobian losses N=100 k=4", {"w": "losses", "N": 100, "k": 4}, 1e-8),
                ("hessian MLP N=32 m=6 nh=3", {"w": "mlp_h", "N": 32, "m": 6, "nh": 3}, 1e-8)]
    return [("hessian logreg N=2000 k=10", {"w": "logreg", "N": 2000, "k": 10}, 1e-8),
            ("hessian logreg N=2000 k=50", {"w": "logreg", "N": 2000, "k": 50}, 1e-8),
            ("jacobian losses N=2000 k=10", {"w": "losses", "N": 2000, "k": 10}, 1e-8),
            ("jacobian losses N=2000 k=50", {"w": "losses", "N": 2000, "k": 50}, 1e-8),
            ("hessian MLP N=512 m=64 nh=8", {"w": "mlp_h", "N": 512, "m": 64, "nh": 8}, 1e-8),
            ("hvp f(x, y) n=1e6", {"w": "fxy", "n": 10 ** 6}, 1e-8),
            ("hvp MLP N=512 m=784 nh=50", {"w": "mlp", "N": 512, "m": 784, "nh": 50}, 1e-8),
            ("hvp MLP N=5000 m=784 nh=50", {"w": "mlp", "N": 5000, "m": 784, "nh": 50}, 1e-8)]


def make_data(case):
    rng = np.random.default_rng(0)
    if case["w"] == "fxy":
        n = case["n"]
        return {k: rng.standard_normal(n) for k in ("x", "y")}, {k: rng.standard_normal(n) for k in ("x", "y")}
    if case["w"] in ("mlp", "mlp_h"):
        n, m, nh = case["N"], case["m"], case["nh"]
        d = {"x": rng.standard_normal((n, m)), "w1": rng.standard_normal((m, nh)) / np.sqrt(m),
             "b1": 0.1 * rng.standard_normal((1, nh)), "w2": rng.standard_normal((nh, 1)) / np.sqrt(nh),
             "b2": 0.1 * rng.standard_normal((1, 1)), "y": rng.standard_normal((n, 1))}
        return d, {k: rng.standard_normal(d[k].shape) for k in MLP}
    n, k = case["N"], case["k"]
    return {"Phi": rng.standard_normal((n, k)), "y": (rng.uniform(size=(n, 1)) < 0.5).astype(float),
            "w": 0.1 * rng.standard_normal((k, 1))}, None


def _fxy(np_):
    return lambda x, y: (x + 1 / (1 + np_.exp(-y))) / (1 / (1 + np_.exp(-x)) + (x + y) ** 2)


def _mlp_loss(np_, maximum):
    def loss(params, x, y):
        w1, b1, w2, b2 = params
        out = maximum(x @ w1 + b1, 0.0) @ w2 + b2
        return ((out - y) ** 2).mean()
    return loss


def _nll(np_, log_sigmoid):
    def nll(w, Phi, y):
        return -log_sigmoid((2 * y - 1) * (Phi @ w)).sum()
    return nll


def _losses(log_sigmoid):
    """The per-sample losses -log sigmoid((2 y - 1) Phi w), an N x 1 column (their Jacobian in w)."""
    return lambda w, Phi, y: -log_sigmoid((2 * y - 1) * (Phi @ w))


def _losses_model():
    import sympy as sp
    import symgrad
    N, k = sp.symbols("N k")
    Phi, y, w = sp.MatrixSymbol("Phi", N, k), sp.MatrixSymbol("y", N, 1), sp.MatrixSymbol("w", k, 1)
    t = sp.HadamardProduct(2 * y - sp.OneMatrix(N, 1), Phi * w)
    return symgrad.Model(-t.applyfunc(lambda u: sp.log(1 / (1 + sp.exp(-u)))), wrt=[w], name="logreg_losses")


def _blocks(H, d):
    """One matrix from nested blocks H[a][b] (shaped a.shape + b.shape) over the MLP's parameters."""
    sizes = [d[k].size for k in MLP]
    return np.block([[np.asarray(H[i][j]).reshape(sa, sb) for j, sb in enumerate(sizes)] for i, sa in enumerate(sizes)])


def setup(method, case):
    d, v = make_data(case)
    w = case["w"]
    if method in ("symgrad", "symgrad_vag"):
        import symgrad
        name = {"fxy": ("seed003_backprop.py", "seed003_sigmoid_ratio"),
                "mlp": ("seed002_mlp.py", "seed002_mlp_mse"), "mlp_h": ("seed002_mlp.py", "seed002_mlp_mse"),
                "logreg": ("seed001_autodiff.py", "seed001_logreg_nll"), "losses": None}[w]
        model = _losses_model() if w == "losses" else harness.symgrad_model(*name)
        mod = symgrad.compile(model, emit="jacobian" if w == "losses" else "hvp,hessian")
        if method == "symgrad_vag":
            return lambda: mod.value_and_grad(**d)
        if w == "logreg":
            return lambda: (lambda r: (r[0], {"H": r[2]["w", "w"].reshape(case["k"], case["k"])}))(mod.hessian(**d))
        if w == "losses":
            return lambda: (lambda r: (r[0].sum(), {"J": r[1]["w"].reshape(case["N"], case["k"])}))(mod.jacobian(**d))
        if w == "mlp_h":
            sizes = [d[k].size for k in MLP]

            def run():
                value, _, H = mod.hessian(**d)
                return value, {"H": np.block([[H[a, b].reshape(sa, sb) for b, sb in zip(MLP, sizes)]
                                              for a, sa in zip(MLP, sizes)])}
            return run
        return lambda: (lambda r: (r[0], r[2]))(mod.hvp(v, **d))
    if method == "jax":
        import jax
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp
        j = {k: jax.device_put(a) for k, a in d.items()}
        if w == "fxy":
            f = _fxy(jnp)
            g = jax.jit(lambda x, y, vx, vy: jax.jvp(jax.value_and_grad(lambda a, b: f(a, b).sum(), argnums=(0, 1)),
                                                    (x, y), (vx, vy)))
            jv = {k: jax.device_put(a) for k, a in v.items()}

            def run():
                (_, _), (_, (hx, hy)) = jax.block_until_ready(g(j["x"], j["y"], jv["x"], jv["y"]))
                return f(j["x"], j["y"]), {"x": hx, "y": hy}
            return run
        if w == "mlp":
            loss = _mlp_loss(jnp, jnp.maximum)
            p = tuple(j[k] for k in MLP)
            jv = tuple(jax.device_put(v[k]) for k in MLP)
            g = jax.jit(lambda p, t: jax.jvp(jax.value_and_grad(lambda q: loss(q, j["x"], j["y"])), (p,), (t,)))

            def run():
                (val, _), (_, hv) = jax.block_until_ready(g(p, jv))
                return val, dict(zip(MLP, hv))
            return run
        if w == "mlp_h":
            loss = _mlp_loss(jnp, jnp.maximum)
            p = tuple(j[k] for k in MLP)
            h = jax.jit(lambda q: (loss(q, j["x"], j["y"]), jax.hessian(lambda r: loss(r, j["x"], j["y"]))(q)))

            def run():
                val, H = jax.block_until_ready(h(p))
                return val, {"H": _blocks(H, d)}
            return run
        if w == "losses":
            losses = _losses(jax.nn.log_sigmoid)
            jf = jax.jit(lambda w_: (losses(w_, j["Phi"], j["y"]).sum(), jax.jacfwd(losses)(w_, j["Phi"], j["y"])))

            def run():
                val, J = jax.block_until_ready(jf(j["w"]))
                return val, {"J": J.reshape(case["N"], case["k"])}
            return run
        nll = _nll(jnp, jax.nn.log_sigmoid)
        h = jax.jit(lambda w_: (nll(w_, j["Phi"], j["y"]), jax.hessian(nll)(w_, j["Phi"], j["y"])))

        def run():
            val, H = jax.block_until_ready(h(j["w"]))
            return val, {"H": H.reshape(case["k"], case["k"])}
        return run
    if method == "torch":
        import torch
        import torch.func as tf
        t = {k: torch.from_numpy(a) for k, a in d.items()}
        info = f"torch intra-op threads={torch.get_num_threads()}"
        if w == "fxy":
            f = _fxy(torch)
            tv = tuple(torch.from_numpy(v[k]) for k in "xy")
            gv = tf.grad_and_value(lambda x, y: f(x, y).sum(), argnums=(0, 1))

            def run():
                (_, val), ((hx, hy), _) = tf.jvp(lambda x, y: gv(x, y), (t["x"], t["y"]), tv)
                return f(t["x"], t["y"]), {"x": hx, "y": hy}
            return run, info
        if w == "mlp":
            loss = _mlp_loss(torch, lambda a, b: torch.clamp(a, min=b))
            p = tuple(t[k] for k in MLP)
            tv = tuple(torch.from_numpy(v[k]) for k in MLP)
            gv = tf.grad_and_value(lambda q: loss(q, t["x"], t["y"]))

            def run():
                (_, val), (hv, _) = tf.jvp(gv, (p,), (tv,))
                return val, dict(zip(MLP, hv))
            return run, info
        if w == "mlp_h":
            loss = _mlp_loss(torch, lambda a, b: torch.clamp(a, min=b))
            p = tuple(t[k] for k in MLP)
            hess = tf.hessian(lambda q: loss(q, t["x"], t["y"]))

            def run():
                return loss(p, t["x"], t["y"]), {"H": _blocks(hess(p), d)}
            return run, info
        if w == "losses":
            losses = _losses(torch.nn.functional.logsigmoid)
            jac = tf.jacfwd(losses)

            def run():
                return (losses(t["w"], t["Phi"], t["y"]).sum(),
                        {"J": jac(t["w"], t["Phi"], t["y"]).reshape(case["N"], case["k"])})
            return run, info
        nll = _nll(torch, torch.nn.functional.logsigmoid)
        hess = tf.hessian(nll)

        def run():
            return nll(t["w"], t["Phi"], t["y"]), {"H": hess(t["w"], t["Phi"], t["y"]).reshape(case["k"], case["k"])}
        return run, info
    if method == "autograd":
        import autograd
        import autograd.numpy as anp
        if w == "fxy":
            f = _fxy(anp)
            hvp = autograd.hessian_vector_product(lambda xy: f(*xy).sum())

            def run():
                hx, hy = hvp((d["x"], d["y"]), (v["x"], v["y"]))
                return f(d["x"], d["y"]), {"x": hx, "y": hy}
            return run
        if w == "mlp":
            loss = _mlp_loss(anp, anp.maximum)
            p, tv = tuple(d[k] for k in MLP), tuple(v[k] for k in MLP)
            grad = autograd.grad(lambda q: loss(q, d["x"], d["y"]))  # hessian_vector_product takes one array
            hvp = autograd.grad(lambda q, t: sum(anp.sum(g * ti) for g, ti in zip(grad(q), t)))

            def run():
                return loss(p, d["x"], d["y"]), dict(zip(MLP, hvp(p, tv)))
            return run
        if w == "mlp_h":
            raise NotApplicable("autograd's hessian takes one array argument, not the four parameters")
        if w == "losses":
            losses = _losses(lambda u: -anp.logaddexp(0.0, -u))
            jac = autograd.jacobian(losses)

            def run():
                return (losses(d["w"], d["Phi"], d["y"]).sum(),
                        {"J": jac(d["w"], d["Phi"], d["y"]).reshape(case["N"], case["k"])})
            return run
        nll = _nll(anp, lambda u: -anp.logaddexp(0.0, -u))
        hess = autograd.hessian(nll)

        def run():
            return nll(d["w"], d["Phi"], d["y"]), {"H": hess(d["w"], d["Phi"], d["y"]).reshape(case["k"], case["k"])}
        return run
    if method == "sympy":
        if w != "fxy":
            raise NotApplicable("SymPy's hessian needs a scalar expression in scalar symbols")
        import sympy as sp
        x, y = sp.symbols("x y")
        e = _fxy(sp)(x, y)
        H = sp.hessian(e, (x, y))
        fn = sp.lambdify([x, y], [e, H[0, 0], H[0, 1], H[1, 1]], "numpy", cse=True)

        def run():
            val, fxx, fxy, fyy = fn(d["x"], d["y"])
            return val, {"x": fxx * v["x"] + fxy * v["y"], "y": fxy * v["x"] + fyy * v["y"]}
        return run
    raise ValueError(method)


def tables(settings, log=print):
    rows = harness.run_cases("benchmarks.bench_second", METHODS, cases(settings), settings, log)
    return harness.runtime_table(rows, "Second derivatives: HVPs (seed 003 f(x, y), seed 002 MLP), dense "
                                       "Hessians (seed 001 logistic NLL, seed 002 MLP) and Jacobians", baseline="symgrad_vag",
                                 baseline_name="symgrad value_and_grad", check_ref="symgrad")


if __name__ == "__main__":
    harness.script_main(tables, __doc__)
