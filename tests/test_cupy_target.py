"""The CuPy target without a GPU, and with one when CuPy can use it.

* structure of the emitted source: one ElementwiseKernel per fused cluster, matmuls through ``@``,
  no NumPy import, deterministic bytes, exact text for a tiny model, float32-safe literals;
* every generated kernel compiles with ``nvcc`` (float and double), where nvcc exists;
* the fused modules *run* on CPU under a fake ``cupy`` (below): ElementwiseKernel evaluates the
  kernel's C body with NumPy through a small C-expression interpreter, with CuPy's typing rules
  (one dtype per ``T``, scalars cast to ``T``, at least one array); values and gradients are
  compared with the NumPy module and the tape over the compiler corpus and the op table;
* the same comparison with real CuPy, skipped unless ``cupy.is_available()``.
"""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad import tape
from symgrad.emit import load_source
from symgrad.errors import SymgradError
from symgrad.ops import OPS

import test_compiler as tc
import test_ops as to
from _oracles import rel_err


# -- a fake cupy: NumPy underneath, kernels interpreted from their C text (tests/_cupy_shim.py) --
from _cupy_shim import FakeElementwiseKernel, fake_cupy  # noqa: E402


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy())
    FakeElementwiseKernel.registry = []
    return FakeElementwiseKernel.registry


# -- the models ---------------------------------------------------------------------------------
def _models():
    rows = {f"corpus/{k}": (symgrad.Model(e, wrt=w, name=k), lambda m, s=0: tc._inputs(m, s))
            for k, (e, w) in tc.CORPUS.items()}

    def scalar_inputs(row):
        def make(model, seed=0):
            rng = np.random.default_rng(7 + seed)
            return {"x": to._sample(rng, (4, 3), row[1]), "y": to._sample(rng, (3,), row[2])}
        return make
    for k, row in to.SCALAR_ROWS.items():
        if k in to.NUMPY_ONLY:  # refused at compile time: test_missing_special_functions_are_named
            continue
        rows[f"scalar/{k}"] = (symgrad.Model(row[0], wrt=[to.x, to.y], name=k), scalar_inputs(row))
    for k, (e, w) in to.MATRIX_ROWS.items():
        rows[f"matrix/{k}"] = (symgrad.Model(e, wrt=w, name=k),
                               lambda m, s=0: to._matrix_inputs(m, np.random.default_rng(3 + s)))
    x, y, z = sp.symbols("x y z")
    S = sp.MatrixSymbol("S", 3, 3)
    rows["mixed/dynamic_times_trace"] = (  # a dynamic value feeding a reduction: its shape matters
        symgrad.Model(sp.exp(y) * x + sp.Trace(S) * sp.sin(y) + sp.log(1 + z ** 2), wrt=[x, y, S, z], name="mix"),
        lambda m, s=0: {"x": np.linspace(-1, 1, 12).reshape(4, 3), "y": np.linspace(0.3, -0.5, 12).reshape(4, 3),
                        "S": np.arange(9.0).reshape(3, 3) / 9, "z": 0.25})
    return rows


MODELS = _models()


def _compare(mod, model, inputs, tol):
    value, grads = mod.value_and_grad(**inputs)
    t_value, t_grads = tape.value_and_grad(model, **{k: np.asarray(v, dtype=np.float64) for k, v in inputs.items()})
    assert rel_err(value, t_value) <= tol
    assert rel_err(mod.forward(**inputs), t_value) <= tol
    assert set(grads) == set(t_grads)
    for k, g in grads.items():
        assert np.shape(g) == np.shape(inputs[k]), (k, np.shape(g), np.shape(inputs[k]))
        assert rel_err(g, t_grads[k]) <= tol, (k, rel_err(g, t_grads[k]))
    return value, grads


