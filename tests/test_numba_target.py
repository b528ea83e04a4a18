"""The Numba target (``--target numba``): fused CPU loops, checked against the tape.

* the op table, the compiler corpus and the matrix rows (the CuPy target's list of models) run
  through the numba module: value and gradients against the tape, float64 and float32;
* every seed model passes ``verify.check`` (tape, finite differences, the calling conventions);
  the derivative functions (vjp, jvp, jacobian, hvp, hessian) pass it on a few models;
* structure: the seed-003 ``value_and_grad`` is one loop, the MLP's matmuls stay ``@``, special
  functions and user Functions stay NumPy calls, imports are numpy + numba + stdlib, same bytes;
* the loops' own exp, expm1, log, log1p, tanh and softplus are within 1-3 ulp of NumPy's, vectorised (no C
  library call in the IR), and run as Python under NUMBA_DISABLE_JIT;
* the parallel loop (large inputs) agrees with the serial one; a second import loads the loops
  from Numba's cache instead of compiling.
* an input named like a builtin, a loop's own local or a C function (range, type, i, T, erf...)
  works on every target (numpy, numba, dask, cupy through the fake), against the tape; the
  functions' bodies read no global outside module.BODY_GLOBALS;
* an 80-term model matches the tape, and its loop's Numba IR is not inflated by the helpers.

Numba compiles each loop on first use per argument types, which is most of this file's time: the
inputs are small (serial loops) except in the one parallel test.  Skipped without Numba.
"""
from __future__ import annotations

import inspect
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import sympy as sp

pytest.importorskip("numba")

import symgrad  # noqa: E402
from symgrad import verify  # noqa: E402
from symgrad.emit import load_source  # noqa: E402
from symgrad.emit.numba import numba_fusable  # noqa: E402
from symgrad.model import load_models  # noqa: E402
from symgrad.ops import OPS  # noqa: E402

import test_cupy_target as ct  # noqa: E402 - its list of models (corpus, op table, matrix rows)
from _oracles import rel_err  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODELS = ct.MODELS


def _grouped_scalar_rows() -> dict:
    """The op table's scalar rows summed into one model per pair of input domains: each op's
    derivative still shows in the gradient of the sum, and Numba compiles a few loops, not 100."""
    groups: dict = {}
    for name, row in sorted(ct.to.SCALAR_ROWS.items()):
        groups.setdefault(row[1:], []).append(row[0])
    out = {}
    for (dx, dy), exprs in groups.items():
        key = f"op_rows_{dx}_{dy}"
        out[f"ops/{dx}-{dy}"] = (symgrad.Model(sp.Add(*exprs), wrt=[ct.to.x, ct.to.y], name=key),
                                 MODELS[f"scalar/{next(k for k, r in ct.to.SCALAR_ROWS.items() if r[1:] == (dx, dy))}"][1])
    return out


TAPE_MODELS = {**{k: v for k, v in MODELS.items() if not k.startswith("scalar/")}, **_grouped_scalar_rows()}


@pytest.mark.parametrize("path", ["twin", "loops"])
@pytest.mark.parametrize("key", sorted(TAPE_MODELS))
def test_numba_module_matches_the_tape(key, path):
    """Both ways a call runs: the compiled twin (small inputs, where the function has one) and the
    module's own loops (SMALL_MAX 0, as for large inputs)."""
    model, make = TAPE_MODELS[key]
    mod = load_source(symgrad.generate(model, "numba"), key)
    if path == "loops":
        mod.SMALL_MAX = 0
    inputs = make(model)
    ct._compare(mod, model, inputs, 1e-9)
    twin = getattr(mod, "_vag_small", None)
    if twin is not None:  # taken on small inputs, unless scalar symbols' arrays differ in shape
        one_shape = bool(mod.SHAPES) or len({np.shape(v) for v in inputs.values() if np.ndim(v)}) <= 1
        assert len(twin.signatures) == (path == "twin" and one_shape)
    if key.startswith("matrix/"):  # float32 matrices: the seeds' verify.check below (compile time)
        return
    inputs32 = {k: np.float32(v) if np.ndim(v) == 0 else np.asarray(v, dtype=np.float32) for k, v in inputs.items()}
    value, grads = ct._compare(mod, model, inputs32, 1e-3)
    assert np.asarray(value).dtype == np.float32
    assert all(np.asarray(g).dtype == np.float32 for g in grads.values())


_EXAMPLES = sorted(ROOT.glob("examples/seed*.py"))


@pytest.mark.parametrize("path", _EXAMPLES, ids=lambda p: p.stem)
def test_seed_models_pass_verify_check(path):
    for model in load_models(path):
        report = verify.check(model, load_source(symgrad.generate(model, "numba"), model.name))
        assert report.ok, (model.name, report.problems)


