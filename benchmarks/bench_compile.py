"""Compile time: symgrad.generate vs SymPy diff + lambdify vs jax trace + compile.

* the deep chain h_0 = x, h_k = tanh(w_k * h_{k-1} + b_k), value h_D and the gradients of all 2D
  parameters, at depths 8 ... 1024 (SymPy only to 256: its diff alone passes the timeout beyond);
* the 32-input x 32-tanh-unit 2-layer network written with scalar Symbols (1089 parameters):
  h_j = tanh(sum_i W_ji x_i + b_j), loss (sum_j v_j h_j + c - t)**2.

Every measurement runs in a fresh process (no warm caches), after an untimed warm-up of the same tool
on a tiny model (imports, lazy initialisation).  symgrad's time is ``symgrad.generate(model)`` --
its own work after the SymPy expression exists; ``symgrad.compile`` adds writing the module file
and importing it (Python compiling the source; the module cache off), and the module's bytes are
reported beside it -- both should grow linearly with the depth.  SymPy's is ``diff`` for every parameter plus
``lambdify`` (one process measures both lambdify variants on the same derivatives).  jax's is
``jax.jit(jax.value_and_grad(f)).lower(...).compile()``.  A tool that times out (or hits
RecursionError) at one size is not run at the larger sizes.

    python -m benchmarks.bench_compile [--smoke] [--rounds R]
"""
from __future__ import annotations

import inspect
import time

import numpy as np

from benchmarks import harness

MODULE = "benchmarks.bench_compile"
TOOLS = ["symgrad", "symgrad_compile", "sympy", "jax"]
MAX_SIZE = {"sympy": 256}  # chain depth beyond which a tool is not run (see the module docstring)
LABELS = {"symgrad": "symgrad.generate", "symgrad_compile": "symgrad.compile (generate + import)", "sympy": "SymPy diff + lambdify",
          "sympy_cse": "SymPy diff + lambdify(cse=True)", "jax": "jax trace + compile"}


def workloads(settings):
    depths = (8, 16) if settings.smoke else (8, 16, 32, 64, 128, 256, 512, 1024)
    net = 4 if settings.smoke else 32
    return [("chain", d, f"tanh chain, depth {d} ({2 * d} params)") for d in depths] + \
           [("net", net, f"{net}x{net} tanh net, scalar Symbols ({net * net + 2 * net + 1} params)")]


# ---- models, built the same way for every tool (lib: a sympy-like or jax.numpy-like namespace) ----
def chain(lib, x, ws, bs):
    h = x
    for w, b in zip(ws, bs):
        h = lib.tanh(w * h + b)
    return h


def net(lib, xs, t, W, b, v, c):
    hs = [lib.tanh(sum(W[j][i] * xs[i] for i in range(len(xs))) + b[j]) for j in range(len(b))]
    return (sum(v[j] * hs[j] for j in range(len(hs))) + c - t) ** 2


def sympy_model(kind, size):
    """(expr, inputs, params) with SymPy symbols."""
    import sympy as sp
    if kind == "chain":
        x, ws, bs = sp.Symbol("x"), sp.symbols(f"w1:{size + 1}"), sp.symbols(f"b1:{size + 1}")
        return chain(sp, x, ws, bs), [x], list(ws) + list(bs)
    xs, t = sp.symbols(f"x1:{size + 1}"), sp.Symbol("t")
    W = [[sp.Symbol(f"W_{j}_{i}") for i in range(size)] for j in range(size)]
    b, v, c = sp.symbols(f"b1:{size + 1}"), sp.symbols(f"v1:{size + 1}"), sp.Symbol("c")
    return net(sp, xs, t, W, b, v, c), list(xs) + [t], [w for row in W for w in row] + list(b) + list(v) + [c]


def _symgrad_model(run, kind, size):
    """(model, its parameters), after one warm-up ``run`` (generate or compile) of a tiny model."""
    import symgrad
    run(symgrad.Model(sympy_model("chain", 1)[0], name="warmup"))
    expr, _, params = sympy_model(kind, size)
    return symgrad.Model(expr, wrt=params, name=f"{kind}{size}"), params