@pytest.mark.parametrize("key", sorted(MODELS))
def test_fused_module_matches_numpy_and_tape_on_cpu(key, fake):
    model, make = MODELS[key]
    mod = load_source(symgrad.generate(model, "cupy"), key)
    inputs = make(model)
    value, grads = _compare(mod, model, inputs, 1e-9)
    n_value, n_grads = symgrad.compile(model).value_and_grad(**inputs)
    assert rel_err(value, n_value) <= 1e-12
    assert all(rel_err(g, n_grads[k]) <= 1e-12 for k, g in grads.items())
    inputs32 = {k: np.float32(v) if np.ndim(v) == 0 else np.asarray(v, dtype=np.float32) for k, v in inputs.items()}
    value, grads = _compare(mod, model, inputs32, 1e-3)
    assert np.asarray(value).dtype == np.float32
    assert all(np.asarray(g).dtype == np.float32 for g in grads.values())


def test_python_numbers_and_host_arrays_are_accepted(fake):
    model = MODELS["corpus/seed003_f"][0]
    mod = load_source(symgrad.generate(model, "cupy"), "f")
    value, grads = mod.value_and_grad(x=2.0, y=-4.0)  # the notes' point: no arrays at all
    assert abs(float(grads["x"]) - 0.5348320870757595) < 1e-12 and abs(float(grads["y"]) - 0.342460382923052) < 1e-12
    value, grads = mod.value_and_grad(x=np.float32(2.0), y=np.ones(5, dtype=np.float32))
    assert value.dtype == np.float32 and grads["x"].shape == () and grads["y"].shape == (5,)


def test_nan_propagates_through_max_like_numpy(fake):
    x = sp.Symbol("x")
    mod = load_source(symgrad.generate(symgrad.Model(sp.Max(x, 0) + sp.Min(x, 1), name="nan"), "cupy"), "nan")
    out = mod.forward(x=np.array([np.nan, -1.0, 0.5, 2.0]))
    assert np.isnan(out[0]) and out[1:].tolist() == [-1.0, 1.0, 3.0]


# -- the emitted source -------------------------------------------------------------------------
def _source(key):
    return symgrad.generate(MODELS[key][0], "cupy")


def _fn(source, name):
    return source.split(f"def {name}(")[1].split("\ndef ")[0]


@pytest.mark.parametrize("name", sorted(to.NUMPY_ONLY))
def test_missing_special_functions_are_named_at_compile_time(name, tmp_path, capsys):
    """besselj / besseli: cupyx.scipy.special has no jv / iv; the CuPy target says so, naming the
    function and the model, before any code runs (the CLI exits 2); NumPy compiles the same model."""
    model = symgrad.Model(to.SCALAR_ROWS[name][0], wrt=[to.x, to.y], name=name)
    with pytest.raises(SymgradError, match=rf"model {name}: bessel[ji] cannot be compiled for target cupy: "
                                           r"cupyx.scipy.special has .* no [ji]v of any order"):
        symgrad.generate(model, "cupy")
    assert "_scipy_special.jv" in symgrad.generate(model)
    path = tmp_path / "bessel_model.py"
    path.write_text("import sympy as sp\nimport symgrad\nx = sp.Symbol('x')\n"
                    "m = symgrad.Model(sp.besseli(3, x), name='m')\n")
    from symgrad.cli import main
    assert main(["compile", str(path), "--target", "cupy", "-o", str(tmp_path / "out.py")]) == 2
    assert "besseli cannot be compiled for target cupy" in capsys.readouterr().err
    assert not (tmp_path / "out.py").exists()


def test_every_elementwise_op_has_a_c_entry():
    missing = sorted(n for n, op in OPS.items() if op.elementwise and op.c is None and not op.special
                     and n != "call")  # polygamma: cupyx; a symgrad.Function: the user's module
    assert not missing, f"elementwise ops without a CUDA C entry in symgrad/emit/cuda.py: {missing}"
    assert not [n for n, op in OPS.items() if op.c is not None and not op.elementwise]


def test_seed003_value_and_grad_is_one_kernel():
    source = _source("corpus/seed003_f")
    vag = _fn(source, "value_and_grad")
    assert vag.count("= _vag_k") == 1 and "_fwd_k" not in vag
    kernel = source.split("_vag_k0 = cp.ElementwiseKernel(")[1].split("_kernel_name")[0]
    assert re.sub("//.*", "", kernel).count("exp(") == 2  # sigmoid' reuses the sigmoid value inside the kernel
    assert re.search(r'"T \w+, T \w+",\n    "T t0, T b_x, T b_y"', kernel)


