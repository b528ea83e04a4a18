"""The op table: every IR op declared once.

Each :class:`Op` row gives

* ``shape(*arg_shapes, attr)`` -- the static shape rule;
* ``vjp(G, g, out, *args)``     -- the symbolic reverse-mode rule: given the cotangent ``g`` of the
  node ``out``, one cotangent per argument (``None``: no gradient flows).  Rules build IR with the
  graph's builders and never un-broadcast: summing a cotangent down to its argument's shape and
  adding up fan-in is the engine's job (``diff.py``);
* ``code``                      -- the NumPy printing template (``{m}`` is the array module, ``{0}``..
  the argument names); the CuPy target overrides only the entries that differ (``emit.TARGETS``);
* ``ev``                        -- a float function for constant folding (elementwise ops only);
* ``jvp(G, tangents, out, *args)`` -- the forward-mode rule of a non-elementwise op: the tangent
  of ``out`` from its arguments' tangents (``None``: no tangent), for :mod:`symgrad.forward`.  An
  elementwise op needs none: its Jacobian is diagonal, so its VJP rule, given an argument's
  tangent in place of the cotangent, is that argument's share of the output's tangent.  One VJP
  rule per elementwise op thus carries both modes, and the second derivatives built from them.

The rewrites applied as nodes are built (constant folding, identities, stable forms) are not part
of an op's row: they are named functions in :mod:`symgrad.rewrites`, registered per op and phase.

Non-differentiable points: every derivative is 0 at a tie or a kink -- ``Max(x, y)`` passes the
gradient to the strictly larger argument only (so ``Max(x, 0)`` has derivative 0 at 0, like ReLU),
``Abs'(0) = sign(0) = 0``, ``sign``, ``Heaviside`` and comparisons have derivative 0, and
``Piecewise`` differentiates the branch that is selected.  Second derivatives follow: they are
derivatives of these rules, so piecewise-linear ops have second derivative 0 at and away from
their kinks (``sign``'s derivative is 0), and a selection's masks guard every order.  A cotangent
of exactly 0 meeting a partial that is infinite at a finite point (``1/x``, ``log``, ``sqrt`` at 0)
contributes 0, as on the tape: the rules with such partials wrap their products in :func:`strong`.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from functools import reduce
from typing import Callable, NamedTuple

from .ir import ONE, DimProduct, broadcast_shapes, mul_dims
from .errors import SymgradError


@dataclass(frozen=True)
class Op:
    """One construct, everything the compiler needs of it (see the module docstring)."""
    name: str
    shape: Callable
    code: str | Callable | None
    vjp: Callable | None = None
    ev: Callable | None = None
    elementwise: bool = False
    sympy: tuple = ()            # SymPy function classes (by name) that lower to this op, one argument each
    ufunc: str | None = None     # the array-module function that takes out= (buffer reuse), if any
    helper: str | None = None    # module-level helper the templates call, NumPy/CuPy source with {m}
    c: str | None = None         # CUDA C template (elementwise ops: the CuPy target's fused kernels)
    jvp: Callable | None = None  # forward-mode rule (non-elementwise ops; see the module docstring)
    special: str | None = None   # the scipy.special (cupyx.scipy.special) function it calls, if any


OPS: dict[str, Op] = {}


class Masked(NamedTuple):
    """A VJP result for a selected branch: the cotangent ``g`` flows only where ``cond`` is
    ``taken``.  The engine applies the mask once, after the branch's own partial derivatives, so
    that an infinite or NaN partial where the branch is not selected never reaches a gradient."""
    g: object
    cond: object
    taken: bool = True


def _reg(name, shape, code, vjp=None, ev=None, elementwise=False, **fields):
    OPS[name] = Op(name, shape, code, vjp, ev, elementwise, **fields)


def shape_of(name: str, *shapes, attr=None):
    """The shape of ``name(*args)`` from its arguments' shapes (the op's shape rule): what
    :class:`~symgrad.ir.Graph` is given to build nodes with."""
    return OPS[name].shape(*shapes, attr=attr)


def _ew(name, code, vjp, ev=None, **fields):
    """An elementwise op (``ev``: its float function, for constant folding)."""
    _reg(name, _ew_shape, code, vjp, ev, True, **fields)


def _func(name, vjp, ev, *, sympy=(), c=None, **fields):
    """A one-argument function printed ``{m}.<name>(x)`` (NumPy's name), with out=."""
    fields.setdefault("ufunc", name)
    _ew(name, fields.pop("code", f"{{m}}.{name}({{0}})"), vjp, ev, sympy=sympy, c=c, **fields)


def const_value(n):
    """The float value of a constant node (or of a broadcast constant), else None."""
    if n.op == "const":
        return n.attr
    if n.op == "bcast" and n.args[0].op == "const":
        return n.args[0].attr
    return None


# -- elementwise arithmetic --------------------------------------------------------------------
def _ew_shape(*shapes, attr=None):
    return broadcast_shapes(*shapes)


BOOL_OPS = frozenset({"gt", "ge", "lt", "le", "eq", "ne", "and", "or", "not"})


def is_bool(n) -> bool:
    """True when ``n``'s value is boolean: a comparison, logic, a select between booleans, or
    one of those moved about (transposed, broadcast, sliced: a mask crossing into another fused
    kernel as ``mask.T`` stays a bool parameter)."""
    while n.op == "where" or n.op in _MOVES:
        n = n.args[1] if n.op == "where" else n.args[0]
    return n.op in BOOL_OPS


_MOVES = frozenset({"transpose", "bcast", "slice", "entry", "item"})  # ops that only move entries


def strong(G, g, contribution):
    """``contribution`` (the cotangent ``g`` times a partial that can be infinite or NaN at a finite
    point: 1/x, log or sqrt at 0, asin at 1, a pole) made exactly 0 where ``g`` is 0: the tape's
    strong-zero rule, so that a factor 0 upstream (``y*sqrt(x)`` at y = 0) or a branch not taken
    gives 0, never 0 * inf = NaN.  Only the rules with such partials use it: each is a pass more."""
    c = const_value(g)
    if c is not None and c != 0:
        return contribution
    return G.where(G.op("eq", g, G.const(0)), G.const(0), contribution)


def _nonzero(n) -> bool:
    """True for a divisor that is never 0: a nonzero constant or a dimension (N in ``/ N``)."""
    return const_value(n) not in (None, 0) or n.op == "dim"


def _vjp_pow(G, g, out, a, b):
    if b.op == "const":
        c = b.attr
        da = G.mul(g, G.mul(G.const(c), G.op("pow", a, G.const(c - 1))))
        return (da if c >= 1 else strong(G, g, da)), None  # a**(c - 1) is inf at a = 0 for c < 1
    # d a**b / db = a**b log(a), taken as 0 where a**b is 0 (its limit as a -> 0 for b > 0)
    return (strong(G, g, G.mul(g, G.mul(b, G.op("pow", a, G.sub(b, G.const(1)))))),
            strong(G, g, G.mul(g, G.op("powlog", out, a))))


def _zero_grad(G, g, out, *args):
    return (None,) * len(args)


def _vjp_div(G, g, out, a, b):
    da, db = G.div(g, b), G.neg(G.div(G.mul(g, out), b))
    return (da, db) if _nonzero(b) else (strong(G, g, da), strong(G, g, db))


_ew("add", "{0} + {1}", lambda G, g, o, a, b: (g, g), operator.add, ufunc="add", c="({0} + {1})")
_ew("sub", "{0} - {1}", lambda G, g, o, a, b: (g, G.neg(g)), operator.sub, ufunc="subtract", c="({0} - {1})")
_ew("mul", "{0} * {1}", lambda G, g, o, a, b: (G.mul(g, b), G.mul(g, a)),
    operator.mul, ufunc="multiply", c="({0} * {1})")
_ew("div", "{0} / {1}", _vjp_div, operator.truediv, ufunc="divide", c="({0} / {1})")
_ew("neg", "-{0}", lambda G, g, o, a: (G.neg(g),), operator.neg, ufunc="negative", c="(-{0})")
# constant integer exponents print as multiplications in C: see cuda.c_pow
_ew("pow", "{0} ** {1}", _vjp_pow, operator.pow, ufunc="power", c="pow({0}, {1})")
# out * log(a) with 0 where out is 0: the derivative of a**b in b, built only by pow's rule
def _vjp_powlog(G, g, out, p, a):
    """powlog(p, a) = p log(a), 0 where p is 0: its partials, masked the same way."""
    zero = G.op("eq", p, G.const(0))
    return (Masked(strong(G, g, G.mul(g, G.call("log", a))), zero, False),
            Masked(strong(G, g, G.div(G.mul(g, p), a)), zero, False))


_ew("powlog", "_powlog({0}, {1})", _vjp_powlog, c="({0} == (T)0 ? (T)0 : {0} * log({1}))", helper='''
def _powlog(p, a):
    """p * log(a) for p = a**b, taken as 0 where p is 0 (the limit of d a**b / db as a -> 0)."""
    zero = p == 0
    return {m}.where(zero, 0.0, p * {m}.log({m}.where(zero, 1.0, a)))
''')


# -- elementwise functions ---------------------------------------------------------------------
def _one_minus_sq(G, x):
    return G.sub(G.const(1), G.mul(x, x))


_func("exp", lambda G, g, o, x: (G.mul(g, o),), math.exp, sympy=("exp",), c="exp({0})")
_func("log", lambda G, g, o, x: (strong(G, g, G.div(g, x)),), math.log, sympy=("log",), c="log({0})")
_func("log1p", lambda G, g, o, x: (strong(G, g, G.div(g, G.add(G.const(1), x))),), math.log1p, c="log1p({0})",
      sympy=("log1p",))  # sympy.codegen.cfunctions.log1p, and log(1 + x) by rewrites.stabilize.log1p
_func("expm1", lambda G, g, o, x: (G.mul(g, G.add(G.const(1), o)),), math.expm1, c="expm1({0})",
      sympy=("expm1",))  # sympy.codegen.cfunctions.expm1, and exp(x) - 1 by rewrites.stabilize.expm1
_func("sin", lambda G, g, o, x: (G.mul(g, G.call("cos", x)),), math.sin, sympy=("sin",), c="sin({0})")
_func("cos", lambda G, g, o, x: (G.neg(G.mul(g, G.call("sin", x))),), math.cos, sympy=("cos",), c="cos({0})")
_func("tan", lambda G, g, o, x: (G.mul(g, G.add(G.const(1), G.mul(o, o))),), math.tan,
      sympy=("tan",), c="tan({0})")
_func("tanh", lambda G, g, o, x: (G.mul(g, _one_minus_sq(G, o)),), math.tanh, sympy=("tanh",), c="tanh({0})")
_func("sinh", lambda G, g, o, x: (G.mul(g, G.call("cosh", x)),), math.sinh, sympy=("sinh",), c="sinh({0})")
_func("cosh", lambda G, g, o, x: (G.mul(g, G.call("sinh", x)),), math.cosh, sympy=("cosh",), c="cosh({0})")
_func("arcsin", lambda G, g, o, x: (strong(G, g, G.div(g, G.call("sqrt", _one_minus_sq(G, x)))),), math.asin,
      sympy=("asin",), c="asin({0})")
_func("arccos", lambda G, g, o, x: (strong(G, g, G.neg(G.div(g, G.call("sqrt", _one_minus_sq(G, x))))),), math.acos,
      sympy=("acos",), c="acos({0})")
_func("arctan", lambda G, g, o, x: (G.div(g, G.add(G.const(1), G.mul(x, x))),), math.atan,
      sympy=("atan",), c="atan({0})")
_func("arcsinh", lambda G, g, o, x: (G.div(g, G.call("sqrt", G.add(G.const(1), G.mul(x, x)))),), math.asinh,
      sympy=("asinh",), c="asinh({0})")
_func("arccosh", lambda G, g, o, x: (strong(G, g, G.div(g, G.call("sqrt", G.sub(G.mul(x, x), G.const(1))))),), math.acosh,
      sympy=("acosh",), c="acosh({0})")
_func("arctanh", lambda G, g, o, x: (strong(G, g, G.div(g, _one_minus_sq(G, x))),), math.atanh,
      sympy=("atanh",), c="atanh({0})")
_func("sqrt", lambda G, g, o, x: (strong(G, g, G.div(g, G.mul(G.const(2), o))),), math.sqrt, c="sqrt({0})")
def _vjp_abs(G, g, out, x):
    """g sign(x), and a strong 0 at the kink x = 0 (masked like a selection): a NaN or infinite
    partial further down (atan2(v, v) at v = 0) never turns the policy's 0 into a NaN."""
    return (Masked(G.mul(g, G.call("sign", x)), G.op("ne", x, G.const(0))),)


_func("abs", _vjp_abs, abs, sympy=("Abs",), c="fabs({0})", ufunc="absolute")


# -- special functions: SciPy's (scipy.special, imported by a module only when it uses one) in the
# NumPy target; CUDA's built-ins in the CuPy target's kernels, or cupyx.scipy.special where CUDA has none
_SQRT_PI = math.sqrt(math.pi)


def _special(name, vjp, ev=None, *, sympy=(), c=None, fn=None):
    fn = fn or name
    _ew(name, f"_scipy_special.{fn}({{0}})", vjp, ev, sympy=sympy, c=c, special=fn)


_special("erf", lambda G, g, o, x: (G.mul(g, G.mul(G.const(2 / _SQRT_PI), G.call("exp", G.neg(G.mul(x, x))))),),
         math.erf, sympy=("erf",), c="erf({0})")
_special("erfc", lambda G, g, o, x: (G.mul(g, G.mul(G.const(-2 / _SQRT_PI), G.call("exp", G.neg(G.mul(x, x))))),),
         math.erfc, sympy=("erfc",), c="erfc({0})")
_special("erfinv", lambda G, g, o, x: (strong(G, g, G.mul(g, G.mul(G.const(_SQRT_PI / 2), G.call("exp", G.mul(o, o))))),),
         sympy=("erfinv",), c="erfinv({0})")
_special("gamma", lambda G, g, o, x: (strong(G, g, G.mul(g, G.mul(o, G.op("polygamma", x, attr=0)))),),
         math.gamma, sympy=("gamma",), c="tgamma({0})")
_special("loggamma", lambda G, g, o, x: (strong(G, g, G.mul(g, G.op("polygamma", x, attr=0))),),
         math.lgamma, sympy=("loggamma",), c="lgamma({0})", fn="gammaln")
# polygamma(n, x), n a constant integer (digamma is n = 0); CUDA C has none: cupyx computes it
_ew("polygamma", "_polygamma({attr}, {0})", lambda G, g, o, x: (strong(G, g, G.mul(g, G.op("polygamma", x, attr=o.attr + 1))),),
    special="polygamma", helper='''
def _polygamma(n, x):
    """polygamma(n, x) (digamma for n = 0) in x's floating type (SciPy's is float64 for n > 0)."""
    out = _scipy_special.psi(x) if n == 0 else _scipy_special.polygamma(n, x)
    return {m}.asarray(out, dtype={m}.result_type(x))
''')

# Bessel functions of a constant order nu (attr), J_nu' = (J_{nu-1} - J_{nu+1}) / 2 and I_nu' =
# (I_{nu-1} + I_{nu+1}) / 2; the exponential integral E_n, n >= 1 a constant (attr), E_n' = -E_{n-1}
# and E_1' = -exp(-x) / x.  CUDA C has none of them: cupyx.scipy.special has expn, no jv or iv.
_ORDER_HELPER = '''
def _of_order(f, n, x):
    """f(n, x) of a special function of constant order n, in x's floating type."""
    return {m}.asarray(f(n, x), dtype={m}.result_type(x))
'''


def _vjp_bessel(sign):
    def vjp(G, g, out, x):
        lo, hi = G.op(out.op, x, attr=out.attr - 1), G.op(out.op, x, attr=out.attr + 1)
        return strong(G, g, G.mul(g, G.mul(G.const(0.5), G.add(lo, hi) if sign > 0 else G.sub(lo, hi)))),
    return vjp


def _vjp_expint(G, g, out, x):
    if out.attr == 1:
        return strong(G, g, G.neg(G.mul(g, G.div(G.call("exp", G.neg(x)), x)))),
    return strong(G, g, G.neg(G.mul(g, G.op("expint", x, attr=out.attr - 1)))),


_ew("besselj", "_of_order(_scipy_special.jv, {attr}, {0})", _vjp_bessel(-1), special="jv", helper=_ORDER_HELPER)
_ew("besseli", "_of_order(_scipy_special.iv, {attr}, {0})", _vjp_bessel(+1), special="iv", helper=_ORDER_HELPER)
_ew("expint", "_of_order(_scipy_special.expn, {attr}, {0})", _vjp_expint, special="expn", helper=_ORDER_HELPER)
# the principal branch of Lambert's W, real: NaN below -1/e (where it is complex);
# W' = W / (x (1 + W)) = 1 / (exp(W) (1 + W)), which is 1 at x = 0 without a special case
_ew("lambertw", "_real_lambertw(_scipy_special.lambertw({0}), {0})",
    lambda G, g, o, x: (strong(G, g, G.div(g, G.mul(G.call("exp", o), G.add(G.const(1), o)))),), special="lambertw", helper='''
def _real_lambertw(w, x):
    """The real principal branch of Lambert's W from the complex value w = W(x): NaN below -1/e."""
    return {m}.where(x < -0.36787944117144233, {m}.nan, w.real).astype({m}.result_type(x), copy=False)
''')

# -- a function of the user's (symgrad.Function): attr = (name, "module:function", partials), each
# partial an attr of the same form; printed by the emitter as a call into the imported module
def _vjp_call(G, g, out, *args):
    name, _, partials = out.attr
    if not partials:
        raise SymgradError(f"symgrad.Function {name} has no derivative: give derivative= "
                           "(a path, or a symgrad.Function for second derivatives)")
    return tuple(strong(G, g, G.mul(g, G.op("call", *args, attr=p))) for p in partials)  # a user's partial may be inf


_ew("call", None, _vjp_call)

# piecewise constant: derivative 0 everywhere it exists (Mod and frac are lowered through floor)
_func("floor", _zero_grad, math.floor, sympy=("floor",), c="floor({0})")
_func("ceil", _zero_grad, math.ceil, sympy=("ceiling",), c="ceil({0})")
_func("sign", _zero_grad, lambda v: float((v > 0) - (v < 0)), sympy=("sign",),
      c="({0} > (T)0 ? (T)1 : ({0} < (T)0 ? (T)(-1) : {0}))")  # NumPy's: the argument at 0 and NaN
_func("sigmoid", lambda G, g, o, x: (G.mul(g, G.mul(o, G.sub(G.const(1), o))),),
      lambda v: 1 / (1 + math.exp(-v)), code="_sigmoid({0})", ufunc="_sigmoid",
      c="((T)1 / ((T)1 + exp(-{0})))", helper='''
def _sigmoid(x, out=None):
    """1 / (1 + exp(-x)) in one buffer: out when given, else one new array."""
    t = {m}.negative(x, out=out)
    if not isinstance(t, {m}.ndarray) or t.ndim == 0:
        return 1.0 / (1.0 + {m}.exp(t))
    {m}.exp(t, out=t)
    {m}.add(t, 1.0, out=t)
    return {m}.reciprocal(t, out=t)
''')
_func("softplus", lambda G, g, o, x: (G.mul(g, G.call("sigmoid", x)),),
      lambda v: max(v, 0) + math.log1p(math.exp(-abs(v))), code="{m}.logaddexp(0.0, {0})",
      ufunc="logaddexp", c="(fmax({0}, (T)0) + log1p(exp(-fabs({0}))))")


# -- selections and comparisons ----------------------------------------------------------------
def _vjp_extremum(cmp):
    """The gradient goes to the strictly larger (smaller) argument: ``g * (a > b)``.  Against a
    constant the mask reads the output (``Max(x, 0) > 0`` iff ``x > 0``), as ReLU's backward pass
    does, so that the input need not be kept alive for the backward pass."""
    def vjp(G, g, out, a, b):
        mask_a = G.op(cmp, out, b) if b.op == "const" else G.op(cmp, a, b)
        mask_b = G.op(cmp, out, a) if a.op == "const" else G.op(cmp, b, a)
        return Masked(g, mask_a), Masked(g, mask_b)
    return vjp


# NumPy's maximum/minimum propagate NaN; C's comparisons do not: the templates say so
_ew("maximum", "{m}.maximum({0}, {1})", _vjp_extremum("gt"), max, ufunc="maximum",
    c="(({0} > {1} || isnan({0})) ? {0} : {1})")
_ew("minimum", "{m}.minimum({0}, {1})", _vjp_extremum("lt"), min, ufunc="minimum",
    c="(({0} < {1} || isnan({0})) ? {0} : {1})")


def _vjp_arctan2(G, g, out, y, x):
    """d atan2(y, x) = (x dy - y dx) / (x**2 + y**2), and 0 at (0, 0), a non-differentiable
    point (masked: the 0/0 there never becomes a NaN gradient)."""
    r2 = G.add(G.mul(x, x), G.mul(y, y))
    off = G.op("ne", r2, G.const(0))
    return Masked(G.div(G.mul(g, x), r2), off), Masked(G.neg(G.div(G.mul(g, y), r2)), off)


_ew("arctan2", "{m}.arctan2({0}, {1})", _vjp_arctan2, math.atan2, ufunc="arctan2", c="atan2({0}, {1})")
_ew("where", "{m}.where({0}, {1}, {2})",
    lambda G, g, o, c, a, b: (None, Masked(g, c, True), Masked(g, c, False)),
    ufunc="_where", c="({0} ? {1} : {2})", helper='''
def _where(c, a, b, out=None):
    """where(c, a, b), written into out when given (out may be a's or b's own array).  Where the
    other branch is a literal 0.0 (a ReLU's adjoint), out's bits are multiplied by c as unsigned
    integers: the same bits as a masked copy, without its branch per element (8x faster on a CPU)."""
    if out is None:
        return {m}.where(c, a, b)
    zero = b if out is a else a if out is b else None
    if type(zero) is float and repr(zero) == "0.0":  # +0.0 (a -0.0 fill keeps the masked copy)
        bits = out.view(f"u{out.dtype.itemsize}")
        {m}.multiply(bits, c if out is a else {m}.logical_not(c), out=bits)
        return out
    if out is a:
        {m}.copyto(out, b, where={m}.logical_not(c))
        return out
    if out is not b:
        {m}.copyto(out, b)
    {m}.copyto(out, a, where=c)
    return out
''')
for _name, _code, _c, _ev in [("gt", "{0} > {1}", "({0} > {1})", operator.gt),
                              ("ge", "{0} >= {1}", "({0} >= {1})", operator.ge),
                              ("lt", "{0} < {1}", "({0} < {1})", operator.lt),
                              ("le", "{0} <= {1}", "({0} <= {1})", operator.le),
                              ("eq", "{0} == {1}", "({0} == {1})", operator.eq),
                              ("ne", "{0} != {1}", "({0} != {1})", operator.ne),
                              ("and", "{m}.logical_and({0}, {1})", "({0} && {1})", None),
                              ("or", "{m}.logical_or({0}, {1})", "({0} || {1})", None),
                              ("not", "{m}.logical_not({0})", "(!{0})", None)]:
    _reg(_name, _ew_shape, _code, _zero_grad, _ev, True, c=_c)


# -- leaves ------------------------------------------------------------------------------------
_reg("const", lambda attr=None: (), None)
_reg("dim", lambda attr=None: (), None)  # a dimension symbol's value (an int at run time)
_reg("input", lambda attr=None: attr[1], None)


# -- matrix ops --------------------------------------------------------------------------------
def size(G, d):
    """A dimension (an int, a dimension name or a product) as a node: a constant, the run-time
    ``dim``, or their product."""
    if isinstance(d, DimProduct):
        out = G.const(d[0])
        for name in d[1:]:
            out = G.mul(out, G.op("dim", attr=name))
        return out
    return G.const(d) if isinstance(d, int) else G.op("dim", attr=d)


def _matmul_shape(a, b, attr=None):
    if a is None or b is None or len(a) != 2 or len(b) != 2 or a[1] != b[0]:
        raise SymgradError(f"matmul of shapes {a} and {b} does not conform")
    return (a[0], b[1])


def _sum_shape(a, attr=None):
    if attr is None:
        return ()
    if a is None or len(a) != 2:
        raise SymgradError(f"sum over axis {attr} of shape {a}")
    return (ONE, a[1]) if attr == 0 else (a[0], ONE)


def _vjp_sum(G, g, out, a):
    return (G.bcast(g, a.shape) if a.shape is not None else g),


def _bcast_shape(a, attr=None):
    broadcast_shapes(a, attr, where=" (broadcast)")
    return attr


def _square_of(what, same=False):
    """The shape rule of an op of a square matrix: its shape (``same``) or a scalar."""
    def shape(a, attr=None):
        if a is None or len(a) != 2 or a[0] != a[1]:
            raise SymgradError(f"{what} of non-square shape {a}")
        return a if same else ()
    return shape


def _one_by_one(a, attr=None):
    if a is None or len(a) != 2 or a[0] != ONE or a[1] != ONE:
        raise SymgradError(f"only a 1x1 matrix can be indexed with [0, 0]; got shape {a}")
    return ()


def _vjp_matmul(G, g, out, a, b):
    """``dA = G @ B.T`` and ``dB = A.T @ G``, the latter computed as ``(G.T @ A).T``: the same
    product, but OpenBLAS runs it up to 2x faster when A is a tall C-ordered data matrix."""
    return G.matmul(g, G.T(b)), G.T(G.matmul(G.T(g), a))


def full(G, t, a):
    """Tangent ``t`` of node ``a`` as an array of exactly ``a``'s shape.  Elementwise work lets a
    tangent stay smaller than its node (the tangent of a bias row is a row); a reduction, a
    product or an index must see every entry."""
    if t is None or (a.shape is not None and t.shape == a.shape) or (a.shape is None and _like(t) is _like(a)):
        return t
    return G.bcast(t, a.shape) if a.shape is not None else G.op("sum_to", t, a, a)


def _like(n):
    """The node whose run-time shape ``n`` has for sure (a sum_to has its reference's)."""
    while n.op == "sum_to":
        n = n.args[1]
    return n


def _add_tangents(G, *parts):
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else G.add(parts[0], parts[1])


def _jvp_matmul(G, t, out, a, b):
    ta, tb = full(G, t[0], a), full(G, t[1], b)
    return _add_tangents(G, ta and G.matmul(ta, b), tb and G.matmul(a, tb))


def _linear(build):
    """The JVP of an op linear in its one argument: the op applied to the full tangent."""
    return lambda G, t, out, a: t[0] and build(G, full(G, t[0], a), out)


_reg("matmul", _matmul_shape, "{0} @ {1}", _vjp_matmul, ufunc="matmul", jvp=_jvp_matmul)
_reg("transpose", lambda a, attr=None: (a[1], a[0]), "{0}.T",
     lambda G, g, o, a: (G.T(g),), jvp=_linear(lambda G, t, o: G.T(t)))
_reg("sum", _sum_shape, None, _vjp_sum, jvp=_linear(lambda G, t, o: G.sum(t, o.attr)))
_reg("logsumexp", _sum_shape, "_logsumexp({0}, {attr})",
     lambda G, g, o, z: (G.mul(g, G.call("exp", G.sub(z, o))),),
     jvp=lambda G, t, o, z: t[0] and G.sum(G.mul(G.call("exp", G.sub(z, o)), t[0]), o.attr), helper='''
def _logsumexp(z, axis):
    """log(sum(exp(z), axis)) shifted by the maximum, so that no exp overflows."""
    m = z.max(axis=axis, keepdims=True)
    out = m + {m}.log({m}.exp(z - m).sum(axis=axis, keepdims=True))
    return out if axis is not None else out[0, 0]
''')  # its VJP is g * softmax(z)
_reg("bcast", _bcast_shape, None, lambda G, g, o, a: (g,),
     jvp=lambda G, t, o, a: t[0] and G.bcast(t[0], o.attr))
_reg("item", _one_by_one, "{0}[0, 0]", lambda G, g, o, a: (G.bcast(g, a.shape),),
     jvp=_linear(lambda G, t, o: G.op("item", t)))
def _entry_shape(a, attr=None):
    i, j = attr
    if a is None or len(a) != 2 or any(isinstance(n, int) and not 0 <= k < n for k, n in zip(attr, a)):
        raise SymgradError(f"entry [{i}, {j}] of shape {a} is out of range")
    return ()


_reg("entry", _entry_shape, "{0}[{attr[0]}, {attr[1]}]",  # M[i, j]: SymPy writes small products out
     lambda G, g, o, a: (G.op("onehot", g, attr=(a.shape,) + o.attr),),
     jvp=_linear(lambda G, t, o: G.op("entry", t, attr=o.attr)))
# the cotangent of an entry: zeros of the matrix's shape with g at [i, j] (printed by the emitter)
_reg("onehot", lambda g, attr=None: attr[0], None,
     lambda G, g, o, a: (G.op("entry", g, attr=o.attr[1:]),),
     jvp=_linear(lambda G, t, o: G.op("onehot", t, attr=o.attr)), helper='''
def _onehot(g, shape, i, j, dtype):
    """Zeros of shape with g at [i, j]: the gradient of one entry of a matrix."""
    out = {m}.zeros(shape, dtype=dtype)
    out[i, j] = g
    return out
''')
_reg("trace", _square_of("trace"), "{m}.trace({0})",
     lambda G, g, o, a: (G.mul(g, G.op("eye", attr=a.shape[0])),),
     jvp=_linear(lambda G, t, o: G.op("trace", t)))
_reg("eye", lambda attr=None: (attr, attr), None, jvp=lambda G, t, o: None)


# -- slices: M[a:b:s, c:d:t] with integer bounds, or a whole axis of a dimension -------------------------
def _axis_length(n, sl, what):
    """Entries of one axis of a slice: integer bounds (within a symbolic dimension too: X[:, :1]
    is one column), or the whole axis."""
    start, stop, step = sl
    if stop is None:                                   # the whole axis
        return n
    if isinstance(n, int) and stop > n:
        raise SymgradError(f"a slice {what} ends at {stop}, past the {n} there are")
    return len(range(start, stop, step))


def _slice_shape(a, attr=None):
    if a is None or len(a) != 2:
        raise SymgradError(f"a slice of shape {a}")
    return tuple(_axis_length(n, sl, w) for n, sl, w in zip(a, attr, ("of rows", "of columns")))


def slice_text(attr) -> str:
    """``a:b:s, c:d:t`` for the attribute of a slice (an axis with stop None is ``:``)."""
    def one(sl):
        start, stop, step = sl
        if stop is None:
            return ":"
        return f"{start}:{stop}" + (f":{step}" if step != 1 else "")
    return ", ".join(one(sl) for sl in attr)


_reg("slice", _slice_shape, None,
     lambda G, g, o, a: (G.op("unslice", g, attr=(a.shape, o.attr)),),
     jvp=_linear(lambda G, t, o: G.op("slice", t, attr=o.attr)), helper='''
def _sliced(x, index, shape):
    """x[index], which must have the shape the model gives it: NumPy cuts a slice short at the end
    of an axis, so a dimension smaller than the slice is an error here, never a shorter array."""
    out = x[index]
    if out.shape != shape:
        raise ValueError(f"{MODEL}: a slice has shape {out.shape}, the model needs {shape}: "
                         "an input dimension is smaller than the slice")
    return out
''')
# the cotangent of a slice: zeros of the matrix's shape with g in the slice (printed by the emitter)
_reg("unslice", lambda g, attr=None: attr[0], None,
     lambda G, g, o, a: (G.op("slice", g, attr=o.attr[1]),),
     jvp=_linear(lambda G, t, o: G.op("unslice", t, attr=o.attr)), helper='''
def _unslice(g, shape, index, dtype):
    """Zeros of shape with g at [index]: the gradient of a slice of a matrix."""
    out = {m}.zeros(shape, dtype=dtype)
    out[index] = g
    return out
''')


# -- shifts: x[i + c] of an indexed Sum, x moved by c along an axis (zeros where nothing moves in);
# the adjoint of a shift by c is the shift by -c.  Sums over part of an axis mask the rest (where).
def _shift_shape(a, attr=None):
    if a is None or len(a) != 2:
        raise SymgradError(f"a shift of shape {a}")
    return a


_reg("shift", _shift_shape, "_shift({0}, {attr[0]}, {attr[1]})",
     lambda G, g, o, a: (G.op("shift", g, attr=(o.attr[0], -o.attr[1])),),
     jvp=_linear(lambda G, t, o: G.op("shift", t, attr=o.attr)), helper='''
def _shift(x, axis, c):
    """y with y[p] = x[p + c] along axis (rows 0, columns 1), 0 where p + c is past an end."""
    out = {m}.zeros_like(x)
    n = x.shape[axis]
    if abs(c) < n:
        to, src = (slice(0, n - c), slice(c, n)) if c >= 0 else (slice(-c, n), slice(0, n + c))
        out[(slice(None),) * axis + (to,)] = x[(slice(None),) * axis + (src,)]
    return out
''')


def window_mask(G, shape, axis, lo, m):
    """True inside a Window (``symgrad.indexed``): along ``axis`` of ``shape``, all but the first
    ``lo`` and the last ``m`` entries; a line that broadcasts over the other axis."""
    line = [1, 1]
    line[axis] = shape[axis]
    ones = G.bcast(G.const(1), tuple(line))
    masks = [G.op("ne", G.op("shift", ones, attr=(axis, c)), G.const(0)) for c in (-lo, m) if c]
    return reduce(lambda a, b: G.op("and", a, b), masks)


# -- clamps: inside a Window, the entries of an argument outside it are copies of its nearest entry
# inside (clip of the position), so that a shifted x[i + 1] is never evaluated at its padding 0
# (log(0): a warning, a FloatingPointError under np.seterr) -- the where selects them away.  The
# VJP is the cotangent inside the window: the window's where makes every cotangent 0 outside it,
# where that is the exact adjoint.
_reg("clamp", _shift_shape, "_clamp({0}, {attr[0]}, {attr[1]}, {attr[2]})",
     lambda G, g, o, a: (G.where(window_mask(G, o.shape, *o.attr), g, G.const(0)),),
     lambda G, a, attr=None: a if attr[1] == attr[2] == 0 else None,
     jvp=_linear(lambda G, t, o: G.op("clamp", t, attr=o.attr)), helper='''
def _clamp(x, axis, lo, m):
    """y with y[p] = x[min(max(p, lo), n - 1 - m)] along axis (rows 0, columns 1); a copy."""
    n = x.shape[axis]
    at = {m}.arange(n)
    if n - 1 - m >= lo:
        at = {m}.clip(at, lo, n - 1 - m)
    return {m}.take(x, at, axis=axis)
''')


# -- diagonals: DiagMatrix(v) of a column or row, DiagonalOf(M) as a column ----------------------------
def _diag_shape(a, attr=None):
    if a is None or len(a) != 2 or ONE not in a:
        raise SymgradError(f"DiagMatrix of shape {a}: a column or a row")
    n = a[0] if a[1] == ONE else a[1]
    return (n, n)


def _diagonal_shape(a, attr=None):
    _square_of("diagonal")(a)
    return (a[0], ONE)


_reg("diag", _diag_shape, "{m}.diagflat({0})",
     lambda G, g, o, a: (G.op("diagonal", g) if a.shape[1] == ONE else G.T(G.op("diagonal", g)),),
     jvp=_linear(lambda G, t, o: G.op("diag", t)))
_reg("diagonal", _diagonal_shape, "{m}.diagonal({0}).copy()[:, None]",
     lambda G, g, o, a: (G.op("diag", g),), jvp=_linear(lambda G, t, o: G.op("diagonal", t)))


# -- Kronecker products: kron(A, B)[i p + k, j q + l] = A[i, j] B[k, l] for B of shape (p, q) ---------
def _kron_shape(a, b, attr=None):
    if a is None or b is None or len(a) != 2 or len(b) != 2:
        raise SymgradError(f"KroneckerProduct of shapes {a} and {b}: matrices only")
    return (mul_dims(a[0], b[0]), mul_dims(a[1], b[1]))  # 2*N for a symbolic dimension


def _kron_factor_shape(g, other, attr=None):
    return attr  # the shape of the factor whose cotangent this is


def _bilinear_jvp(name):
    """The tangent rule of a bilinear op: d op(a, b) = op(da, b) + op(a, db)."""
    return lambda G, t, o, a, b: _add_tangents(G, t[0] and G.op(name, full(G, t[0], a), b, attr=o.attr),
                                               t[1] and G.op(name, a, full(G, t[1], b), attr=o.attr))


# the cotangents of the factors: each block of g against B (kron_a), the blocks weighted by A (kron_b);
# all three ops are bilinear, so each one's rules are made of the other two
_reg("kron", _kron_shape, "{m}.kron({0}, {1})",
     lambda G, g, o, a, b: (G.op("kron_a", g, b, attr=a.shape), G.op("kron_b", g, a, attr=b.shape)),
     jvp=_bilinear_jvp("kron"))
_reg("kron_a", _kron_factor_shape, "_kron_a({0}, {1})",
     lambda G, h, o, g, b: (G.op("kron", h, b), G.op("kron_b", g, h, attr=b.shape)),
     jvp=_bilinear_jvp("kron_a"), helper='''
def _kron_a(g, b):
    """The cotangent of A in kron(A, B) from g: each (p, q) block of g times B, summed."""
    p, q = b.shape
    return {m}.einsum("ikjl,kl->ij", g.reshape(g.shape[0] // p, p, g.shape[1] // q, q), b)
''')
_reg("kron_b", _kron_factor_shape, "_kron_b({0}, {1})",
     lambda G, h, o, g, a: (G.op("kron", a, h), G.op("kron_a", g, h, attr=a.shape)),
     jvp=_bilinear_jvp("kron_b"), helper='''
def _kron_b(g, a):
    """The cotangent of B in kron(A, B) from g: the blocks of g weighted by the entries of A."""
    r, c = a.shape
    return {m}.einsum("ikjl,ij->kl", g.reshape(r, g.shape[0] // r, c, g.shape[1] // c), a)
''')


# -- linear algebra: inverse, determinant, log-determinant (slogdet), and solves ---------------------
def _inv_T(G, a):
    return G.T(G.op("inv", a))


def _solve_shape(a, b, attr=None):
    _square_of("solve")(a)
    return _matmul_shape(a, b)


_reg("inv", _square_of("inverse", same=True), "{m}.linalg.inv({0})",
     lambda G, g, o, a: (G.neg(G.matmul(G.T(o), G.matmul(g, G.T(o)))),),
     jvp=_linear(lambda G, t, o: G.neg(G.matmul(o, G.matmul(t, o)))))
_reg("det", _square_of("determinant"), "{m}.linalg.det({0})",
     lambda G, g, o, a: (G.mul(G.mul(g, o), _inv_T(G, a)),),
     jvp=_linear(lambda G, t, o: G.mul(o, G.op("trace", G.matmul(G.op("inv", o.args[0]), t)))))
# log|det A| (log det A for the positive-definite matrices of likelihoods), never log(det(A)): slogdet
_reg("logdet", _square_of("log-determinant"), "{m}.linalg.slogdet({0})[1]",
     lambda G, g, o, a: (G.mul(g, _inv_T(G, a)),),
     jvp=_linear(lambda G, t, o: G.op("trace", G.matmul(G.op("inv", o.args[0]), t))))
_reg("solve", _solve_shape, "{m}.linalg.solve({0}, {1})",
     lambda G, g, o, a, b: (lambda gb: (G.neg(G.matmul(gb, G.T(o))), gb))(G.op("solve", G.T(a), g)),
     jvp=lambda G, t, o, a, b: _add_tangents(
         G, t[1] and G.op("solve", a, full(G, t[1], b)),
         t[0] and G.neg(G.op("solve", a, G.matmul(full(G, t[0], a), o)))))
# run-time helpers of the engine: sum a dynamic cotangent to an input's shape; zeros for no path
# (the last two arguments of sum_to are read for their shapes only: no tangent flows through them)
_reg("sum_to", lambda g, x, out, attr=None: x, "_sum_to({0}, {1}, {2})",
     jvp=lambda G, t, o, g, x, value: t[0] and G.op("sum_to", t[0], x, value), helper='''
def _sum_to(g, x, value):
    """Gradient of the input x from the cotangent g: broadcast g like the value, sum to x's shape."""
    if type(g) is {m}.ndarray and type(x) is {m}.ndarray and g.dtype == x.dtype and g.shape == x.shape \
            and type(value) is {m}.ndarray and value.shape == x.shape:
        return g  # nothing to sum: the common case, without the general shape work below
    shape = {m}.shape(x)
    full = {m}.broadcast_shapes({m}.shape(g), {m}.shape(value), shape)
    lead = len(full) - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and full[lead + i] != 1)
    if axes:
        g = {m}.broadcast_to(g, full).sum(axis=axes).reshape(shape)
    elif {m}.shape(g) != shape:
        g = {m}.broadcast_to(g, shape).copy()
    return {m}.asarray(g, dtype={m}.result_type(x))
''')
_reg("zeros_like", lambda x, attr=None: x, "{m}.zeros_like({0})", _zero_grad, jvp=lambda G, t, o, x: None)