@pytest.mark.parametrize("key", ["corpus/seed003_f", "matrix/matmul_bias", "mixed/dynamic_times_trace"])
def test_every_derivative_function_passes_check(key):
    model, _ = MODELS[key]
    mod = load_source(symgrad.generate(model, "numba", emit="jacobian,hessian"), key)
    report = verify.check(model, mod)
    assert report.ok and len(report.derivatives) == 5, report.problems


def test_returned_arrays_are_the_callers():
    x, y = sp.symbols("x y")
    mod = load_source(symgrad.generate(symgrad.Model(x + 0 * y, wrt=[x, y], name="own"), "numba"), "own")
    xs = np.arange(4.0)
    value, grads = mod.value_and_grad(x=xs, y=np.ones(4))
    for a in (value, *grads.values()):
        assert isinstance(a, np.ndarray) and a.flags.writeable and not np.shares_memory(a, xs)
    assert not np.shares_memory(grads["x"], grads["y"])
    # work arrays hold only values that are never returned: a second call leaves the first's results
    model, make = MODELS["corpus/mlp_softmax_ce"]
    mod = load_source(symgrad.generate(model, "numba"), "work")
    assert "_scratch(" in symgrad.generate(model, "numba")
    for small in (mod.SMALL_MAX, 0):  # the compiled twin, and the loops with their work arrays
        mod.SMALL_MAX = small
        first = mod.value_and_grad(**make(model, 0))
        kept = (np.array(first[0]), {k: np.array(g) for k, g in first[1].items()})
        mod.value_and_grad(**make(model, 1))
        assert np.array_equal(first[0], kept[0]) and all(np.array_equal(first[1][k], kept[1][k]) for k in kept[1])


def test_python_numbers_give_the_notes_gradient():
    mod = load_source(symgrad.generate(MODELS["corpus/seed003_f"][0], "numba"), "f")
    value, grads = mod.value_and_grad(x=2.0, y=-4.0)
    assert abs(float(grads["x"]) - 0.5348320870757595) < 1e-12 and abs(float(grads["y"]) - 0.342460382923052) < 1e-12
    value, grads = mod.value_and_grad(x=np.float32(2.0), y=np.ones(5, dtype=np.float32))
    assert value.dtype == np.float32 and grads["x"].shape == () and grads["y"].shape == (5,)


def test_nan_propagates_through_max_and_division_by_zero_gives_inf():
    x = sp.Symbol("x")
    mod = load_source(symgrad.generate(symgrad.Model(sp.Max(x, 0) + sp.Min(x, 1) + 1 / x, name="nan"), "numba"),
                      "nan")
    out = mod.forward(x=np.array([np.nan, -1.0, 0.5, 2.0, 0.0]))
    assert np.isnan(out[0]) and out[1:4].tolist() == [-2.0, 3.0, 3.5] and out[4] == np.inf


# -- the emitted source -------------------------------------------------------------------------
def _source(key, **kw):
    return symgrad.generate(MODELS[key][0], "numba", **kw)


def test_seed003_value_and_grad_is_one_loop():
    src = _source("corpus/seed003_f")
    body = src.split("def value_and_grad(")[1]
    assert body.count("_run(") == 1 and "np.exp" not in body
    assert re.search(r"^def _vag_k0_serial\(", src, re.M) and "_vag_k1" not in src


def test_mlp_matmuls_stay_on_blas_and_the_rest_fuses():
    model = next(m for m in load_models(ROOT / "examples/seed002_mlp.py") if m.name == "seed002_mlp_mse")
    src = symgrad.generate(model, "numba")
    body = src.split("def value_and_grad(")[1]
    assert body.count(" @ ") >= 4 and "_run(_vag_k0" in body and "np.maximum" not in body


def test_special_functions_and_user_functions_are_not_fused():
    assert not numba_fusable("erf") and not numba_fusable("call") and not numba_fusable("polygamma")
    assert all(numba_fusable(op) for op, o in OPS.items() if o.elementwise and o.special is None
               and op not in ("call", "polygamma"))
    pytest.importorskip("scipy")
    x = sp.Symbol("x")
    model = symgrad.Model(sp.erf(sp.sin(x)) * x, wrt=[x], name="erfsin")
    src = symgrad.generate(model, "numba")
    assert "_scipy_special.erf(" in src.split("def value_and_grad(")[1]
    report = verify.check(model, load_source(src, "erfsin"))
    assert report.ok, report.problems


def test_imports_only_numpy_numba_and_stdlib_and_is_deterministic():
    src = _source("matrix/matmul_bias")
    assert src == _source("matrix/matmul_bias")
    imports = set(re.findall(r"^(?:import|from) (\w+)", src, re.M))
    assert imports <= {"numpy", "numba", "math", "os", "sys", "threading", "warnings", "zlib"} and {"numpy", "numba"} <= imports
    assert "Needs only numpy and numba" in src.replace("\n", " ")


