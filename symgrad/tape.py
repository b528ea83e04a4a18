"""symgrad.tape -- the runtime reverse-mode tape: symgrad's independent numeric oracle.

Contract
--------
* ``forward(model, **inputs)`` -> the value of ``model.expr`` as a NumPy array (0-d for a scalar
  expression on scalar inputs, the broadcast shape when scalar symbols are bound to arrays).
* ``value_and_grad(model, **inputs)`` -> ``(value, grads)``: ``grads[str(w)]`` for each ``w`` in
  ``model.wrt`` is the gradient of ``sum(value)`` with respect to that input, with exactly the
  input's shape (broadcast axes summed away); a ``wrt`` symbol absent from ``expr`` gets zeros.
* ``vjp(model, cotangent, **inputs)`` -> ``(value, grads)`` with ``cotangent^T J`` in place of the
  gradient; ``jacobian(model, **inputs)`` -> ``(value, {name: J})`` (``value.shape + input.shape``,
  one exact VJP per entry of the value); ``jvp(model, tangents, **inputs)`` -> ``(value, J t)``;
  ``hvp(model, vectors, **inputs)`` -> ``(value, grads, {name: H v})`` by Richardson-extrapolated
  central differences of the exact gradient (the tape's second-order oracle, float64).
* ``sum_to(g, shape)`` sums a broadcast gradient back down to ``shape``.

Inputs are keyword arguments named ``str(symbol)``.  All values are computed in one float dtype:
the result type of the floating-point arrays passed (Python numbers do not count), float64 if none,
so float32 in gives float32 out.  Dimension symbols (``N`` in ``MatrixSymbol('X', N, d)``) are read
from the arrays' shapes by ``Model.dim_values`` and may appear as numbers inside ``expr``.

Independence: this module imports nothing from symgrad but ``symgrad.model``.  Its derivative rules
(``RULES``) are numeric and written separately from the symbolic compiler, so that it can check it.

Design (micrograd / HIPS autograd): evaluating ``expr`` walks it iteratively (explicit stack,
postorder, memoised so shared sub-expressions are computed once and deep expressions never recurse)
and records a ``Var`` per operation: its array, its parents and one VJP closure per parent.
``backward`` runs a topological order in reverse, sums each cotangent down to the parent's shape
(once, here, never in a rule) and accumulates it with ``+=``.  N-ary SymPy nodes (Add, Mul, Max,
MatMul, ...) are folded into binary operations.  ``Sum`` over ``MatrixElement``s with dummy indices
(what SymPy makes of ``(r.T*r)[0, 0]``) is evaluated by giving each dummy index its own array axis.

Non-differentiable points: every derivative at a tie or kink is 0 (and atan2's at (0, 0)).  d Max(x, y)/dx = [x > y]
strictly (so ReLU'(0) = 0), d Min(x, y)/dx = [x < y]; Abs' = sign (0 at 0); sign' = Heaviside' = 0;
Piecewise differentiates only the selected branch; conditions carry no gradient.  A Piecewise with
no true condition (and no ``True`` branch) is NaN, SymPy's undefined; ``Heaviside(0)`` is its
``H0`` argument (SymPy's default 1/2), so d Heaviside(x, h0)/dh0 = [x == 0].

Strong zeros: a branch that is not selected (Piecewise, the losing argument of Max/Min) gets a
cotangent of exactly 0, and that 0 must stay 0 all the way down even where the branch's own local
derivative is inf or NaN (``Piecewise((x*log(x), x > 0), (0, True))`` at x = -1, ``Max(sqrt(x), 1)``
at 0).  So every elementwise VJP drops its contribution wherever the incoming cotangent is exactly
0, and a matrix product drops the terms ``g[i, l] * y[j, l]`` whose ``g[i, l]`` is 0.  Powers use
the limits: d x**p/dp = x**p log(x) is 0 where x**p is 0 (x = 0, p > 0), and d x**0/dx = 0.

Inputs: a Python ``int``/``float``/``bool`` or an integer/bool array binds like a float64 array of
the same value (Python numbers do not decide the dtype; integer arrays count as float64), float32
stays float32; complex, ``None``, strings and other non-numeric objects raise ``TypeError`` naming
the input.  Inputs are copied on binding, so no returned array is a view of a caller's array.
"""
from __future__ import annotations

import numpy as np
import sympy as sp
from sympy.codegen import cfunctions
from sympy.logic.boolalg import BooleanAtom
from sympy.matrices.expressions import (Determinant, HadamardPower, Inverse, HadamardProduct, Identity,
                                        KroneckerProduct, MatAdd, MatMul,
                                        MatPow, MatrixExpr, MatrixSymbol, OneMatrix, Trace,
                                        Transpose, ZeroMatrix)
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction
from sympy.matrices.expressions.matexpr import MatrixElement
from sympy.matrices.expressions.slice import MatrixSlice
from sympy.matrices.expressions.diagonal import DiagMatrix, DiagonalOf

from .errors import SymgradError

__all__ = ["Var", "RULES", "forward", "value_and_grad", "vjp", "jvp", "jacobian", "hvp", "backward", "sum_to"]


