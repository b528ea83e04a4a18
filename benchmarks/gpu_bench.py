"""GPU benchmark of the CuPy target: fused symgrad kernels vs op-by-op CuPy, PyTorch and JAX.

    python benchmarks/gpu_bench.py [--n-mlp 1000000] [--n-fxy 100000000] [--dtype float32] [--repeat 10]

Two cases, value and gradients each time, all on one GPU, timed device to device (inputs already
on the GPU, median of ``--repeat`` runs after warm-up, synchronised):

* seed 003 f(x, y) = (x + sigmoid(y)) / (sigmoid(x) + (x + y)**2) with both partials on 10^8
  elements -- pure elementwise work, bound by memory.  The fused module must read x, y and write
  f, df/dx, df/dy: 5 arrays.  We also measure device-to-device copy bandwidth (``cp.copyto`` of a
  large array; bytes moved = 2 * nbytes) and report the fraction of it the fused module reaches.
* seed 002 784-50-1 ReLU MLP with an MSE loss at N = 10^6 -- dominated by the cuBLAS matmuls.

Contenders: ``symgrad cupy`` (the generated fused module), ``op-by-op cupy`` (symgrad's NumPy
module run with ``numpy`` replaced by ``cupy``: one CuPy ufunc launch per op), ``torch eager``
(autograd on CUDA) and ``jax.jit`` (XLA fuses as well).  Missing libraries are reported and skipped.
Without a CUDA device the script prints a message and exits 0.  It stands alone: no harness.
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import symgrad  # noqa: E402
from symgrad.emit import load_source  # noqa: E402
from symgrad.model import load_models  # noqa: E402


def _gpu():
    try:
        import cupy as cp
    except ImportError:
        return None, "CuPy is not installed (pip install 'symgrad[cupy]')"
    try:
        if not cp.is_available():
            return None, "CuPy finds no CUDA device"
    except Exception as exc:  # noqa: BLE001 - a broken driver is "no GPU" here
        return None, f"CuPy cannot use the GPU ({exc})"
    return cp, None


def timed(cp, fn, repeat, sync=None):
    """Median seconds of fn() (after 2 warm-up calls), synchronising the device around each call."""
    sync = sync or cp.cuda.Device().synchronize
    for _ in range(2):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def op_by_op(model):
    """symgrad's NumPy module with the array module swapped: CuPy, one kernel launch per op."""
    source = symgrad.generate(model, "numpy").replace("import numpy as np", "import cupy as np")
    return load_source(source, model.name + "_opbyop")


def _contenders(cp, model, torch_fn, jax_fn):
    out = [("symgrad cupy (fused)", symgrad.compile(model, "cupy").value_and_grad)]
    out.append(("op-by-op cupy", op_by_op(model).value_and_grad))
    out += [(name, fn) for name, fn in (("torch eager", torch_fn), ("jax.jit", jax_fn)) if fn is not None]
    return out


def _torch():
    try:
        import torch
        return torch if torch.cuda.is_available() else None
    except ImportError:
        return None


def _jax():
    try:
        import jax
        return jax if any(d.platform == "gpu" for d in jax.devices()) else None
    except Exception:  # noqa: BLE001 - no jax, or jax without a GPU backend
        return None


