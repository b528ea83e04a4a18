"""SymPy -> IR.

:func:`lower` walks a SymPy expression iteratively (post-order, explicit stack) and builds IR
nodes with the graph's builders; structurally equal SymPy sub-expressions become one node.
One handler per SymPy class, found along the class's MRO (``_lower_<ClassName>``), as in SymPy's
own printers.  A construct without a handler is a :class:`SymgradError` naming it.
"""
from __future__ import annotations

from functools import reduce

import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction
from sympy.matrices.expressions.matexpr import MatrixElement
from sympy.core.numbers import ImaginaryUnit
from sympy.matrices.expressions.slice import MatrixSlice

from .ir import ONE, Graph, Node, mul_dims
from .program import Input, Program
from .errors import SymgradError
from .functions import describe
from .indexed import NotMatrix, sum_to_matrix
from .ops import OPS, size, window_mask
from .rewrites import graph

_FUNCTIONS = {cls: op.name for op in OPS.values() for cls in op.sympy}  # SymPy class name -> op
_RELATIONS = {"StrictGreaterThan": "gt", "GreaterThan": "ge", "StrictLessThan": "lt",
              "LessThan": "le", "Equality": "eq", "Unequality": "ne"}


def short(e, n: int = 70) -> str:
    """``str(e)`` cut to ``n`` characters; a large expression is named by its head only (printing
    it whole would cost time quadratic in the depth of a deep model)."""
    count, stack = 0, [e]
    while stack and count <= 40:
        count += 1
        stack.extend(getattr(stack.pop(), "args", ()))
    s = str(e).replace("\n", " ") if count <= 40 else f"{type(e).__name__}(...)"
    return s if len(s) <= n else s[: n - 3] + "..."


_COMPLEX = object()  # the lowering of a constant that SymPy makes a complex number


def _complex(e, inside=None) -> SymgradError:
    where = f" in {short(inside)}" if inside is not None else ""
    return unsupported(e, f"complex numbers are not supported: SymPy makes the constant {short(e)}{where} "
                          f"the complex number {sp.N(e, 6)}")


def _is_constant(e, kids, constant: set) -> bool:
    """A number, or a scalar expression of numbers only, known from its arguments (SymPy's
    ``is_number`` would walk it again, recursively); a constant's id is added to ``constant``."""
    if isinstance(e, (sp.Number, sp.NumberSymbol, ImaginaryUnit)):
        ok = True
    else:
        ok = (isinstance(e, sp.Expr) and not isinstance(e, (sp.MatrixExpr, sp.Sum)) and bool(kids)
              and all(id(k) in constant for k in kids))
    if ok:
        constant.add(id(e))
    return ok


def _clamped(G, F, axis, lo, m):
    """``F`` with each argument of its elementwise part clamped to the window ``lo``, ``m`` along
    ``axis`` (see the op ``clamp``): through transposes and broadcasts, never into a matmul."""
    memo: dict = {}

    def walk(n, ax):
        if not n.shape or n.shape[ax] == ONE:  # a number, or a line broadcast along the axis
            return n
        if (n.id, ax) not in memo:
            if OPS[n.op].elementwise:
                memo[n.id, ax] = G.op(n.op, *(walk(a, ax) for a in n.args), attr=n.attr)
            elif n.op == "transpose":
                memo[n.id, ax] = G.T(walk(n.args[0], 1 - ax))
            elif n.op == "bcast" and n.args[0].shape:
                memo[n.id, ax] = G.bcast(walk(n.args[0], ax), n.shape)
            else:
                memo[n.id, ax] = G.op("clamp", n, attr=(ax, lo, m))
        return memo[n.id, ax]
    return walk(F, axis)


def unsupported(e, why: str = "") -> SymgradError:
    return SymgradError(f"unsupported SymPy construct {type(e).__name__}: {short(e)}"
                        + (f" ({why})" if why else ""))


