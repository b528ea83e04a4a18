"""Importing symgrad leaves SymPy alone; models built in-process with SymPy's expanded Sums compile.

* After ``import symgrad``, SymPy answers as in a fresh interpreter that never imported it
  (``sp.diff((v.T*v)[0, 0], v[0, 0])``, ``(v.T*v).as_explicit()``; compared by ``srepr``).
* ``M[0, 0]`` of a 1x1 matrix expression stays whole only while ``load_models`` runs a model file,
  and SymPy's own indexing is back afterwards -- also when the file raises or exits, and when one
  model file loads another.  (The golden files of ``tests/test_examples.py`` check that model
  files still compile to the same modules.)
* A model built in-process gets SymPy's indexed ``Sum``s; :mod:`symgrad.indexed` turns them back
  into matrix operations: the module matches the tape and central finite differences and its
  ``forward`` / ``value_and_grad`` contain no Python loop.  A ``Sum`` that is not a matrix
  expression written out is an error naming it.
* No symgrad call leaves ``sys.getrecursionlimit()`` changed.
"""
from __future__ import annotations

import ast
import contextlib
import inspect
import io
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from sympy.matrices.expressions.matexpr import MatrixElement, MatrixExpr

import symgrad
from symgrad import SymgradError, tape
from symgrad.indexed import sum_to_matrix

from _oracles import assert_matches_oracles

ROOT = Path(__file__).resolve().parents[1]
SYMPY_GETITEM = MatrixExpr.__dict__["__getitem__"]  # SymPy's own, as symgrad's import left it

# what a fresh interpreter answers; ``dummy_index`` is numbered per process, so it is left out
PROBE = textwrap.dedent("""
    import sympy as sp
    N = sp.Symbol("N")
    v = sp.MatrixSymbol("v", N, 1)
    print(sp.srepr(sp.diff((v.T*v)[0, 0], v[0, 0])))
    print(sp.srepr((v.T*v).as_explicit()))
    print(sp.srepr((v.T*v)[0, 0]))
""")


def _normalized(text: str) -> str:
    return re.sub(r"dummy_index=\d+", "dummy_index=?", text)


def _probe_here() -> str:
    """The probe's answers in this process."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(PROBE, "<probe>", "exec"), {})
    return _normalized(buf.getvalue())


def _run(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


@pytest.fixture(scope="module")
def fresh() -> str:
    """The probe's answers in an interpreter that never imports symgrad."""
    out = _run(PROBE + "import sys\nassert 'symgrad' not in sys.modules\n")
    assert "Sum" in out and "MatrixElement(MatMul" not in out  # SymPy expands (v.T*v)[0, 0]
    return _normalized(out)


def _assert_sympy_is_sympy(fresh):
    assert MatrixExpr.__dict__["__getitem__"] is SYMPY_GETITEM
    assert not getattr(SYMPY_GETITEM, "_symgrad", False)
    assert _probe_here() == fresh


# -- 1. importing symgrad changes nothing in SymPy -------------------------------------------------
def test_sympy_after_import_symgrad_is_sympy(fresh):
    _assert_sympy_is_sympy(fresh)  # this process imported symgrad (and maybe used it) already
    # and a fresh interpreter whose first import is symgrad's
    out = _run("import symgrad, symgrad.tape, symgrad.indexed, symgrad.emit\n" + PROBE)
    assert _normalized(out) == fresh


def test_derivative_and_as_explicit_are_sympys(fresh):
    N = sp.Symbol("N")
    v = sp.MatrixSymbol("v", N, 1)
    d = sp.diff((v.T * v)[0, 0], v[0, 0])
    assert not isinstance(d, sp.Derivative)  # symgrad's old patch left an unevaluated Derivative
    assert isinstance((v.T * v).as_explicit()[0, 0], sp.Sum)
    assert _probe_here() == fresh


