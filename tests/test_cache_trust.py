"""The module cache of symgrad.compile can be trusted (issue 25): its key covers everything the
generated code depends on (symgrad.Functions' paths included), a broken file in it -- or in
Numba's cache beside it -- heals, an unwritable folder says so and falls back to a private one,
and a symgrad.Function path with a Python keyword is a clear error.  Reuse is on in every test
here (SYMGRAD_CACHE=1); the cache folder is the test's own."""
import hashlib
import os
import pickle
import re
import subprocess
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad import SymgradError, cache

x = sp.Symbol("x", real=True)
X0 = np.array([0.5, -1.25, 2.0])
ROOT = str(Path(symgrad.__file__).resolve().parents[1])   # this checkout, for other processes
SEAL = "\n# symgrad module cache: sha256 "   # the cache file's last line (symgrad/cache.py)


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A cache folder of this test's, reuse on, and a fallback folder of its own (in tmp_path)."""
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SYMGRAD_CACHE", "1")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))   # the fallback: tmp_path/symgrad-cache-<uid>
    monkeypatch.setattr(cache, "_WARNED", set())
    return tmp_path / "cache"


# -- 1. the key: a symgrad.Function is its paths, not its name ---------------------------------
def test_functions_of_one_name_are_their_own_code_in_the_cache(folder):
    """Two Functions named f (sin, exp) made one cache entry -- and one SymPy class, the second's
    paths overwriting the first's: each model must run its own function."""
    f_sin = symgrad.Function("f", "numpy:sin", derivative="numpy:cos")
    m_sin = symgrad.Model(f_sin(x), wrt=[x], name="m")
    value, grads = symgrad.compile(m_sin).value_and_grad(x=X0)
    assert np.array_equal(value, np.sin(X0)) and np.array_equal(grads["x"], np.cos(X0))
    f_exp = symgrad.Function("f", "numpy:exp", derivative="numpy:exp")
    m_exp = symgrad.Model(f_exp(x), wrt=[x], name="m")
    value, grads = symgrad.compile(m_exp).value_and_grad(x=X0)
    assert np.array_equal(value, np.exp(X0)) and np.array_equal(grads["x"], np.exp(X0))
    # the first Function is still sin, in a new compile and in the tape
    assert np.array_equal(symgrad.compile(m_sin).forward(x=X0), np.sin(X0))
    assert f_sin != f_exp and f_sin(x) != f_exp(x)
    assert np.array_equal(symgrad.tape.forward(m_sin, x=X0), np.sin(X0))
    # a pickled expression keeps its Function's paths
    again = pickle.loads(pickle.dumps(f_sin(x) + f_exp(x)))
    assert sorted(type(a)._symgrad_spec[1] for a in again.args) == ["numpy:exp", "numpy:sin"]


def test_a_fixed_derivative_path_is_a_new_module(folder):
    """A wrong derivative= path, fixed: the fixed module, never the stale one; also for the
    derivative Function's own derivative (second derivatives, hvp)."""
    wrong = symgrad.Function("g", "numpy:sin", derivative="numpy:sin")
    fixed = symgrad.Function("g", "numpy:sin", derivative="numpy:cos")
    assert np.array_equal(symgrad.compile(symgrad.Model(wrong(x), wrt=[x], name="g")).value_and_grad(x=X0)[1]["x"],
                          np.sin(X0))
    assert np.array_equal(symgrad.compile(symgrad.Model(fixed(x), wrt=[x], name="g")).value_and_grad(x=X0)[1]["x"],
                          np.cos(X0))
    v = np.array([1.0, 2.0, -3.0])
    for second, want in (("numpy:sin", np.sin(X0) * v), ("numpy:cos", np.cos(X0) * v)):
        d = symgrad.Function("d", "numpy:cos", derivative=second)
        f = symgrad.Function("h", "numpy:sin", derivative=d)
        hv = symgrad.compile(symgrad.Model(f(x), wrt=[x], name="h"), emit="hvp").hvp({"x": v}, x=X0)[2]["x"]
        assert np.array_equal(hv, want)