def bench_fxy(cp, n, dtype, repeat):
    model = next(m for m in load_models(ROOT / "examples" / "seed003_backprop.py") if m.name == "seed003_sigmoid_ratio")
    rng = cp.random.default_rng(0)
    x, y = rng.standard_normal(n, dtype=dtype), rng.standard_normal(n, dtype=dtype)
    torch, jax = _torch(), _jax()
    torch_fn = jax_fn = None
    if torch is not None:
        tx, ty = (torch.as_tensor(a, device="cuda").requires_grad_() for a in (x, y))

        def torch_fn():
            tx.grad = ty.grad = None
            f = (tx + torch.sigmoid(ty)) / (torch.sigmoid(tx) + (tx + ty) ** 2)
            f.sum().backward()
            return f, tx.grad, ty.grad
    if jax is not None:
        import jax.numpy as jnp
        jx, jy = jnp.asarray(cp.asnumpy(x)), jnp.asarray(cp.asnumpy(y))
        f = lambda a, b: (a + jax.nn.sigmoid(b)) / (jax.nn.sigmoid(a) + (a + b) ** 2)  # noqa: E731
        vjp = jax.jit(lambda a, b: (lambda v, back: (v, *back(jnp.ones_like(v))))(*jax.vjp(f, a, b)))
        jax_fn = lambda: jax.block_until_ready(vjp(jx, jy))  # noqa: E731
    rows = []
    for name, fn in _contenders(cp, model, torch_fn, jax_fn):
        call = fn if name in ("torch eager", "jax.jit") else (lambda fn=fn: fn(x=x, y=y))
        rows.append((name, timed(cp, call, repeat)))
    # device bandwidth: a copy reads and writes nbytes each
    big = cp.empty(max(n, 2 ** 28 // x.itemsize), dtype=dtype)
    dst = cp.empty_like(big)
    t_copy = timed(cp, lambda: cp.copyto(dst, big), repeat)
    bw = 2 * big.nbytes / t_copy
    fused_bytes = 5 * x.nbytes  # read x, y; write f, df/dx, df/dy
    print(f"\n== seed 003 f(x, y), value + both partials, n = {n:.0e}, {cp.dtype(dtype).name} ==")
    print(f"device-to-device copy bandwidth: {bw / 1e9:.0f} GB/s")
    for name, t in rows:
        extra = f"   {fused_bytes / t / 1e9:6.0f} GB/s = {fused_bytes / t / bw:5.1%} of copy" \
            if name.startswith("symgrad") else ""
        print(f"  {name:22s} {t * 1e3:9.2f} ms{extra}")


def bench_mlp(cp, n, dtype, repeat):
    model = next(m for m in load_models(ROOT / "examples" / "seed002_mlp.py") if m.name == "seed002_mlp_mse")
    m, nh = 784, 50
    rng = cp.random.default_rng(0)
    data = {"x": rng.standard_normal((n, m), dtype=dtype), "y": rng.standard_normal((n, 1), dtype=dtype),
            "w1": rng.standard_normal((m, nh), dtype=dtype) * (2 / m) ** 0.5, "b1": cp.zeros((1, nh), dtype),
            "w2": rng.standard_normal((nh, 1), dtype=dtype) / nh ** 0.5, "b2": cp.zeros((1, 1), dtype)}
    torch, jax = _torch(), _jax()
    torch_fn = jax_fn = None
    if torch is not None:
        t = {k: torch.as_tensor(v, device="cuda") for k, v in data.items()}
        params = [t[k].requires_grad_() for k in ("w1", "b1", "w2", "b2")]

        def torch_fn():
            for p in params:
                p.grad = None
            out = torch.relu(t["x"] @ t["w1"] + t["b1"]) @ t["w2"] + t["b2"]
            loss = ((out - t["y"]) ** 2).mean()
            loss.backward()
            return loss, [p.grad for p in params]
    if jax is not None:
        import jax.numpy as jnp
        j = {k: jnp.asarray(cp.asnumpy(v)) for k, v in data.items()}

        def loss(p, x, y):
            out = jax.nn.relu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
            return jnp.mean((out - y) ** 2)
        vg = jax.jit(jax.value_and_grad(loss))
        p = {k: j[k] for k in ("w1", "b1", "w2", "b2")}
        jax_fn = lambda: jax.block_until_ready(vg(p, j["x"], j["y"]))  # noqa: E731
    print(f"\n== seed 002 MLP 784-50-1, value + grads of w1 b1 w2 b2, N = {n:.0e}, {cp.dtype(dtype).name} ==")
    for name, fn in _contenders(cp, model, torch_fn, jax_fn):
        call = fn if name in ("torch eager", "jax.jit") else (lambda fn=fn: fn(**data))
        print(f"  {name:22s} {timed(cp, call, repeat) * 1e3:9.2f} ms")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-mlp", type=int, default=10 ** 6)
    ap.add_argument("--n-fxy", type=int, default=10 ** 8)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args(argv)
    cp, why = _gpu()
    if cp is None:
        print(f"gpu_bench: skipped -- {why}. Run it on a machine with an NVIDIA GPU and CuPy.")
        return 0
    print(f"device: {cp.cuda.runtime.getDeviceProperties(0)['name'].decode()}, CuPy {cp.__version__}")
    bench_fxy(cp, args.n_fxy, args.dtype, args.repeat)
    bench_mlp(cp, args.n_mlp, args.dtype, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