# -- 2. the patch lives only while load_models runs a model file ---------------------------------
MODEL_FILE = '''
import sympy as sp
from sympy.matrices.expressions.matexpr import MatrixElement
import symgrad
N, d = sp.symbols("N d")
X, y = sp.MatrixSymbol("X", N, d), sp.MatrixSymbol("y", N, 1)
W, b = sp.MatrixSymbol("W", d, 1), sp.MatrixSymbol("b", 1, 1)
E = X * W + sp.OneMatrix(N, 1) * b - y
loss = (E.T * E)[0, 0]
assert isinstance(loss, MatrixElement) and not loss.has(sp.Sum), loss   # kept whole here
model = symgrad.Model(loss / N, wrt=[W, b], name="file_mse")
'''


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _mse_in_process():
    N, d = sp.symbols("N d")
    X, y = sp.MatrixSymbol("X", N, d), sp.MatrixSymbol("y", N, 1)
    W, b = sp.MatrixSymbol("W", d, 1), sp.MatrixSymbol("b", 1, 1)
    E = X * W + sp.OneMatrix(N, 1) * b - y
    return symgrad.Model((E.T * E)[0, 0] / N, wrt=[W, b], name="inproc_mse")


def test_model_file_keeps_the_element_whole_and_sympy_is_back_after(tmp_path, fresh):
    (model,) = symgrad.load_models(_write(tmp_path / "m.py", MODEL_FILE))
    assert not model.expr.has(sp.Sum) and model.expr.has(MatrixElement)
    _assert_sympy_is_sympy(fresh)
    inproc = _mse_in_process()
    assert inproc.expr.has(sp.Sum)  # the same model built here is SymPy's expanded form
    rng = np.random.default_rng(3)
    inputs = {"X": rng.normal(size=(7, 3)), "y": rng.normal(size=(7, 1)),
              "W": rng.normal(size=(3, 1)), "b": rng.normal(size=(1, 1))}
    v1, g1 = symgrad.compile(model).value_and_grad(**inputs)
    v2, g2 = symgrad.compile(inproc).value_and_grad(**inputs)
    assert np.allclose(v1, v2, rtol=1e-12) and all(np.allclose(g1[k], g2[k], rtol=1e-12) for k in g1)


@pytest.mark.parametrize("tail, message", [
    ("raise RuntimeError('boom')", "RuntimeError: boom"),
    ("import sys; sys.exit(3)", "exit"),
    ("x = (E.T * E)[0, 0] + undefined_name", "NameError"),
    ("raise symgrad.SymgradError('bad model')", "bad model"),
])
def test_patch_is_restored_when_the_model_file_fails(tmp_path, fresh, tail, message):
    path = _write(tmp_path / "bad.py", MODEL_FILE + tail + "\n")
    with pytest.raises(SymgradError, match=message):
        symgrad.load_models(path)
    _assert_sympy_is_sympy(fresh)


def test_nested_load_models_keeps_the_patch_until_the_outer_one_returns(tmp_path, fresh):
    inner = _write(tmp_path / "inner.py", MODEL_FILE)
    outer = _write(tmp_path / "outer.py", textwrap.dedent(f'''
        import symgrad
        from sympy.matrices.expressions.matexpr import MatrixExpr
        (_inner,) = symgrad.load_models({str(inner)!r})
        assert getattr(MatrixExpr.__getitem__, "_symgrad", False)  # still on after the inner load
    ''') + MODEL_FILE.replace('name="file_mse"', 'name="outer_mse"'))
    models = symgrad.load_models(outer)
    assert [m.name for m in models] == ["outer_mse"]
    _assert_sympy_is_sympy(fresh)
    bad_inner = _write(tmp_path / "bad_inner.py", MODEL_FILE + "raise ValueError('inner fails')\n")
    outer2 = _write(tmp_path / "outer2.py", textwrap.dedent(f'''
        import symgrad
        try:
            symgrad.load_models({str(bad_inner)!r})
        except symgrad.SymgradError:
            pass
    ''') + MODEL_FILE)
    assert [m.name for m in symgrad.load_models(outer2)] == ["file_mse"]  # the outer file's assert held
    _assert_sympy_is_sympy(fresh)


def test_seed_model_files_are_loaded_whole():
    for path in sorted((ROOT / "examples").glob("seed*.py")):
        for m in symgrad.load_models(path):
            assert not m.expr.has(sp.Sum), (path.name, m.name)


