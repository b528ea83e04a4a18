"""The rewrites (symgrad/rewrites/): a registry of named functions in ordered phases.

One row per registered rewrite: a model on which it fires.  Each row is compiled with every
rewrite, then with that one switched off: the rewrite is in the trace of the first, the generated
code differs, and both modules match the tape and finite differences (symgrad.verify.check, which
never reads the rewrites).  A rewrite that no SymPy model reaches (SymPy simplifies it away first)
has a graph row instead: the node it rewrites, built by hand, and the node it must become.
"""
from __future__ import annotations

import inspect
import subprocess
import sys
import warnings

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad import SymgradError, cli, rewrites
from symgrad.emit import load_source
from symgrad.rewrites import canonicalize, specialize, stabilize
from symgrad.verify import check

x, y, z = sp.symbols("x y z")
N, d, k = sp.symbols("N d k")
X, W, b = sp.MatrixSymbol("X", N, d), sp.MatrixSymbol("W", d, k), sp.MatrixSymbol("b", 1, k)
S, v, w = sp.MatrixSymbol("S", d, d), sp.MatrixSymbol("v", N, 1), sp.MatrixSymbol("w", d, 1)
Q = sp.MatrixSymbol("Q", 2, 2)
xi = sp.IndexedBase("xi")
i = sp.Symbol("i")
sig = lambda t: 1 / (1 + sp.exp(-t))  # noqa: E731
SPD = S + 5 * sp.Identity(d)   # diagonally dominant on check's inputs: invertible, det > 0

# rewrite name -> (expression, wrt, derivative functions): a model on which it fires
ROWS = {
    # canonicalize
    "hoist_transpose": (S ** 2, [S], "grad"),
    "hoist_bcast": (S ** 2, [S], "grad"),
    "fold_constants": (-x, [x], "grad"),
    "add_self": (y * sp.asin(x / 2), [x, y], "hvp"),
    "add_zero": (sp.Add(x, -sp.Max(y, 0) * 0, evaluate=False), [x, y], "grad"),
    "add_negated": (z - x, [x, z], "grad"),
    "add_constant_first": (2 * y - sp.Abs(x * y + sp.Rational(1, 2)), [x, y], "grad"),
    "add_in_order": (w.T * X.T * X * w, [X, w], "hvp"),
    "sub_of_negated": (SPD ** -2, [S], "grad"),
    "sub_in_order": ((y - x * z - 1) ** 2 / 2, [x, z], "grad"),
    "neg_neg": (-sp.sin(x), [x], "hvp"),
    "neg_sub": (1 / (sp.exp(x) + 1), [x], "hvp"),
    "neg_sum": (sp.Abs(sp.log(1 - 1 / (sp.exp(-2 * y - 3) + 1))), [y], "grad"),
    "neg_scaled": (y * sp.asin(x / 2), [x, y], "hvp"),
    "mul_constant_first": (z ** 2, [z], "hvp"),
    "mul_broadcast_number": (sp.Trace((X - sp.OneMatrix(N, 1) * w.T) * SPD ** -1 * (X.T - w * sp.OneMatrix(1, N))) / 2, [w, S], "grad"),
    "mul_one": (X * W, [W], "grad"),
    "mul_minus_one": (-x, [x], "grad"),
    "mul_constants": (sp.sin(2 * y), [y], "hvp"),
    "mul_negated": (sp.cos(x * y), [x, y], "grad"),
    "mul_in_order": (x / y, [x, y], "hvp"),
    "mul_scalars_first": (sp.Sum(xi[i] ** 2, (i, 0, N - 1)) / N, [xi], "grad"),
    "div_negated": (sp.sqrt(x) + 1 / sp.sqrt(y), [x, y], "grad"),
    "pow_one": (sp.sin(x * y) ** 3, [x, y], "hvp"),
    "log_of_exp": (sp.log(sp.exp(sp.tanh(x))), [x], "grad"),
    "where_same": (sp.Piecewise((sp.log(sp.exp(x)), y > 0), (x, True)), [x, y], "grad"),
    "where_boolean": (sp.Piecewise((x, sp.ITE(x > 0, y > 0, True)), (y, True)), [x, y], "grad"),
    "matmul_identity": (sp.Trace(sp.MatMul(S, sp.Identity(d), evaluate=False)), [S], "grad"),
    "matmul_transposes": (w.T * X.T * X * w, [X, w], "grad"),
    "sum_of_transpose": (S ** 2, [S], "grad"),
    "sum_over_length_one": (X * W + sp.OneMatrix(N, 1) * b, [W, b], "grad"),
    "transpose_transpose": (w.T * X.T * X * w, [X, w], "grad"),
    "transpose_of_bcast": (X * W, [W], "grad"),
    "bcast_same_shape": (S ** 2, [S], "grad"),
    "bcast_of_transpose": (S ** 2, [S], "grad"),
    "bcast_of_bcast": ((X * W + sp.OneMatrix(N, 1) * b).applyfunc(sp.exp) * sp.OneMatrix(k, 1), [W], "grad"),
    "trace_of_transpose": (sp.Trace(X * SPD ** -1 * X.T), [S, X], "grad"),
    "item_of_transpose": ((w.T * S * S * w)[0, 0], [w, S], "grad"),
    "entry_of_transpose": (sp.Matrix([[sp.exp(x), 0], [x, 1]]) * Q, [Q, x], "grad"),
    # stabilize
    "expm1": ((sp.exp(x) - 1) * y, [x, y], "grad"),
    "sigmoid": (1 / (sp.exp(x) + 1), [x], "grad"),
    "log_sigmoid": (-sp.log(sig(x * y)), [x, y], "grad"),
    "log_one_minus_sigmoid": (sp.log(1 - sig(x)), [x], "grad"),
    "softplus": (sp.log(sp.exp(z) + 1), [z], "grad"),
    "log1mexp": (sp.log(1 - sp.exp(-x ** 2 - y ** 2)), [x, y], "grad"),
    "log_sum_exp": (sp.log(sp.exp(x) + 2 * sp.exp(y)), [x, y], "grad"),
    "log1p": (sp.log(1 - sp.tanh(x) ** 2) + sp.log(1 + x ** 2), [x], "grad"),
    "logdet": (sp.log(sp.det(SPD)), [S], "grad"),
    "logsumexp": (sp.Trace(sp.OneMatrix(1, N) * ((X * W).applyfunc(sp.exp) * sp.OneMatrix(k, 1)).applyfunc(sp.log)), [W], "grad"),
    "inverse_as_solve": (SPD ** -2, [S], "grad"),
    # specialize
    "pow_half": (sp.sqrt(x ** 2 + y ** 2), [x, y], "grad"),
    "pow_minus_one": (x / y, [x, y], "grad"),
    "pow_minus_half": (1 / sp.sqrt(x ** 2 + 1), [x], "grad"),
    "matmul_equal_entries": (X * W, [W], "grad"),
    "sum_of_bcast": (X * W + sp.OneMatrix(N, 1) * b, [W, b], "grad"),
    "trace_of_product": (sp.Trace(S ** 2) + sp.Trace(S), [S], "grad"),
    "trace_of_1x1": (sp.Trace(sp.OneMatrix(1, N) * (X * w).applyfunc(sp.tanh)), [w], "grad"),
}