def test_models_whose_code_differs_have_different_keys():
    """For any two of these models, other generated code means another cache key."""
    def fn(impl, deriv="numpy:cos", second=None):
        d = symgrad.Function("d", deriv, derivative=second) if second else deriv
        return symgrad.Function("f", impl, derivative=d)
    y = sp.Symbol("y", real=True)
    models = [symgrad.Model(e, wrt=w, name=n) for e, w, n in [
        (fn("numpy:sin")(x) * y, [x, y], "m"),
        (fn("numpy:exp")(x) * y, [x, y], "m"),
        (fn("numpy:sin", "numpy:exp")(x) * y, [x, y], "m"),
        (fn("numpy:sin", "numpy:cos", "numpy:sin")(x) * y, [x, y], "m"),
        (fn("numpy:sin", "numpy:cos", "numpy:tan")(x) * y, [x, y], "m"),
        (fn("numpy:sin")(x) * y, [y, x], "m"),
        (fn("numpy:sin")(x) * y, [x], "m"),
        (fn("numpy:sin")(x) * y, [x, y], "n"),
    ]]
    keys, sources = [], []
    for m in models:
        for emit in (("grad",), ("grad", "hvp")):
            try:
                sources.append(symgrad.generate(m, emit=emit))
            except SymgradError:   # no second derivative: nothing is cached either
                continue
            keys.append(cache.stem(m, "numpy", emit))
    assert len(set(sources)) == len(sources) == 10 and len(set(keys)) == len(keys)


def test_a_fixed_path_reaches_the_next_process(folder):
    """Every process kept the stale module after the path was fixed (``--check`` said ok)."""
    script = textwrap.dedent("""
        import sys, numpy as np, sympy as sp, symgrad
        x = sp.Symbol("x", real=True)
        g = symgrad.Function("g", "numpy:sin", derivative=sys.argv[1])
        print(symgrad.compile(symgrad.Model(g(x), wrt=[x], name="g")).value_and_grad(x=0.5)[1]["x"])
    """)
    env = {**os.environ, "PYTHONPATH": ROOT}
    got = [float(subprocess.run([sys.executable, "-c", script, path], env=env, check=True,
                                capture_output=True, text=True).stdout) for path in ("numpy:sin", "numpy:cos")]
    assert got == [np.sin(0.5), np.cos(0.5)]


# -- 5. a broken cache file heals ------------------------------------------------------------
BREAKS = {
    "truncated": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "garbage": lambda data: b"\xff\xfe\x00\x93 not python",
    "no seal": lambda data: b"MODEL = 'something else'\n",
    "edited": lambda data: data.replace(b"np.exp", b"np.sin", 1),
}


@pytest.mark.parametrize("how", BREAKS)
def test_a_broken_cache_file_is_written_again(folder, how, monkeypatch):
    model = symgrad.Model(sp.exp(x) * x, wrt=[x], name="heal")
    symgrad.compile(model)
    (path,) = folder.glob("*.py")
    path.write_bytes(BREAKS[how](path.read_bytes()))
    value, grads = symgrad.compile(model).value_and_grad(x=X0)
    assert np.allclose(value, np.exp(X0) * X0, rtol=1e-15) and np.allclose(grads["x"], (1 + X0) * np.exp(X0), rtol=1e-15)
    assert path.read_text().startswith(symgrad.generate(model) + SEAL)
    monkeypatch.setattr(cache, "generate", lambda *a, **k: pytest.fail("the healed file was not reused"))
    assert np.allclose(symgrad.compile(model).forward(x=X0), np.exp(X0) * X0, rtol=1e-15)


# -- 5b. a broken Numba cache file heals --------------------------------------------------------
@pytest.mark.parametrize("suffix", [".nbc", ".nbi"])
def test_a_truncated_numba_cache_file_is_compiled_again(folder, suffix):
    """Numba's cache=True files beside the module: a truncated one raised UnpicklingError on
    every call of every later process."""
    pytest.importorskip("numba")
    model = symgrad.Model(sp.exp(x) * sp.sin(x), wrt=[x], name="nbheal")
    want = (np.exp(X0) * np.sin(X0), np.exp(X0) * (np.sin(X0) + np.cos(X0)))
    symgrad.compile(model, "numba").value_and_grad(x=X0)
    files = sorted((folder / "__pycache__").glob(f"*{suffix}"))
    assert files
    for f in files:
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    for _ in range(2):   # healed, then read from the healed files
        module = symgrad.compile(model, "numba")       # a fresh module: its loops load the cache
        value, grads = module.value_and_grad(x=X0)
        assert np.allclose(value, want[0], rtol=1e-14) and np.allclose(grads["x"], want[1], rtol=1e-14)
    loops = [v for k, v in vars(module).items() if k.startswith("_vag") and hasattr(v, "stats")]
    assert loops and any(loop.stats.cache_hits for loop in loops)