# -- 3. in-process models: SymPy's expanded Sums compile to matrix operations -----------------------
N, d, h, K = sp.symbols("N d h K")
X, A, B = sp.MatrixSymbol("X", N, d), sp.MatrixSymbol("A", N, d), sp.MatrixSymbol("B", N, d)
y, u = sp.MatrixSymbol("y", N, 1), sp.MatrixSymbol("u", N, 1)
w, S = sp.MatrixSymbol("w", d, 1), sp.MatrixSymbol("S", d, d)
W1, b1 = sp.MatrixSymbol("W1", d, h), sp.MatrixSymbol("b1", 1, h)
W2, b2 = sp.MatrixSymbol("W2", h, 1), sp.MatrixSymbol("b2", 1, 1)
W3, Y = sp.MatrixSymbol("W3", d, K), sp.MatrixSymbol("Y", N, K)
lam = sp.Symbol("lam")
ONES_N = sp.OneMatrix(N, 1)
i, j = sp.Dummy("i"), sp.Dummy("j")


def _relu_mlp():
    H = (X * W1 + ONES_N * b1).applyfunc(lambda t: sp.Max(t, 0))
    E = H * W2 + ONES_N * b2 - y
    return (E.T * E)[0, 0] / N


def _sigmoid_mlp():
    H = (X * W1 + ONES_N * b1).applyfunc(lambda t: 1 / (1 + sp.exp(-t)))
    E = H * W2 + ONES_N * b2 - y
    return (E.T * E)[0, 0] / N


def _softmax_ce():
    Z = X * W3
    return ((sp.OneMatrix(1, N) * (Z.applyfunc(sp.exp) * sp.OneMatrix(K, 1)).applyfunc(sp.log))[0, 0]
            - (sp.OneMatrix(1, N) * sp.HadamardProduct(Y, Z) * sp.OneMatrix(K, 1))[0, 0]) / N


r = y - X * w
IN_PROCESS = {  # name: (expression, wrt, the generated code must contain a matrix product)
    "mse_bias": (_mse_in_process().expr, [sp.MatrixSymbol("W", d, 1), sp.MatrixSymbol("b", 1, 1)], True),
    "quadratic_form": ((w.T * X.T * X * w)[0, 0], [w, X], True),
    "residual_over_n": ((r.T * r)[0, 0] / N, [w], True),
    "dot": ((u.T * u)[0, 0] * lam + (u.T * y)[0, 0], [u, lam], True),
    "relu_mlp": (_relu_mlp(), [W1, b1, W2, b2], True),
    "sigmoid_mlp": (_sigmoid_mlp(), [W1, b1, W2, b2], True),
    "softmax_ce": (_softmax_ce(), [W3], True),
    "hinge": ((sp.OneMatrix(1, N) * (ONES_N - sp.HadamardProduct(y, X * w)).applyfunc(
        lambda t: sp.Max(0, t)))[0, 0], [w], True),
    "matrix_power": ((w.T * S ** 2 * w)[0, 0] + (w.T * S.T * S * w)[0, 0], [w, S], True),
    "frobenius": ((sp.OneMatrix(1, N) * sp.HadamardPower(X * S, 2) * sp.OneMatrix(d, 1))[0, 0], [S], True),
    "trace_written_out": (sp.Trace(S).doit() * lam + sp.Sum(S[i, i] * w[i, 0], (i, 0, d - 1)), [S, w, lam], False),
    "bilinear_flat_sum": (sp.Sum(u[i, 0] * A[i, j] * w[j, 0], (i, 0, N - 1), (j, 0, d - 1)), [u, A, w], True),
    "outer_broadcast": (sp.Sum(sp.exp(u[i, 0] - w[j, 0]) * A[i, j], (i, 0, N - 1), (j, 0, d - 1)), [u, w, A], False),
    "elementwise_of_two": (sp.Sum(sp.Max(A[i, j], B[i, j]) * X[i, j] + sp.Piecewise(
        (A[i, j] ** 2, B[i, j] > 0), (A[i, j], True)), (i, 0, N - 1), (j, 0, d - 1)), [A, B, X], False),
}
SIZES = {N: 6, d: 3, h: 4, K: 3}