def sum_to(g, shape):
    """Sum ``g`` over the axes that broadcasting added or stretched, giving an array of ``shape``."""
    g = np.asarray(g)
    if g.shape == tuple(shape):
        return g
    g = g.sum(axis=tuple(range(g.ndim - len(shape))))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=stretched, keepdims=True).reshape(shape)


class Var:
    """A recorded value: a NumPy array, the Vars it was computed from and one VJP per parent.

    A VJP maps this Var's cotangent to the parent's (``None``: no gradient flows there).
    Vars that do not depend on a ``wrt`` input keep no parents: nothing flows back through them.
    """
    __slots__ = ("value", "parents", "vjps", "needs_grad", "grad")

    def __init__(self, value, parents=(), vjps=(), needs_grad=False):
        self.value = np.asarray(value)
        self.needs_grad = needs_grad or any(p.needs_grad for p in parents)
        self.parents, self.vjps = (tuple(parents), tuple(vjps)) if self.needs_grad else ((), ())
        self.grad = None


def _toposort(root):
    """Vars that need a gradient, parents before children (iterative DFS, no recursion)."""
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        v, done = stack.pop()
        if done:
            order.append(v)
        elif id(v) not in seen:
            seen.add(id(v))
            stack.append((v, True))
            stack.extend((p, False) for p in v.parents if p.needs_grad and id(p) not in seen)
    return order


def backward(root, seed=None):
    """Seed ``root`` with ones (the gradient of ``sum(root)``), or with ``seed`` (a cotangent of
    ``root``'s shape), and run the tape backwards."""
    root.grad = np.ones_like(root.value) if seed is None else np.array(seed, dtype=root.value.dtype)
    for node in reversed(_toposort(root)):
        if node.grad is None:
            continue
        for parent, vjp in zip(node.parents, node.vjps):
            if vjp is None or not parent.needs_grad:
                continue
            if parent.grad is None:
                parent.grad = np.zeros_like(parent.value)
            parent.grad += sum_to(vjp(node.grad), parent.value.shape)


def _pow_dbase(g, a, x, p):
    return np.where(p == 0, 0, g * p * x ** (p - 1))  # x**0 is 1 everywhere, 0 ** 0 included


def _pow_dexp(g, a, x, p):
    return np.where(a == 0, 0, g * a * np.log(x))  # the limit of x**p log(x) where x**p -> 0


def _strong_matmul(g, y_t, x, transpose_x):
    """``x.T @ g`` (transpose_x) or ``g @ y_t``, dropping every term whose cotangent is exactly 0."""
    if transpose_x:
        if np.all(np.isfinite(x)):
            return x.T @ g
        terms = x[:, :, None] * g[:, None, :]          # [i, j, l] = x[i, j] g[i, l]
        return np.where(g[:, None, :] == 0, 0, terms).sum(axis=0)
    if np.all(np.isfinite(y_t)):
        return g @ y_t
    terms = g[:, None, :] * y_t.T[None, :, :]          # [i, j, l] = g[i, l] y[j, l]
    return np.where(g[:, None, :] == 0, 0, terms).sum(axis=-1)


