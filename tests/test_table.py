"""The op table is the one registration per construct: each column has a completeness test here,
and the pipeline boundary (a SymPy-free Program) is checked by emitting where SymPy is absent."""
from __future__ import annotations

import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
import sympy as sp
from sympy.codegen import cfunctions

import symgrad
from symgrad.emit import TARGETS
from symgrad.emit.cuda import c_expr
from symgrad.errors import SymgradError
from symgrad.ops import BOOL_OPS, OPS
from symgrad.pipeline import build

ELEMENTWISE = sorted(n for n, op in OPS.items() if op.elementwise)


def test_sympy_column_names_real_sympy_functions_that_lower_to_the_op():
    x = sp.Symbol("x")
    for op in OPS.values():
        for cls_name in op.sympy:
            cls = getattr(sp, cls_name, None) or getattr(cfunctions, cls_name)
            program = build(symgrad.Model(cls(x), wrt=[x]))
            assert program.out.op == op.name, (cls_name, program.out.op)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_every_elementwise_op_prints_for_numpy_and_cuda(name):
    op = OPS[name]
    if name == "call":  # a symgrad.Function: a call into the user's module, printed by the emitter
        return
    if op.c is None:  # CUDA has no such function: the CuPy target calls cupyx.scipy.special, or refuses
        assert op.special, name
        if name in TARGETS["cupy"].missing:
            with pytest.raises(SymgradError, match=f"{name} cannot be compiled for target cupy"):
                TARGETS["cupy"].template(op)
        else:
            assert "cupyx" in TARGETS["cupy"].template(op), name
        return
    assert op.c is not None, f"{name}: no CUDA C template (c=...)"
    arity = len(re.findall(r"\{(\d)\}", op.c)) and max(int(i) for i in re.findall(r"\{(\d)\}", op.c)) + 1
    assert c_expr(name, [f"a{i}" for i in range(arity)])
    assert isinstance(op.code, str) and op.code.format(*[f"a{i}" for i in range(arity)], m="np", attr=None)


@pytest.mark.parametrize("name", sorted(OPS))
def test_ufunc_and_helper_columns_exist(name):
    op = OPS[name]
    called = re.findall(r"(?<![\w.])(_\w+)\(", (op.code if isinstance(op.code, str) else "") + " " + (op.ufunc or "") + "(")
    for fn in called:  # a helper the op prints a call to is defined by its own helper column
        assert op.helper and f"def {fn}(" in op.helper, (name, fn)
    if op.ufunc and not op.ufunc.startswith("_"):
        assert callable(getattr(np, op.ufunc)), (name, op.ufunc)
    if op.elementwise and name not in BOOL_OPS and name != "powlog" and isinstance(op.code, str) \
            and op.code.startswith("{m}.") and name != "where":
        assert op.ufunc, f"{name}: a NumPy function but no ufunc= (it would never reuse a buffer)"


def test_vjp_and_ev_columns():
    no_vjp = {"const", "dim", "input", "eye", "sum_to"}  # leaves, and sum_to (no reverse-over-reverse)
    assert sorted(n for n, op in OPS.items() if op.vjp is None) == sorted(no_vjp)
    # forward mode (jvp, hvp): elementwise ops use their VJP rule; every other op with arguments
    # has a JVP rule (and elementwise ops have none: one rule per op)
    assert sorted(n for n, op in OPS.items() if op.jvp is None and not op.elementwise) == ["const", "dim", "input"]
    assert not [n for n, op in OPS.items() if op.jvp is not None and op.elementwise]
    for name in ELEMENTWISE:  # constant folding: every arithmetic/function op has a float function
        if name not in BOOL_OPS - {"gt", "ge", "lt", "le", "eq", "ne"} and name not in ("where", "powlog", "call") \
                and not (OPS[name].special and name not in ("erf", "erfc", "gamma", "loggamma")):  # no math. form
            assert OPS[name].ev is not None, name