def test_literals_keep_float32():
    src = symgrad.generate(symgrad.Model(1 / (1 + sp.exp(-ct.to.x)), name="sig"), "numba")
    loops = src.split("def forward(")[0].split("def _fwd_k0_serial", 1)[1]  # after _exp (float64 by design)
    assert "_T(1)" in loops and "_T(_exp(" in loops and not re.search(r"[^\w(]1\.0[^\w]", loops)


def _ulps(got, want):
    """|got - want| in units of the last place of want (0 where both are the same inf, nan or 0)."""
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    with np.errstate(invalid="ignore"):
        return np.where(same, 0, np.abs(got.astype(np.float64) - want) / np.spacing(np.abs(want)).astype(np.float64))


def _positive(rng):
    """Positive floats over the whole range (log-uniform), near 1, and between 0 and 4."""
    return np.concatenate([np.exp(rng.uniform(-745.0, 709.0, 200_000)), rng.uniform(0.0, 4.0, 100_000),
                           1.0 + rng.uniform(-1e-6, 1e-6, 10_000)])


# the loops' own functions: SymPy form, NumPy's float64 function, points (whole range and
# edges: inf, -inf, nan, +-0, overflow and underflow, subnormals), ulps allowed against NumPy
_LOOP_FUNCTIONS = {
    "exp": (sp.exp, np.exp, 1, lambda rng: np.concatenate([
        rng.uniform(-745.0, 709.78, 200_000), rng.uniform(-1.0, 1.0, 100_000), np.arange(-1100, 1100) * np.log(2.0) / 2,
        [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-300, -1e-300, 709.78, 709.79, 710.0, 1e300, -708.3, -708.5,
         -744.4, -745.1, -745.2, -746.0, -1e300, 88.72, 88.73, -87.3, -103.9, -104.0]])),
    "log": (sp.log, np.log, 1, lambda rng: np.concatenate([_positive(rng), [
        0.0, -0.0, -1.0, -1e-300, np.inf, -np.inf, np.nan, 5e-324, 1e-310, 2.2250738585072014e-308,
        1.7976931348623157e308, np.sqrt(2.0), np.nextafter(np.sqrt(2.0), 3.0), 1.0, 2.0]])),
    "log1p": (sp.codegen.cfunctions.log1p, np.log1p, 2, lambda rng: np.concatenate([
        _positive(rng), -rng.uniform(0.0, 1.0, 100_000), rng.uniform(-1e-8, 1e-8, 10_000),
        [-1.0, -2.0, 0.0, -0.0, np.inf, -np.inf, np.nan, 1e-300, -1e-300, 5e-324]])),
    "expm1": (sp.codegen.cfunctions.expm1, np.expm1, 2, lambda rng: np.concatenate([
        rng.uniform(-50.0, 50.0, 200_000), rng.uniform(-1.0, 1.0, 100_000), rng.uniform(-1e-6, 1e-6, 10_000),
        np.arange(-200, 200) * np.log(2.0) / 2, [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-300, -1e-300, 5e-324,
                                                 39.9, 40.0, 40.1, -40.1, 88.7, 709.78, 710.0, 800.0, -800.0]])),
    "tanh": (sp.tanh, np.tanh, 3, lambda rng: np.concatenate([
        rng.uniform(-25.0, 25.0, 200_000), rng.uniform(-1.0, 1.0, 100_000), rng.uniform(-1e-6, 1e-6, 10_000),
        [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-300, -1e-300, 5e-324, 19.9, 20.0, 20.1, -20.1, 1e300, -1e300]])),
    "softplus": (lambda x: sp.log(1 + sp.exp(x)), lambda x: np.logaddexp(0.0, x), 3, lambda rng: np.concatenate([
        rng.uniform(-800.0, 800.0, 200_000), rng.uniform(-40.0, 40.0, 200_000),
        [0.0, -0.0, np.inf, -np.inf, np.nan, 1e300, -1e300, -745.0, -746.0, 36.0, 37.0, 88.7, -103.9]])),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(_LOOP_FUNCTIONS))
def test_loop_functions_are_within_a_few_ulps_of_numpys_float64_ones(name, dtype):
    """The loops' own exp, expm1, log, log1p, tanh and softplus (vectorisable: _exp, _expm1, _log,
    _log1p, _tanh) against NumPy's float64 function rounded to the input's type, over the whole
    range and at its edges (the sign of zero too)."""
    fn, ref, ulps, points = _LOOP_FUNCTIONS[name]
    src = symgrad.generate(symgrad.Model(fn(ct.to.x), name="f"), "numba")
    assert re.search(r"_T\(_(exp|expm1|log|log1p|tanh)\(", src.split("def forward(")[0])  # the module's own
    mod = load_source(src, f"{name}_ulps")
    with np.errstate(all="ignore"):  # float32: overflow of the edges, exp(89), log(0)
        x = points(np.random.default_rng(3)).astype(dtype)
        want = ref(x.astype(np.float64)).astype(dtype)  # NumPy's own float32 functions are 1-2 ulp off
        got = mod.forward(x=x)
    assert got.dtype == dtype and np.max(_ulps(got, want)) <= ulps
    assert np.array_equal(np.isnan(got), np.isnan(want)) and np.array_equal(np.isinf(got), np.isinf(want))
    assert np.array_equal(np.signbit(got[want == 0]), np.signbit(want[want == 0]))


