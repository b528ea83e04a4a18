"""The compiler end to end: a corpus of models, the generated module's promises, bad models."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad import SymgradError

from _oracles import assert_matches_oracles, rel_err

x, y, z = sp.symbols("x y z")
sig = lambda t: 1 / (1 + sp.exp(-t))  # noqa: E731
N, d, h, K = sp.symbols("N d h K")
X = sp.MatrixSymbol("X", N, d)
W1 = sp.MatrixSymbol("W1", d, h)
b1 = sp.MatrixSymbol("b1", 1, h)
W2 = sp.MatrixSymbol("W2", h, K)
b2 = sp.MatrixSymbol("b2", 1, K)
Y = sp.MatrixSymbol("Y", N, K)
y1 = sp.MatrixSymbol("y1", N, 1)
w = sp.MatrixSymbol("w", d, 1)


w2 = sp.MatrixSymbol("w2", h, 1)


def _relu_net():
    return (X * W1 + sp.OneMatrix(N, 1) * b1).applyfunc(lambda t: sp.Max(t, 0)) * w2


def _mlp(act):
    H = (X * W1 + sp.OneMatrix(N, 1) * b1).applyfunc(act)
    return H * W2 + sp.OneMatrix(N, 1) * b2


E = _mlp(sp.tanh) - Y
CORPUS = {
    "seed003_f": ((x + sig(y)) / (sig(x) + (x + y) ** 2), [x, y]),
    "nested_shared": (sp.exp(sp.sin(x * y)) * sp.sin(x * y) + sp.log(1 + (x * y) ** 2) / z, [x, y]),
    "logistic_nll": (-(z * sp.log(sig(x * y)) + (1 - z) * sp.log(1 - sig(x * y))), [x, y]),
    "mlp_tanh_mse": (sp.Trace(E.T * E) / N, [W1, b1, W2, b2]),
    "mlp_relu_item": (((_relu_net() - y1).T * (_relu_net() - y1))[0, 0] / N, [W1, w2]),
    "mlp_softmax_ce": ((sp.OneMatrix(1, N) * ((_mlp(sig).applyfunc(sp.exp) * sp.OneMatrix(K, 1)).applyfunc(sp.log)
                        - sp.HadamardProduct(Y, _mlp(sig)) * sp.OneMatrix(K, 1)))[0, 0] / N, [W1, b1, W2, b2]),
    "logreg_matrix": ((sp.OneMatrix(1, N) * ((X * w).applyfunc(lambda t: sp.log(1 + sp.exp(t)))
                                             - sp.HadamardProduct(y1, X * w)))[0, 0], [w]),
    "tanh_layer_output": ((X * W1 + sp.OneMatrix(N, 1) * b1).applyfunc(sp.tanh), [W1, b1]),
    "matrix_output": (sp.HadamardProduct(X * W1, X * W1).T, [W1]),
    "data_gradient": ((X * w).T * (X * w), [X, w]),
    "static_in_dynamic": (sp.exp(y) * x + sp.Trace(X.T * X) * sp.sin(y) + sp.Trace(X.T * X), [x, y, X]),
}
SIZES = {N: 6, d: 3, h: 4, K: 2}


def _inputs(model, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for s in model.inputs:
        if isinstance(s, sp.MatrixSymbol):
            out[s.name] = rng.normal(size=tuple(int(sp.sympify(n).subs(SIZES)) for n in s.shape))
        else:
            out[s.name] = rng.uniform(0.3, 1.2, size=(2, 3)) * rng.choice([-1, 1], size=(2, 3))
    if "Y" in out:  # one-hot targets
        out["Y"] = np.eye(SIZES[K])[rng.integers(0, SIZES[K], SIZES[N])]
    if "z" in out:
        out["z"] = rng.uniform(0.1, 0.9, size=(3,))
    return out


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_matches_tape_and_finite_differences(name):
    expr, wrt = CORPUS[name]
    model = symgrad.Model(expr, wrt=wrt, name=name)
    assert_matches_oracles(model, symgrad.compile(model), _inputs(model))


def test_generated_source_is_deterministic_across_processes():
    """Same model, same bytes -- also under a different string hash seed."""
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {os.path.dirname(__file__)!r})
        import test_compiler as t, symgrad
        for name, (expr, wrt) in sorted(t.CORPUS.items()):
            sys.stdout.write(symgrad.generate(symgrad.Model(expr, wrt=wrt, name=name)))
    """)
    outs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")]
    assert outs[0] == outs[1]
    here = "".join(symgrad.generate(symgrad.Model(expr, wrt=wrt, name=name))
                   for name, (expr, wrt) in sorted(CORPUS.items()))
    assert here == outs[0]