def _in(G, name, shape=None):
    return G.input(name, shape)


# rewrite name -> (the node it rewrites, the node it becomes), built in a graph with every rewrite:
# nodes that SymPy never leaves in a model (x - 0, x / 1, ...) but a rule could build
GRAPH_ROWS = {
    "sub_zero": (lambda G: G.sub(_in(G, "x"), G.const(0)), lambda G: _in(G, "x")),
    "sub_negated": (lambda G: G.sub(_in(G, "x"), G.neg(_in(G, "y"))), lambda G: G.add(_in(G, "x"), _in(G, "y"))),
    "mul_number_by_mask": (lambda G: G.mul(G.const(3), G.op("gt", _in(G, "x"), G.const(0))),
                           lambda G: G.where(G.op("gt", _in(G, "x"), G.const(0)), G.const(3), G.const(0))),
    "div_one": (lambda G: G.div(_in(G, "x"), G.const(1)), lambda G: _in(G, "x")),
    "where_constant_condition": (lambda G: G.where(G.const(1), _in(G, "x"), _in(G, "y")), lambda G: _in(G, "x")),
    "sum_of_scalar": (lambda G: G.sum(G.op("item", _in(G, "A", (1, 1)))), lambda G: G.op("item", _in(G, "A", (1, 1)))),
    "shift_by_zero": (lambda G: G.op("shift", _in(G, "A", (3, 2)), attr=(0, 0)), lambda G: _in(G, "A", (3, 2))),
}


def test_every_registered_rewrite_has_a_row():
    assert not set(ROWS) & set(GRAPH_ROWS)
    assert sorted([*ROWS, *GRAPH_ROWS]) == sorted(rewrites.names())


