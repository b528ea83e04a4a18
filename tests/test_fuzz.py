"""Property-based fuzzing of the compiler against the tape and finite differences (Hypothesis).

Random models are drawn as *programs*: a list of steps, each applying one construct to nodes made
by earlier steps, so the expression is a DAG with shared sub-expressions, and a failing model
shrinks to a short program.  A drawn case prints as a runnable Python snippet (its ``repr``).

* scalar models: ``+ - * /``, powers (integer, rational, symbolic exponents), every elementwise
  function symgrad supports, ``Abs sign Max Min Heaviside Piecewise`` with comparisons and
  ``And Or Not Eq Ne``, and the sigmoid / softplus / log-sigmoid / log-sum-exp forms the compiler
  rewrites.  Arguments are wrapped into their domains (``log(1 + a**2)``, ``acosh(2 + a**2)``,
  ``asin(tanh(a)/2)``), and guarded forms (``Piecewise((log(a), a > 0), (a, True))``) put the
  off-domain values in the branch that is not selected.  Scalar symbols are bound to arrays of
  shape (2, 3), rows (3,) and (1, 3), columns (2, 1), Python floats and ints, 0-d arrays and
  NumPy scalars: the gradients must come back summed to each input's own shape.
* matrix models: ``MatrixSymbol`` with symbolic (N, d) and integer dimensions, MatMul, ``+ -``,
  ``.T``, ``OneMatrix`` row/column broadcasting and sums, HadamardProduct/Power, ``applyfunc`` of
  elementwise functions (also with a scalar symbol inside), Trace, MatPow, Identity, scalar
  Symbols times matrices, ``(E.T*E)[0, 0]``, log-sum-exp over entries and rows, scalars used both
  inside and outside the matrices, scalar and matrix-valued outputs.

Each case: ``symgrad.compile(model)`` -> ``value_and_grad`` and ``forward`` == ``symgrad.tape``
(values, shapes, gradient keys == ``model.wrt``, dtypes, ownership of returned arrays), the tape
== central finite differences of the tape in float64 (two step sizes, whose disagreement widens
the tolerance; not where an input is a Python int -- 0 and small integers sit on kinks -- nor
where a Max/Min meets an exact tie, whose documented derivative 0 is not the one-sided one), and
the CuPy target run through the NumPy shim of tests/_cupy_shim.py == the tape, and so is the torch
target on tensors (or refuses an op by name).  The derivative tests (``test_*_derivatives``) compile the same models with vjp, jvp and hvp: vjp and jvp == the
tape's exact VJP and Jacobian, hvp == central differences of the tape's gradient.  Errors are
norm-relative: ``||g - g_ref|| / max(||g_ref||, 1e-8)``.  Cases whose tape value or gradient is
not finite (or beyond 1e10) are skipped with ``assume``; so is a drawn node whose construction
takes SymPy more than BUILD_TIMEOUT_S.  A compile that does not return in COMPILE_TIMEOUT_S fails.

Profiles (``SYMGRAD_FUZZ``): ``ci`` (the default) is small (100 scalar and 60 matrix models per
target, 40 of each for the derivatives, ~50 s) and derandomized, so CI runs the same examples every time, and it stops shrinking
a failure after 20 s; ``long`` runs 2,500 examples per test (15,000 models in all), random, with
Hypothesis' example database (.hypothesis/) and its full shrinking:
``SYMGRAD_FUZZ=long python -m pytest tests/test_fuzz.py``.  ``SYMGRAD_FUZZ_EXAMPLES=n`` sets the
number of examples per test of either profile.  The numba target runs 12 models of each kind
(300 in the long profile): it compiles each one (its compiled twin, seconds a model).
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import warnings

import numpy as np
import pytest
import sympy as sp
from hypothesis import event, HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
try:  # only for the ci profile's shrink budget (a private knob; without it shrinking just runs longer)
    from hypothesis.internal.conjecture import engine as _engine
except ImportError:  # pragma: no cover
    _engine = None
from sympy.core.cache import clear_cache

import symgrad
from symgrad import tape
from symgrad.emit import load_source

from _cupy_shim import FakeElementwiseKernel, fake_cupy

# -- profiles ---------------------------------------------------------------------------------
_COMMON = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                      HealthCheck.data_too_large, HealthCheck.large_base_example])
settings.register_profile("symgrad-fuzz-ci", max_examples=100, derandomize=True, database=None, **_COMMON)
settings.register_profile("symgrad-fuzz-long", max_examples=2500, **_COMMON)
PROFILE = os.environ.get("SYMGRAD_FUZZ", "ci")
if PROFILE not in ("ci", "long"):
    raise ValueError(f"SYMGRAD_FUZZ={PROFILE!r}: choose ci or long")
FUZZ = settings.get_profile(f"symgrad-fuzz-{PROFILE}")
# matrix cases cost ~3x a scalar one (bigger compiles, more finite differences): fewer in ci
FUZZ_MATRIX = settings(FUZZ, max_examples=60) if PROFILE == "ci" else FUZZ
FUZZ_DERIV = settings(FUZZ, max_examples=40) if PROFILE == "ci" else FUZZ  # derivatives, dask
# the numba target compiles every model (its twin: seconds each)
FUZZ_NUMBA = settings(FUZZ, max_examples=12 if PROFILE == "ci" else 300)
if os.environ.get("SYMGRAD_FUZZ_EXAMPLES"):  # e.g. a few thousand models in a background run
    FUZZ = FUZZ_MATRIX = FUZZ_DERIV = FUZZ_NUMBA = settings(FUZZ, max_examples=int(os.environ["SYMGRAD_FUZZ_EXAMPLES"]))
COMPILE_TIMEOUT_S = 20  # a compile normally takes well under a second
BUILD_TIMEOUT_S = 10    # one drawn SymPy node (from a cold cache: the usual is milliseconds)
SHRINK_BUDGET_S = 20 if PROFILE == "ci" else None  # Hypothesis' own limit (300 s) for long runs

TAPE_RTOL = 1e-7    # generated code vs the tape: the same math up to rounding (and stable rewrites)
FD_RTOL = 1e-5      # the tape vs central differences, on top of the differences' own error estimate
FLOOR = 1e-8        # norm-relative errors: ||got - want|| / max(||want||, FLOOR)
BIG = 1e10          # tape values or gradients beyond this are skipped: differences lose their digits


@pytest.fixture(autouse=True, scope="module")
def _shrink_budget():
    """The ci profile stops shrinking a failure after SHRINK_BUDGET_S (a private Hypothesis knob:
    without it, nothing happens but a longer shrink)."""
    old = getattr(_engine, "MAX_SHRINKING_SECONDS", None)
    if SHRINK_BUDGET_S is not None and old is not None:
        _engine.MAX_SHRINKING_SECONDS = SHRINK_BUDGET_S
    yield
    if old is not None:
        _engine.MAX_SHRINKING_SECONDS = old


# -- the program recorder ---------------------------------------------------------------------
class Node:
    __slots__ = ("expr", "src", "line", "deps")

    def __init__(self, expr, src, line=None, deps=()):
        self.expr, self.src, self.line, self.deps = expr, src, line, tuple(deps)


_SLOW_BUILDS: set = set()  # (steps it depends on, template) of nodes whose construction timed out


class _Pending:
    """A node not made yet, for ``Program.lines`` of its arguments."""
    def __init__(self, deps):
        self.deps = tuple(deps)


class Program:
    """Steps ``vK = <source>`` that build the model; shared nodes are shared sub-expressions."""

    def __init__(self, header, leaves):
        self.header, self.steps = header, []
        self.pool = [Node(e, str(e)) for e in leaves]

    def add(self, build, template, *args):
        """Append ``build()``; a SymPy construction that takes too long (its automatic evaluation
        can ask exponentially expensive questions of a big argument) rejects the case."""
        key = (tuple(self.lines(_Pending(args))), template, tuple(a.src for a in args))
        if key in _SLOW_BUILDS:  # slow once: rejected on every replay too (else Hypothesis sees a flaky strategy)
            assume(False)
        try:
            with time_limit(BUILD_TIMEOUT_S, "building a SymPy node", SlowSympy):
                expr = build()
        except SlowSympy:
            _SLOW_BUILDS.add(key)
            assume(False)
        except (ValueError, TypeError, ArithmeticError, AttributeError, NotImplementedError):  # SymPy refuses the node, as
            assume(False)         # in Max(zoo, x): "not comparable", or fails inside its own evaluation
        if _has_infinity(expr):  # log(x - x) is zoo: neither the tape nor symgrad takes it
            assume(False)
        name = f"v{len(self.steps)}"
        node = Node(expr, name, f"{name} = {template.format(*(a.src for a in args))}", args)
        self.steps.append(node)
        self.pool.append(node)
        return node

    def lines(self, out):
        """The steps ``out`` depends on, in the order they were made."""
        needed, stack = set(), [out]
        while stack:
            n = stack.pop()
            if id(n) not in needed:
                needed.add(id(n))
                stack.extend(n.deps)
        return [n.line for n in self.steps if id(n) in needed]


# zoo, nan, +-oo -- and I: SymPy's own evaluation can write a complex number into a branch of a
# real model (sqrt of a Piecewise with a negative branch); symgrad and the tape both refuse complex
# numbers with a clear error, so such a node is not a case
_INFINITIES = (sp.S.ComplexInfinity, sp.S.NaN, sp.S.Infinity, sp.S.NegativeInfinity, sp.S.ImaginaryUnit)


def _has_infinity(expr):
    """Whether zoo, nan, +-oo or I occurs in ``expr`` (a DAG walk: ``has`` walks the whole tree)."""
    seen, stack = set(), [expr]
    while stack:
        e = stack.pop()
        if e in _INFINITIES:
            return True
        if id(e) not in seen:
            seen.add(id(e))
            stack.extend(a for a in getattr(e, "args", ()) if isinstance(a, sp.Basic))
    return False


def _num(v):
    """Source text for an input value that evaluates back to exactly the same value."""
    if isinstance(v, np.ndarray):
        return f"np.array({v.tolist()!r})"
    if isinstance(v, np.generic):
        return f"np.{type(v).__name__}({float(v)!r})"
    return repr(v)


class Case:
    """A drawn model and its inputs; ``repr`` is a runnable reproducer."""

    def __init__(self, program, out, wrt, inputs):
        self.program, self.out, self.wrt, self.inputs = program, out, wrt, inputs
        self.model = symgrad.Model(out.expr, wrt=wrt, name="fuzz")

    def __repr__(self):
        wrt = "None" if self.wrt is None else "[" + ", ".join(str(w) for w in self.wrt) + "]"
        inputs = ", ".join(f"{k!r}: {_num(v)}" for k, v in self.inputs.items())
        return "\n".join(["", "import numpy as np, sympy as sp, symgrad", *self.program.header,
                          *self.program.lines(self.out), f"model = symgrad.Model({self.out.src}, wrt={wrt})",
                          f"inputs = {{{inputs}}}",
                          "value, grads = symgrad.compile(model).value_and_grad(**inputs)",
                          "t_value, t_grads = symgrad.tape.value_and_grad(model, **inputs)", ""])


# -- scalar models ----------------------------------------------------------------------------
# Real symbols: on SymPy's default (complex) symbols, the automatic evaluation of a drawn node
# (``asin(tanh(a)/2)`` asks ``is_real`` of ``tanh(a)``, which takes ``a`` apart into real and
# imaginary parts) can take a minute; ``w`` is a default symbol, for the re/im/arg/conjugate
# that SymPy writes into models over complex symbols.
x, y, z = sp.symbols("x y z", real=True)
w = sp.Symbol("w")
_SCALAR_HEADER = ['x, y, z = sp.symbols("x y z", real=True)', 'w = sp.Symbol("w")']
_CONSTS = [(sp.Integer(2), "2"), (sp.Rational(1, 2), "sp.Rational(1, 2)"), (sp.Integer(-3), "-3"),
           (sp.Float(0.75), "0.75"), (sp.pi, "sp.pi"), (sp.Rational(-5, 3), "sp.Rational(-5, 3)")]


def _sig(t):
    return 1 / (1 + sp.exp(-t))


# name: (arity, build, source template); every argument is kept inside the function's domain
SCALAR_OPS = {
    "add": (2, lambda a, b: a + b, "{0} + {1}"),
    "sub": (2, lambda a, b: a - b, "{0} - {1}"),
    "mul": (2, lambda a, b: a * b, "{0} * {1}"),
    "div_square": (2, lambda a, b: a / (1 + b ** 2), "{0} / (1 + {1}**2)"),
    "div_tanh": (2, lambda a, b: a / (2 + sp.tanh(b)), "{0} / (2 + sp.tanh({1}))"),
    "div_abs": (2, lambda a, b: a / (sp.Abs(b) + sp.Rational(1, 2)), "{0} / (sp.Abs({1}) + sp.Rational(1, 2))"),
    "neg": (1, lambda a: -a, "-{0}"),
    "square": (1, lambda a: a ** 2, "{0}**2"),
    "cube": (1, lambda a: a ** 3, "{0}**3"),
    "recip": (1, lambda a: 1 / (1 + a ** 2), "1 / (1 + {0}**2)"),
    "pow_rational": (1, lambda a: (1 + a ** 2) ** sp.Rational(3, 2), "(1 + {0}**2)**sp.Rational(3, 2)"),
    "pow_neg_half": (1, lambda a: (1 + a ** 2) ** sp.Rational(-1, 2), "(1 + {0}**2)**sp.Rational(-1, 2)"),
    "pow_symbolic": (2, lambda a, b: (1 + a ** 2) ** sp.tanh(b), "(1 + {0}**2)**sp.tanh({1})"),
    "pow_abs": (2, lambda a, b: (sp.Abs(a) + 1) ** b, "(sp.Abs({0}) + 1)**{1}"),
    "exp": (1, sp.exp, "sp.exp({0})"),
    "log": (1, lambda a: sp.log(1 + a ** 2), "sp.log(1 + {0}**2)"),
    "log_abs": (1, lambda a: sp.log(sp.Abs(a) + sp.Rational(1, 2)), "sp.log(sp.Abs({0}) + sp.Rational(1, 2))"),
    "sqrt": (1, lambda a: sp.sqrt(1 + a ** 2), "sp.sqrt(1 + {0}**2)"),
    "sqrt_abs": (1, lambda a: sp.sqrt(sp.Abs(a) + sp.Rational(1, 4)), "sp.sqrt(sp.Abs({0}) + sp.Rational(1, 4))"),
    "sin": (1, sp.sin, "sp.sin({0})"),
    "cos": (1, sp.cos, "sp.cos({0})"),
    "tan": (1, lambda a: sp.tan(sp.tanh(a)), "sp.tan(sp.tanh({0}))"),
    "tanh": (1, sp.tanh, "sp.tanh({0})"),
    "sinh": (1, sp.sinh, "sp.sinh({0})"),
    "cosh": (1, sp.cosh, "sp.cosh({0})"),
    "asin": (1, lambda a: sp.asin(sp.tanh(a) / 2), "sp.asin(sp.tanh({0}) / 2)"),
    "acos": (1, lambda a: sp.acos(sp.sin(a) / 2), "sp.acos(sp.sin({0}) / 2)"),
    "atan": (1, sp.atan, "sp.atan({0})"),
    "asinh": (1, sp.asinh, "sp.asinh({0})"),
    "acosh": (1, lambda a: sp.acosh(2 + a ** 2), "sp.acosh(2 + {0}**2)"),
    "atanh": (1, lambda a: sp.atanh(sp.tanh(a) / 2), "sp.atanh(sp.tanh({0}) / 2)"),
    "atan2": (2, sp.atan2, "sp.atan2({0}, {1})"),
    "sec": (1, lambda a: sp.sec(sp.tanh(a)), "sp.sec(sp.tanh({0}))"),
    "cot": (1, lambda a: sp.cot(1 + sp.tanh(a) / 2), "sp.cot(1 + sp.tanh({0}) / 2)"),
    "sinc": (1, sp.sinc, "sp.sinc({0})"),
    # special functions inside their domains (besselj/besseli stay out: the CuPy target refuses them)
    "erf": (1, sp.erf, "sp.erf({0})"),
    "loggamma": (1, lambda a: sp.loggamma(1 + a ** 2), "sp.loggamma(1 + {0}**2)"),
    "beta": (2, lambda a, b: sp.beta(1 + a ** 2, 1 + b ** 2), "sp.beta(1 + {0}**2, 1 + {1}**2)"),
    "expint": (1, lambda a: sp.expint(2, 1 + a ** 2), "sp.expint(2, 1 + {0}**2)"),
    "lambertw": (1, lambda a: sp.LambertW(1 + sp.tanh(a)), "sp.LambertW(1 + sp.tanh({0}))"),
    "abs": (1, sp.Abs, "sp.Abs({0})"),
    "sign_mul": (2, lambda a, b: sp.sign(a) * b, "sp.sign({0}) * {1}"),
    "max": (2, sp.Max, "sp.Max({0}, {1})"),
    "min": (2, sp.Min, "sp.Min({0}, {1})"),
    "max3": (3, sp.Max, "sp.Max({0}, {1}, {2})"),
    "relu": (1, lambda a: sp.Max(a, 0), "sp.Max({0}, 0)"),
    "min_const": (1, lambda a: sp.Min(a, 1), "sp.Min({0}, 1)"),
    "heaviside_mul": (2, lambda a, b: sp.Heaviside(a) * b, "sp.Heaviside({0}) * {1}"),
    "heaviside0_mul": (2, lambda a, b: sp.Heaviside(a, 0) * b, "sp.Heaviside({0}, 0) * {1}"),
    "heaviside_add": (2, lambda a, b: sp.Heaviside(a, 1) + b, "sp.Heaviside({0}, 1) + {1}"),
    "piecewise": (2, lambda a, b: sp.Piecewise((a, b > 0), (-a, True)), "sp.Piecewise(({0}, {1} > 0), (-{0}, True))"),
    "piecewise_cmp": (3, lambda a, b, c: sp.Piecewise((a, b <= c), (c * a, True)),
                      "sp.Piecewise(({0}, {1} <= {2}), ({2} * {0}, True))"),
    "piecewise_logic": (3, lambda a, b, c: sp.Piecewise((a * b, sp.And(a > 0, b < c)),
                                                        (a - c, sp.Or(b >= 1, sp.Not(c > -1))),
                                                        (c ** 2, sp.Ne(a, b)), (b, True)),
                        "sp.Piecewise(({0} * {1}, sp.And({0} > 0, {1} < {2})), ({0} - {2}, sp.Or({1} >= 1, "
                        "sp.Not({2} > -1))), ({2}**2, sp.Ne({0}, {1})), ({1}, True))"),
    "piecewise_eq": (2, lambda a, b: sp.Piecewise((b, sp.Eq(a, 1)), (a * b, a < b), (b - a, True)),
                     "sp.Piecewise(({1}, sp.Eq({0}, 1)), ({0} * {1}, {0} < {1}), ({1} - {0}, True))"),
    "guard_log": (1, lambda a: sp.Piecewise((sp.log(a), a > 0), (a, True)),
                  "sp.Piecewise((sp.log({0}), {0} > 0), ({0}, True))"),
    "guard_xlogx": (1, lambda a: sp.Piecewise((a * sp.log(a), a > 0), (0, True)),
                    "sp.Piecewise(({0} * sp.log({0}), {0} > 0), (0, True))"),
    "guard_sqrt": (1, lambda a: sp.Piecewise((sp.sqrt(a), a > 0), (-a, True)),
                   "sp.Piecewise((sp.sqrt({0}), {0} > 0), (-{0}, True))"),
    "guard_max_sqrt": (1, lambda a: sp.Max(sp.sqrt(sp.Abs(a)), 1) + a,   # sqrt' = inf at 0, not chosen
                       "sp.Max(sp.sqrt(sp.Abs({0})), 1) + {0}"),
    "complex_parts": (1, lambda a: sp.re(w) * a + sp.im(w) - sp.arg(w), "sp.re(w) * {0} + sp.im(w) - sp.arg(w)"),
    "conjugate": (1, lambda a: sp.conjugate(w) * a, "sp.conjugate(w) * {0}"),
    "sigmoid": (1, _sig, "1 / (1 + sp.exp(-{0}))"),
    "softplus": (1, lambda a: sp.log(1 + sp.exp(a)), "sp.log(1 + sp.exp({0}))"),
    "log_sigmoid": (1, lambda a: sp.log(_sig(a)), "sp.log(1 / (1 + sp.exp(-{0})))"),
    "log_one_minus_sigmoid": (1, lambda a: sp.log(1 - _sig(6 * sp.tanh(a))),
                              "sp.log(1 - 1 / (1 + sp.exp(-6 * sp.tanh({0}))))"),
    "logsumexp2": (2, lambda a, b: sp.log(sp.exp(a) + sp.exp(b)), "sp.log(sp.exp({0}) + sp.exp({1}))"),
    "sigmoid_ratio": (2, lambda a, b: (a + _sig(b)) / (_sig(a) + (a + b) ** 2 + 1),
                      "({0} + 1 / (1 + sp.exp(-{1}))) / (1 / (1 + sp.exp(-{0})) + ({0} + {1})**2 + 1)"),
}
_CONST_OPS = {
    "add_const": (lambda a, c: a + c, "{0} + {1}"),
    "mul_const": (lambda a, c: c * a, "{1} * {0}"),
}
_SCALAR_NAMES = sorted(SCALAR_OPS) + sorted(_CONST_OPS)

# how a scalar symbol is bound: (kind, shape); the first kinds are the simplest, shrinking's goal
_BINDINGS = ["array", "float", "row", "0d", "row2d", "col", "npfloat", "int"]
_SHAPES = {"array": (2, 3), "row": (3,), "row2d": (1, 3), "col": (2, 1), "0d": ()}


def _values(rng, shape):
    return rng.uniform(0.3, 1.5, shape) * rng.choice([-1.0, 1.0], shape)


def _bind_scalar(kind, rng):
    if kind in _SHAPES:
        return np.asarray(_values(rng, _SHAPES[kind]), dtype=np.float64)
    if kind == "float":
        return float(_values(rng, ()))
    if kind == "npfloat":
        return np.float64(_values(rng, ()))
    return int(rng.choice([-2, -1, 0, 1, 2, 3]))  # "int": kinks, ties and guards at 0 included


def _draw_wrt(draw, syms):
    """None (the default: every symbol) or a non-empty subset, in a drawn order."""
    if draw(st.booleans()):
        return None
    chosen = [s for s in syms if draw(st.booleans())] or [syms[0]]
    return draw(st.permutations(chosen))


def _recent(draw, nodes):
    """One of ``nodes``, shrinking towards the newest (so that minimal cases are short chains)."""
    return nodes[len(nodes) - 1 - draw(st.integers(0, len(nodes) - 1))]


@st.composite
def scalar_cases(draw, max_steps=8):
    clear_cache()  # so that a node is as slow to build every time it is drawn (see Program.add)
    prog = Program(_SCALAR_HEADER, [x, y, z])
    for _ in range(draw(st.integers(0, max_steps))):  # 0 steps: the model is the symbol z
        name = draw(st.sampled_from(_SCALAR_NAMES))
        pick = lambda: _recent(draw, prog.pool)  # noqa: E731
        if name in _CONST_OPS:
            build, template = _CONST_OPS[name]
            a = pick()
            c, c_src = draw(st.sampled_from(_CONSTS))
            prog.add(lambda: build(a.expr, c), template, a, Node(c, c_src))
        else:
            arity, build, template = SCALAR_OPS[name]
            args = [pick() for _ in range(arity)]
            prog.add(lambda: build(*(a.expr for a in args)), template, *args)
    out = prog.pool[-1]
    used = {id(k) for n in prog.steps for k in n.deps}
    sinks = [n for n in prog.steps if id(n) not in used and n is not out]
    if sinks:  # every step's result reaches the output
        out = prog.add(lambda: sp.Add(*(n.expr for n in sinks), out.expr), " + ".join("{%d}" % i for i in range(len(sinks) + 1)),
                       *sinks, out)
    syms = list(symgrad.Model(out.expr).inputs)
    assume(syms)
    wrt = _draw_wrt(draw, syms)
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    inputs = {str(s): _bind_scalar(draw(st.sampled_from(_BINDINGS)), rng) for s in syms}
    return Case(prog, out, wrt, inputs)


# -- matrix models ----------------------------------------------------------------------------
N, d = sp.symbols("N d")
A, B = sp.MatrixSymbol("A", N, d), sp.MatrixSymbol("B", N, d)
W, U = sp.MatrixSymbol("W", d, d), sp.MatrixSymbol("U", d, N)
u, v = sp.MatrixSymbol("u", d, 1), sp.MatrixSymbol("v", N, 1)
b = sp.MatrixSymbol("b", 1, d)
P, Q = sp.MatrixSymbol("P", 2, 3), sp.MatrixSymbol("Q", 3, 2)
r, q = sp.MatrixSymbol("r", 1, 3), sp.MatrixSymbol("q", 2, 1)
s, t = sp.symbols("s t")
_MATRIX_LEAVES = [A, W, u, b, v, s, P, r, q, t, B, U, Q]
_MATRIX_HEADER = ['N, d = sp.symbols("N d")', 's, t = sp.symbols("s t")'] + [
    f'{M.name} = sp.MatrixSymbol("{M.name}", {M.shape[0]}, {M.shape[1]})'
    for M in sorted((L for L in _MATRIX_LEAVES if isinstance(L, sp.MatrixSymbol)), key=lambda L: L.name)]
_DIMS = [(N, "N"), (d, "d"), (sp.Integer(2), "2"), (sp.Integer(3), "3"), (sp.Integer(1), "1")]

# elementwise functions for applyfunc: (build, source); in the second list "{0}" is a scalar node
ELEMENTWISE = [
    (sp.tanh, "sp.tanh"), (sp.exp, "sp.exp"), (sp.sin, "sp.sin"),
    (lambda e: sp.Max(e, 0), "lambda e: sp.Max(e, 0)"),
    (lambda e: sp.Min(e, 1), "lambda e: sp.Min(e, 1)"),
    (_sig, "lambda e: 1 / (1 + sp.exp(-e))"),
    (lambda e: sp.log(1 + sp.exp(e)), "lambda e: sp.log(1 + sp.exp(e))"),
    # bounded: for t > ~20 the tape's naive 1 - sigmoid(t) cancels, the compiler's softplus does not
    (lambda e: sp.log(1 - _sig(6 * sp.tanh(e))), "lambda e: sp.log(1 - 1 / (1 + sp.exp(-6 * sp.tanh(e))))"),
    (lambda e: e ** 2, "lambda e: e**2"), (lambda e: e ** 3 - e, "lambda e: e**3 - e"),
    (sp.Abs, "sp.Abs"), (lambda e: sp.log(1 + e ** 2), "lambda e: sp.log(1 + e**2)"),
    (lambda e: sp.sqrt(1 + e ** 2), "lambda e: sp.sqrt(1 + e**2)"),
    (lambda e: sp.sin(e) * e, "lambda e: sp.sin(e) * e"), (sp.atan, "sp.atan"),
    (lambda e: sp.Piecewise((e, e > 0), (e / 10, True)), "lambda e: sp.Piecewise((e, e > 0), (e / 10, True))"),
    (lambda e: sp.Piecewise((sp.log(e), e > 0), (0, True)), "lambda e: sp.Piecewise((sp.log(e), e > 0), (0, True))"),
    (lambda e: sp.Heaviside(e) * e, "lambda e: sp.Heaviside(e) * e"),
    (lambda e: sp.sign(e) * e ** 2, "lambda e: sp.sign(e) * e**2"),
]
ELEMENTWISE_WITH_SCALAR = [
    (lambda e, c: sp.tanh(e) * c, "lambda e: sp.tanh(e) * {0}"),
    (lambda e, c: e ** 2 + c * e, "lambda e: e**2 + {0} * e"),
    (lambda e, c: sp.Max(e, c), "lambda e: sp.Max(e, {0})"),
    (lambda e, c: sp.exp(-(e - c) ** 2), "lambda e: sp.exp(-(e - {0})**2)"),
]
SCALAR_FUNCS = [(sp.tanh, "sp.tanh({0})"), (sp.sin, "sp.sin({0})"), (lambda a: sp.log(1 + a ** 2), "sp.log(1 + {0}**2)"),
                (lambda a: a ** 2, "{0}**2"), (sp.exp, "sp.exp({0})"), (_sig, "1 / (1 + sp.exp(-{0}))"),
                (lambda a: sp.sqrt(1 + a ** 2), "sp.sqrt(1 + {0}**2)"), (lambda a: sp.Max(a, 0), "sp.Max({0}, 0)")]


def _is_mat(n):
    return isinstance(n.expr, sp.MatrixExpr)


def _same(a, b):
    return _is_mat(a) and _is_mat(b) and a.expr.shape == b.expr.shape


def _square(n):
    return _is_mat(n) and n.expr.shape[0] == n.expr.shape[1]


def _col(n):
    return _is_mat(n) and n.expr.shape[1] == 1


def _row(n):
    return _is_mat(n) and n.expr.shape[0] == 1


def _ones(rows, cols):
    (nr, sr), (nc, sc) = rows, cols
    return sp.OneMatrix(nr, nc), f"sp.OneMatrix({sr}, {sc})"


def _matrix_step(draw, prog):
    """One construct applied to nodes of the pool (a no-op when nothing in the pool fits)."""
    pool = prog.pool
    mats = [n for n in pool if _is_mat(n)]
    scalars = [n for n in pool if not _is_mat(n)]

    def choose(cands):
        return _recent(draw, cands) if cands else None

    op = draw(st.sampled_from(MATRIX_OP_NAMES))
    if op == "matmul":
        a = choose([n for n in mats if any(k.expr.shape[0] == n.expr.shape[1] for k in mats)])
        if a:
            c = choose([k for k in mats if k.expr.shape[0] == a.expr.shape[1]])
            prog.add(lambda: a.expr * c.expr, "{0} * {1}", a, c)
    elif op in ("add", "sub", "hadamard"):
        a = choose([n for n in mats if any(_same(n, k) for k in mats)])
        if a:
            c = choose([k for k in mats if _same(a, k)])
            build, template = {"add": (lambda p, q: p + q, "{0} + {1}"), "sub": (lambda p, q: p - q, "{0} - {1}"),
                               "hadamard": (sp.HadamardProduct, "sp.HadamardProduct({0}, {1})")}[op]
            prog.add(lambda: build(a.expr, c.expr), template, a, c)
    elif op == "transpose":
        a = choose(mats)
        prog.add(lambda: a.expr.T, "{0}.T", a)
    elif op == "row_broadcast":  # OneMatrix(n, 1) * row
        a = choose([n for n in mats if _row(n)])
        if a:
            ones, src = _ones(draw(st.sampled_from(_DIMS)), (sp.Integer(1), "1"))
            prog.add(lambda: ones * a.expr, src + " * {0}", a)
    elif op == "col_broadcast":  # column * OneMatrix(1, k)
        a = choose([n for n in mats if _col(n)])
        if a:
            ones, src = _ones((sp.Integer(1), "1"), draw(st.sampled_from(_DIMS)))
            prog.add(lambda: a.expr * ones, "{0} * " + src, a)
    elif op == "row_sums":  # M * OneMatrix(cols, 1)
        a = choose(mats)
        ones, src = sp.OneMatrix(a.expr.shape[1], 1), f"sp.OneMatrix({a.expr.shape[1]}, 1)"
        prog.add(lambda: a.expr * ones, "{0} * " + src, a)
    elif op == "col_sums":  # OneMatrix(1, rows) * M
        a = choose(mats)
        ones, src = sp.OneMatrix(1, a.expr.shape[0]), f"sp.OneMatrix(1, {a.expr.shape[0]})"
        prog.add(lambda: ones * a.expr, src + " * {0}", a)
    elif op == "applyfunc":
        a = choose(mats)
        f, src = draw(st.sampled_from(ELEMENTWISE))
        prog.add(lambda: a.expr.applyfunc(f), "{0}.applyfunc(" + src + ")", a)
    elif op == "applyfunc_scalar":
        a = choose(mats)
        c = choose(scalars)
        f, src = draw(st.sampled_from(ELEMENTWISE_WITH_SCALAR))
        prog.add(lambda: a.expr.applyfunc(lambda e: f(e, c.expr)), "{0}.applyfunc(" + src.replace("{0}", "{1}") + ")", a, c)
    elif op == "scalar_times":
        a = choose(mats)
        c = choose(scalars)
        prog.add(lambda: c.expr * a.expr, "{1} * {0}", a, c)
    elif op == "hadamard_power":
        a = choose(mats)
        k = draw(st.sampled_from([2, 3]))
        prog.add(lambda: sp.HadamardPower(a.expr, k), "sp.HadamardPower({0}, %d)" % k, a)
    elif op == "matpow":
        a = choose([n for n in mats if _square(n)])
        if a:
            prog.add(lambda: sp.MatPow(a.expr, 2), "sp.MatPow({0}, 2)", a)
    elif op == "plus_identity":
        a = choose([n for n in mats if _square(n)])
        if a:
            prog.add(lambda: a.expr + sp.Identity(a.expr.shape[0]), "{0} + sp.Identity(%s)" % (a.expr.shape[0],), a)
    elif op == "trace":
        a = choose([n for n in mats if _square(n)])
        if a:
            prog.add(lambda: sp.Trace(a.expr), "sp.Trace({0})", a)
    elif op == "item_square":  # (E.T*E)[0, 0]
        a = choose([n for n in mats if _col(n)])
        if a:
            prog.add(lambda: (a.expr.T * a.expr)[0, 0], "({0}.T * {0})[0, 0]", a)
    elif op == "item_dot":  # (E.T*F)[0, 0]
        a = choose([n for n in mats if _col(n) and any(_same(n, k) for k in mats)])
        if a:
            c = choose([k for k in mats if _same(a, k)])
            prog.add(lambda: (a.expr.T * c.expr)[0, 0], "({0}.T * {1})[0, 0]", a, c)
    elif op == "item_1x1":
        a = choose([n for n in mats if n.expr.shape == (1, 1)])
        if a:
            prog.add(lambda: a.expr[0, 0], "{0}[0, 0]", a)
    elif op == "total_sum":
        a = choose(mats)
        R, C = a.expr.shape
        prog.add(lambda: (sp.OneMatrix(1, R) * a.expr * sp.OneMatrix(C, 1))[0, 0],
                 f"(sp.OneMatrix(1, {R}) * {{0}} * sp.OneMatrix({C}, 1))[0, 0]", a)
    elif op == "logsumexp":
        a = choose(mats)
        R, C = a.expr.shape
        prog.add(lambda: sp.log((sp.OneMatrix(1, R) * a.expr.applyfunc(sp.exp) * sp.OneMatrix(C, 1))[0, 0]),
                 f"sp.log((sp.OneMatrix(1, {R}) * {{0}}.applyfunc(sp.exp) * sp.OneMatrix({C}, 1))[0, 0])", a)
    elif op == "row_logsumexp":
        a = choose(mats)
        C = a.expr.shape[1]
        prog.add(lambda: (a.expr.applyfunc(sp.exp) * sp.OneMatrix(C, 1)).applyfunc(sp.log),
                 f"({{0}}.applyfunc(sp.exp) * sp.OneMatrix({C}, 1)).applyfunc(sp.log)", a)
    elif op == "scalar_func":
        c = choose(scalars)
        f, src = draw(st.sampled_from(SCALAR_FUNCS))
        prog.add(lambda: f(c.expr), src, c)
    elif op in ("scalar_add", "scalar_mul"):
        a, c = choose(scalars), choose(scalars)
        prog.add(lambda: a.expr + c.expr if op == "scalar_add" else a.expr * c.expr,
                 "{0} + {1}" if op == "scalar_add" else "{0} * {1}", a, c)


MATRIX_OP_NAMES = ["matmul", "add", "sub", "hadamard", "transpose", "row_broadcast", "col_broadcast", "row_sums",
                   "col_sums", "applyfunc", "applyfunc_scalar", "scalar_times", "hadamard_power", "matpow",
                   "plus_identity", "trace", "item_square", "item_dot", "item_1x1", "total_sum", "logsumexp",
                   "row_logsumexp", "scalar_func", "scalar_add", "scalar_mul"]


def _total_sum(prog, n):
    R, C = n.expr.shape
    return prog.add(lambda: (sp.OneMatrix(1, R) * n.expr * sp.OneMatrix(C, 1))[0, 0],
                    f"(sp.OneMatrix(1, {R}) * {{0}} * sp.OneMatrix({C}, 1))[0, 0]", n)


def _collect_sinks(prog, made, out):
    """Make every step reach the output: results nobody used are added in (matrices of the
    output's shape as they are, others summed to a scalar; scalars times a matrix of ones)."""
    used = {id(k) for n in prog.steps for k in n.deps}
    sinks = [n for n in made if id(n) not in used and n is not out]
    if not sinks:
        return out
    same = [n for n in sinks if _is_mat(out) and _same(n, out)]
    scalars = [n if not _is_mat(n) else _total_sum(prog, n) for n in sinks if n not in same]
    terms = [out, *same]
    if not _is_mat(out):
        terms += scalars
        return prog.add(lambda: sp.Add(*(n.expr for n in terms)), " + ".join("{%d}" % i for i in range(len(terms))), *terms)
    src = " + ".join("{%d}" % i for i in range(len(terms)))
    if scalars:
        R, C = out.expr.shape
        k = len(terms)
        src += " + (" + " + ".join("{%d}" % (k + i) for i in range(len(scalars))) + f") * sp.OneMatrix({R}, {C})"
        return prog.add(lambda: sp.MatAdd(*(n.expr for n in terms), sp.Add(*(n.expr for n in scalars)) * sp.OneMatrix(R, C)),
                        src, *terms, *scalars)
    return prog.add(lambda: sp.MatAdd(*(n.expr for n in terms)), src, *terms)


@st.composite
def matrix_cases(draw, max_steps=8):
    clear_cache()
    prog = Program(_MATRIX_HEADER, _MATRIX_LEAVES)
    n_leaves = len(prog.pool)
    for _ in range(draw(st.integers(1, max_steps))):
        _matrix_step(draw, prog)
    made = prog.pool[n_leaves:]
    out = made[-1] if made else prog.pool[draw(st.integers(0, n_leaves - 1))]  # a bare leaf: X -> X
    out = _collect_sinks(prog, made, out)
    if draw(st.booleans()) and _is_mat(out) and out.expr.shape != (1, 1):  # a scalar loss of it
        R, C = out.expr.shape
        out = prog.add(lambda: (sp.OneMatrix(1, R) * out.expr * sp.OneMatrix(C, 1))[0, 0],
                       f"(sp.OneMatrix(1, {R}) * {{0}} * sp.OneMatrix({C}, 1))[0, 0]", out)
    try:
        syms = list(symgrad.Model(out.expr).inputs)
    except symgrad.SymgradError as exc:  # OneMatrix(N, 1) * r in a model without an N-sized input
        assume("is not a dimension of any MatrixSymbol input" not in str(exc))
        raise
    assume(syms)
    wrt = _draw_wrt(draw, syms)
    sizes = {N: draw(st.sampled_from([2, 3, 4])), d: draw(st.sampled_from([2, 3]))}
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    inputs = {}
    for sym in syms:
        if isinstance(sym, sp.MatrixSymbol):
            inputs[str(sym)] = _values(rng, tuple(int(sp.sympify(k).subs(sizes)) for k in sym.shape))
        else:
            inputs[str(sym)] = _bind_scalar(draw(st.sampled_from(["float", "0d", "npfloat", "int"])), rng)
    return Case(prog, out, wrt, inputs)


# -- the checks -------------------------------------------------------------------------------
class CompileTimeout(AssertionError):
    """The compiler did not return in time (a fold that loops): a failure, not a hung run."""


class SlowSympy(Exception):
    """SymPy's own evaluation of a drawn node took too long: the case is rejected."""


@contextlib.contextmanager
def time_limit(seconds, what, exc=CompileTimeout):
    """Raise ``exc`` in the block after ``seconds`` (main thread only, where SIGALRM is)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def _raise(signum, frame):
        raise exc(f"{what} took more than {seconds} s")
    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@contextlib.contextmanager
def quiet():
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def shim_cupy():
    """The NumPy stand-in for ``cupy`` while a CuPy module is generated, loaded and run."""
    saved = sys.modules.get("cupy")
    sys.modules["cupy"] = fake_cupy()
    FakeElementwiseKernel.registry = []
    try:
        yield
    finally:
        FakeElementwiseKernel.registry = []
        if saved is None:
            sys.modules.pop("cupy", None)
        else:
            sys.modules["cupy"] = saved


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def rel(got, want):
    """||got - want|| / max(||want||, FLOOR); a NaN or inf must be matched exactly (else inf)."""
    got, want = _f64(got), _f64(want)
    if got.shape != want.shape:
        return np.inf
    if not (np.all(np.isfinite(got)) and np.all(np.isfinite(want))):
        return 0.0 if np.array_equal(got, want, equal_nan=True) else np.inf
    return float(np.linalg.norm(got - want) / max(float(np.linalg.norm(want)), FLOOR))


def reference(case):
    """The tape's value and gradients; skips the case where they are not finite numbers."""
    with quiet():
        t_value, t_grads = tape.value_and_grad(case.model, **case.inputs)
    finite = [np.all(np.isfinite(_f64(a))) and np.max(np.abs(_f64(a)), initial=0.0) < BIG
              for a in (t_value, *t_grads.values())]
    assume(all(finite))
    return t_value, t_grads


def _owned(value, grads, inputs):
    """Returned arrays are the caller's: no view of an input or of each other, writable."""
    outs = [("value", value)] + [(f"grad {k}", g) for k, g in grads.items()]
    arrays = [(k, a) for k, a in outs if isinstance(a, np.ndarray)]
    for k, a in arrays:
        assert a.flags.writeable, f"{k} is read-only"
        for name, inp in inputs.items():
            assert not (isinstance(inp, np.ndarray) and np.shares_memory(a, inp)), f"{k} is a view of input {name}"
    for i, (k1, a1) in enumerate(arrays):
        for k2, a2 in arrays[i + 1:]:
            assert not np.shares_memory(a1, a2), f"{k1} and {k2} share memory"


def compare_module(case, mod, t_value, t_grads, target):
    """``mod``'s value, forward and gradients against the tape's (target names the module)."""
    model, inputs = case.model, case.inputs
    with quiet():
        value, grads = mod.value_and_grad(**inputs)
        fwd = mod.forward(**inputs)
    want_keys = {str(w) for w in model.wrt}
    assert want_keys, "a model with symbols has a non-empty wrt"
    assert set(grads) == want_keys, f"{target}: gradient keys {sorted(grads)} != wrt {sorted(want_keys)}"
    assert np.shape(value) == np.shape(t_value), f"{target}: value shape {np.shape(value)} != tape {np.shape(t_value)}"
    assert rel(value, t_value) <= TAPE_RTOL, f"{target}: value differs from the tape by {rel(value, t_value):.3g}"
    assert np.shape(fwd) == np.shape(t_value), f"{target}: forward shape {np.shape(fwd)} != tape {np.shape(t_value)}"
    assert rel(fwd, t_value) <= TAPE_RTOL, f"{target}: forward differs from the tape by {rel(fwd, t_value):.3g}"
    for name, t_g in t_grads.items():
        g = grads[name]
        assert np.shape(g) == np.shape(inputs[name]), \
            f"{target}: grad {name} has shape {np.shape(g)}, input has {np.shape(inputs[name])}"
        assert np.asarray(g).dtype == np.float64, f"{target}: grad {name} has dtype {np.asarray(g).dtype}"
        err = rel(g, t_g)
        assert err <= TAPE_RTOL, f"{target}: grad {name} differs from the tape by {err:.3g}"
    assert np.asarray(value).dtype == np.float64, f"{target}: value has dtype {np.asarray(value).dtype}"
    _owned(value, grads, inputs)
    return value, grads


@contextlib.contextmanager
def _watch_ties(found):
    """Record in ``found`` whether a Max or Min of the tape meets an exact tie on the way."""
    saved = {k: tape.RULES[k] for k in [(sp.Max, 2), (sp.Min, 2)]}

    def watched(fwd):
        def run(a, b):
            found.append(bool(np.any(np.asarray(a) == np.asarray(b))))
            return fwd(a, b)
        return run
    try:
        for k, (fwd, *vjps) in saved.items():
            tape.RULES[k] = (watched(fwd), *vjps)
        yield found
    finally:
        tape.RULES.update(saved)


def has_exact_tie(case):
    """Max(x, Abs(x)) ties for every x > 0: its derivative there is 0 by the documented policy
    (tape and compiler agree on that), but finite differences see the derivative of x."""
    found = []
    with _watch_ties(found), quiet():
        tape.forward(case.model, **case.inputs)
    return any(found)


FD_STEPS = (1e-5, 1e-7, 1e-3)  # relative steps, tried in turn until one agrees


def fd_check(case, t_grads):
    """The tape's gradients == central differences of the tape's forward.  Each step size gives
    two estimates (h and 2h), whose disagreement -- truncation, a kink within a step -- widens the
    tolerance; the next step size is tried where one does not agree (a fast oscillation such as
    sin of a huge argument aliases at 1e-5 yet is resolved at 1e-7), and the gradient passes if
    one agrees."""
    model, inputs = case.model, case.inputs
    eps = np.finfo(np.float64).eps
    with quiet():
        f0 = _f64(tape.forward(model, **inputs))
        for name, g in t_grads.items():
            x0 = _f64(inputs[name])
            worst = []
            for rel_step in FD_STEPS:
                d1, d2, noise = np.zeros_like(x0), np.zeros_like(x0), np.zeros_like(x0)
                for idx in np.ndindex(x0.shape):
                    h = rel_step * max(1.0, abs(float(x0[idx])))
                    fs = []
                    for step in (h, -h, 2 * h, -2 * h):
                        xp = x0.copy()
                        xp[idx] += step
                        fs.append(float(np.sum(_f64(tape.forward(model, **{**inputs, name: xp})))))
                    d1[idx] = (fs[0] - fs[1]) / (2 * h)
                    d2[idx] = (fs[2] - fs[3]) / (4 * h)
                    noise[idx] = 8 * eps * (1 + float(np.sum(np.abs(f0)))) / h
                slack = 10 * np.linalg.norm(d1 - d2) + np.linalg.norm(noise)
                err = np.linalg.norm(_f64(g) - d1)
                scale = max(float(np.linalg.norm(d1)), FLOOR)
                if err <= FD_RTOL * scale + slack:
                    break
                worst.append(f"{err / scale:.3g} at step {rel_step:g} (slack {slack / scale:.3g})")
            else:
                raise AssertionError(f"tape grad {name} differs from finite differences by " + ", ".join(worst))


# refusals the README documents (a clear error naming the construct, not a wrong answer): the case
# is skipped.  SymPy writes a product over an integer dimension (v * r * Q with Q 3 x 2) out entry by
# entry; symgrad reads such Sums back only when the pattern is one matrix product.
KNOWN_LIMITS = ("SymPy writes a product over an integer dimension out entry by entry",)


@contextlib.contextmanager
def documented_refusals_skip():
    try:
        yield
    except symgrad.SymgradError as exc:
        assume(not any(k in str(exc) for k in KNOWN_LIMITS))
        raise


def compile_numpy(case, emit=None):
    with time_limit(COMPILE_TIMEOUT_S, "symgrad.compile"), documented_refusals_skip():
        return symgrad.compile(case.model, emit=emit)


def compile_cupy(case, emit=None):
    with time_limit(COMPILE_TIMEOUT_S, "symgrad.generate(target='cupy')"), documented_refusals_skip():
        return load_source(symgrad.generate(case.model, "cupy", emit), "fuzz_cupy")


def _run_numpy(case):
    t_value, t_grads = reference(case)
    mod = compile_numpy(case)
    compare_module(case, mod, t_value, t_grads, "numpy")
    # finite differences need a smooth neighbourhood: not on a Python int (a kink, often), nor
    # where a Max/Min argument ties with another exactly
    if not any(type(a) is int for a in case.inputs.values()) and not has_exact_tie(case):
        fd_check(case, t_grads)


def _run_numba(case):
    """The Numba target on the same case: these small inputs run its compiled twin where the
    function has one (else its loops): == the tape, and no twin left uncompiled (_BROKEN)."""
    pytest.importorskip("numba")
    t_value, t_grads = reference(case)
    with time_limit(COMPILE_TIMEOUT_S, "symgrad.generate(target='numba')"), documented_refusals_skip():
        mod = load_source(symgrad.generate(case.model, "numba"), "fuzz_numba")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the twin's own warning is checked below
        compare_module(case, mod, t_value, t_grads, "numba")
    assert not getattr(mod, "_BROKEN", ()), f"numba: a twin did not compile: {mod._BROKEN}"
    event("numba: twin" if "_vag_small" in vars(mod) else "numba: no twin (loops)")


def _run_cupy(case):
    t_value, t_grads = reference(case)
    with shim_cupy():
        mod = compile_cupy(case)
        compare_module(case, mod, t_value, t_grads, "cupy-shim")


class _OnTensors:
    """A torch module in compare_module's terms: the case's inputs as tensors (Python numbers as
    they are), its results as NumPy arrays."""

    def __init__(self, mod):
        self.mod = mod

    def _tensors(self, inputs):
        import torch
        return {k: v if type(v) in (bool, int, float) else torch.from_numpy(np.array(v)) for k, v in inputs.items()}

    def value_and_grad(self, **inputs):
        value, grads = self.mod.value_and_grad(**self._tensors(inputs))
        return value.numpy(), {k: g.numpy() for k, g in grads.items()}

    def forward(self, **inputs):
        return self.mod.forward(**self._tensors(inputs)).numpy()

    def vjp(self, u, /, **inputs):
        value, g = self.mod.vjp(self._tensors({"u": u})["u"], **self._tensors(inputs))
        return value.numpy(), {k: a.numpy() for k, a in g.items()}

    def jvp(self, t, /, **inputs):
        value, tangent = self.mod.jvp(self._tensors(t), **self._tensors(inputs))
        return value.numpy(), tangent.numpy()

    def hvp(self, t, /, **inputs):
        value, g, hv = self.mod.hvp(self._tensors(t), **self._tensors(inputs))
        return value.numpy(), {k: a.numpy() for k, a in g.items()}, {k: a.numpy() for k, a in hv.items()}


def compile_torch(case, emit=None):
    """The torch module on tensors (_OnTensors), or None where it refuses an op by name."""
    pytest.importorskip("torch")
    with time_limit(COMPILE_TIMEOUT_S, "symgrad.generate(target='torch')"), documented_refusals_skip():
        try:
            source = symgrad.generate(case.model, "torch", emit)
        except symgrad.SymgradError as exc:
            assert "cannot be compiled for target torch: " in str(exc), str(exc)
            event("torch: refused (an op without a torch form)")
            return None
    return _OnTensors(load_source(source, "fuzz_torch"))


def _run_torch(case):
    """The torch target on the same case: == the tape, or a refusal naming the op and the target."""
    t_value, t_grads = reference(case)
    mod = compile_torch(case)
    if mod is not None:
        compare_module(case, mod, t_value, t_grads, "torch")


# -- the tests --------------------------------------------------------------------------------
def _found(build, template, inputs):
    """A case the long profile found once, kept as an explicit example of every run."""
    prog = Program(_SCALAR_HEADER, [x, y, z])
    return Case(prog, prog.add(build, template, prog.pool[0]), None, inputs)


# a value shared by guards with different conditions: the sum of the masked contributions met
# the value's NaN partial unmasked (tests/test_trust.py has the regression test)
FOUND = [
    _found(lambda: sp.Piecewise((sp.sqrt(x), x > 0), (0, True)) + sp.Piecewise((sp.sqrt(x), x > 1), (0, True)),
           "sp.Piecewise((sp.sqrt({0}), {0} > 0), (0, True)) + sp.Piecewise((sp.sqrt({0}), {0} > 1), (0, True))",
           {"x": np.array([-0.9, 0.25, 4.0])}),
    _found(lambda: sp.Piecewise((sp.sqrt(v := sp.Piecewise((x * sp.log(x), x > 0), (0, True))), v > 0), (-v, True)),
           "sp.Piecewise((sp.sqrt(v := sp.Piecewise(({0} * sp.log({0}), {0} > 0), (0, True))), v > 0), (-v, True))",
           {"x": np.array([-1.3, 0.5, 2.0])}),
    # Abs'(0) = 0 times atan2's NaN partials at (0, 0): the 0 is a strong one (masked)
    _found(lambda: sp.Abs(sp.atan2(x, x)), "sp.Abs(sp.atan2({0}, {0}))", {"x": np.array([0.0, 1.0, -2.0])}),
    # atan2's 0/0 partials at the origin times the 0 derivative of sqrt(1 + t**2) at t = 0
    _found(lambda: sp.sqrt(1 + sp.atan2(x, x) ** 2), "sp.sqrt(1 + sp.atan2({0}, {0})**2)", {"x": np.array([0.0, 1.0])}),
    # the oracle's own: sin of a huge argument (~6e4, slope ~4e4) aliases at the relative step 1e-5;
    # the finite differences try smaller steps
    _found(lambda: sp.acos(sp.sin((1 + ((1 + ((1 + x ** 2) ** sp.Rational(3, 2)) ** 2) ** sp.Rational(3, 2)) ** 2)
                                  ** sp.Rational(3, 2)) / 2),
           "sp.acos(sp.sin((1 + ((1 + ((1 + {0}**2)**sp.Rational(3, 2))**2)**sp.Rational(3, 2))**2)"
           "**sp.Rational(3, 2)) / 2)",
           {"x": np.array([[1.064354024785745, 0.6237440565166443, 0.3491682287234336],
                           [0.3198331626342349, 1.275924287040327, 1.395306692733266]])}),
]


def found_examples(test):
    for case in FOUND:
        test = example(case=case)(test)
    return test


@FUZZ
@given(case=scalar_cases())
@found_examples
def test_scalar_models_numpy(case):
    _run_numpy(case)


@FUZZ
@given(case=scalar_cases())
@found_examples
def test_scalar_models_cupy_shim(case):
    _run_cupy(case)


@FUZZ
@given(case=scalar_cases())
@found_examples
def test_scalar_models_torch(case):
    _run_torch(case)


@FUZZ_MATRIX
@given(case=matrix_cases())
def test_matrix_models_numpy(case):
    _run_numpy(case)


@FUZZ_NUMBA
@given(case=scalar_cases())
def test_scalar_models_numba(case):
    _run_numba(case)


@FUZZ_NUMBA
@given(case=matrix_cases())
def test_matrix_models_numba(case):
    _run_numba(case)


@FUZZ_MATRIX
@given(case=matrix_cases())
def test_matrix_models_cupy_shim(case):
    _run_cupy(case)


@FUZZ_MATRIX
@given(case=matrix_cases())
def test_matrix_models_torch(case):
    _run_torch(case)


def _run_dask(case):
    """A random matrix model on the Dask target (one row per block): refused as coupling the rows,
    or equal to the tape on the whole data -- a model wrongly taken as a sum over rows fails here."""
    dask = pytest.importorskip("dask")
    # the data are what is not differentiated: keep the matrices with N rows out of wrt
    wrt = [s for s in case.model.wrt if not (isinstance(s, sp.MatrixSymbol) and s.shape[0] == N)]
    assume(wrt)
    case = Case(case.program, case.out, wrt, case.inputs)
    t_value, t_grads = reference(case)
    with time_limit(COMPILE_TIMEOUT_S, "symgrad.generate(target='dask')"), documented_refusals_skip():
        try:
            source = symgrad.generate(case.model, "dask")
        except symgrad.SymgradError as exc:
            assert "the rows do not split into blocks: " in str(exc), str(exc)
            event("dask: refused (couples the rows)")
            return
    mod = load_source(source, "fuzz_dask")
    assume(mod.DATA)  # a model with no data runs as one block: nothing to split
    event(f"dask: split, the blocks' values combine by {mod.COMBINE}, data {len(mod.DATA)} inputs")
    with dask.config.set(scheduler="synchronous"):
        compare_module(case, mod, t_value, t_grads, "dask")


@FUZZ_DERIV
@given(case=matrix_cases())
def test_matrix_models_dask(case):
    _run_dask(case)


# -- beyond the gradient: vjp, jvp, hvp of the same random models ---------------------------------
def check_derivatives(case, target):
    """``vjp`` with a random cotangent and ``jvp`` with random tangents == the tape's exact VJP and
    Jacobian; ``hvp`` == central differences of the tape's gradient where they are reliable (not
    on Python ints, not at a Max/Min tie; two step sizes that agree, else a kink is within a step)."""
    t_value, t_grads = reference(case)
    model, inputs = case.model, case.inputs
    mod = {"numpy": compile_numpy, "cupy": compile_cupy, "torch": compile_torch}[target](case, "vjp,jvp,hvp")
    if mod is None:  # refused by name (compile_torch)
        return
    rng = np.random.default_rng(0)
    u = rng.standard_normal(np.shape(t_value))
    t = {k: rng.standard_normal(np.shape(inputs[k])) for k in t_grads}
    with quiet():
        value, g = mod.vjp(u, **inputs)
        want = tape.vjp(model, u, **inputs)[1]
        _, tangent = mod.jvp(t, **inputs)
        want_t = tape.jvp(model, t, **inputs)[1]
        _, grads, hv = mod.hvp(t, **inputs)
    assert rel(value, t_value) <= TAPE_RTOL, f"{target}: vjp value"
    for k in want:
        assert rel(g[k], want[k]) <= TAPE_RTOL, f"{target}: vjp of {k} differs from the tape by {rel(g[k], want[k]):.3g}"
        assert rel(grads[k], t_grads[k]) <= TAPE_RTOL, f"{target}: hvp's gradient of {k} differs from the tape"
    assert rel(tangent, want_t) <= TAPE_RTOL, f"{target}: jvp differs from the tape by {rel(tangent, want_t):.3g}"
    if any(type(a) is int for a in inputs.values()) or has_exact_tie(case):
        return
    with quiet():
        x64 = {k: _f64(v) for k, v in inputs.items()}
        fd1 = tape.hvp(model, t, step=1e-3, **x64)[2]
        fd2 = tape.hvp(model, t, step=2.5e-4, **x64)[2]
    for k in fd1:
        spread = rel(fd1[k], fd2[k])
        if not np.isfinite(spread) or spread > 1e-4:  # a kink or a singularity within a step
            continue
        err = rel(hv[k], fd2[k])
        assert err <= FD_RTOL + 10 * spread, \
            f"{target}: hvp of {k} differs from differences of the tape's gradient by {err:.3g} (spread {spread:.3g})"


@FUZZ_DERIV
@given(case=scalar_cases())
@found_examples
def test_scalar_derivatives(case):
    check_derivatives(case, "numpy")


@FUZZ_DERIV
@given(case=scalar_cases())
def test_scalar_derivatives_torch(case):
    check_derivatives(case, "torch")


@FUZZ_DERIV
@given(case=matrix_cases())
def test_matrix_derivatives(case):
    check_derivatives(case, "numpy")
    with shim_cupy():
        check_derivatives(case, "cupy")


@FUZZ_DERIV
@given(case=matrix_cases())
def test_matrix_derivatives_torch(case):
    check_derivatives(case, "torch")


# -- the fuzzer's own oracles -----------------------------------------------------------------
def test_rel_is_norm_relative_and_nan_aware():
    assert rel(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert rel(np.array([1.0, 2.0 + 1e-9]), np.array([1.0, 2.0])) == pytest.approx(1e-9 / np.sqrt(5))
    assert rel(np.array([np.nan, 2.0]), np.array([1.0, 2.0])) == np.inf
    assert rel(np.array([1.0, 2.0]), np.array([np.nan, 2.0])) == np.inf
    assert rel(np.array([np.nan, 2.0]), np.array([np.nan, 2.0])) == 0.0
    assert rel(np.array([np.inf, 2.0]), np.array([-np.inf, 2.0])) == np.inf
    assert rel(np.ones(3), np.ones((1, 3))) == np.inf  # shapes must agree
    assert rel(1e-12, 0.0) <= 1e-4 and rel(1e-6, 0.0) > 1e-4  # the floor


def test_reproducer_runs_and_rebuilds_the_same_model():
    prog = Program(_SCALAR_HEADER, [x, y, z])
    n = prog.add(lambda: sp.exp(x * y), "sp.exp({0} * {1})", prog.pool[0], prog.pool[1])
    n = prog.add(lambda: n.expr + sp.sin(n.expr), "{0} + sp.sin({0})", n)
    case = Case(prog, n, [x], {"x": np.array([0.5, -1.0]), "y": 2.0})
    env = {}
    exec(repr(case), env)  # noqa: S102 - the snippet a failing case prints
    assert env["model"].expr == case.model.expr and env["model"].wrt == (x,)
    assert env["inputs"]["y"] == 2.0 and env["inputs"]["x"].tolist() == [0.5, -1.0]
    assert set(env["grads"]) == set(env["t_grads"]) == {"x"}


def test_finite_difference_check_catches_a_wrong_tape(monkeypatch):
    prog = Program(_SCALAR_HEADER, [x, y, z])
    n = prog.add(lambda: sp.sin(x) * y, "sp.sin({0}) * {1}", prog.pool[0], prog.pool[1])
    case = Case(prog, n, None, {"x": np.array([0.3, -0.7]), "y": 1.3})
    t_value, t_grads = tape.value_and_grad(case.model, **case.inputs)
    fd_check(case, t_grads)
    with pytest.raises(AssertionError, match="finite differences"):
        fd_check(case, {**t_grads, "x": t_grads["x"] * 1.001})
    wrong = {**t_grads, "y": t_grads["y"] + 1e-3}

    class Wrong:
        value_and_grad = staticmethod(lambda **kw: (t_value.copy(), {k: np.array(g) for k, g in wrong.items()}))
        forward = staticmethod(lambda **kw: t_value.copy())
    with pytest.raises(AssertionError, match="grad y differs from the tape"):
        compare_module(case, Wrong, t_value, t_grads, "fake")


def test_exact_ties_are_detected_and_skip_finite_differences():
    prog = Program(_SCALAR_HEADER, [x, y, z])
    n = prog.add(lambda: sp.Abs(sp.Max(x, sp.Abs(x))), "sp.Abs(sp.Max({0}, sp.Abs({0})))", prog.pool[0])
    tie = Case(prog, n, None, {"x": np.array([0.5, 1.5])})   # Max(x, |x|) == x for x > 0: a tie
    assert has_exact_tie(tie)
    no_tie = Case(prog, n, None, {"x": np.array([-0.5, -1.5])})
    assert not has_exact_tie(no_tie)
    assert tape.RULES[sp.Max, 2][0] is np.maximum  # the watch is undone
    fd_check(no_tie, tape.value_and_grad(no_tie.model, **no_tie.inputs)[1])