def dim(d, where=None, products=True):
    """A SymPy dimension as the IR has it: an int, the name of a dimension Symbol, or (unless
    ``products`` is false: an input's dimensions are read from its array) a product of those
    (``2*N``, the size of a Kronecker product)."""
    d = sp.sympify(d)
    if d.is_Integer:
        return int(d)
    if d.is_Symbol:
        return d.name
    if products and d.is_Mul:
        coeff, factors = d.as_coeff_mul()
        names = [f.name for f in factors if f.is_Symbol]
        names += [f.base.name for f in factors if f.is_Pow and f.base.is_Symbol and f.exp.is_Integer
                  and f.exp > 0 for _ in range(int(f.exp))]
        if coeff.is_Integer and coeff > 0 and len(names) == sum(int(f.exp) if f.is_Pow else 1 for f in factors):
            out = int(coeff)
            for name in names:
                out = mul_dims(out, name)
            return out
    raise SymgradError(f"unsupported dimension {d}" + (f" of {where}" if where is not None else "")
                       + (": use a Symbol, an integer or a product of those" if products
                          else ": use a Symbol or an integer"))


def shape_of(e, products=True) -> tuple:
    return tuple(dim(d, e, products) for d in e.shape)


def leaf_shape(sym):
    """Static shape of an input symbol: ``(r, c)`` for a MatrixSymbol, dynamic (None) otherwise."""
    return shape_of(sym, products=False) if isinstance(sym, sp.MatrixSymbol) else None


# -- provenance: how the model wrote a node, as parts (strings and child node ids) -------------------
_INFIX = {"Add": " + ", "MatAdd": " + ", "Mul": "*", "MatMul": "*", "HadamardProduct": "*",
          "And": " & ", "Or": " | "}
_REL = {"StrictGreaterThan": " > ", "GreaterThan": " >= ", "StrictLessThan": " < ", "LessThan": " <= ",
        "Equality": " == ", "Unequality": " != "}
_LOOSE = (sp.Add, sp.MatAdd, sp.core.relational.Relational, sp.And, sp.Or)  # need parentheses inside an operator
_PRODUCTS = (sp.Mul, sp.MatMul, sp.HadamardProduct)              # ... inside a power or transpose


def _wrapped(kid, kid_id, tight: bool = False):
    if isinstance(kid, _LOOSE) or (tight and isinstance(kid, _PRODUCTS + (sp.Pow, sp.MatPow))):
        return ["(", kid_id, ")"]
    return [kid_id]


def _product(kids, ids, sep="*", tight=False) -> tuple:
    parts: list = []
    for k, (kid, i) in enumerate(zip(kids, ids)):
        parts += ([sep] if k else []) + _wrapped(kid, i, tight)
    return tuple(parts)


def provenance(e, kids, ids) -> tuple:
    """``e`` as parts: its head printed, each child a node id (never a SymPy Dummy name)."""
    name = type(e).__name__
    if not kids:
        if isinstance(e, (sp.OneMatrix, sp.ZeroMatrix)):
            return (f"{'ones' if isinstance(e, sp.OneMatrix) else 'zeros'}({e.shape[0]}, {e.shape[1]})",)
        if isinstance(e, sp.Identity):
            return (f"eye({e.shape[0]})",)
        return (str(e),)
    if isinstance(e, (sp.Mul, sp.MatMul)) and kids[0] == -1:  # -a*b, not -1*a*b
        return ("-", *_product(kids[1:], ids[1:], tight=len(kids) == 2))
    if isinstance(e, sp.Pow) and kids[1] == -1:
        return ("1/", *_wrapped(kids[0], ids[0], True))
    if name in _INFIX:
        if name in ("Add", "MatAdd"):
            return tuple(p for k, i in enumerate(ids) for p in ([" + "] if k else []) + [i])
        return _product(kids, ids, sep=_INFIX[name])
    if name in _REL:
        return (*_wrapped(kids[0], ids[0]), _REL[name], *_wrapped(kids[1], ids[1]))
    if isinstance(e, (sp.Pow, sp.MatPow, sp.HadamardPower)):
        return (*_wrapped(kids[0], ids[0], True), "**", *_wrapped(kids[1], ids[1], True))
    if isinstance(e, sp.Transpose):
        return (*_wrapped(kids[0], ids[0], True), ".T")
    if isinstance(e, MatrixElement):
        return (*_wrapped(kids[0], ids[0], True), f"[{e.i}, {e.j}]")
    if isinstance(e, sp.Trace):
        return ("tr(", ids[0], ")")
    if isinstance(e, sp.Not):
        return ("~", *_wrapped(kids[0], ids[0]))
    if isinstance(e, sp.Piecewise):
        parts = ["Piecewise("]
        for k in range(0, len(ids), 2):
            parts += ([", "] if k else []) + ["(", ids[k], ", ", ids[k + 1], ")"]
        return (*parts, ")")
    if isinstance(e, ElementwiseApplyFunction):
        return ("applyfunc(", ids[0], ")")
    parts = [f"{name}("]
    for k, i in enumerate(ids):
        parts += ([", "] if k else []) + [i]
    return (*parts, ")")