# One rule per (SymPy class, arity): (forward, vjp per argument); a vjp is (g, ans, *args) -> cotangent.
_ADD = (np.add, lambda g, a, x, y: g, lambda g, a, x, y: g)
_MUL = (np.multiply, lambda g, a, x, y: g * y, lambda g, a, x, y: g * x)
_POW = (np.power, _pow_dbase, _pow_dexp)
RULES = {
    (sp.Add, 2): _ADD, (MatAdd, 2): _ADD,
    (sp.Mul, 2): _MUL, (HadamardProduct, 2): _MUL,
    (sp.Pow, 2): _POW, (HadamardPower, 2): _POW,
    (MatMul, 2): (np.matmul, lambda g, a, x, y: _strong_matmul(g, y.T, x, False),
                  lambda g, a, x, y: _strong_matmul(g, y.T, x, True)),
    (sp.Max, 2): (np.maximum, lambda g, a, x, y: _selected(x > y, g), lambda g, a, x, y: _selected(y > x, g)),
    (sp.Min, 2): (np.minimum, lambda g, a, x, y: _selected(x < y, g), lambda g, a, x, y: _selected(y < x, g)),
    (sp.exp, 1): (np.exp, lambda g, a, x: g * a),
    (sp.log, 1): (np.log, lambda g, a, x: g / x),
    (cfunctions.log1p, 1): (np.log1p, lambda g, a, x: g / (1 + x)),
    (cfunctions.expm1, 1): (np.expm1, lambda g, a, x: g * (a + 1)),
    (sp.log, 2): (lambda x, b: np.log(x) / np.log(b), lambda g, a, x, b: g / (x * np.log(b)),
                  lambda g, a, x, b: -g * a / (b * np.log(b))),
    (sp.sin, 1): (np.sin, lambda g, a, x: g * np.cos(x)),
    (sp.cos, 1): (np.cos, lambda g, a, x: -g * np.sin(x)),
    (sp.tan, 1): (np.tan, lambda g, a, x: g * (1 + a * a)),
    (sp.tanh, 1): (np.tanh, lambda g, a, x: g * (1 - a * a)),
    (sp.sinh, 1): (np.sinh, lambda g, a, x: g * np.cosh(x)),
    (sp.cosh, 1): (np.cosh, lambda g, a, x: g * np.sinh(x)),
    (sp.asin, 1): (np.arcsin, lambda g, a, x: g / np.sqrt(1 - x * x)),
    (sp.acos, 1): (np.arccos, lambda g, a, x: -g / np.sqrt(1 - x * x)),
    (sp.atan, 1): (np.arctan, lambda g, a, x: g / (1 + x * x)),
    (sp.asinh, 1): (np.arcsinh, lambda g, a, x: g / np.sqrt(x * x + 1)),
    (sp.acosh, 1): (np.arccosh, lambda g, a, x: g / np.sqrt(x * x - 1)),
    (sp.atanh, 1): (np.arctanh, lambda g, a, x: g / (1 - x * x)),
    (sp.atan2, 2): (np.arctan2, lambda g, a, y, x: _off_origin(g * x, x * x + y * y),
                    lambda g, a, y, x: _off_origin(-g * y, x * x + y * y)),
    (sp.erf, 1): (lambda x: _sps().erf(x), lambda g, a, x: g * 2 / np.sqrt(np.pi) * np.exp(-x * x)),
    (sp.erfc, 1): (lambda x: _sps().erfc(x), lambda g, a, x: -g * 2 / np.sqrt(np.pi) * np.exp(-x * x)),
    (sp.erfinv, 1): (lambda x: _sps().erfinv(x), lambda g, a, x: g * np.sqrt(np.pi) / 2 * np.exp(a * a)),
    (sp.gamma, 1): (lambda x: _sps().gamma(x), lambda g, a, x: g * a * _sps().psi(x)),
    (sp.loggamma, 1): (lambda x: _sps().gammaln(x), lambda g, a, x: g * _sps().psi(x)),
    (sp.polygamma, 2): (lambda n, x: _sps().polygamma(int(n), x), None,
                        lambda g, a, n, x: g * _sps().polygamma(int(n) + 1, x)),
    (sp.beta, 2): (lambda x, y: _sps().beta(x, y), lambda g, a, x, y: g * a * (_sps().psi(x) - _sps().psi(x + y)),
                   lambda g, a, x, y: g * a * (_sps().psi(y) - _sps().psi(x + y))),
    # Bessel functions of a constant order: SciPy's own derivatives jvp / ivp (no gradient to the order)
    (sp.besselj, 2): (lambda n, x: _sps().jv(n, x), None, lambda g, a, n, x: g * _sps().jvp(n, x)),
    (sp.besseli, 2): (lambda n, x: _sps().iv(n, x), None, lambda g, a, n, x: g * _sps().ivp(n, x)),
    (sp.expint, 2): (lambda n, x: _sps().expn(int(n), x), None,   # expn(0, x) is exp(-x)/x
                     lambda g, a, n, x: -g * _sps().expn(int(n) - 1, x)),
    (sp.LambertW, 1): (lambda x: _real_lambertw(x),                # W' = W / (x (1 + W)), 1 at x = 0
                       lambda g, a, x: g * np.where(x == 0, 1.0, a / np.where(x == 0, 1.0, x * (1 + a)))),
    (sp.cot, 1): (lambda x: 1 / np.tan(x), lambda g, a, x: -g / np.sin(x) ** 2),
    (sp.sec, 1): (lambda x: 1 / np.cos(x), lambda g, a, x: g * a * np.tan(x)),
    (sp.csc, 1): (lambda x: 1 / np.sin(x), lambda g, a, x: -g * a / np.tan(x)),
    (sp.sinc, 1): (lambda x: np.sinc(x / np.pi),                      # sin(x)/x; its derivative is 0 at 0
                   lambda g, a, x: g * np.where(x == 0, 0.0, (np.cos(x) - a) / np.where(x == 0, 1.0, x))),
    (sp.floor, 1): (np.floor, None), (sp.ceiling, 1): (np.ceil, None),
    (sp.frac, 1): (lambda x: x - np.floor(x), lambda g, a, x: g),
    (sp.Mod, 2): (np.mod, lambda g, a, x, y: g, lambda g, a, x, y: -g * np.floor(x / y)),
    (sp.re, 1): (np.real, lambda g, a, x: g), (sp.conjugate, 1): (np.conj, lambda g, a, x: g),
    (sp.im, 1): (lambda x: np.zeros_like(x), None), (sp.arg, 1): (np.angle, None),
    (sp.ITE, 3): (np.where, None, None, None),
    (sp.Abs, 1): (np.abs, lambda g, a, x: _selected(x != 0, g * np.sign(x))),
    (sp.sign, 1): (np.sign, None),
    (sp.Heaviside, 1): (lambda x: np.heaviside(x, 0.5), None),
    (sp.Heaviside, 2): (np.heaviside, None, lambda g, a, x, h0: _selected(x == 0, g)),  # H(0, h0) = h0
    (Transpose, 1): (np.transpose, lambda g, a, x: g.T),
    (Inverse, 1): (np.linalg.inv, lambda g, a, x: -a.T @ g @ a.T),
    (DiagMatrix, 1): (np.diagflat, lambda g, a, x: np.diagonal(g).reshape(x.shape)),
    (DiagonalOf, 1): (lambda x: np.diagonal(x).copy()[:, None], lambda g, a, x: np.diagflat(g)),
    (KroneckerProduct, 2): (np.kron, lambda g, a, x, y: _kron_dx(g, x, y), lambda g, a, x, y: _kron_dy(g, x, y)),
    (Determinant, 1): (np.linalg.det, lambda g, a, x: g * a * np.linalg.inv(x).T),
    (Trace, 1): (np.trace, lambda g, a, x: g * np.eye(len(x), dtype=x.dtype)),
    (sp.StrictLessThan, 2): (np.less, None, None), (sp.LessThan, 2): (np.less_equal, None, None),
    (sp.StrictGreaterThan, 2): (np.greater, None, None),
    (sp.GreaterThan, 2): (np.greater_equal, None, None),
    (sp.Equality, 2): (np.equal, None, None), (sp.Unequality, 2): (np.not_equal, None, None),
    (sp.And, 2): (np.logical_and, None, None), (sp.Or, 2): (np.logical_or, None, None),
    (sp.Not, 1): (np.logical_not, None),
}
_NARY = {sp.Add, sp.Mul, MatAdd, HadamardProduct, MatMul, KroneckerProduct, sp.Max, sp.Min, sp.And, sp.Or}
_LEAVES = (sp.Symbol, MatrixSymbol, sp.Number, sp.NumberSymbol, BooleanAtom, OneMatrix, ZeroMatrix,
           Identity)