def measure(tool, kind, size):
    """Runs in a fresh process (harness.oneshot)."""
    if tool == "symgrad":
        import symgrad
        model, _ = _symgrad_model(symgrad.generate, kind, size)
        t0 = time.perf_counter()
        src = symgrad.generate(model)
        dt = time.perf_counter() - t0
        body = src[src.index("def value_and_grad"):].splitlines()
        ops = sum(1 for ln in body if " = " in ln and not ln.lstrip().startswith("#"))
        return {"symgrad": dt, "size_symgrad": f"{ops} assignments in value_and_grad ({len(src.splitlines())} lines)"}
    if tool == "symgrad_compile":
        import os
        import tempfile
        os.environ["SYMGRAD_CACHE"], os.environ["SYMGRAD_CACHE_DIR"] = "0", tempfile.mkdtemp()
        import symgrad
        model, params = _symgrad_model(symgrad.compile, kind, size)
        t0 = time.perf_counter()
        mod = symgrad.compile(model)
        dt = time.perf_counter() - t0
        size_bytes = os.path.getsize(mod.__file__)
        return {"symgrad_compile": dt, "size_symgrad_compile": f"module {size_bytes / 1e3:.0f} kB "
                f"({size_bytes / len(params):.0f} B per parameter)"}
    if tool == "sympy":
        import sympy as sp
        e0, i0, p0 = sympy_model("chain", 1)
        sp.lambdify(i0 + p0, [sp.diff(e0, p) for p in p0], "numpy", cse=True)
        expr, inputs, params = sympy_model(kind, size)
        t0 = time.perf_counter()
        grads = [sp.diff(expr, p) for p in params]
        t1 = time.perf_counter()
        f = sp.lambdify(inputs + params, [expr] + grads, "numpy")
        t2 = time.perf_counter()
        fc = sp.lambdify(inputs + params, [expr] + grads, "numpy", cse=True)
        t3 = time.perf_counter()
        src, src_cse = inspect.getsource(f), inspect.getsource(fc)
        return {"sympy": t2 - t0, "sympy_cse": (t1 - t0) + (t3 - t2), "diff_s": t1 - t0,
                "size_sympy": f"{len(src) / 1e3:.0f} kB source",
                "size_sympy_cse": f"{len(src_cse.splitlines())} lines ({len(src_cse) / 1e3:.0f} kB)"}
    if tool == "jax":
        import jax
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp
        jax.jit(lambda a: jnp.tanh(a) * 2).lower(1.0).compile()
        if kind == "chain":
            def f(inputs, params):
                return chain(jnp, inputs, params[:size], params[size:])
            inputs, params = 0.5, tuple(np.float64(0.1 * k) for k in range(2 * size))
        else:
            def f(inputs, params):
                xs, t = inputs[:-1], inputs[-1]
                W = [params[j * size:(j + 1) * size] for j in range(size)]
                b, v, c = params[size * size:size * size + size], params[size * size + size:-1], params[-1]
                return net(jnp, xs, t, W, b, v, c)
            inputs = tuple(np.float64(0.01 * k) for k in range(size + 1))
            params = tuple(np.float64(0.001 * k) for k in range(size * size + 2 * size + 1))
        vg = jax.value_and_grad(f, argnums=1)
        t0 = time.perf_counter()
        jax.jit(vg).lower(inputs, params).compile()
        dt = time.perf_counter() - t0
        eqns = len(jax.make_jaxpr(vg)(inputs, params).jaxpr.eqns)
        return {"jax": dt, "size_jax": f"{eqns} jaxpr eqns"}
    raise ValueError(tool)


def tables(settings, log=print):
    wls = workloads(settings)
    res = {}                      # (kind, size, tool) -> list of result dicts
    failed = {}                   # (kind, tool) -> message: larger sizes are skipped
    for rnd in range(settings.compile_rounds):
        for kind, size, _ in wls:
            for tool in TOOLS:
                key = (kind, size, tool)
                if (kind, tool) in failed or (res.get(key) and "error" in res[key][-1]):
                    continue
                if kind == "chain" and size > MAX_SIZE.get(tool, size):
                    failed[(kind, tool)] = f"not run beyond depth {MAX_SIZE[tool]} at {size}"
                    continue
                log(f"  [compile] round {rnd + 1}: {kind} {size} {tool}")
                r = harness.oneshot(MODULE, "measure", {"tool": tool, "kind": kind, "size": size},
                                    settings, settings.compile_timeout_s)
                res.setdefault(key, []).append(r)
                if "error" in r:
                    failed[(kind, tool)] = f"{r['error']} at {size}"
    out = ["### Compile time (fresh process per measurement)", "",
           "| model | method | median | min–max | graph size | vs symgrad |", "|---|---|---:|---:|---|---:|"]
    for kind, size, title in wls:
        sym = [r["symgrad"] for r in res.get((kind, size, "symgrad"), []) if "symgrad" in r]
        sym_med = float(np.median(sym)) if sym else None
        for tool in TOOLS:
            rs = res.get((kind, size, tool))
            for col in (["sympy", "sympy_cse"] if tool == "sympy" else [tool]):
                if not rs:
                    why = failed.get((kind, tool), "not run")
                    why = why.split(" at ")[0] if why.startswith("n/a") else f"skipped ({why})"
                    out.append(f"| {title} | {LABELS[col]} | {why} | – | – | – |")
                    continue
                if "error" in rs[-1]:
                    out.append(f"| {title} | {LABELS[col]} | {rs[-1]['error']} | – | – | – |")
                    continue
                ts = [r[col] for r in rs]
                med = float(np.median(ts))
                extra = f"; diff alone {harness.fmt_time(float(np.median([r['diff_s'] for r in rs])))}" \
                    if tool == "sympy" else ""
                out.append(f"| {title} | {LABELS[col]} | {harness.fmt_time(med)} | {harness.fmt_time(min(ts))}–"
                           f"{harness.fmt_time(max(ts))} | {rs[-1]['size_' + col]}{extra} | "
                           f"{harness.fmt_ratio(med, sym_med)} |")
    out += ["", f"{settings.compile_rounds} fresh process(es) per measurement; timeout "
                f"{settings.compile_timeout_s:g} s per process (SymPy's one process does diff + both lambdifys)."]
    return "\n".join(out)


if __name__ == "__main__":
    harness.script_main(tables, __doc__)