def test_generated_module_needs_only_numpy(tmp_path):
    expr, wrt = CORPUS["mlp_softmax_ce"]
    model = symgrad.Model(expr, wrt=wrt, name="ce")
    path = tmp_path / "ce_numpy.py"
    path.write_text(symgrad.generate(model))
    script = textwrap.dedent(f"""
        import sys
        sys.modules["sympy"] = None; sys.modules["symgrad"] = None  # any import of them fails
        import importlib.util, numpy as np
        spec = importlib.util.spec_from_file_location("ce", {str(path)!r})
        mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
        rng = np.random.default_rng(0)
        v, g = mod.value_and_grad(X=rng.normal(size=(5, 3)), W1=rng.normal(size=(3, 4)), b1=np.zeros((1, 4)),
                                  W2=rng.normal(size=(4, 2)), b2=np.zeros((1, 2)), Y=np.eye(2)[[0, 1, 1, 0, 1]])
        print(sorted(g), mod.INPUTS, mod.WRT, mod.TARGET)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("('W1', 'b1', 'W2', 'b2') numpy")
    source = path.read_text()
    imports = [ln for ln in source.splitlines() if ln.startswith(("import ", "from "))]
    assert set(imports) <= {"import numpy as np", "import threading"}  # NumPy and the standard library
    assert "symgrad 0.1.0" in source and model.source_hash() in source


def test_forward_work_is_shared_with_the_backward_pass():
    expr, wrt = CORPUS["seed003_f"]
    source = symgrad.generate(symgrad.Model(expr, wrt=wrt, name="f"))
    fwd, vag = source.split("def value_and_grad")
    fwd = fwd.split("def forward")[1]
    assert fwd.count("_sigmoid(") == vag.count("_sigmoid(") == 2  # sigmoid' reuses the sigmoid value
    expr, wrt = CORPUS["mlp_relu_item"]
    vag = symgrad.generate(symgrad.Model(expr, wrt=wrt, name="m")).split("def value_and_grad")[1]
    assert vag.count("np.maximum(") == 1 and len(re.findall(r"X @ W1|matmul(?:_work)?\(X, W1", vag)) == 1
    assert ".T @ X" in vag and "w2.T" in vag  # matrix adjoints in BLAS form, no Jacobians
    assert "grad_X" not in vag and "'X'" not in vag.split("return")[-1]  # no gradient of data


NASTY = ["lambda", "np", "t0", "grad_x", "b_t0", "x.1", "sum", "_dims", "class", "forward", "value", "1x"]


def test_any_symbol_name_works():
    syms = sp.symbols(NASTY)
    expr = sum(s * (i + 1) for i, s in enumerate(syms)) * sp.tanh(syms[0] * syms[1]) + sp.exp(syms[2] - syms[3])
    model = symgrad.Model(expr, name="nasty")
    module = symgrad.compile(model)
    assert module.INPUTS == tuple(sorted(NASTY)) or set(module.INPUTS) == set(NASTY)
    rng = np.random.default_rng(0)
    inputs = {n: rng.uniform(0.2, 1.0) for n in NASTY}
    assert_matches_oracles(model, module, inputs)


def test_matrix_names_that_clash():
    A = sp.MatrixSymbol("lambda", 2, 2)
    B = sp.MatrixSymbol("np", 2, 2)
    model = symgrad.Model(sp.Trace(A * B + B.T), name="clash")
    rng = np.random.default_rng(1)
    inputs = {"lambda": rng.normal(size=(2, 2)), "np": rng.normal(size=(2, 2))}
    assert_matches_oracles(model, symgrad.compile(model), inputs)


def test_deep_chain_compiles_linearly():
    sizes = []
    for depth in (32, 128):
        hh = x
        for k in range(depth):
            hh = sp.tanh(sp.Symbol(f"w{k}") * hh + sp.Symbol(f"b{k}"))
        source = symgrad.generate(symgrad.Model(hh, name="chain"))
        sizes.append(source.count("\n"))
    assert sizes[1] < 4.5 * sizes[0]  # 4x the depth, about 4x the code: no expression swell
    model = symgrad.Model(hh, name="chain")
    inputs = {s.name: 0.5 for s in model.inputs}
    value, grads = symgrad.compile(model).value_and_grad(**inputs)
    t_value, t_grads = symgrad.tape.value_and_grad(model, **inputs)
    assert rel_err(value, t_value) < 1e-12
    assert max(rel_err(grads[n], t_grads[n]) for n in grads) < 1e-9


def test_scalar_inputs_broadcast_and_gradients_keep_their_shape():
    model = symgrad.Model(x * y + z, wrt=[x, y, z], name="bc")
    module = symgrad.compile(model)
    inputs = {"x": np.ones((3, 1)) * 2.0, "y": np.arange(4.0), "z": 1.5}
    value, grads = module.value_and_grad(**inputs)
    assert value.shape == (3, 4)
    assert grads["x"].shape == (3, 1) and np.allclose(grads["x"], np.arange(4.0).sum())
    assert grads["y"].shape == (4,) and np.allclose(grads["y"], 6.0)
    assert np.shape(grads["z"]) == () and float(grads["z"]) == 12.0


def test_seed_constant_gradients_are_fresh_arrays():
    A = sp.MatrixSymbol("A", 2, 3)
    module = symgrad.compile(symgrad.Model(3 * A, name="lin"))
    a = np.ones((2, 3))
    value, grads = module.value_and_grad(A=a)
    assert np.array_equal(grads["A"], np.full((2, 3), 3.0))
    grads["A"][0, 0] = 7.0  # writable, and not a view of anything else
    value2, grads2 = symgrad.compile(symgrad.Model(A, name="ident")).value_and_grad(A=a)
    grads2["A"][0, 0] = 5.0
    assert a[0, 0] == 1.0


def test_input_shape_errors_name_the_input():
    expr, wrt = CORPUS["mlp_tanh_mse"]
    module = symgrad.compile(symgrad.Model(expr, wrt=wrt, name="mlp"))
    inputs = _inputs(symgrad.Model(expr, wrt=wrt))
    inputs["W2"] = np.zeros((5, 2))  # h is 4 elsewhere
    with pytest.raises(ValueError, match="W2"):
        module.value_and_grad(**inputs)


@pytest.mark.parametrize("expr, construct", [
    (sp.besselk(1, x), "besselk"),
    (sp.Function("f")(x), "f"),
    (sp.I * x, "ImaginaryUnit"),
    (sp.Adjoint(sp.MatrixSymbol("A", 2, 2)), "Adjoint"),
    (sp.MatrixSymbol("A", 2, 2)[sp.Symbol("i"), 0], "MatrixElement"),   # a symbolic index outside a Sum
    (sp.Derivative(sp.sin(x), x, evaluate=False) + x, "Derivative"),
])
def test_unsupported_constructs_are_named(expr, construct):
    with pytest.raises(SymgradError, match=f"model bad: unsupported SymPy construct .*{construct}"):
        symgrad.generate(symgrad.Model(expr, name="bad"))


@pytest.mark.parametrize("name", ["seed003_f", "nested_shared", "mlp_tanh_mse", "tanh_layer_output", "matrix_output"])
def test_buffer_reuse_never_clobbers_inputs_or_results(name):
    """Dead temporaries are reused with out=; inputs and returned arrays must never be touched."""
    expr, wrt = CORPUS[name]
    model = symgrad.Model(expr, wrt=wrt, name=name)
    module = symgrad.compile(model)
    inputs = _inputs(model, seed=5)
    if not any(isinstance(s, sp.MatrixSymbol) for s in model.inputs):  # scalar model: real arrays
        inputs = {k: np.resize(v, (64, 3)) if np.ndim(v) else v for k, v in inputs.items()}
    before = {k: np.array(v, copy=True) for k, v in inputs.items()}
    value, grads = module.value_and_grad(**inputs)
    assert all(np.array_equal(before[k], inputs[k]) for k in inputs)
    outs = [value, *grads.values()]
    for i, a in enumerate(outs):
        for b in outs[i + 1:]:
            assert not np.shares_memory(a, b)
    assert "out=" in symgrad.generate(model)
    assert rel_err(module.forward(**inputs), value) == 0.0


def test_mixed_precision_and_integer_inputs_are_promoted():
    expr, wrt = CORPUS["mlp_tanh_mse"]
    model = symgrad.Model(expr, wrt=wrt, name="mix")
    inputs = _inputs(model)
    mixed = dict(inputs, X=inputs["X"].astype(np.float32), Y=inputs["Y"].astype(np.int64))
    value, grads = symgrad.compile(model).value_and_grad(**mixed)
    t_value, t_grads = symgrad.tape.value_and_grad(model, **{k: np.asarray(v, np.float64) for k, v in mixed.items()})
    assert value.dtype == np.float64 and rel_err(value, t_value) < 1e-12
    assert all(g.dtype == np.float64 and rel_err(g, t_grads[k]) < 1e-9 for k, g in grads.items())


@pytest.mark.parametrize("name", ["seed003_f", "mlp_tanh_mse", "tanh_layer_output", "logistic_nll"])
def test_work_arrays_kept_between_calls_never_hold_results(name):
    """Temporaries live in per-thread work arrays reused by the next call; results never do."""
    expr, wrt = CORPUS[name]
    model = symgrad.Model(expr, wrt=wrt, name=name)
    module = symgrad.compile(model)
    first_in, second_in = _inputs(model, seed=1), _inputs(model, seed=2)
    value, grads = module.value_and_grad(**first_in)
    kept = [np.array(a, copy=True) for a in (value, *grads.values())]
    module.value_and_grad(**second_in)
    module.forward(**second_in)
    assert all(np.array_equal(k, a) for k, a in zip(kept, (value, *grads.values())))
    again, _ = module.value_and_grad(**first_in)
    assert rel_err(again, value) == 0.0
    if "_scratch(" in symgrad.generate(model):
        module.release_scratch()
        assert rel_err(module.value_and_grad(**first_in)[0], value) == 0.0


def test_exact_text_of_a_tiny_module():
    """The printed form, pinned: one op per line, ReLU mask from the output, bias sum over rows."""
    n, k = sp.symbols("N k")
    Xs, bs = sp.MatrixSymbol("X", n, k), sp.MatrixSymbol("b", 1, k)
    model = symgrad.Model((Xs + sp.OneMatrix(n, 1) * bs).applyfunc(lambda t: sp.Max(t, 0)), wrt=[bs], name="tiny")
    body = symgrad.generate(model).split("def value_and_grad")[1]
    assert body == textwrap.dedent('''\
        (*, b, X):
            """Value of tiny and the gradients of its sum with respect to b."""
            _dt, b, X = _promote(b, X)
            N, k = _dims({'b': b, 'X': X})
            t0 = b + X  # ones(N, 1)*b + X
            t1 = np.maximum(0.0, t0, out=t0)  # Max(0, ones(N, 1)*b + X)
            t2 = t1 > 0.0
            b_t0 = t2.astype(_dt)  # adjoint of ones(N, 1)*b + X
            grad_b = b_t0.sum(axis=0, keepdims=True)  # adjoint of b
            return t1, {'b': grad_b}
        ''')


# -- the module cache: real, importable, inspectable, picklable modules ---------------------------
def test_compiled_modules_are_real_cached_modules(tmp_path, monkeypatch):
    import inspect
    import pickle
    from symgrad import cache
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SYMGRAD_CACHE", "1")
    monkeypatch.setattr(cache, "_fallback_dir", lambda: tmp_path / "fallback")
    x = sp.Symbol("x")
    model = symgrad.Model(sp.exp(x) * x, wrt=[x], name="cached")
    mod = symgrad.compile(model)
    files = list((tmp_path / "cache").glob("*.py"))
    source = symgrad.generate(model)   # the file: the source, then a line with its sha256
    assert len(files) == 1 and files[0].read_text().startswith(source + "\n# symgrad module cache: sha256 ")
    assert "def value_and_grad" in inspect.getsource(mod.value_and_grad)
    again = pickle.loads(pickle.dumps(mod.value_and_grad))
    assert again(x=1.0)[1]["x"] == mod.value_and_grad(x=1.0)[1]["x"] == 2 * np.e
    # another process imports the module by name from the cache (what spawn does for pickles)
    code = f"import importlib; m = importlib.import_module({mod.__name__!r}); print(m.forward(x=0.0))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "SYMGRAD_CACHE_DIR": str(tmp_path / "cache")})
    assert out.returncode == 0 and out.stdout.strip() == "0.0", out.stderr
    # a second compile reads the file instead of compiling; another emit set is another file
    calls = []
    monkeypatch.setattr(cache, "generate", lambda *a, **k: calls.append(a) or "")
    assert symgrad.compile(model).forward(x=1.0) == np.e and not calls
    monkeypatch.undo()   # (the fallback stays the test's own: clear() empties it too)
    monkeypatch.setattr(cache, "_fallback_dir", lambda: tmp_path / "fallback")
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SYMGRAD_CACHE", "1")
    assert symgrad.compile(model, emit="hvp").hvp({"x": 1.0}, x=0.0)[2]["x"] == 2.0
    assert len(list((tmp_path / "cache").glob("*.py"))) == 2
    # with reuse off, the module is generated again (a compiler patched at run time shows)
    monkeypatch.setenv("SYMGRAD_CACHE", "0")
    monkeypatch.setattr(cache, "generate", lambda *a, **k: "MODEL = 'regenerated'\n")
    assert symgrad.compile(model).MODEL == "regenerated"
    monkeypatch.undo()
    monkeypatch.setattr(cache, "_fallback_dir", lambda: tmp_path / "fallback")
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path / "cache"))
    assert cache.clear() == 2 and not list((tmp_path / "cache").glob("*.py"))


def test_an_unwritable_cache_falls_back_to_memory_with_source_lines(tmp_path, monkeypatch):
    import inspect
    from symgrad import cache
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(blocker / "cache"))   # a folder inside a file
    monkeypatch.setattr(cache, "_fallback_dir", lambda: blocker / "fallback")   # this one too
    x = sp.Symbol("x")
    monkeypatch.setattr(cache, "_WARNED", set())
    with pytest.warns(RuntimeWarning) as warned:   # one warning per folder
        mod = symgrad.compile(symgrad.Model(x ** 3, wrt=[x], name="mem"))
    assert [str(blocker / n) in str(w.message) for n, w in zip(("cache", "fallback"), warned)] == [True, True]
    assert "stay in memory" in str(warned[1].message)
    assert mod.value_and_grad(x=2.0)[1]["x"] == 12.0
    assert "def forward" in inspect.getsource(mod.forward)


@pytest.mark.parametrize("target", ["numpy", "cupy"])
def test_every_module_has_release_scratch(target, monkeypatch):
    from _cupy_shim import fake_cupy
    from symgrad.emit import load_source
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy())
    x = sp.Symbol("x")
    for model in (symgrad.Model(x ** 2, wrt=[x]), symgrad.Model(sp.exp(x) * sp.sin(x), wrt=[x])):
        module = load_source(symgrad.generate(model, target), "m")
        module.value_and_grad(x=np.ones(1000))
        assert module.release_scratch() is None


def test_module_size_is_linear_in_depth():
    """A deep network of scalar Symbols: each work array's shape is read from its operands, never
    re-derived from every upstream input, so bytes grow with depth, not depth squared."""
    def chain(depth):
        h, ws = sp.Symbol("x"), []
        for k in range(depth):
            w, b = sp.symbols(f"w{k} b{k}")
            h = sp.tanh(w * h + b)
            ws += [w, b]
        return symgrad.Model(h, wrt=ws, name=f"chain{depth}")
    small, big = (len(symgrad.generate(chain(d))) for d in (32, 128))
    assert big < 4.6 * small, (small, big)


@pytest.mark.parametrize("target", ["numpy", "numba"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tall_products_turned_around_for_blas_are_right(dtype, target):
    """_matmul computes a tall data matrix times a narrow parameter as (B.T @ A.T).T in float64
    (the orientation OpenBLAS runs faster; benchmarks/bench_blas.py): same values as the tape,
    forward and backward, and a returned product is the caller's own writable array."""
    n, d, h = sp.symbols("n d h", integer=True)
    X, W = sp.MatrixSymbol("X", n, d), sp.MatrixSymbol("W", d, h)
    model = symgrad.Model((X * W).applyfunc(sp.tanh), wrt=[W, X], name="tall")
    if target == "numba":
        pytest.importorskip("numba")
    source = symgrad.generate(model, target)
    assert re.search(r"_matmul(_work)?\(X, W", source)
    mod = symgrad.emit.load_source(source, f"tall_{target}")
    rng = np.random.default_rng(0)
    inputs = {"X": rng.standard_normal((400, 40)).astype(dtype), "W": rng.standard_normal((40, 3)).astype(dtype)}
    value, grads = mod.value_and_grad(**inputs)
    want_value, want = symgrad.tape.value_and_grad(model, **{k: v.astype(np.float64) for k, v in inputs.items()})
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(value, want_value, rtol=tol, atol=tol)
    for k in want:
        np.testing.assert_allclose(grads[k], want[k], rtol=tol, atol=tol)
    assert value.dtype == dtype and value.flags.writeable and not np.shares_memory(value, inputs["X"])
    assert mod._matmul(inputs["X"], inputs["W"]).flags.f_contiguous == (dtype == np.float64)
    # a product that is never returned has a work array, allocated only where it is not turned around
    squared = symgrad.Model(sp.HadamardProduct(*[(X * W).applyfunc(sp.tanh)] * 2), wrt=[W, X], name="tall2")
    source = symgrad.generate(squared, target)
    keys = re.findall(r"= _matmul_work\(X, W, '(\w+)'\)", source.split("def value_and_grad(")[1].split("\ndef ")[0])
    assert len(keys) == 1, keys
    mod = symgrad.emit.load_source(source, f"tall2_{target}")
    if target == "numba":
        mod.SMALL_MAX = 0  # the module's own body and its work arrays, not the compiled twin
    value, grads = mod.value_and_grad(**inputs)
    want_value, want = symgrad.tape.value_and_grad(squared, **{k: v.astype(np.float64) for k, v in inputs.items()})
    np.testing.assert_allclose(value, want_value, rtol=tol, atol=tol)
    assert all(np.allclose(grads[k], want[k], rtol=tol, atol=tol) for k in want)
    assert (keys[0] in mod._SCRATCH.__dict__) == (dtype == np.float32)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_relu_adjoint_select_and_one_column_products_are_exact(dtype):
    """A ReLU's adjoint is where(h > 0, g, 0) into g's own array, done as an unsigned multiply of
    g's bits by the mask; a product over one column is an outer product a * b.  Both give the
    bits of np.where / np.matmul (inf, nan, -0.0 and negatives included), and the MLP that uses
    them matches the tape."""
    n, d, h = sp.symbols("n d h", integer=True)
    X, W, v = sp.MatrixSymbol("X", n, d), sp.MatrixSymbol("W", d, h), sp.MatrixSymbol("v", h, 1)
    hidden = (X * W).applyfunc(lambda e: sp.Max(0, e))
    model = symgrad.Model(sp.Trace((hidden * v).T * (hidden * v)), wrt=[W, v], name="relu_mlp")
    source = symgrad.generate(model)
    assert "_where(" in source and "_matmul(" in source
    mod = symgrad.emit.load_source(source, "relu_mlp")
    rng = np.random.default_rng(1)
    inputs = {"X": rng.standard_normal((300, 20)).astype(dtype), "W": rng.standard_normal((20, 7)).astype(dtype),
              "v": rng.standard_normal((7, 1)).astype(dtype)}
    value, grads = mod.value_and_grad(**inputs)
    want_value, want = symgrad.tape.value_and_grad(model, **{k: x.astype(np.float64) for k, x in inputs.items()})
    tol = 1e-12 if dtype == np.float64 else 2e-4
    np.testing.assert_allclose(value, want_value, rtol=tol)
    for k in want:
        np.testing.assert_allclose(grads[k], want[k], rtol=tol, atol=tol)
    g = rng.standard_normal((50, 6)).astype(dtype)
    g.flat[:4] = [np.inf, np.nan, -0.0, -3.0]
    c = rng.random((50, 6)) < 0.5
    c.flat[:4] = False
    for expect, call in [(np.where(c, g, 0.0), lambda a: mod._where(c, a, 0.0, out=a)),
                         (np.where(c, 0.0, g), lambda a: mod._where(c, 0.0, a, out=a))]:
        got = call(g.copy())
        assert got.dtype == dtype and got.tobytes() == expect.astype(dtype).tobytes()
    col, row = g[:, :1], rng.standard_normal((1, 9)).astype(dtype)
    assert mod._matmul(col, row).tobytes() == np.matmul(col, row).tobytes()