def test_mlp_matmuls_stay_on_cublas_and_the_rest_fuses():
    source = _source("corpus/mlp_relu_item")
    vag = _fn(source, "value_and_grad")
    assert "X @ W1" in vag and "@ w2.T" in vag and "np." not in source
    assert "bool" in source.split("_vag_k0 = ")[1].split("_kernel_name")[0]  # the ReLU mask: one byte
    for line in vag.splitlines():  # every elementwise op is inside a kernel
        assert not re.search(r"cp\.(maximum|where|exp|add|multiply)|\w+ [-+*/] \w+\b(?! *#)", line.split("#")[0]) \
            or "1.0 / N" in line or "2.0 *" in line, line


def test_imports_only_cupy_and_is_deterministic(tmp_path):
    key = "corpus/mlp_softmax_ce"
    source = _source(key)
    assert [ln for ln in source.splitlines() if ln.startswith(("import ", "from "))] == ["import cupy as cp"]
    assert "TARGET = 'cupy'" in source and "numpy" not in source.split('"""', 2)[2]
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {os.path.dirname(__file__)!r})
        import test_cupy_target as t, symgrad
        sys.stdout.write(symgrad.generate(t.MODELS[{key!r}][0], "cupy"))
    """)
    outs = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert outs == {source}


def test_exact_text_of_a_tiny_model():
    x, y = sp.symbols("x y")
    source = symgrad.generate(symgrad.Model(sp.Max(x * y, 0) ** 3, wrt=[x], name="tiny"), "cupy")
    assert '''_vag_k0 = cp.ElementwiseKernel(
    "T x, T y",
    "T t0, T b_x",
    """
    T v0 = (x * y);  // x*y
    T v1 = ((T)0 > v0 ? (T)0 : v0);  // Max(0, x*y)
    T v2 = (v1 * v1 * v1);  // Max(0, x*y)**3
    bool v3 = (v1 > (T)0);
    T v4 = (v1 * v1);
    T v5 = ((T)3 * v4);
    T v6 = (y * v5);
    T v7 = (v3 ? v6 : (T)0);
    t0 = v2;
    b_x = v7;
    """,
    _kernel_name("vag_k0"))''' in source
    assert '''    x, y = _device(_dt, x, y)
    t0, b_x = _vag_k0(x, y)  # Max(0, x*y)**3
    grad_x = _sum_to(b_x, x, t0)
    return t0, {'x': grad_x}''' in source


def _kernels(fake):
    for key, (model, make) in MODELS.items():
        load_source(symgrad.generate(model, "cupy"), key)
    return list(fake)


def test_literals_are_typed_so_float32_stays_float32(fake):
    for k in _kernels(fake):
        body = re.sub(r"//.*", "", k.operation)
        body = re.sub(r"\(T\)\(?-?\d+(\.\d*)?(e[-+]?\d+)?( / \d+\.\d*\))?\)?", "", body)
        body = re.sub(r"\b[A-Za-z_]\w*", "", body)
        assert not re.search(r"\d", body), (k.name, k.operation)
        assert "double" not in k.operation and "float" not in k.operation


def test_every_kernel_compiles_with_nvcc(fake, tmp_path):
    nvcc = shutil.which("nvcc") or ("/usr/local/bin/nvcc" if os.path.exists("/usr/local/bin/nvcc") else None)
    if nvcc is None:
        pytest.skip("nvcc not found")
    units = []
    for j, k in enumerate(_kernels(fake)):
        params = [f"const {t}* __restrict__ _in_{n}" for t, n in k.ins] + [f"{t}* _out_{n}" for t, n in k.outs]
        loads = "".join(f"    const {t} {n} = _in_{n}[_i];\n" for t, n in k.ins)
        decls = "".join(f"    {t} {n};\n" for t, n in k.outs)
        stores = "".join(f"    _out_{n}[_i] = {n};\n" for _, n in k.outs)
        units.append(f"template <typename T> __global__ void k{j}({', '.join(params + ['long _n'])}) {{\n"
                     f"    long _i = blockIdx.x * (long)blockDim.x + threadIdx.x;\n    if (_i >= _n) return;\n"
                     f"{loads}{decls}{k.operation}\n{stores}}}\n"
                     f"template __global__ void k{j}<float>({', '.join(p.replace('T', 'float') for p in params + ['long _n'])});\n"
                     f"template __global__ void k{j}<double>({', '.join(p.replace('T', 'double') for p in params + ['long _n'])});\n")
    cu = tmp_path / "kernels.cu"
    cu.write_text("\n".join(units))
    out = subprocess.run([nvcc, "-c", str(cu), "-o", str(tmp_path / "kernels.o")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-4000:]


# -- real CuPy on a GPU -------------------------------------------------------------------------
def _real_cupy():
    """The real CuPy with a device, or a clean skip."""
    cupy = pytest.importorskip("cupy")
    if not cupy.is_available():
        pytest.skip("no CUDA device")
    return cupy


@pytest.mark.parametrize("key", sorted(MODELS))
def test_on_gpu_matches_numpy_and_tape(key):
    cupy = _real_cupy()
    model, make = MODELS[key]
    mod = symgrad.compile(model, target="cupy")
    inputs = make(model)
    for dtype, tol in ((np.float64, 1e-9), (np.float32, 1e-3)):
        dev = {k: cupy.asarray(np.asarray(v, dtype=dtype)) for k, v in inputs.items()}
        value, grads = mod.value_and_grad(**dev)
        t_value, t_grads = tape.value_and_grad(model, **inputs)
        assert cupy.asnumpy(value).dtype == dtype and rel_err(cupy.asnumpy(value), t_value) <= tol
        assert rel_err(cupy.asnumpy(mod.forward(**dev)), t_value) <= tol
        for k, g in grads.items():
            g = cupy.asnumpy(g)
            assert g.dtype == dtype and g.shape == np.shape(inputs[k]) and rel_err(g, t_grads[k]) <= tol, k
    from symgrad import verify
    assert verify.check(model, mod).ok


@pytest.mark.parametrize("key", sorted(MODELS))
def test_on_gpu_every_derivative_passes_check(key):
    """vjp, jvp, jacobian, hvp, hessian on the device: verify.check compares each with the tape."""
    _real_cupy()
    model, _ = MODELS[key]
    from symgrad import verify
    report = verify.check(model, symgrad.compile(model, target="cupy", emit="jacobian,hessian"))
    assert report.ok and len(report.derivatives) == 5, report.problems


def test_a_dynamic_value_feeding_a_reduction_keeps_its_own_shape(fake):
    """sin(y) (y a row) is summed for Trace(S)'s cotangent: fused with x-shaped work, a kernel would
    hand it over broadcast to x's shape, and the sum would count it once per row."""
    model = MODELS["mixed/dynamic_times_trace"][0]
    inputs = {"x": np.linspace(-1, 1, 12).reshape(4, 3), "y": np.array([0.3, -0.2, 0.5]),
              "S": np.arange(9.0).reshape(3, 3) / 9, "z": 0.25}
    value, grads = load_source(symgrad.generate(model, "cupy"), "mix").value_and_grad(**inputs)
    n_value, n_grads = symgrad.compile(model).value_and_grad(**inputs)
    assert rel_err(value, n_value) <= 1e-12
    assert all(rel_err(g, n_grads[k]) <= 1e-12 for k, g in grads.items())


_EXAMPLES = sorted(pathlib.Path(__file__).resolve().parents[1].glob("examples/seed*.py"))


@pytest.mark.parametrize("path", _EXAMPLES, ids=lambda p: p.stem)
def test_examples_pass_verify_check_through_the_fake(path, fake):
    """``symgrad.verify.check`` (tape, finite differences, float32) on each seed model's CuPy module."""
    from symgrad import verify
    from symgrad.model import load_models
    for model in load_models(path):
        report = verify.check(model, load_source(symgrad.generate(model, "cupy"), model.name))
        assert report.ok, (model.name, report.problems)