def _inputs(model, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for s in model.inputs:
        if isinstance(s, sp.MatrixSymbol):
            out[s.name] = rng.normal(size=tuple(int(sp.sympify(n).subs(SIZES)) for n in s.shape))
        else:
            out[s.name] = rng.uniform(0.5, 1.5)
    if "Y" in out:
        out["Y"] = np.eye(SIZES[K])[rng.integers(0, SIZES[K], SIZES[N])]
    return out


def _loops(source: str) -> list:
    """Python loops (for / while / comprehensions) in the module's forward and value_and_grad."""
    tree = ast.parse(source)
    found = []
    for fn in tree.body:
        if isinstance(fn, ast.FunctionDef) and fn.name in ("forward", "value_and_grad"):
            found += [f"{fn.name}: {type(n).__name__} at line {n.lineno}" for n in ast.walk(fn)
                      if isinstance(n, (ast.For, ast.While, ast.ListComp, ast.SetComp, ast.DictComp,
                                        ast.GeneratorExp, ast.AsyncFor))]
    return found


@pytest.mark.parametrize("name", sorted(IN_PROCESS))
def test_in_process_sums_compile_to_matrix_operations(name):
    expr, wrt, has_matmul = IN_PROCESS[name]
    assert expr.has(sp.Sum), "the test is about SymPy's expanded form"
    model = symgrad.Model(expr, wrt=wrt, name=name)
    source = symgrad.generate(model)
    assert _loops(source) == []
    if has_matmul:
        body = source[source.index("def forward"):]
        assert "@" in body or "np.matmul" in body
    assert_matches_oracles(model, symgrad.compile(model), _inputs(model), tape_rtol=1e-9, fd_rtol=1e-6)


def test_conversion_gives_the_matrix_expression_a_model_file_would():
    W, b = sp.MatrixSymbol("W", d, 1), sp.MatrixSymbol("b", 1, 1)
    E = X * W + ONES_N * b - y
    result, bindings = sum_to_matrix((E.T * E)[0, 0])
    assert bindings == [] and not result.has(sp.Sum)
    assert isinstance(result, MatrixElement) and isinstance(result.parent, sp.MatMul)
    left, right = result.parent.args
    assert left == sp.Transpose(right)  # E.T * E
    assert set(right.args) == {sp.MatMul(X, W), -y, sp.MatMul(ONES_N, b)}
    result, _ = sum_to_matrix((w.T * X.T * X * w)[0, 0])
    assert result.atoms(sp.MatrixSymbol) == {w, X} and not result.has(sp.Sum)
    # the converted expression has the value of the Sum (both evaluated by the tape)
    for name in ("relu_mlp", "softmax_ce", "hinge", "matrix_power", "trace_written_out"):
        expr, wrt, _ = IN_PROCESS[name]
        converted, bindings = sum_to_matrix(expr)
        assert bindings == [] and not converted.has(sp.Sum), name
        m1, m2 = symgrad.Model(expr, wrt=wrt), symgrad.Model(converted, wrt=wrt)
        inputs = _inputs(m1, seed=5)
        assert np.allclose(tape.forward(m1, **inputs), tape.forward(m2, **inputs), rtol=1e-12), name


def test_an_element_of_a_1x1_matrix_symbol_lowers():
    c = sp.MatrixSymbol("c", 1, 1)
    model = symgrad.Model(c[0, 0] ** 2 * lam + (c.T * c)[0, 0], wrt=[c, lam])
    assert_matches_oracles(model, symgrad.compile(model), {"c": np.array([[1.3]]), "lam": 0.7})


def test_a_deep_in_process_model_converts_without_recursion():
    depth = 16
    Ws = [sp.MatrixSymbol(f"V{k}", d, d) for k in range(depth)]
    H = X
    for V in Ws:
        H = (H * V).applyfunc(sp.tanh)
    E = H * w - y
    limit = sys.getrecursionlimit()
    try:
        sys.setrecursionlimit(max(limit, 20_000))  # SymPy's own expansion recurses
        expr = (E.T * E)[0, 0]
        model = symgrad.Model(expr, wrt=[Ws[0], w])
        sys.setrecursionlimit(len(inspect.stack()) + 80)  # far less than the depth of expr
        converted, bindings = sum_to_matrix(expr)
    finally:
        sys.setrecursionlimit(limit)
    assert bindings == [] and not converted.has(sp.Sum)
    rng = np.random.default_rng(1)
    inputs = {"X": rng.normal(size=(5, 3)), "y": rng.normal(size=(5, 1)), "w": rng.normal(size=(3, 1)),
              **{V.name: 0.8 * rng.normal(size=(3, 3)) for V in Ws}}
    source = symgrad.generate(model)
    assert _loops(source) == []
    value, grads = symgrad.compile(model).value_and_grad(**inputs)
    t_value, t_grads = tape.value_and_grad(model, **inputs)
    assert np.allclose(value, t_value, rtol=1e-10)
    assert all(np.allclose(grads[k], t_grads[k], rtol=1e-9, atol=1e-12) for k in grads)


k_, m_ = sp.Dummy("k"), sp.Dummy("m")
ALL_N = [(i, 0, N - 1), (j, 0, N - 1), (m_, 0, N - 1)]


@pytest.mark.parametrize("expr, why", [
    (sp.Sum(i * y[i, 0], (i, 0, N - 1)), "used as a number"),
    (sp.Sum(y[2 * i, 0], (i, 0, N - 2)), "not a summation index plus an integer"),
    (sp.Sum(y[i + 2, 0], (i, 0, N - 2)), "runs past an end"),
    (sp.Sum(y[i, 0], (i, 0, 2)), "do not span"),
    (sp.Sum(y[i, 0], (i, 1, N)), "do not span"),
    (sp.Sum(sp.exp(sp.Sum(A[i, k_] * B[j, k_] * X[m_, k_], (k_, 0, d - 1))), *ALL_N), "three arrays"),
    (sp.Sum(sp.exp(A[i, k_] + B[j, k_] + X[m_, k_]), *ALL_N, (k_, 0, d - 1)), "more than two free indices"),
    (sp.Sum(sp.Sum(X[i, j], (j, 0, i)), (i, 0, N - 1)), "depend on another summation index"),
])
def test_a_sum_that_is_not_a_matrix_expression_is_an_error_naming_it(expr, why):
    model = symgrad.Model(expr, name="bad_sum")
    with pytest.raises(SymgradError, match="unsupported SymPy construct Sum") as info:
        symgrad.generate(model)
    assert why in str(info.value)
    assert "bad_sum" in str(info.value)


# -- 4. the recursion limit ----------------------------------------------------------------------
def test_no_symgrad_call_leaves_the_recursion_limit_changed(tmp_path):
    before = sys.getrecursionlimit()
    model = symgrad.Model(_relu_mlp(), wrt=[W1, b1, W2, b2], name="rec")
    symgrad.generate(model)
    module = symgrad.compile(model)
    inputs = _inputs(model)
    module.value_and_grad(**inputs)
    tape.value_and_grad(model, **inputs)
    symgrad.load_models(_write(tmp_path / "m.py", MODEL_FILE))
    with pytest.raises(SymgradError):
        symgrad.generate(symgrad.Model(sp.Sum(i * y[i, 0], (i, 0, N - 1))))
    assert sys.getrecursionlimit() == before


def test_identity_inside_an_expanded_product_runs_on_tape_and_module():
    """SymPy writes Identity inside an expanded (u.T*(W + I)*u)[0, 0] as a KroneckerDelta."""
    d = sp.Symbol("d")
    W, u = sp.MatrixSymbol("W", d, d), sp.MatrixSymbol("u", d, 1)
    expr = (u.T * (W + sp.Identity(d)) * u)[0, 0]
    assert expr.has(sp.KroneckerDelta)
    model = symgrad.Model(expr, wrt=[W, u])
    W_val, u_val = np.arange(9.0).reshape(3, 3) / 9, np.array([[1.0], [2.0], [3.0]])
    M = W_val + np.eye(3)
    for value, grads in (symgrad.tape.value_and_grad(model, W=W_val, u=u_val),
                         symgrad.compile(model).value_and_grad(W=W_val, u=u_val)):
        assert np.allclose(value, (u_val.T @ M @ u_val)[0, 0])
        assert np.allclose(grads["u"], (M + M.T) @ u_val) and np.allclose(grads["W"], u_val @ u_val.T)