_SPECIAL = (sp.Piecewise, MatrixElement, sp.Sum, ElementwiseApplyFunction, MatPow, MatrixSlice,
            sp.ImmutableDenseMatrix)


# rules whose VJP is not elementwise (the cotangent's shape is not the arguments' broadcast shape)
_STRUCTURAL = {id(RULES[k]) for k in [(MatMul, 2), (Transpose, 1), (Trace, 1), (Inverse, 1), (Determinant, 1),
                                       (DiagMatrix, 1), (DiagonalOf, 1), (KroneckerProduct, 2)]}


def _user_rule(spec):
    """The rule of a symgrad.Function: its own function and partial derivatives (imported)."""
    from .functions import resolve, spec_of
    name, impl, partials = spec
    if not partials:
        def missing(g, a, *vals):
            raise SymgradError(f"symgrad.Function {name} has no derivative: give derivative=")
        vjps = [missing] * max(1, len(getattr(spec, "args", ())) or 1)
    else:
        vjps = [lambda g, a, *vals, f=resolve(spec_of(p)[1]): g * f(*vals) for p in partials]
    return (resolve(impl), *vjps)


def _sps():
    """scipy.special, for the special functions' values (imported only when a model has one)."""
    import scipy.special
    return scipy.special


def _kron_blocks(g, x, y):
    """The (p, q) blocks of g, one per entry of x, for y of shape (p, q): {(i, j): block}."""
    p, q = y.shape
    return {(i, j): g[i * p:(i + 1) * p, j * q:(j + 1) * q] for i in range(x.shape[0]) for j in range(x.shape[1])}


def _kron_dx(g, x, y):
    """d kron(x, y) / dx: each block of the cotangent against y."""
    out = np.zeros_like(x)
    for (i, j), block in _kron_blocks(g, x, y).items():
        out[i, j] = np.sum(block * y)
    return out


def _kron_dy(g, x, y):
    """d kron(x, y) / dy: the blocks of the cotangent, weighted by x's entries."""
    out = np.zeros_like(y)
    for (i, j), block in _kron_blocks(g, x, y).items():
        out += x[i, j] * block
    return out


def _real_lambertw(x):
    """Lambert's W on its real principal branch (NaN below -1/e, where it is complex), in x's type."""
    x = np.asarray(x)
    w = _sps().lambertw(x).real
    return np.where(x < -np.exp(-1.0), np.nan, w).astype(x.dtype)


def _moved(x, axis, c, fill):
    """``y[p] = x[p + c]`` along ``axis``, ``fill`` past an end."""
    if c == 0:
        return x
    out = np.full(x.shape, fill, dtype=np.result_type(x, fill if fill else x.dtype))
    n, keep = x.shape[axis], (slice(None),) * axis
    if abs(c) < n:
        to, src = (slice(0, n - c), slice(c, n)) if c > 0 else (slice(-c, n), slice(0, n + c))
        out[keep + (to,)] = x[keep + (src,)]
    return out


def _off_origin(num, r2):
    """``num / r2``, and 0 where ``r2`` is 0: atan2 at (0, 0) is a non-differentiable point."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(r2 == 0, np.zeros((), np.result_type(num, r2)), num / np.where(r2 == 0, 1, r2))


def _selected(taken, g):
    """``g`` where ``taken``, else exactly 0: a branch not selected gets 0 even from an infinite or
    NaN cotangent (``g * taken`` would make inf * 0 = NaN), as the generated code's masks do."""
    return np.where(taken, g, np.zeros((), np.result_type(g)))