@pytest.mark.parametrize("expr", ["sigmoid", "exp", "log", "softplus", "tanh"])
def test_math_loop_is_vectorised_without_a_library_call(expr):
    """Numba's np.exp, np.log and np.tanh are one call of the C library per element, which keeps
    LLVM from vectorising the loop (they show as llvm.exp, llvm.log, log1p, tanh in the IR): the
    loops use _exp, _log, _log1p and _tanh, all arithmetic (seed 003's sigmoids; exp, log, a
    softplus, tanh)."""
    x, y = ct.to.x, ct.to.y
    model = MODELS["corpus/seed003_f"][0] if expr == "sigmoid" else symgrad.Model(
        {"exp": sp.exp(x), "log": sp.log(x), "softplus": sp.log(1 + sp.exp(x)), "tanh": sp.tanh(x)}[expr] * y,
        wrt=[x, y], name="e")
    mod = load_source(symgrad.generate(model, "numba"), "math_ir")  # from text: compiled in memory
    mod.SMALL_MAX = 0  # the module's own loops, not its compiled twin
    mod.value_and_grad(x=np.ones(10), y=np.ones(10))
    loop = mod._vag_k0_serial
    ir = loop.inspect_llvm(loop.signatures[0])
    assert re.search(r"<\d+ x double>", ir) and not re.search(r"@(llvm\.)?(exp|log|log1p|tanh)\b|@__(exp|log)", ir)