# -- 11. an unwritable cache folder ---------------------------------------------------------------
def blocked(tmp_path, monkeypatch):
    """SYMGRAD_CACHE_DIR a folder that cannot be made: it would be inside a file."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(blocker / "cache"))
    return blocker / "cache"


def test_an_unwritable_cache_warns_once_and_falls_back_to_a_private_folder(folder, tmp_path, monkeypatch):
    primary = blocked(tmp_path, monkeypatch)
    model = symgrad.Model(x ** 3, wrt=[x], name="fb")
    with pytest.warns(RuntimeWarning) as warned:
        mod = symgrad.compile(model)
    fallback = tmp_path / f"symgrad-cache-{os.getuid()}"
    assert len(warned) == 1 and re.search(rf"cannot write the module cache {re.escape(str(primary))} "
                                          rf"\(Not a directory\); compiled modules go to {re.escape(str(fallback))}",
                                          str(warned[0].message))
    assert warned[0].filename == __file__   # it points at the caller's compile
    assert os.stat(fallback).st_mode & 0o777 == 0o700 and len(list(fallback.glob("*.py"))) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # once per folder and process
        assert symgrad.compile(symgrad.Model(x ** 4, wrt=[x], name="fb2")).forward(x=2.0) == 16.0
    # its functions pickle, and another process unpickles them from the same fallback folder
    data = pickle.dumps(mod.value_and_grad)
    assert pickle.loads(data)(x=2.0)[1]["x"] == 12.0
    code = "import pickle, sys; print(pickle.loads(sys.stdin.buffer.read())(x=2.0)[1]['x'])"
    out = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True,
                         env={**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": ROOT})
    assert out.returncode == 0 and out.stdout.decode().strip() == "12.0", out.stderr.decode()
    with monkeypatch.context() as m:   # a module in the fallback folder is reused
        m.setattr(cache, "generate", lambda *a, **k: pytest.fail("generated again"))
        assert symgrad.compile(model).forward(x=2.0) == 8.0
    assert cache.clear() == 2 and not list(fallback.glob("*.py"))


def test_a_fallback_folder_others_can_write_is_never_used(folder, tmp_path, monkeypatch):
    """The temp folder is shared: a module planted in a fallback folder that others can write
    is not imported; the module stays in memory, and the warning says so."""
    blocked(tmp_path, monkeypatch)
    model = symgrad.Model(x ** 3, wrt=[x], name="planted")
    fallback = tmp_path / f"symgrad-cache-{os.getuid()}"
    fallback.mkdir()
    fallback.chmod(0o777)
    planted = "PLANTED = True\n"
    path = fallback / f"{cache.stem(model, 'numpy', ('grad',))}.py"
    path.write_text(f"{planted}{SEAL}{hashlib.sha256(planted.encode()).hexdigest()}\n")
    with pytest.warns(RuntimeWarning) as warned:
        mod = symgrad.compile(model)
    assert not hasattr(mod, "PLANTED") and mod.value_and_grad(x=2.0)[1]["x"] == 12.0
    assert "stay in memory, and their functions cannot be pickled" in str(warned[-1].message)
    assert str(fallback) in str(warned[-1].message) and path.read_text().startswith(planted)


# -- 8. a Python keyword in a symgrad.Function path ------------------------------------------------
@pytest.mark.parametrize("impl, derivative, bad", [
    ("numpy:class", None, "numpy:class"),
    ("import.x:f", None, "import.x:f"),
    ("numpy:sin", "numpy:lambda", "numpy:lambda"),
    ("numpy:sin", ["None.y:cos"], "None.y:cos"),
])
def test_a_keyword_in_a_function_path_is_a_clear_error(impl, derivative, bad):
    with pytest.raises(SymgradError, match=rf"{re.escape(repr(bad))} has the Python keyword"):
        symgrad.Function("f", impl, derivative=derivative)


# -- review: compiles of one model at once in threads of one process ------------------------------
def test_threads_compiling_one_model_at_once_share_the_cache_folder(folder, monkeypatch):
    """Before: write_atomic's temporary file was named by the process id only, so a second thread
    found it there (FileExistsError) and deleted it under the first: both 'could not write the
    module cache' and fell back to the temp folder, then to unpicklable in-memory modules."""
    import threading
    from symgrad import pipeline
    model = symgrad.Model(sp.sin(x) * x, name="threads")
    symgrad.generate(model, "numpy")                  # SymPy's caches warm: the threads race on the write
    gate, real = threading.Barrier(4), os.replace

    def replace(a, b):                                # every thread holds its temporary file at once
        gate.wait(timeout=10)
        return real(a, b)
    monkeypatch.setattr(pipeline.os, "replace", replace)
    modules, errors = [], []

    def go():
        try:
            modules.append(symgrad.compile(model))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
    threads = [threading.Thread(target=go) for _ in range(4)]
    with warnings.catch_warnings(record=True) as caught:   # once, here: it is not thread-safe
        warnings.simplefilter("always")
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors
    assert not [str(w.message) for w in caught]
    assert [Path(m.__file__).parent for m in modules] == [folder] * 4
    assert not list(folder.glob(".*.tmp"))
    assert modules[0].forward(x=X0) == pytest.approx(np.sin(X0) * X0, rel=1e-15)