def _strong(vjp, g, ans, vals):
    """An elementwise VJP whose contribution is exactly 0 wherever the cotangent ``g`` is 0."""
    out = np.asarray(vjp(g, ans, *vals))
    if np.all(np.isfinite(out)):
        return out
    return np.where(g == 0, np.zeros((), out.dtype), out)


def _op(rule, *args):
    """Apply ``rule`` to the Vars ``args`` and record the result with its VJP closures."""
    fwd, *vjps = rule
    vals = [a.value for a in args]
    ans = np.asarray(fwd(*vals))
    if id(rule) in _STRUCTURAL:
        return Var(ans, args, [None if v is None else (lambda g, v=v: v(g, ans, *vals)) for v in vjps])
    return Var(ans, args, [None if v is None else (lambda g, v=v: _strong(v, g, ans, vals)) for v in vjps])


def _unsupported(e, why=""):
    return SymgradError(f"symgrad.tape: unsupported SymPy construct {type(e).__name__}{why}: {e}")


class _Recorder:
    """Evaluates a SymPy expression on bound Vars, recording the tape."""

    def __init__(self, expr, dims, dtype):
        self.dims, self.dtype = dims, np.dtype(dtype)
        dummies, seen, stack = set(), set(), [expr]
        while stack:  # a DAG walk: expr.atoms() would walk the (maybe exponentially larger) tree
            e = stack.pop()
            if e not in seen:
                seen.add(e)
                dummies |= {lim[0] for lim in e.limits} if isinstance(e, sp.Sum) else set()
                stack.extend(e.args)
        self.slots = {d: k for k, d in enumerate(sorted(dummies, key=sp.default_sort_key))}

    def const(self, value):
        return Var(np.asarray(value, dtype=self.dtype))

    def size(self, d, e):
        n = sp.sympify(d).subs(self.dims)
        if not n.is_Integer:
            raise _unsupported(e, f" (cannot read {d} as an integer here)")
        return int(n)

    def evaluate(self, expr, env):
        """Postorder walk with an explicit stack; ``env`` maps leaf symbols to Vars."""
        memo = dict(env)
        stack = [expr]
        while stack:
            e = stack[-1]
            if e in memo:
                stack.pop()
                continue
            todo = [k for k in self.children(e) if k not in memo]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            memo[e] = self.apply(e, [memo[k] for k in self.children(e)], env)
        return memo[expr]

    def children(self, e):
        """The sub-expressions ``apply(e, ...)`` needs; raises for anything the tape cannot run."""
        if isinstance(e, (_LEAVES, sp.KroneckerDelta)):
            return ()
        if getattr(type(e), "_symgrad_spec", None) is not None:  # a symgrad.Function
            return e.args
        if isinstance(e, sp.Piecewise):
            return tuple(x for pair in e.args for x in pair)
        if isinstance(e, (MatrixElement, MatrixSlice)):
            return (e.parent,)
        if isinstance(e, sp.Sum):
            return (e.function,)
        if isinstance(e, sp.ImmutableDenseMatrix):
            return tuple(e)
        if isinstance(e, ElementwiseApplyFunction):
            return (e.expr,)
        if isinstance(e, MatPow):
            if not e.exp.is_Integer:  # Inverse(A) is MatPow(A, -1)
                raise _unsupported(e, " (only integer powers)")
            return (e.base,)
        if (type(e), min(len(e.args), 2) if type(e) in _NARY else len(e.args)) not in RULES:
            raise _unsupported(e)
        return e.args

    def apply(self, e, kids, env):
        if isinstance(e, (sp.Symbol, MatrixSymbol)):
            raise SymgradError(f"symgrad.tape: missing input {e}")
        if isinstance(e, BooleanAtom):
            return Var(np.asarray(bool(e)))
        if isinstance(e, (sp.Number, sp.NumberSymbol)):
            return self.const(float(e))
        if isinstance(e, (OneMatrix, ZeroMatrix, Identity)):
            shape = tuple(self.size(n, e) for n in e.shape)
            make = {OneMatrix: np.ones, ZeroMatrix: np.zeros}.get(type(e))
            return self.const(make(shape) if make else np.eye(shape[0]))
        if getattr(type(e), "_symgrad_spec", None) is not None:
            return _op(_user_rule(type(e)._symgrad_spec), *kids)
        if isinstance(e, _SPECIAL):
            return getattr(self, "_" + type(e).__name__)(e, kids, env)
        if isinstance(e, sp.KroneckerDelta):
            return self.const(self._delta(e))
        if type(e) in _NARY:
            acc, acc_mat = kids[0], isinstance(e.args[0], MatrixExpr)
            for arg, kid in zip(e.args[1:], kids[1:]):  # fold left; a MatMul's scalar factors multiply
                is_mat = isinstance(arg, MatrixExpr)
                cls = sp.Mul if type(e) is MatMul and not (acc_mat and is_mat) else type(e)
                acc, acc_mat = _op(RULES[cls, 2], acc, kid), acc_mat or is_mat
            return acc
        return _op(RULES[type(e), len(kids)], *kids)

    def _Piecewise(self, e, kids, env):
        exprs, conds = kids[0::2], kids[1::2]
        taken, masks = np.asarray(False), []
        for c in conds:  # the first true condition wins
            masks.append(np.logical_and(c.value, ~taken))
            taken = np.logical_or(taken, c.value)
        out = np.asarray(np.nan, dtype=self.dtype)  # no branch applies: SymPy's undefined
        for x, m in zip(exprs[::-1], masks[::-1]):
            out = np.where(m, x.value, out)
        zero = np.zeros((), self.dtype)
        return Var(out, exprs, [lambda g, m=m: np.where(m, g, zero) for m in masks])

    def _ElementwiseApplyFunction(self, e, kids, env):
        f = e.function
        if isinstance(f, sp.Lambda):
            (var,), body = f.variables, f.expr
        else:
            var = sp.Dummy("t")
            body = f(var)
        return self.evaluate(body, {**env, var: kids[0]})

    def _MatPow(self, e, kids, env):
        n, acc = int(e.exp), kids[0]
        if n == 0:
            return self.const(np.eye(acc.value.shape[0]))
        if n < 0:
            acc = kids[0] = _op(RULES[Inverse, 1], acc)
            n = -n
        for _ in range(n - 1):
            acc = _op(RULES[MatMul, 2], acc, kids[0])
        return acc

    _Inverse = _MatPow

    def _MatrixSlice(self, e, kids, env):
        index = []
        for sl in (e.rowslice, e.colslice):  # SymPy's slice has (stop - start) // step entries
            start, stop, step = (self.size(v, e) for v in sl)
            index.append(slice(start, start + (stop - start) // step * step, step))
        index = tuple(index)

        def vjp(g, a, x):
            out = np.zeros_like(x)
            out[index] = g
            return out
        return Var(kids[0].value[index].copy(), (kids[0],), [lambda g: vjp(g, None, kids[0].value)])

    def _ImmutableDenseMatrix(self, e, kids, env):
        """An explicit matrix: its entries (each one number) in place; entry [i, j] gets g[i, j]."""
        rows, cols = e.shape
        for kid, entry in zip(kids, e):
            if kid.value.size != 1:
                raise _unsupported(e, f" (its entry {entry} has shape {kid.value.shape}, not one number)")
        out = np.array([k.value.reshape(()) for k in kids], dtype=self.dtype).reshape(rows, cols)
        return Var(out, kids, [lambda g, p=p, k=k: np.broadcast_to(g.reshape(-1)[p], k.value.shape)
                               for p, k in enumerate(kids)])

    def _delta(self, e):
        """``KroneckerDelta(i, j, (lo, hi))`` (SymPy writes it for Identity inside an expanded
        product): 1 where the indices agree, on the summation indices' own axes."""
        i, j = e.args[0], e.args[1]
        if len(e.args) < 3 or not all(k in self.slots or k.is_Integer for k in (i, j)):
            raise _unsupported(e, " (indices need a range)")
        lo, hi = (self.size(b, e) for b in e.args[2])
        n = hi + 1  # entries 0..hi; below lo the delta is 0
        axes = [self.slots[k] for k in (i, j) if k in self.slots]
        shape = [1] * len(self.slots)
        for ax in axes:
            shape[ax] = n
        grid = np.indices([n] * len(axes)) if axes else np.zeros((0,))
        vals = [grid[axes.index(self.slots[k])] if k in self.slots else int(k) for k in (i, j)]
        out = np.asarray((vals[0] == vals[1]) & (np.asarray(vals[0]) >= lo), dtype=self.dtype)
        if len(axes) == 2 and axes[0] > axes[1]:
            out = out.T
        return out.reshape(shape)

    def _MatrixElement(self, e, kids, env):
        """``M[i, j]``: integer indices pick; a Sum's dummy index becomes that dummy's own axis; a
        dummy plus an integer, ``x[i + 1]``, is ``M`` moved along that axis (NaN past the end, so an
        entry outside ``M`` is never silently a number)."""
        m, idx, shifts = kids[0].value, [e.i, e.j], [0, 0]
        for a, ix in enumerate(idx):
            k = next((s for s in ix.free_symbols if s in self.slots), None) if ix not in self.slots else None
            if k is not None and sp.expand(ix - k).is_Integer:
                idx[a], shifts[a] = k, int(sp.expand(ix - k))
                m = _moved(m, a, shifts[a], np.nan)
        if any(shifts):
            inner = self._entries(e, m, idx, kids)
            return Var(inner.value, kids, [lambda g: _moved(_moved(inner.vjps[0](g), 0, -shifts[0], 0), 1, -shifts[1], 0)])
        return self._entries(e, m, idx, kids)

    def _entries(self, e, m, idx, kids):
        sel = tuple(slice(None) if k in self.slots else self.size(k, e) for k in idx)
        syms = [k for k in idx if k in self.slots]
        if len(set(syms)) < len(syms):  # M[k, k]: the diagonal, on k's axis
            if m.shape[0] != m.shape[1]:
                raise _unsupported(e, " (diagonal of a matrix that is not square)")
            shape = [1] * len(self.slots)
            shape[self.slots[syms[0]]] = m.shape[0]

            def diag_vjp(g):
                z = np.zeros(m.shape, g.dtype)
                np.fill_diagonal(z, g.reshape(-1))
                return z
            return Var(np.diagonal(m).reshape(shape), kids, [diag_vjp])
        sub = np.asarray(m[sel])
        order = sorted(range(len(syms)), key=lambda a: self.slots[syms[a]])
        shape = [1] * len(self.slots) if syms else []
        for a in order:
            shape[self.slots[syms[a]]] = sub.shape[a]
        moved = sub.transpose(order)

        def vjp(g):
            z = np.zeros(m.shape, g.dtype)
            z[sel] = g.reshape(moved.shape).transpose(np.argsort(order))
            return z
        return Var(moved.reshape(shape), kids, [vjp])

    def _Sum(self, e, kids, env):
        k = len(self.slots)
        body = kids[0].value
        if body.ndim > k:
            raise _unsupported(e, " (Sum over broadcast array inputs)")
        b = body.reshape((1,) * (k - body.ndim) + body.shape)
        sel, scale = [slice(None)] * k, 1
        for i, lo, hi in e.limits:
            lo, hi, ax = self.size(lo, e), self.size(hi, e), self.slots[i]
            if b.shape[ax] == 1:  # body does not vary with i: n equal terms
                scale *= hi - lo + 1
            else:
                sel[ax] = slice(lo, hi + 1)
        sel = tuple(sel)
        kept = (b[sel].sum(axis=tuple(self.slots[lim[0]] for lim in e.limits), keepdims=True) * scale)
        # once no dummy index is free any more the value is a plain scalar again
        value = kept if e.free_symbols & set(self.slots) else kept.reshape(())

        def vjp(g):
            z = np.zeros(b.shape, g.dtype)
            z[sel] = g.reshape(kept.shape) * scale
            return z
        return Var(value, kids, [vjp])


def _bind(model, name, v):
    """An input as a real floating-point array: Python numbers, bools and integer arrays become
    float64; float arrays keep their dtype; anything else is a TypeError naming the input."""
    if type(v) in (bool, int, float):
        return np.asarray(float(v), dtype=np.float64)
    what = type(v).__name__
    if v is not None and not isinstance(v, (str, bytes)):
        try:
            a = np.asarray(v)
        except (TypeError, ValueError):
            a = None
        if a is not None and a.dtype.kind in "biu":
            return a.astype(np.float64)
        if a is not None and a.dtype.kind == "f":
            return a
        what = f"{what} of dtype {a.dtype}" if a is not None else what
    raise TypeError(f"model {model.name}: input {name!r} must be a real number or a real array, "
                    f"got {what}")


def _record(model, inputs, wrt):
    names = {str(s): s for s in model.inputs}
    unknown = sorted(set(inputs) - set(names))
    if unknown:
        raise SymgradError(f"model {model.name}: unexpected input(s) {', '.join(unknown)} "
                           f"(inputs are {', '.join(names)})")
    bound = {n: _bind(model, n, v) for n, v in inputs.items()}
    for n, a in bound.items():
        if n in model.numbers and (a.size != 1 or a.ndim > 2):  # (see symgrad.model._numbers)
            raise ValueError(f"model {model.name}: input {n!r} is a scalar Symbol used inside a matrix "
                             f"expression, so it must be one number (a 0-d array, or shape (1,) or "
                             f"(1, 1)), got shape {a.shape}")
    dims = model.dim_values(bound)
    strong = [a.dtype for n, a in bound.items() if type(inputs[n]) not in (float, int, bool)]
    dtype = np.result_type(*strong) if strong else np.dtype(np.float64)
    env = {names[n]: Var(np.array(a, dtype=dtype), needs_grad=names[n] in wrt)  # a copy
           for n, a in bound.items()}
    recorder = _Recorder(model.expr, dims, dtype)
    env.update({d: recorder.const(n) for d, n in dims.items()})
    return recorder.evaluate(model.expr, env), env, dtype


def forward(model, /, **inputs) -> np.ndarray:
    """The value of ``model.expr`` on ``inputs`` (keyword arguments named after the symbols)."""
    return _record(model, inputs, wrt=())[0].value


def value_and_grad(model, /, **inputs) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(value, grads)``: ``grads[str(w)]`` is d sum(value) / d w, shaped like the input ``w``."""
    return vjp(model, None, **inputs)


def vjp(model, cotangent, /, **inputs) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(value, grads)`` with ``grads[str(w)] = cotangent^T d value / d w`` (``cotangent`` shaped
    like the value; ``None``: ones, which is :func:`value_and_grad`)."""
    root, env, dtype = _record(model, inputs, wrt=set(model.wrt))
    if cotangent is not None and np.shape(cotangent) != np.shape(root.value):
        raise SymgradError(f"model {model.name}: cotangent has shape {np.shape(cotangent)}, "
                           f"the value has shape {np.shape(root.value)}")
    if root.needs_grad:
        backward(root, cotangent)
    grads = {}
    for w in model.wrt:
        leaf = env.get(w)
        if leaf is None:  # not passed: only possible when expr does not use it
            grads[str(w)] = np.zeros((), dtype)
        else:
            grads[str(w)] = leaf.grad if leaf.grad is not None else np.zeros_like(leaf.value)
    return root.value, grads


# -- beyond the gradient: exact first derivatives from VJPs, second derivatives by differences --
def jacobian(model, /, **inputs) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(value, {name: J})``, ``J.shape == value.shape + input.shape``: one exact VJP per entry
    of the value (a unit cotangent), so it costs ``value.size`` backward passes."""
    value = np.asarray(forward(model, **inputs))
    rows, shapes = {str(w): [] for w in model.wrt}, {}
    for k in range(value.size):
        u = np.zeros(value.size, value.dtype)
        u[k] = 1
        _, g = vjp(model, u.reshape(value.shape), **inputs)
        for name, gk in g.items():
            rows[name].append(np.ravel(gk))
            shapes[name] = np.shape(gk)
    return value, {name: np.array(r, dtype=value.dtype).reshape(value.shape + shapes[name])
                   for name, r in rows.items()}


def jvp(model, tangents: dict, /, **inputs) -> tuple[np.ndarray, np.ndarray]:
    """``(value, J t)`` for ``tangents`` (a dict by wrt name), from :func:`jacobian`: exact."""
    value, J = jacobian(model, **inputs)
    out = np.zeros(value.shape, value.dtype)
    for name, Jn in J.items():
        t = np.asarray(tangents[name], dtype=value.dtype)
        out += np.tensordot(Jn, t, axes=t.ndim) if t.ndim else Jn * t
    return value, out


def hvp(model, vectors: dict, /, *, step: float = 1e-3, **inputs) -> tuple[np.ndarray, dict, dict]:
    """``(value, grads, {name: H v})``: the Hessian of ``sum(value)`` times ``vectors`` (a dict by
    wrt name), by Richardson-extrapolated central differences of the exact gradient, in float64:
    ``(4 D(h/2) - D(h)) / 3`` with ``D(h) = (grad(x + h v) - grad(x - h v)) / 2h`` and ``h`` relative
    to the size of the inputs and of ``v``: error O(h**4) plus rounding.  The tape has no second
    derivative of its own: this is its independent second-order oracle."""
    x = {k: np.asarray(v, dtype=np.float64) for k, v in inputs.items()}
    value, grads = value_and_grad(model, **x)
    v = {str(w): np.asarray(vectors[str(w)], dtype=np.float64) for w in model.wrt}
    size = max([1.0] + [float(np.max(np.abs(x[k]))) for k in v if np.size(x[k])])
    vmax = max([float(np.max(np.abs(d))) for d in v.values() if d.size] + [0.0])
    if vmax == 0:
        return value, grads, {k: np.zeros_like(g) for k, g in grads.items()}
    h = step * size / vmax

    def diff(h):
        up = value_and_grad(model, **{**x, **{k: x[k] + h * d for k, d in v.items()}})[1]
        down = value_and_grad(model, **{**x, **{k: x[k] - h * d for k, d in v.items()}})[1]
        return {k: (up[k] - down[k]) / (2 * h) for k in up}
    d1, d2 = diff(h), diff(h / 2)
    return value, grads, {k: (4 * d2[k] - d1[k]) / 3 for k in d1}



# -- the layout of sparse derivatives: variables are the wrt inputs raveled in C order, side by side --
def dense_jacobian(model, /, **inputs) -> tuple[np.ndarray, np.ndarray]:
    """``(value, J)``: :func:`jacobian` as one ``(value.size, n)`` array over the variables (the
    oracle of ``sparse_jacobian``): exact."""
    value, J = jacobian(model, **inputs)
    blocks = [np.reshape(J[str(w)], (value.size, -1)) for w in model.wrt]
    return value, np.hstack(blocks) if blocks else np.zeros((value.size, 0))


def dense_hessian(model, /, **inputs) -> tuple[np.ndarray, np.ndarray]:
    """``(value, H)``: the Hessian of ``sum(value)`` as one ``(n, n)`` array over the variables,
    one :func:`hvp` (differences of the exact gradient) per variable (the oracle of
    ``sparse_hessian``)."""
    x = {k: np.asarray(v, dtype=np.float64) for k, v in inputs.items()}
    value, grads = value_and_grad(model, **x)
    names = [str(w) for w in model.wrt]
    shapes = [np.shape(grads[k]) for k in names]
    sizes = [int(np.prod(s)) for s in shapes]
    n, cols = sum(sizes), []
    for e in range(n):
        flat = np.zeros(n)
        flat[e] = 1
        parts = np.split(flat, np.cumsum(sizes)[:-1])
        hv = hvp(model, {k: p.reshape(s) for k, p, s in zip(names, parts, shapes)}, **x)[2]
        cols.append(np.concatenate([np.ravel(hv[k]) for k in names] + [np.zeros(0)]))
    return value, np.stack(cols, axis=1) if cols else np.zeros((0, 0))