def test_math_loops_run_as_python_with_the_jit_disabled():
    """NUMBA_DISABLE_JIT=1 (debugging: the loops run as Python) still computes _exp, _log,
    _log1p and _tanh: their bit casts have a Python form (an intrinsic cannot run in Python), and a float32
    input is taken to float64 first (NumPy's scalars would compute in float32, and 2**k overflow)."""
    script = """
import numpy as np, sympy as sp, symgrad
from symgrad.emit import load_source
x = sp.Symbol("x")
for f, ref in ((sp.exp, np.exp), (sp.log, np.log), (lambda x: sp.log(1 + sp.exp(x)), lambda x: np.logaddexp(0, x)),
               (sp.tanh, np.tanh)):
    m = load_source(symgrad.generate(symgrad.Model(f(x), name="e"), "numba"), "nojit")
    for dt in (np.float64, np.float32):
        t = np.array([-800.0, -745.0, -90.0, -1.5, 0.0, 1e-310, 0.25, 20.0, 80.0, 700.0, 800.0, np.inf, np.nan], dtype=dt)
        with np.errstate(all="ignore"):
            got, want = m.forward(x=t), ref(t.astype(np.float64)).astype(dt)
        print(got.dtype == dt and np.array_equal(np.isnan(got), np.isnan(want)) and bool(np.all(
              (got == want) | np.isnan(want) | (np.abs(got - want) <= 3 * np.spacing(np.abs(want))))))
"""
    env = {**__import__("os").environ, "NUMBA_DISABLE_JIT": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.split() == ["True"] * 8, (r.stdout, r.stderr[-2000:])


# -- compiled behaviour: parallel loops, the on-disk cache --------------------------------------
def test_parallel_loop_agrees_with_the_serial_one():
    model, _ = MODELS["corpus/seed003_f"]
    mod = load_source(symgrad.generate(model, "numba"), "par")
    mod.SMALL_MAX = 0  # the module's loops (the compiled twin is serial)
    big = mod.PARALLEL_MIN + 1234  # not a multiple of CHUNK
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal(big), rng.standard_normal(big)
    value, grads = mod.value_and_grad(x=x, y=y)
    small = [mod.value_and_grad(x=x[i:i + 4096], y=y[i:i + 4096]) for i in range(0, big, 4096)]
    assert rel_err(value, np.concatenate([s[0] for s in small])) <= 1e-15
    for k in "xy":
        assert rel_err(grads[k], np.concatenate([s[1][k] for s in small])) <= 1e-15
    N = sp.Symbol("N", integer=True, positive=True)
    X, b = sp.MatrixSymbol("X", N, 7), sp.MatrixSymbol("b", 1, 7)
    mm = symgrad.Model(sp.HadamardProduct(X, (X + sp.OneMatrix(N, 1) * b).applyfunc(sp.sin)), wrt=[X, b], name="rows")
    inputs = {"X": rng.standard_normal((mod.PARALLEL_MIN // 7 + 3, 7)), "b": rng.standard_normal((1, 7))}
    src = symgrad.generate(mm, "numba")
    assert "'ar', _vag_k0_cols_serial" in src and "b[0, _i]" in src  # a 2-d loop, a bias row
    rows = load_source(src, "rows")
    rows.SMALL_MAX = 0
    got = rows.value_and_grad(**inputs)
    want = symgrad.compile(mm).value_and_grad(**inputs)
    assert rel_err(got[0], want[0]) <= 1e-15
    assert all(rel_err(got[1][k], want[1][k]) <= 1e-15 for k in want[1])
    # a column-ordered input: the loop runs column by column (parallel here, serial on 40 rows),
    # its outputs column-ordered too, same numbers
    assert "'ar', _vag_k0_cols_serial, _vag_k0_cols_parallel)" in src
    for n in (len(inputs["X"]), 40):
        X = inputs["X"][:n]
        want = symgrad.compile(mm).value_and_grad(X=X, b=inputs["b"])
        got_f = rows.value_and_grad(X=np.asfortranarray(X), b=inputs["b"])
        assert rel_err(got_f[0], want[0]) <= 1e-15
        assert all(rel_err(got_f[1][k], want[1][k]) <= 1e-12 for k in want[1])  # sums in another order
        assert got_f[0].flags.f_contiguous and not got_f[0].flags.c_contiguous


def test_second_import_loads_the_compiled_loops_from_the_cache(tmp_path):
    """symgrad.compile writes a module file; Numba caches its loops beside it: a fresh process that
    compiles the same model again finds them (no loop compiled)."""
    script = f"""
import sys, numpy as np, sympy as sp, symgrad
x, y = sp.symbols("x y")
m = symgrad.compile(symgrad.Model(sp.exp(x) * y + x ** 2, wrt=[x, y], name="cached"), target="numba")
m.value_and_grad(x=np.arange(3.0), y=np.ones(3))  # small: the compiled twin
m.SMALL_MAX = 0
m.value_and_grad(x=np.arange(3.0), y=np.ones(3))  # the module's loops
print(m._CACHE, sum(len(k.stats.cache_misses) for k in (m._vag_small, m._vag_k0[0])))
"""
    env = {**__import__("os").environ, "SYMGRAD_CACHE_DIR": str(tmp_path), "SYMGRAD_CACHE": "1",
           "PYTHONPATH": str(ROOT)}
    runs = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
            for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), [r.stderr[-2000:] for r in runs]
    assert runs[0].stdout.split() == ["True", "2"], runs[0].stdout
    assert runs[1].stdout.split() == ["True", "0"], runs[1].stdout
    assert list((tmp_path / "__pycache__").glob("*.nbi"))


def test_one_module_file_imported_under_two_names_loads_its_cache(tmp_path):
    """Numba's disk cache records the name a module was imported under and cannot rebuild a loop
    cached under another one (a generated file is loaded as ``_symgrad_generated_<stem>`` by
    symgrad.testing and as ``pkg.model`` or ``model`` by the user's code): each name keeps its own
    entries, so a process that imports the file under a second name compiles, and a third process
    under that second name loads them.  A long model name (the file's stem, and the import name)
    still fits in the cache files' names (at most 255 bytes)."""
    stem = "f" * 150 + "_numba"
    path = tmp_path / f"{stem}.py"
    path.write_text(symgrad.generate(symgrad.Model(sp.exp(ct.to.x) * ct.to.y + ct.to.x ** 2, name="fxy"), "numba"))
    script = """
import importlib.util, sys, numpy as np
name, path = sys.argv[1:]
spec = importlib.util.spec_from_file_location(name, path)
m = importlib.util.module_from_spec(spec); sys.modules[name] = m; spec.loader.exec_module(m)
for small in (m.SMALL_MAX, 0):  # the compiled twin, then the module's loops
    m.SMALL_MAX = small
    v, g = m.value_and_grad(x=np.arange(3.0), y=np.ones(3))
    assert np.allclose(g["x"], np.exp(np.arange(3.0)) + 2 * np.arange(3.0)), g
print(m._CACHE, sum(len(k.stats.cache_misses) for k in (m._vag_small, m._vag_k0[0])))
"""
    runs = [subprocess.run([sys.executable, "-c", script, name, str(path)], capture_output=True, text=True,
                           timeout=300) for name in (stem, "pkg_second", "pkg_second")]
    assert all(r.returncode == 0 for r in runs), [r.stderr[-2000:] for r in runs]
    assert [r.stdout.split() for r in runs] == [["True", "2"], ["True", "2"], ["True", "0"]]


@pytest.mark.parametrize("users", [None, "ACTIVE"])
def test_numba_threads_wait_passively_unless_the_user_says_otherwise(users):
    """Numba's OpenMP workers spin after each parallel loop and slow the BLAS threads of the next
    matmul; a module starts the pool with OMP_WAIT_POLICY=PASSIVE (read by the OpenMP runtime as
    it loads, shown by OMP_DISPLAY_ENV) and restores the environment; the user's own setting wins."""
    script = """
import os, sys, numpy as np, sympy as sp, symgrad, numba
from symgrad.emit import load_source
x, y = sp.symbols("x y")
m = load_source(symgrad.generate(symgrad.Model(sp.exp(x) * y, wrt=[x], name="par"), "numba"), "par")
m.SMALL_MAX = 0  # the module's parallel loop, not the (serial) compiled twin
n = m.PARALLEL_MIN + 5
v, g = m.value_and_grad(x=np.zeros(n), y=np.ones(n))
assert g["x"].shape == (n,) and np.all(g["x"] == 1.0)
print(numba.threading_layer(), os.environ.get("OMP_WAIT_POLICY"))
"""
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_WAIT_POLICY"}
    env.update({"PYTHONPATH": str(ROOT), "OMP_DISPLAY_ENV": "VERBOSE"} | ({"OMP_WAIT_POLICY": users} if users else {}))
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    layer, left = r.stdout.split()
    if layer != "omp":
        pytest.skip(f"Numba's threading layer is {layer}, not OpenMP")
    assert left == str(users)  # the environment as the user left it
    shown = r.stdout + r.stderr  # libgomp shows an unset policy as PASSIVE too: its spin count tells
    if users:
        assert re.search(r"OMP_WAIT_POLICY\s*=\s*'ACTIVE'", shown), shown[-2000:]
    else:
        assert re.search(r"GOMP_SPINCOUNT\s*=\s*'0'", shown), shown[-2000:]


# -- inputs named like the generated code's own names --------------------------------------------
# builtins the loops and bodies call, the loops' locals without their "_", module names, helpers
_CLASHING = ["range", "type", "i", "np", "numba", "math", "min", "abs", "float", "T", "z", "n", "j", "out",
             "r", "lo", "step", "v0", "in0", "_T", "_z", "erf", "sqrt", "ptrdiff_t", "xor"]


def _clash_model(name, special=True):
    a, b = sp.symbols(f"{name} other")
    expr = sp.exp(a) * b + sp.sin(a * b) + sp.sqrt(1 + b ** 2) + sp.Max(a, b) / (1 + a ** 2)
    return symgrad.Model(expr + sp.erf(a) if special else expr, wrt=[a, b], name="clash")


def _against_tape(mod, model, inputs, tol=1e-12):
    value, grads = mod.value_and_grad(**inputs)
    t_value, t_grads = ct.tape.value_and_grad(model, **{k: np.asarray(v, dtype=np.float64) for k, v in inputs.items()})
    assert rel_err(value, t_value) <= tol and rel_err(mod.forward(**inputs), t_value) <= tol
    assert set(grads) == set(t_grads) and all(rel_err(grads[k], t_grads[k]) <= tol for k in grads), grads


@pytest.mark.parametrize("name", _CLASHING)
def test_an_input_named_like_a_generated_name_works_on_every_target(name, monkeypatch):
    """Each target against the tape (the oracle), with arrays and with Python numbers: the loops
    rename such a parameter (range_), the bodies such an input (type_), the CUDA kernels theirs."""
    model = _clash_model(name)
    arrays = {name: np.linspace(-0.9, 1.3, 7), "other": np.linspace(0.4, -1.1, 7)}
    numbers = {name: 0.3, "other": -0.7}
    for target in ("numpy", "numba", "dask"):
        mod = load_source(symgrad.generate(model, target), f"clash_{target}")
        _against_tape(mod, model, arrays)
        _against_tape(mod, model, numbers)
    twin = _clash_model(name, special=False)  # no erf: the numba module's compiled twin, which must compile
    mod = load_source(symgrad.generate(twin, "numba"), "clash_twin")
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("error")
        _against_tape(mod, twin, arrays)
    assert len(mod._vag_small.signatures) == 1
    monkeypatch.setitem(sys.modules, "cupy", ct.fake_cupy())
    ct.FakeElementwiseKernel.registry = []
    _against_tape(load_source(symgrad.generate(model, "cupy"), "clash_cupy"), model, arrays)
    # the fake cupy interprets the C text and cannot see a parameter that hides a C function or
    # a name of CuPy's loop around the body: no kernel variable is called, or is a C/CuPy name
    for k in ct.FakeElementwiseKernel.registry:
        variables = {n for _, n in k.ins + k.outs} | set(re.findall(r"\b(?:T|bool) (\w+) =", k.operation))
        called = set(re.findall(r"\b([A-Za-z_]\w*)\(", k.operation))
        assert not variables & (called | {"i", "T", "ptrdiff_t", "xor", "erf"}), (variables, k.operation)


def test_the_bodies_read_no_global_an_input_could_hide():
    """The globals that the functions taking the inputs read (apart from the array module and
    _-names) are the ones module.BODY_GLOBALS keeps inputs from taking."""
    import symtable
    from symgrad.emit.module import BODY_GLOBALS

    def read(table):
        names = {s.get_name() for s in table.get_symbols() if s.is_global() or s.is_free()}
        return names.union(*map(read, table.get_children()))

    for target, alias in (("numpy", "np"), ("numba", "np"), ("cupy", "cp"), ("dask", "np")):
        for key in ("corpus/seed003_f", "corpus/mlp_softmax_ce", "mixed/dynamic_times_trace", min(TAPE_MODELS)):
            model = TAPE_MODELS[key][0]
            emit = None if target == "dask" else "jacobian,hessian"
            try:
                source = symgrad.generate(model, target, emit=emit)
            except symgrad.errors.SymgradError:  # dask: a model whose rows are coupled
                continue
            for fn in symtable.symtable(source, key, "exec").get_children():
                if fn.get_type() == "function" and re.match(r"(?!_)|_block_|_\w+_small$", fn.get_name()):  # not a helper
                    extra = {n for n in read(fn) if not n.startswith("_")} - BODY_GLOBALS - {alias}
                    assert not extra, (target, key, fn.get_name(), extra)


# -- a model of many independent terms: its first call ------------------------------------------
def _many_terms(k=80):
    """sum_k c_k f_k(a_k x + y, ...) over varied elementary functions (random models look so)."""
    x, y = ct.to.x, ct.to.y
    fs = [sp.sin, sp.cos, sp.exp, sp.tanh, lambda t: sp.log(1 + t ** 2), lambda t: sp.sqrt(1 + t ** 2), sp.atan,
          lambda t: 1 / (1 + sp.exp(-t)), lambda t: sp.log(1 + sp.exp(t))]
    args = [lambda j: sp.Rational(j % 7 + 1, 5) * x + y, lambda j: x * y / (j + 1), lambda j: x / 3 - y / (j + 2)]
    terms = [sp.Float((j + 1) / 17) * fs[j % len(fs)](args[j % 3](j)) for j in range(k)]
    return symgrad.Model(sp.Add(*terms), wrt=[x, y], name=f"terms{k}")


def test_a_model_of_80_terms_matches_the_tape_and_its_loop_stays_small():
    """Numba's own inlining of the math helpers (inline="always") copied _exp, _log, _tanh... into
    a loop's IR at each call: an 80-term model took 30-50 s to compile its first call.  The
    helpers are LLVM's to inline (forceinline): the loop's Numba IR stays a few statements per
    line of its text (about 4; 17 with the helpers copied in)."""
    model = _many_terms()
    mod = load_source(symgrad.generate(model, "numba"), "terms80")
    mod.SMALL_MAX = 0  # the module's own loop, not its compiled twin
    rng = np.random.default_rng(5)
    inputs = {"x": rng.uniform(-1.5, 1.5, 50), "y": rng.uniform(-1.5, 1.5, 50)}
    ct._compare(mod, model, inputs, 1e-9)
    loop = mod._vag_k0_serial
    statements = sum(len(b.body) for b in loop.overloads[loop.signatures[0]].type_annotation.blocks.values())
    lines = len(inspect.getsource(loop.py_func).splitlines())
    assert statements <= 8 * lines, (statements, lines)


@pytest.mark.parametrize("expr", ["exp(x) + y", "x + y", "x*y + sin(x)", "exp(x)", "x**2 + 0*y"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("number", [float, np.asarray])
def test_twin_sums_the_gradient_of_a_number_over_the_arrays_it_meets(expr, dtype, number):
    """A number x (a Python float, or a 0-d array) beside an array y: the gradient of x is its
    cotangent broadcast like the value and summed -- also where the cotangent is computed from
    numbers alone (exp(x): a 0-d array in the twin, or the literal 1.0), and in y's float type."""
    x, y = sp.symbols("x y")
    model = symgrad.Model(sp.sympify(expr, locals={"x": x, "y": y}), wrt=[x, y], name="num")
    mod = load_source(symgrad.generate(model, "numba"), "num")
    inputs = {"x": 0.3 if number is float else np.asarray(0.3, dtype), "y": np.linspace(-1, 1, 6, dtype=dtype).reshape(2, 3)}
    value, grads = ct._compare(mod, model, inputs, 1e-9 if dtype is np.float64 else 1e-5)
    assert len(mod._vag_small.signatures) == 1
    assert all(np.asarray(g).dtype == dtype for g in (value, *grads.values()))


def test_a_twin_that_does_not_compile_warns_once_and_the_loops_answer():
    """A compiler bug that leaves a twin Numba cannot type must not break the call: a warning
    names it, the module's loops give the answer (checked against the tape), and the next call
    goes straight to them."""
    import numba
    model, make = MODELS["corpus/seed003_f"]
    mod = load_source(symgrad.generate(model, "numba"), "broken")
    mod._vag_small = numba.njit(lambda _z, x, y: x + "not a number")
    inputs = make(model)
    with pytest.warns(RuntimeWarning, match=r"_vag_small|<lambda>.*does not compile"):
        ct._compare(mod, model, inputs, 1e-9)
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("error")
        ct._compare(mod, model, inputs, 1e-9)


def test_the_twin_runs_on_small_c_ordered_inputs_only():
    """_small takes the twin for C-contiguous inputs of at most SMALL_MAX elements whose fresh
    intermediate arrays (computed from the dimensions) stay within WORK_MAX; anything else runs
    the module's loops -- with the same answer (the tape)."""
    N = sp.Symbol("N", integer=True, positive=True)
    X, W = sp.MatrixSymbol("X", N, 3), sp.MatrixSymbol("W", 3, 4)
    model = symgrad.Model((X * W).applyfunc(sp.tanh), wrt=[W], name="gate")
    mod = load_source(symgrad.generate(model, "numba"), "gate")
    calls, twin = [], mod._vag_small
    mod._vag_small = lambda *args: calls.append(1) or twin(*args)

    def runs_twin(inputs, small=1 << 21, work=1 << 20):
        mod.SMALL_MAX, mod.WORK_MAX = small, work
        calls.clear()
        ct._compare(mod, model, inputs, 1e-12)
        return bool(calls)

    rng = np.random.default_rng(2)
    inputs = {"X": rng.standard_normal((50, 3)), "W": rng.standard_normal((3, 4))}
    assert runs_twin(inputs)
    assert not runs_twin(inputs, work=50 * 4 - 1)  # X @ W: 50 x 4 fresh elements
    assert not runs_twin(inputs, small=50 * 3 + 3 * 4 - 1)
    assert not runs_twin({**inputs, "X": np.asfortranarray(inputs["X"])})


def test_gmm_twin_matches_the_tape():
    """ADBench's GMM as examples/gmm.py writes it (explicit Q_k matrices, slices of the
    parameters, one-hot gradients) at d = 2 and K = 2: the twin, float64 and float32, against
    the tape."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("gmm_example", ROOT / "examples" / "gmm.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    model = example.gmm(2, 2, "gmm_small")
    mod = load_source(symgrad.generate(model, "numba"), "gmm_small")
    rng = np.random.default_rng(3)
    inputs = {"alphas": rng.standard_normal((1, 2)), "means": rng.standard_normal((2, 2)),
              "icf": 0.3 * rng.standard_normal((2, 3)), "x": rng.standard_normal((40, 2))}
    ct._compare(mod, model, inputs, 1e-12)
    value, grads = ct._compare(mod, model, {k: v.astype(np.float32) for k, v in inputs.items()}, 1e-4)
    assert len(mod._vag_small.signatures) == 2 and np.asarray(value).dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads.values())


def test_twin_refuses_a_slice_past_a_symbolic_dimension():
    """X[:, :2] with X of one column: NumPy would cut the slice short; the twin raises, as the
    module's loops do, and a wide enough X matches the tape."""
    N, d = sp.symbols("N d", integer=True, positive=True)
    X = sp.MatrixSymbol("X", N, d)
    model = symgrad.Model(sp.Trace(X[:, :2].T * X[:, :2]), wrt=[X], name="cut")
    mod = load_source(symgrad.generate(model, "numba"), "cut")
    ct._compare(mod, model, {"X": np.arange(12.0).reshape(4, 3)}, 1e-12)
    assert len(mod._vag_small.signatures) == 1
    for small in (mod.SMALL_MAX, 0):
        mod.SMALL_MAX = small
        with pytest.raises(ValueError, match="slice"):
            mod.value_and_grad(X=np.ones((4, 1)))


@pytest.mark.parametrize("small", [1 << 21, 0])
def test_vjp_of_an_empty_value_takes_an_empty_cotangent(small):
    """x of shape (0,) times a number y: the value is empty (shape (0,), as value_and_grad gives),
    so the cotangent has shape (0,) and the gradients are x's empty one and y's 0."""
    x, y = sp.symbols("x y")
    mod = load_source(symgrad.generate(symgrad.Model(x * y, name="empty"), "numba", emit="vjp"), "empty")
    mod.SMALL_MAX = small
    value, grads = mod.vjp(np.ones(0), x=np.ones(0), y=2.0)
    assert np.shape(value) == (0,) and grads["x"].shape == (0,) and float(grads["y"]) == 0.0