def test_a_program_is_emitted_where_sympy_is_missing(tmp_path):
    X, W, b = sp.MatrixSymbol("X", sp.Symbol("N"), 3), sp.MatrixSymbol("W", 3, 2), sp.MatrixSymbol("b", 1, 2)
    s = sp.Symbol("s")
    model = symgrad.Model((X * W + sp.OneMatrix(sp.Symbol("N"), 1) * b).applyfunc(sp.tanh) * s, wrt=[W, b, s], name="p")
    expected = symgrad.generate(model)
    (tmp_path / "program.pkl").write_bytes(pickle.dumps(build(model)))
    code = f"""
import sys, pickle
sys.modules["sympy"] = None          # import sympy fails from here on
import symgrad.emit
program = pickle.loads(open({str(tmp_path / "program.pkl")!r}, "rb").read())
sys.stdout.write(symgrad.emit.emit(program, "numpy"))
assert "sympy" not in [m.split(".")[0] for m in sys.modules if sys.modules[m] is not None]
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout == expected


def test_compiler_core_imports_no_sympy():
    code = ("import sys; sys.modules['sympy'] = None\n"
            "import symgrad.ir, symgrad.ops, symgrad.rewrites, symgrad.diff, symgrad.program, symgrad.emit, symgrad.errors\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]


def test_equal_sums_are_one_node_however_ordered():
    from symgrad.rewrites import graph
    G = graph()
    t, b, y = (G.input(n, (4, 1)) for n in "tby")
    one = G.add(t, G.sub(b, y))
    assert G.add(b, G.sub(t, y)) is one and G.sub(G.add(t, b), y) is one and G.add(G.sub(t, y), b) is one
    assert G.sub(G.add(b, t), y) is one


def test_log1p_and_expm1_rewrites():
    x = sp.Symbol("x")
    assert build(symgrad.Model(sp.log(1 + x ** 2))).out.op == "log1p"
    assert build(symgrad.Model(sp.exp(x) - 1)).out.op == "expm1"
    module = symgrad.compile(symgrad.Model(sp.log(1 - sp.exp(x)), wrt=[x]))
    tiny = np.array([-1e-12, -50.0])   # where log(1 - exp(x)) computed naively loses every digit
    value, grads = module.value_and_grad(x=tiny)
    assert np.allclose(value, [np.log(1e-12), -np.exp(-50.0)], rtol=1e-9, atol=0)
    assert np.allclose(grads["x"], -np.exp(tiny) / -np.expm1(tiny), rtol=1e-9)


# -- every table of elementwise ops, against the op table: an op a table lacks is listed with why ------
_SCIPY = {"erf", "erfc", "erfinv", "gamma", "loggamma", "polygamma", "besselj", "besseli", "expint", "lambertw"}
_NO_PLAIN_FORM = {  # op -> why the Python-float fast path and Numba's loops have no form of it
    **{name: "a scipy.special function: math's forms differ from SciPy's by more than a few ulp, and "
             "Numba cannot call SciPy" for name in _SCIPY},
    "call": "a user's symgrad.Function: a call into the user's module, printed by the emitter",
}
_NO_C = {  # op -> why the CuPy target's kernels have no CUDA C template of it
    "besselj": "CUDA C has none: cupyx.scipy.special has orders 0 and 1 only (the target refuses others)",
    "besseli": "as besselj",
    "expint": "CUDA C has none: cupyx.scipy.special.expn is called",
    "polygamma": "CUDA C has none: cupyx.scipy.special.polygamma is called",
    "lambertw": "CUDA C has none: the target refuses it",
    "call": "a user's symgrad.Function runs on the host",
}
# op -> the tape's rule (SymPy class, arity) that computes the same value; the tape reads SymPy
_TAPE = {"add": (sp.Add, 2), "sub": (sp.Add, 2), "mul": (sp.Mul, 2), "div": (sp.Mul, 2), "neg": (sp.Mul, 2),
         "pow": (sp.Pow, 2), "sqrt": (sp.Pow, 2), "maximum": (sp.Max, 2), "minimum": (sp.Min, 2),
         "arctan2": (sp.atan2, 2), "where": (sp.ITE, 3), "gt": (sp.StrictGreaterThan, 2), "ge": (sp.GreaterThan, 2),
         "lt": (sp.StrictLessThan, 2), "le": (sp.LessThan, 2), "eq": (sp.Equality, 2), "ne": (sp.Unequality, 2),
         "and": (sp.And, 2), "or": (sp.Or, 2), "not": (sp.Not, 1), "polygamma": (sp.polygamma, 2),
         "besselj": (sp.besselj, 2), "besseli": (sp.besseli, 2), "expint": (sp.expint, 2), "lambertw": (sp.LambertW, 1)}
_NOT_ON_TAPE = {  # op -> why the tape has no rule of its own for it
    "sigmoid": "made by a rewrite of 1/(1 + exp(-t)): the tape computes the SymPy form",
    "softplus": "made by rewrites of log(1 + exp(t)): the tape computes the SymPy form",
    "powlog": "built by pow's derivative rule only",
    "call": "a user's symgrad.Function: the tape calls the user's function and partials (tape._user_rule)",
}


def _sympy_class(name):
    return getattr(sp, name, None) or getattr(cfunctions, name)


def test_the_float_fast_path_table_is_complete():
    from symgrad.emit.floats import FLOAT
    assert not set(FLOAT) - set(ELEMENTWISE), "FLOAT names ops that are not elementwise ops"
    assert sorted(set(ELEMENTWISE) - set(FLOAT)) == sorted(_NO_PLAIN_FORM), \
        "an elementwise op without a Python-float form in emit/floats.py FLOAT: add it, or list it with why"


def test_the_numba_scalar_table_is_complete():
    from symgrad.emit.numba import _SCALAR, numba_fusable
    assert not set(_SCALAR) - set(ELEMENTWISE)
    assert sorted(n for n in ELEMENTWISE if not numba_fusable(n)) == sorted(_NO_PLAIN_FORM)
    for name in ELEMENTWISE:  # a fused op's element template: Numba's own, or the NumPy one of an ufunc
        if numba_fusable(name):
            assert name in _SCALAR or OPS[name].code.startswith(("{m}.", "{0}", "-{0}")), name


def test_the_cuda_c_column_is_complete():
    assert sorted(n for n in ELEMENTWISE if OPS[n].c is None) == sorted(_NO_C)


def test_the_tape_has_a_rule_for_every_elementwise_op():
    from symgrad import tape
    for name in ELEMENTWISE:
        if name in _NOT_ON_TAPE:
            continue
        keys = [(_sympy_class(c), 1) for c in OPS[name].sympy] or [_TAPE.get(name)]
        assert keys != [None], f"{name}: name its tape rule in _TAPE, or list it in _NOT_ON_TAPE with why"
        for key in keys:
            assert key in tape.RULES, f"{name}: the tape has no rule {key}"
    assert not set(_TAPE) & set(_NOT_ON_TAPE) and set(_TAPE) | set(_NOT_ON_TAPE) <= set(ELEMENTWISE)