def test_every_rewrite_function_is_registered():
    """A public function of a phase module is a rewrite: it is registered, in its module's phase."""
    registered = {r.fn: r for r in rewrites.list()}
    for module in (canonicalize, stabilize, specialize):
        phase = module.__name__.rsplit(".", 1)[1]
        for name, fn in vars(module).items():
            if inspect.isfunction(fn) and fn.__module__ == module.__name__ and not name.startswith("_"):
                assert fn in registered, f"{module.__name__}.{name} is not registered (@{phase}(...))"
                assert registered[fn].phase == phase and registered[fn].name == name
    assert len({r.name for r in rewrites.list()}) == len(rewrites.list())
    assert [r.phase for r in rewrites.list()] == sorted((r.phase for r in rewrites.list()), key=rewrites.PHASES.index)


def _checked(model, source, emit):
    module = load_source(source, model.name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = check(model, module, trials=1, float32=False, calls=False)
    assert report.ok, report.problems


@pytest.mark.parametrize("name", sorted(ROWS))
def test_rewrite_fires_changes_the_code_and_keeps_the_values(name):
    expr, wrt, emit = ROWS[name]
    model = symgrad.Model(expr, wrt=wrt, name=name)
    trace: list = []
    source = symgrad.generate(model, emit=emit, trace=trace)
    fired = [line for line in trace if f".{name}: " in line]
    assert fired, f"{name} did not fire on its row; fired: {sorted({ln.split(': ')[1] for ln in trace})}"
    off = symgrad.generate(model, emit=emit, rewrites_off=[name])
    assert off != source, f"switching {name} off did not change the module"
    _checked(model, source, emit)
    _checked(model, off, emit)


@pytest.mark.parametrize("name", sorted(GRAPH_ROWS))
def test_graph_row_rewrites_its_node(name):
    build, expected = GRAPH_ROWS[name]
    rewriter = rewrites.Rewriter()
    G = rewrites.graph(rewriter)
    node = build(G)
    assert node is expected(G) and [f.rewrite.name for f in rewriter.fired][-1] == name
    plain = rewrites.graph(rewrites.Rewriter([name]))
    assert build(plain) is not expected(plain)   # switched off: the node stays as built


def test_rewrites_off_by_environment_and_unknown_names(monkeypatch):
    model = symgrad.Model(sp.log(1 + x ** 2), wrt=[x], name="m")
    assert "log1p" in symgrad.generate(model)
    monkeypatch.setenv("SYMGRAD_REWRITES_OFF", "log1p, pow_one")
    assert "log1p" not in symgrad.generate(model)
    assert "log1p" not in inspect.getsource(symgrad.compile(model))
    monkeypatch.setenv("SYMGRAD_REWRITES_OFF", "no_such_rewrite")
    with pytest.raises(SymgradError, match="no rewrite named no_such_rewrite.*log1p"):
        symgrad.generate(model)
    monkeypatch.delenv("SYMGRAD_REWRITES_OFF")
    with pytest.raises(SymgradError, match="no rewrite named nope"):
        symgrad.compile(model, rewrites_off=["nope"])


def test_compile_with_a_rewrite_off_is_its_own_cached_module():
    model = symgrad.Model(sp.log(1 + x ** 2), wrt=[x], name="m")
    on, off = symgrad.compile(model), symgrad.compile(model, rewrites_off=["log1p"])
    assert on.__name__ != off.__name__
    assert "log1p" in inspect.getsource(on) and "log1p" not in inspect.getsource(off)
    assert np.isclose(on.forward(x=0.5), off.forward(x=0.5))


def test_trace_by_environment_and_cli(tmp_path, capsys):
    (tmp_path / "m.py").write_text("import sympy as sp, symgrad\nx = sp.Symbol('x')\n"
                                   "model = symgrad.Model(sp.log(1 + x**2), wrt=[x], name='m')\n")
    code = ("import sympy as sp, symgrad\nx = sp.Symbol('x')\n"
            "symgrad.generate(symgrad.Model(sp.log(1 + x**2), wrt=[x], name='m'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "SYMGRAD_TRACE_REWRITES": "1"})
    assert out.returncode == 0 and "m: lower stabilize.log1p: log(1 + x**2) -> log1p(x**2)" in out.stderr, out.stderr
    assert cli.main(["compile", str(tmp_path / "m.py"), "-o", str(tmp_path / "m_numpy.py"), "-v"]) == 0
    err = capsys.readouterr().err
    assert "rewrite m: lower stabilize.log1p: log(1 + x**2) -> log1p(x**2)" in err
    assert "differentiate" in err   # rewrites of the backward pass are listed too