class Lowering:
    """Lowers SymPy expressions of one model into the graph ``G``."""

    def __init__(self, G: Graph, dims):
        self.G = G
        self.dims = set(dims)

    def lower(self, expr, env: dict | None = None) -> Node:
        # keyed by id(): hashing a deep SymPy expression recurses; equal sub-expressions that are
        # distinct objects still become one node, by the graph's interning
        memo: dict = {id(k): v for k, v in (env or {}).items()}
        constant: set = set()  # ids of the constant sub-expressions lowered (numbers only)
        stack = [(expr, None)]
        while stack:
            e, handler = stack.pop()
            if id(e) in memo:
                continue
            kids = self._children(e)
            if handler is None:  # first visit: an unsupported construct is named before its arguments
                stack.append((e, self._handler(e)))
                stack.extend((k, None) for k in reversed(kids) if id(k) not in memo)
                continue
            nodes = [memo[id(k)] for k in kids]
            if _is_constant(e, kids, constant):
                node = memo[id(e)] = self._constant_value(e, nodes, handler)
                if node is _COMPLEX or _COMPLEX in nodes:
                    continue
            else:
                bad = next((k for k, n in zip(kids, nodes) if n is _COMPLEX), None)
                if bad is not None:
                    raise _complex(bad, e)
                node = memo[id(e)] = handler(e, nodes)
            if node.id not in self.G.src:
                self.G.src[node.id] = provenance(e, kids, [n.id for n in nodes])
        if memo[id(expr)] is _COMPLEX:
            raise _complex(expr)
        return memo[id(expr)]

    def _constant_value(self, e, nodes, handler):
        """A constant sub-expression lowered, or ``_COMPLEX`` when SymPy makes it a complex number
        (``(-1)**(1/3)``, ``exp(I*pi/3)``, ``sqrt(-2)``, ``acos(2)``): the error is raised where it
        meets a symbol (or is the model), so that it names the whole constant, not the ``I`` in it,
        and no rewrite ever computes a complex value."""
        if e.is_extended_real is False:
            return _COMPLEX
        if any(n is _COMPLEX for n in nodes):  # real, of complex parts (re(exp(I*pi/3)))
            return self.G.const(float(sp.N(e)))
        return handler(e, nodes)

    # -- dispatch
    def _children(self, e) -> list:
        if isinstance(e, (sp.MatrixSymbol, sp.Symbol, sp.Number, sp.NumberSymbol, sp.Sum,
                          sp.logic.boolalg.BooleanAtom)):
            return []
        if isinstance(e, ElementwiseApplyFunction):
            return [e.expr]
        if isinstance(e, (MatrixElement, MatrixSlice)):
            return [e.parent]
        if isinstance(e, sp.Piecewise):
            return [x for pair in e.args for x in pair]
        if isinstance(e, (sp.OneMatrix, sp.ZeroMatrix, sp.Identity)):
            return []
        if isinstance(e, sp.MatrixBase):  # an explicit matrix: its entries, row by row
            return list(e)
        return list(e.args)

    def _handler(self, e):
        if getattr(type(e), "_symgrad_spec", None) is not None:  # a symgrad.Function
            return lambda e, k: self.G.op("call", *k, attr=describe(type(e)._symgrad_spec))
        for cls in type(e).__mro__:
            h = getattr(self, f"_lower_{cls.__name__}", None)
            if h is not None:
                return h
            if cls.__name__ in _FUNCTIONS:
                op = _FUNCTIONS[cls.__name__]
                return lambda e, k: self.G.call(op, *k) if len(k) == 1 else self._bad(e, "arity")
        raise unsupported(e)

    def _bad(self, e, why=""):
        raise unsupported(e, why)

    # -- leaves
    def _lower_Symbol(self, e, k):
        return size(self.G, e.name) if e in self.dims else self.G.input(e.name, None)

    def _lower_MatrixSymbol(self, e, k):
        return self.G.input(e.name, leaf_shape(e))


    def _lower_Number(self, e, k):
        if not e.is_real:
            raise unsupported(e, "not a real number")
        return self.G.const(float(e))

    _lower_NumberSymbol = _lower_Number

    def _lower_BooleanTrue(self, e, k):
        return self.G.const(1)

    def _lower_BooleanFalse(self, e, k):
        return self.G.const(0)

    def _lower_ImaginaryUnit(self, e, k):
        raise unsupported(e, "complex numbers are not supported")

    # -- scalar arithmetic
    def _lower_Add(self, e, k):
        return reduce(self.G.add, k)

    _lower_MatAdd = _lower_Add

    def _lower_Mul(self, e, k):
        G = self.G
        num = [n for n in k if not (n.op == "div" and n.args[0].op == "const" and n.args[0].attr == 1)]
        den = [n.args[1] for n in k if n not in num]
        top = reduce(G.mul, num) if num else G.const(1)
        return G.div(top, reduce(G.mul, den)) if den else top

    def _lower_Pow(self, e, k):
        return self.G.op("pow", *k)

    _lower_HadamardPower = _lower_Pow

    def _lower_HadamardProduct(self, e, k):
        return reduce(self.G.mul, k)

    def _lower_MinMaxBase(self, e, k):
        return reduce(lambda a, b: self.G.call("maximum" if isinstance(e, sp.Max) else "minimum", a, b), k)

    def _lower_Piecewise(self, e, k):
        G = self.G
        pairs = list(zip(k[0::2], k[1::2]))
        last_val, last_cond = pairs[-1]
        out = last_val if e.args[-1].cond == sp.true else G.where(last_cond, last_val, G.const(float("nan")))
        for val, cond in reversed(pairs[:-1]):
            out = G.where(cond, val, out)
        return out

    def _lower_Heaviside(self, e, k):
        G = self.G
        x = k[0]
        h0 = k[1] if len(k) > 1 else G.const(0.5)
        zero = G.const(0)
        return G.where(G.op("gt", x, zero), G.const(1), G.where(G.op("eq", x, zero), h0, zero))

    # Symbols are complex to SymPy, which may write re(x), im(x), arg(x) into a model; inputs
    # here are real arrays, where these are simple
    def _lower_re(self, e, k):
        return k[0]

    _lower_conjugate = _lower_re

    def _lower_im(self, e, k):
        return self.G.mul(self.G.const(0), k[0])

    def _lower_arg(self, e, k):
        return self.G.where(self.G.op("lt", k[0], self.G.const(0)), self.G.const(float(sp.pi)), self.G.const(0))

    def _lower_atan2(self, e, k):
        return self.G.op("arctan2", *k)

    def _lower_polygamma(self, e, k):  # digamma(x) is SymPy's polygamma(0, x)
        return self.G.op("polygamma", k[1], attr=self._order(e, "polygamma", integer=True, least=0))

    def _order(self, e, what, integer=False, least=None):
        """The constant order of a special function (its first argument), else an error naming it."""
        nu = e.args[0]
        ok = nu.is_Integer if integer else (nu.is_number and nu.is_real)
        if not ok or (least is not None and nu < least):
            kind = "a constant integer" + (f" >= {least}" if least is not None else "") if integer else "a real constant"
            raise unsupported(e, f"the order of {what} must be {kind}")
        return int(nu) if nu.is_Integer else float(nu)

    def _lower_besselj(self, e, k):
        return self.G.op("besselj", k[1], attr=self._order(e, "besselj"))

    def _lower_besseli(self, e, k):
        return self.G.op("besseli", k[1], attr=self._order(e, "besseli"))

    def _lower_expint(self, e, k):  # SymPy writes E_0 as exp(-x)/x and a half-integer order with erfc
        return self.G.op("expint", k[1], attr=self._order(e, "expint", integer=True, least=1))

    def _lower_LambertW(self, e, k):
        if len(e.args) > 1 and e.args[1] != 0:
            raise unsupported(e, "only the principal branch of LambertW (k = 0)")
        return self.G.op("lambertw", k[0])

    def _lower_beta(self, e, k):  # B(a, b) = exp(lgamma(a) + lgamma(b) - lgamma(a + b)), for a, b > 0
        G, (a, b) = self.G, k
        lg = lambda t: G.call("loggamma", t)  # noqa: E731
        return G.call("exp", G.sub(G.add(lg(a), lg(b)), lg(G.add(a, b))))

    # functions SymPy keeps whole that are spelled with the table's ops
    def _lower_cot(self, e, k):
        return self.G.div(self.G.call("cos", k[0]), self.G.call("sin", k[0]))

    def _lower_sec(self, e, k):
        return self.G.div(self.G.const(1), self.G.call("cos", k[0]))

    def _lower_csc(self, e, k):
        return self.G.div(self.G.const(1), self.G.call("sin", k[0]))

    def _lower_sinc(self, e, k):  # SymPy's sinc(x) = sin(x)/x, 1 at 0 (NumPy's is sin(pi x)/(pi x))
        G, x = self.G, k[0]
        return G.where(G.op("eq", x, G.const(0)), G.const(1), G.div(G.call("sin", x), x))

    def _lower_frac(self, e, k):
        return self.G.sub(k[0], self.G.call("floor", k[0]))

    def _lower_Mod(self, e, k):  # a - b floor(a/b): the sign of b, as Python's % and NumPy's mod
        G, a, b = self.G, k[0], k[1]
        return G.sub(a, G.mul(b, G.call("floor", G.div(a, b))))

    def _lower_ITE(self, e, k):
        return self.G.where(*k)

    def _lower_Relational(self, e, k):
        op = _RELATIONS.get(type(e).__name__)
        if op is None:
            raise unsupported(e)
        return self.G.op(op, *k)

    def _lower_And(self, e, k):
        return reduce(lambda a, b: self.G.op("and", a, b), k)

    def _lower_Or(self, e, k):
        return reduce(lambda a, b: self.G.op("or", a, b), k)

    def _lower_Not(self, e, k):
        return self.G.op("not", *k)

    # -- matrices
    def _lower_MatMul(self, e, k):
        G = self.G
        mats = [n for n, a in zip(k, e.args) if isinstance(a, sp.MatrixExpr)]
        scalars = [n for n, a in zip(k, e.args) if not isinstance(a, sp.MatrixExpr)]
        out = reduce(G.matmul, mats)
        return G.mul(reduce(G.mul, scalars), out) if scalars else out

    def _lower_MatPow(self, e, k):
        n = e.args[1]
        if not (n.is_Integer and n != 0):
            raise unsupported(e, "only nonzero integer matrix powers")
        base = k[0] if n > 0 else self.G.op("inv", k[0])
        return reduce(self.G.matmul, [base] * abs(int(n)))

    def _lower_DiagMatrix(self, e, k):
        return self.G.op("diag", k[0])

    def _lower_DiagonalOf(self, e, k):
        return self.G.op("diagonal", k[0])

    def _lower_KroneckerProduct(self, e, k):
        return reduce(lambda a, b: self.G.op("kron", a, b), k)

    def _lower_Inverse(self, e, k):
        return self.G.op("inv", k[0])

    def _lower_Determinant(self, e, k):
        return self.G.op("det", k[0])

    def _lower_Transpose(self, e, k):
        return self.G.T(k[0])

    def _lower_Trace(self, e, k):
        return self.G.op("trace", k[0])

    def _lower_OneMatrix(self, e, k):
        return self.G.bcast(self.G.const(1), shape_of(e))

    def _lower_ZeroMatrix(self, e, k):
        return self.G.bcast(self.G.const(0), shape_of(e))

    def _lower_Identity(self, e, k):
        return self.G.op("eye", attr=dim(e.shape[0], e))

    def _lower_MatrixElement(self, e, k):
        if not (e.i.is_Integer and e.j.is_Integer):
            raise unsupported(e, "an entry needs integer indices (or a Sum over them)")
        if k[0].shape == (1, 1):
            return self.G.op("item", k[0])
        return self.G.op("entry", k[0], attr=(int(e.i), int(e.j)))

    def _lower_MatrixSlice(self, e, k):
        axes = []
        for (start, stop, step), n in zip((e.rowslice, e.colslice), e.parent.shape):
            if not (sp.sympify(start).is_Integer and sp.sympify(step).is_Integer):
                raise unsupported(e, "a slice needs integer start and step")
            if sp.sympify(stop) == sp.sympify(n) and start == 0 and step == 1:
                axes.append((0, None, 1))              # the whole axis
            elif sp.sympify(stop).is_Integer:  # SymPy's length is (stop - start) // step
                start, step = int(start), int(step)
                axes.append((start, start + (int(stop) - start) // step * step, step))
            else:
                raise unsupported(e, "a slice of a symbolic dimension must be the whole axis")
        return self.G.op("slice", k[0], attr=tuple(axes))

    def _lower_ImmutableDenseMatrix(self, e, k):
        """An explicit matrix of scalar expressions (a Cholesky factor built from packed
        parameters): the sum of its nonzero entries, each put in zeros of its shape (``onehot``,
        whose gradient is that entry of the cotangent).  Meant for small matrices: one array each."""
        G, shape = self.G, shape_of(e)
        cols = shape[1]
        # an entry of scalar inputs has a run-time shape, one entry in a model with matrices (see
        # symgrad.model._numbers): its sum makes it 0-d, so that its gradient is one entry of
        # the cotangent, never the cotangent broadcast like the matrix
        parts = [G.op("onehot", n if n.shape == () else G.sum(n), attr=(shape, p // cols, p % cols))
                 for p, n in enumerate(k) if not (n.op == "const" and n.attr == 0)]
        return reduce(G.add, parts) if parts else G.bcast(G.const(0), shape)

    def _lower_Shifted(self, e, k):  # x[i + c] of an indexed Sum (symgrad.indexed)
        return self.G.op("shift", k[0], attr=(int(e.args[1]), int(e.args[2])))

    def _lower_Window(self, e, k):
        """A Sum over part of an axis (symgrad.indexed): the entries before ``lo`` and the last ``m``
        are 0, selected away (a where: an infinite entry there never becomes a NaN), and computed
        from the entries inside (``clamp``): never from a shifted x's padding."""
        G, F = self.G, k[0]
        axis, lo, m = (int(a) for a in e.args[1:])
        return G.where(window_mask(G, F.shape, axis, lo, m), _clamped(G, F, axis, lo, m), G.const(0))

    def _lower_ElementwiseApplyFunction(self, e, k):
        f = e.function
        if isinstance(f, sp.Lambda):
            (var,), body = f.variables, f.expr
        else:
            var = sp.Dummy("t")
            body = f(var)
        return self.lower(body, {var: k[0]})

    def _lower_Sum(self, e, k):
        """An indexed ``Sum`` -- what SymPy makes of ``(E.T*E)[0, 0]`` -- turned back into matrix
        operations by :mod:`symgrad.indexed`; one that is not a written-out matrix expression is
        an error naming it."""
        try:
            result, bindings = sum_to_matrix(e)
        except NotMatrix as exc:
            raise unsupported(e, str(exc)) from None
        env: dict = {}
        for P, body, args in bindings:
            inner = {t: self.lower(m, env) for t, m in args.items()}
            env[P] = self.lower(body, {**env, **inner})
        return self.lower(result, env)


def lower(G: Graph, model) -> Node:
    """Lower ``model.expr`` into ``G`` and return the output node."""
    return Lowering(G, model.dims).lower(model.expr)


def lower_model(model, rewriter=None) -> Program:
    """The model as a :class:`~symgrad.program.Program`: the only SymPy-reading step.  Its graph
    is built with ``rewriter`` (default: every registered rewrite, see :mod:`symgrad.rewrites`)."""
    G = graph(rewriter)
    inputs = [Input(str(s), leaf_shape(s)) for s in model.inputs]
    out = lower(G, model)
    input_nodes = {i.name: G.input(i.name, i.shape) for i in inputs}  # the nodes lowering made
    for i in inputs:
        G.src.setdefault(input_nodes[i.name].id, (i.name,))
    return Program(name=model.name or "model", graph=G, out=out, inputs=inputs, input_nodes=input_nodes,
                   wrt=[str(w) for w in model.wrt], dims=[str(d) for d in model.dims],
                   source_hash=model.source_hash(), src=G.src, numbers=model.numbers)
