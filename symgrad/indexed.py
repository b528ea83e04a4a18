"""Indexed ``Sum``s back into matrix expressions.

Indexing a matrix *expression* makes SymPy write the entry out: ``(E.T*E)[0, 0]`` becomes

    Sum((b[0, 0] - y[i, 0] + Sum(W[k, 0]*X[i, k], (k, 0, d - 1)))**2, (i, 0, N - 1))

:func:`sum_to_matrix` turns such a ``Sum`` back into the matrix operations it came from --
``MatMul``, ``MatAdd``, ``Transpose``, ``HadamardProduct``, ``OneMatrix`` (sums and broadcasts),
``Trace``, ``applyfunc`` -- which :mod:`symgrad.lower` compiles as usual, so the module computes
``X @ W`` and column sums, never a Python loop.  (Model files keep ``(E.T*E)[0, 0]`` whole while
they load, see :func:`symgrad.model.load_models`; this is for models built in-process.)

How: every sub-expression of the ``Sum`` is read as an array indexed by the summation indices free
in it (at most two of them: a row index and a column index).

* ``X[i, k]`` is ``X`` with its rows on ``i`` and its columns on ``k``; ``y[i, 0]`` of a column
  ``y`` is ``y`` with its rows on ``i``; ``S[i, i]`` is the diagonal of ``S`` (a ``Trace`` when summed
  alone); ``KroneckerDelta(i, j)`` is an ``Identity``; an entry without summation indices
  (``b[0, 0]``) is a scalar.
* A ``Mul`` is kept as its list of factors and an ``Add`` as its list of terms until something
  needs them as one array, so that a ``Sum`` contracts the factors index by index: a factor alone
  is summed over ``k`` (``OneMatrix(1, n)*A``); two factors sharing ``k`` are a matrix product
  (``A[i, k]*B[k, j]`` is ``A*B``, ``u[k]*v[k]`` is ``u.T*v``); factors with the same indices are
  multiplied elementwise first; a factor without ``k`` stays out of the sum, and a product that
  does not depend on ``k`` at all is multiplied by the number of terms.  The index that the fewest
  factors depend on goes first, so a flat ``Sum`` over several indices becomes a chain of products.
  A ``Sum`` over an ``Add`` is the sum of the sums of its terms; ``x**2`` is the product ``x*x``.
  A product of a sum whose terms have more than two indices between them (``x[i, j] - m[k, j]``,
  squared) is multiplied out first: each term is an array, the sum is not.
* Any other function of entries (``exp``, ``Max``, ``Piecewise``, relations, powers, ...) is
  elementwise: it is applied to the arrays of its arguments with ``applyfunc`` when they are one
  array; a function of several different arrays (``Max(A[i, j], B[i, j])``) is lowered
  elementwise by the lowering itself (a placeholder: see :func:`sum_to_matrix`).
* Arrays are combined with explicit broadcasts: ``A[i, j] + b[0, j]`` adds ``OneMatrix(n, 1)*b``,
  ``u[i, 0]*v[j, 0]`` is the outer product ``u*v.T``.

Limits.  A summation index must run over a whole dimension: ``(k, 0, n - 1)`` where ``n`` is the
dimension of every matrix it indexes (symbolic bounds are compared symbolically, so ``d - 1``
matches a dimension ``d``).  Not converted, and reported with the reason: an index shifted or
scaled (``X[i + 1, 0]``); a fixed index into a dimension longer than 1 of a matrix expression
(``(A*B)[i, 2]``; of a MatrixSymbol it is that row or column, a slice: ``means[k, 0]``); a
summation index used as a number; bounds that depend on another index; one index shared by three
or more arrays that no elementwise product can merge (not a matrix product); a value with more
than two free indices that must be one array.  ``Lowering._lower_Sum`` turns these into the lowering's
``unsupported SymPy construct Sum: ...`` error, which names the ``Sum``.

Every walk here is iterative (explicit stack, memoised by object), and matrix expressions are built
with ``Basic.__new__`` and their shapes tracked here: SymPy's own constructors check shapes with
``.shape``, which recurses once per level of the expression, and hashing a new expression would
recurse as deep.  So converting a deep model takes no more Python stack than a shallow one.
"""
from __future__ import annotations

import itertools

import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction
from sympy.matrices.expressions.matexpr import MatrixElement
from sympy.matrices.expressions.slice import MatrixSlice

__all__ = ["NotMatrix", "sum_to_matrix", "indexed_to_matrices"]

_ONE, _ZERO = sp.S.One, sp.S.Zero


class NotMatrix(Exception):
    """A ``Sum`` that is not a matrix expression written out; the message says why."""


class _Placeholder(sp.MatrixSymbol):
    """A MatrixSymbol equal only to itself (as a Dummy is): SymPy's cache can never hand back an
    expression built around another placeholder of the same name and shape."""

    __slots__ = ("_serial",)
    _count = itertools.count()

    def __new__(cls, name, n, m):
        obj = super().__new__(cls, name, n, m)
        obj._serial = next(cls._count)
        return obj

    def _hashable_content(self):
        return super()._hashable_content() + (self._serial,)


# -- matrix expressions with their shapes -------------------------------------------------------
class _M:
    """A SymPy matrix expression and its shape (kept here: SymPy's ``.shape`` recurses)."""

    __slots__ = ("expr", "shape")

    def __init__(self, expr, shape):
        self.expr, self.shape = expr, tuple(shape)


def _new(cls, *args):
    """``cls(*args)`` without SymPy's checks (the shapes are checked here), hashed at once: its
    arguments are hashed already, so this never recurses, nor does hashing anything built on it."""
    obj = sp.Basic.__new__(cls, *args)
    hash(obj)
    return obj


def _same(a, b) -> bool:
    return a == b or sp.expand(a - b) == 0


def _user(e) -> str:
    """An entry as the model wrote it: ``x[i + 1]`` of a column (an IndexedBase with one index)."""
    return f"{e.parent}[{e.i}]" if e.j == 0 and e.parent.shape[1] == 1 else str(e)


def _leaf(expr) -> _M:
    return _M(expr, expr.shape)


def _ones(r, c) -> _M:
    return _M(sp.OneMatrix(r, c), (r, c))


def _transpose(m: _M) -> _M:
    shape = m.shape[::-1]
    if isinstance(m.expr, sp.Transpose):
        return _M(m.expr.arg, shape)
    if isinstance(m.expr, sp.OneMatrix):
        return _ones(*shape)
    return _M(_new(sp.Transpose, m.expr), shape)


def _matmul(*ms) -> _M:
    ms = [m for m in ms if m is not None]
    for a, b in zip(ms, ms[1:]):
        if not _same(a.shape[1], b.shape[0]):
            raise NotMatrix(f"cannot multiply {a.expr} ({a.shape}) by {b.expr} ({b.shape})")
    if len(ms) == 1:
        return ms[0]
    return _M(_new(sp.MatMul, *[m.expr for m in ms]), (ms[0].shape[0], ms[-1].shape[1]))


def _elementwise(cls, ms) -> _M:
    for m in ms[1:]:
        if not (_same(m.shape[0], ms[0].shape[0]) and _same(m.shape[1], ms[0].shape[1])):
            raise NotMatrix(f"shapes {ms[0].shape} and {m.shape} differ "
                            f"({ms[0].expr} and {m.expr})")
    return ms[0] if len(ms) == 1 else _M(_new(cls, *[m.expr for m in ms]), ms[0].shape)


def _scaled(coeff, m: _M) -> _M:
    return m if coeff == _ONE else _M(_new(sp.MatMul, coeff, m.expr), m.shape)


def _entry(m: _M):
    """The scalar ``m[0, 0]`` of a 1x1 ``m``."""
    return _new(MatrixElement, m.expr, _ZERO, _ZERO)


def _broadcast_scalar(s, shape) -> _M:
    """The scalar ``s`` as a matrix of ``shape``; ``c*B[0, 0]`` of a 1x1 matrix ``B`` becomes
    ``c*OneMatrix(n, 1)*B``, as a model writes a bias."""
    c, rest = s.as_coeff_Mul() if isinstance(s, sp.Mul) else (_ONE, s)
    if (isinstance(rest, MatrixElement) and isinstance(rest.parent, sp.MatrixSymbol)
            and rest.parent.shape == (1, 1)):
        rows, cols = shape
        m = _matmul(_ones(rows, 1) if rows != 1 else None, _M(rest.parent, (1, 1)),
                    _ones(1, cols) if cols != 1 else None)
        return _scaled(c, m)
    return _scaled(s, _ones(*shape))


class Shifted(sp.MatrixExpr):
    """``Shifted(M, axis, c)``: ``M`` moved by ``c`` along ``axis`` (entry ``p`` is ``M``'s ``p + c``,
    0 past an end), for ``x[i + c]`` in a Sum; lowered to the ``shift`` op."""

    @property
    def shape(self):
        return self.args[0].shape


class Window(sp.MatrixExpr):
    """``Window(F, axis, lo, m)``: ``F`` with the entries before ``lo`` and the last ``m`` along
    ``axis`` set to 0, for a Sum over part of an axis (``(i, 0, n - 2)``); lowered to a ``where``."""

    @property
    def shape(self):
        return self.args[0].shape


def _offset(lo, hi, dim):
    """``(lo, m)`` when ``lo..hi`` is a window of an axis of length ``dim``: ``lo >= 0`` and
    ``m = dim - 1 - hi >= 0`` integers; else None."""
    m = sp.expand(dim - 1 - hi)
    ok = sp.sympify(lo).is_Integer and lo >= 0 and m.is_Integer and m >= 0
    return (int(lo), int(m)) if ok else None


# -- values --------------------------------------------------------------------------------------
class _Node:
    """An array: the matrix ``m`` whose rows run over the summation index ``idx[0]`` and whose
    columns run over ``idx[1]`` (``None``: a dimension of size 1, not indexed).  ``t`` stands for
    one entry of it in an elementwise body; ``diag`` is ``S`` when this is the diagonal of ``S``."""

    __slots__ = ("m", "idx", "t", "diag")

    def __init__(self, m: _M, idx, diag=None):
        self.m, self.idx, self.diag = m, tuple(idx), diag
        self.t = sp.Dummy("e")

    @property
    def indices(self) -> frozenset:
        return frozenset(k for k in self.idx if k is not None)

    def dim(self, k):
        return self.m.shape[self.idx.index(k)]

    def oriented(self, idx) -> _M:
        """The matrix with its rows on ``idx[0]`` and its columns on ``idx[1]``."""
        if self.idx == tuple(idx):
            return self.m
        assert self.idx == tuple(idx)[::-1], (self.idx, idx)
        return _transpose(self.m)


class _Factor:
    """An elementwise function of arrays: ``body`` is a scalar expression in their ``t``."""

    __slots__ = ("body", "leaves", "indices", "node")

    def __init__(self, body, leaves: dict):
        self.body, self.leaves = body, leaves  # leaves: id(node) -> node, in order of appearance
        self.indices = frozenset().union(*(n.indices for n in leaves.values()))
        self.node = None  # the array, once asked for

    @classmethod
    def of(cls, node: _Node) -> "_Factor":
        f = cls(node.t, {id(node): node})
        f.node = node
        return f


class _Product:
    __slots__ = ("coeff", "factors")

    def __init__(self, coeff, factors=()):
        self.coeff, self.factors = coeff, tuple(factors)  # coeff: a scalar without indices


class _Val:
    """The value of one sub-expression of the ``Sum``: a sum of products of factors."""

    __slots__ = ("terms", "indices", "node")

    def __init__(self, terms):
        self.terms = tuple(terms)
        self.indices = frozenset().union(*(f.indices for p in self.terms for f in p.factors))
        self.node = None

    @classmethod
    def scalar(cls, expr) -> "_Val":
        return cls([_Product(expr)])

    @classmethod
    def of(cls, node: _Node) -> "_Val":
        return cls([_Product(_ONE, [_Factor.of(node)])])

    @property
    def is_scalar(self) -> bool:
        return not self.indices

    def scalar_expr(self):
        coeffs = [p.coeff for p in self.terms]
        return coeffs[0] if len(coeffs) == 1 else sp.Add(*coeffs)

    def single_factor(self):
        """The factor of a value that is one factor (with coefficient 1), else None."""
        if len(self.terms) == 1 and self.terms[0].coeff == _ONE and len(self.terms[0].factors) == 1:
            return self.terms[0].factors[0]
        return None


def _dims(nodes) -> dict:
    """index -> the dimension it runs over, checked to agree among ``nodes``."""
    out: dict = {}
    for n in nodes:
        for k in n.indices:
            d = n.dim(k)
            if k in out and not _same(out[k], d):
                raise NotMatrix(f"index {k} runs over {out[k]} in one place and over {d} in another")
            out.setdefault(k, d)
    return out


def _order(nodes) -> tuple:
    """(row index, column index or None) of an array of the indices of ``nodes``: the order of
    the first node with two indices, else the order of appearance."""
    seen: list = []
    for n in nodes:
        seen += [k for k in n.idx if k is not None and k not in seen]
    if len(seen) > 2:
        raise NotMatrix(f"a value with more than two free indices ({', '.join(map(str, seen))}) "
                        "is not a matrix")
    for n in nodes:
        if None not in n.idx:
            return n.idx
    return tuple((seen + [None, None])[:2])


def _shape(order, dims) -> tuple:
    return tuple(_ONE if k is None else dims[k] for k in order)


def _broadcast(node: _Node, order, dims) -> _M:
    """``node`` as an array of the full shape of ``order``."""
    r, c = order
    if node.indices == frozenset(k for k in order if k is not None):
        return node.oriented(order)
    if node.indices == {r}:
        return _matmul(node.oriented((r, None)), _ones(1, dims[c]))
    return _matmul(_ones(dims[r], 1), node.oriented((None, c)))


def _product_matrix(coeff, nodes, order, dims) -> _M:
    """``coeff`` times the elementwise product of ``nodes``, as an array of the shape of ``order``."""
    r, c = order
    if c is None:
        full, col, row = [n.oriented(order) for n in nodes], [], []
    else:
        full = [n.oriented(order) for n in nodes if len(n.indices) == 2]
        col = [n.oriented((r, None)) for n in nodes if n.indices == {r}]
        row = [n.oriented((None, c)) for n in nodes if n.indices == {c}]
    had = sp.HadamardProduct
    if col and row:
        full.append(_matmul(_elementwise(had, col), _elementwise(had, row)))  # an outer product
    elif col:
        full.append(_matmul(_elementwise(had, col), _ones(1, dims[c])))
    elif row:
        full.append(_matmul(_ones(dims[r], 1), _elementwise(had, row)))
    if full:
        return _scaled(coeff, _elementwise(had, full))
    return _broadcast_scalar(coeff, _shape(order, dims))


class _Converter:
    def __init__(self):
        self.ranges: dict = {}  # summation index -> (lo, hi), from the Sums that bind it
        self.bindings: list = []  # (placeholder, scalar body, {t: matrix expression})
        self._placeholders = itertools.count()

    # -- arrays
    def factor_node(self, f: _Factor) -> _Node:
        if f.node is not None:
            return f.node
        leaves = list(f.leaves.values())
        if len(leaves) == 1:
            (leaf,) = leaves
            fn = sp.Lambda(leaf.t, f.body)
            f.node = _Node(_M(_new(ElementwiseApplyFunction, fn, leaf.m.expr), leaf.m.shape), leaf.idx)
        else:  # a function of several arrays: the lowering applies it, broadcasting
            order, dims = _order(leaves), _dims(leaves)
            shape = _shape(order, dims)
            P = _Placeholder(f"_symgrad_elementwise_{next(self._placeholders)}", *shape)
            self.bindings.append((P, f.body, {n.t: _broadcast(n, order, dims).expr for n in leaves}))
            f.node = _Node(_M(P, shape), order)
        return f.node

    def materialize(self, val: _Val) -> _Node:
        """An indexed value as one array."""
        if val.node is None:
            f = val.single_factor()
            if f is not None:
                val.node = self.factor_node(f)
            else:
                products = [(p.coeff, [self.factor_node(f) for f in p.factors]) for p in val.terms]
                every = [n for _, nodes in products for n in nodes]
                order, dims = _order(every), _dims(every)
                ms = [_product_matrix(coeff, nodes, order, dims) for coeff, nodes in products]
                val.node = _Node(_elementwise(sp.MatAdd, ms), order)
        return val.node

    def factor(self, val: _Val) -> _Factor:
        f = val.single_factor()
        return f if f is not None else _Factor.of(self.materialize(val))

    def elementwise_product(self, nodes) -> _Node:
        order = _order(nodes)
        return _Node(_product_matrix(_ONE, nodes, order, _dims(nodes)), order)

    # -- contraction
    def contract(self, nodes: list, k):
        """The sum over ``k`` of the elementwise product of ``nodes`` (each indexed by ``k``):
        a node, or a scalar when no index is left."""
        if len(nodes) == 2 and all(n.indices == {k} for n in nodes):  # a dot product u.T*v
            return self.result(_matmul(nodes[0].oriented((None, k)), nodes[1].oriented((k, None))),
                               (None, None))
        groups: dict = {}
        for n in nodes:  # equal indices: an elementwise product first
            groups.setdefault(n.indices, []).append(n)
        nodes = [g[0] if len(g) == 1 else self.elementwise_product(g) for g in groups.values()]
        while len(nodes) > 2:  # fold a node into one whose indices include its own
            pair = next(((a, b) for a in nodes for b in nodes if a is not b and a.indices <= b.indices), None)
            if pair is None:
                raise NotMatrix(f"the sum over {k} joins three arrays "
                                f"({', '.join(str(n.m.expr) for n in nodes)}): not a matrix product")
            a, b = pair
            nodes = [n for n in nodes if n is not a and n is not b] + [self.elementwise_product([b, a])]
        if len(nodes) == 1:
            (n,) = nodes
            if n.diag is not None:
                return _new(sp.Trace, n.diag)
            if n.idx[0] == k:
                return self.result(_matmul(_ones(1, n.dim(k)), n.m), (None, n.idx[1]))
            return self.result(_matmul(n.m, _ones(n.dim(k), 1)), (n.idx[0], None))
        a, b = nodes
        oa = next((x for x in a.idx if x not in (k, None)), None)
        ob = next((x for x in b.idx if x not in (k, None)), None)
        if (a.idx != (oa, k)) + (b.idx != (k, ob)) > (b.idx != (ob, k)) + (a.idx != (k, oa)):
            a, b, oa, ob = b, a, ob, oa  # b*a needs fewer transposes than a*b
        return self.result(_matmul(a.oriented((oa, k)), b.oriented((k, ob))), (oa, ob))

    @staticmethod
    def result(m: _M, idx):
        return _entry(m) if idx == (None, None) else _Node(m, idx)

    def sum_product(self, p: _Product, limits) -> _Product:
        coeff, factors, todo = p.coeff, list(p.factors), list(limits)
        while todo:
            # the index that the fewest factors depend on first: sums of constants, then
            # reductions, then matrix products
            k, lo, hi = min(todo, key=lambda lim: sum(lim[0] in f.indices for f in factors))
            todo = [lim for lim in todo if lim[0] != k]
            inside = [f for f in factors if k in f.indices]
            if not inside:
                coeff = sp.Mul(coeff, hi - lo + 1)
                continue
            factors = [f for f in factors if k not in f.indices]
            nodes = [self.factor_node(f) for f in inside]
            windows = {_offset(lo, hi, n.dim(k)) for n in nodes}
            if len(windows) != 1 or None in windows:
                n = next(n for n in nodes if _offset(lo, hi, n.dim(k)) is None) if None in windows else nodes[0]
                raise NotMatrix(f"the bounds ({lo}, {hi}) of {k} do not span the dimension "
                                f"{n.dim(k)} of {n.m.expr}, nor a part of it from an integer to the "
                                f"end less an integer (0, {n.dim(k)} - 2)")
            (window,) = windows
            if window != (0, 0):  # a part of the axis: the product, 0 outside the part
                n = self.elementwise_product(nodes) if len(nodes) > 1 else nodes[0]
                axis = n.idx.index(k)
                nodes = [_Node(_M(_new(Window, n.m.expr, sp.Integer(axis), *map(sp.Integer, window)), n.m.shape),
                               n.idx)]
            out = self.contract(nodes, k)
            if isinstance(out, _Node):
                factors.append(_Factor.of(out))
            else:
                coeff = sp.Mul(coeff, out)
        return _Product(coeff, factors)

    # -- the walk
    def collect(self, expr):
        """The range of every summation index in ``expr``."""
        seen, stack = set(), [expr]
        while stack:
            e = stack.pop()
            if id(e) in seen or not isinstance(e, sp.Basic) or isinstance(e, sp.MatrixExpr):
                continue
            seen.add(id(e))
            if isinstance(e, sp.Sum):
                for lim in e.limits:
                    if len(lim) != 3:
                        raise NotMatrix(f"a summation without bounds: {lim}")
                    k, lo, hi = lim
                    if self.ranges.setdefault(k, (lo, hi)) != (lo, hi):
                        raise NotMatrix(f"index {k} is summed over ({lo}, {hi}) and over {self.ranges[k]}")
            stack.extend(e.args)

    def has_index(self, e) -> bool:
        seen, stack = set(), [e]
        while stack:
            x = stack.pop()
            if id(x) in seen:
                continue
            seen.add(id(x))
            if isinstance(x, sp.Symbol) and x in self.ranges:
                return True
            stack.extend(a for a in getattr(x, "args", ()) if isinstance(a, sp.Basic))
        return False

    @staticmethod
    def children(e) -> tuple:
        if isinstance(e, sp.Sum):
            return (e.function,)
        if isinstance(e, (MatrixElement, sp.MatrixExpr, sp.KroneckerDelta)) or e.is_Atom:
            return ()
        return e.args

    def convert(self, expr):
        self.collect(expr)
        memo: dict = {}  # id -> _Val; every key is an object of expr, alive as long as expr
        stack = [(expr, False)]
        while stack:
            e, ready = stack.pop()
            if id(e) in memo:
                continue
            kids = self.children(e)
            if not ready:
                stack.append((e, True))
                stack.extend((k, False) for k in reversed(kids) if id(k) not in memo)
                continue
            memo[id(e)] = self.value(e, [memo[id(k)] for k in kids])
        val = memo[id(expr)]
        if not val.is_scalar:
            raise NotMatrix(f"the indices {', '.join(map(str, sorted(val.indices, key=str)))} "
                            "are not summed over")
        return val.scalar_expr()

    def value(self, e, kids) -> _Val:
        if isinstance(e, MatrixElement):
            return self.element(e)
        if isinstance(e, sp.KroneckerDelta):
            return self.delta(e)
        if isinstance(e, sp.Symbol) and e in self.ranges:
            raise NotMatrix(f"the summation index {e} is used as a number, not only as a matrix index")
        if isinstance(e, sp.MatrixExpr):
            if self.has_index(e):
                raise NotMatrix(f"a summation index inside the matrix expression {e}")
            return _Val.scalar(e)
        if isinstance(e, sp.Sum):
            for k, lo, hi in e.limits:
                if self.has_index(lo) or self.has_index(hi):
                    raise NotMatrix(f"the bounds of {k} depend on another summation index")
            body = kids[0]
            if body.is_scalar:  # nothing in the body depends on the summed indices
                n = sp.Mul(*[hi - lo + 1 for _, lo, hi in e.limits])
                return _Val.scalar(sp.Mul(n, body.scalar_expr()))
            return _Val([self.sum_product(p, e.limits) for p in body.terms])
        if all(k.is_scalar for k in kids):
            args = [k.scalar_expr() for k in kids]
            if all(a is b for a, b in zip(args, e.args)):
                return _Val.scalar(e)
            return _Val.scalar(e.func(*args))
        if isinstance(e, sp.Add):
            return _Val([p for k in kids for p in k.terms])
        if isinstance(e, sp.Mul):
            return self.product(kids)
        if isinstance(e, sp.Pow) and kids[1].is_scalar and e.exp == 2:
            return self.product([kids[0], kids[0]])  # summed, x**2 is x.T*x
        return self.elementwise(e, kids)

    def product(self, kids) -> _Val:
        """The product of ``kids``; a sum of arrays with more than two indices between them, which
        is no one array (``x[i, j] - m[k, j]``), is multiplied out term by term."""
        products = [_Product(_ONE)]
        for k in kids:
            if k.is_scalar:
                parts = [_Product(k.scalar_expr())]
            elif len(k.terms) == 1 or len(k.indices) > 2:
                parts = k.terms
            else:
                parts = [_Product(_ONE, [_Factor.of(self.materialize(k))])]
            products = [_Product(sp.Mul(p.coeff, q.coeff), p.factors + q.factors) for p in products for q in parts]
        return _Val(products)

    def elementwise(self, e, kids) -> _Val:
        args, leaves = [], {}
        for k in kids:
            if k.is_scalar:
                args.append(k.scalar_expr())
            else:
                f = self.factor(k)
                args.append(f.body)
                leaves.update(f.leaves)
        f = _Factor(e.func(*args), leaves)
        if len(f.indices) > 2:
            raise NotMatrix(f"{type(e).__name__} of entries with more than two free indices")
        return _Val([_Product(_ONE, [f])])

    def shifted(self, ix):
        """``(k, c)`` when the index ``ix`` is ``k + c``, ``k`` a summation index and ``c`` a
        nonzero integer; else None."""
        k, c = next(((s, sp.expand(ix - s)) for s in ix.free_symbols if s in self.ranges), (None, None))
        return (k, int(c)) if k is not None and c.is_Integer and c != 0 else None

    def element(self, e) -> _Val:
        M = e.parent
        shifts = [None if ix in self.ranges else self.shifted(ix) for ix in (e.i, e.j)]
        idx = tuple(sh[0] if sh else ix for sh, ix in zip(shifts, (e.i, e.j)))
        free = [k if k in self.ranges else None for k in idx]
        for k, ix in zip(free, idx):
            if k is None and self.has_index(ix):
                raise NotMatrix(f"the index {ix} of {_user(e)} is not a summation index plus an integer")
        if free == [None, None]:
            return _Val.scalar(e)
        if self.has_index(M):
            raise NotMatrix(f"a summation index inside the matrix expression {M}")
        m = _leaf(M)
        if any(shifts) and (not isinstance(M, sp.MatrixSymbol) or free[0] == free[1]):
            raise NotMatrix(f"{_user(e)}: a shifted index needs a MatrixSymbol or IndexedBase, off its diagonal")
        if free[0] is not None and free[0] == free[1]:  # the diagonal of a square matrix
            n = m.shape[0]
            if not _same(n, m.shape[1]):
                raise NotMatrix(f"{e} is on the diagonal of a matrix that is not square")
            diag = _matmul(_elementwise(sp.HadamardProduct, [m, _leaf(sp.Identity(n))]), _ones(n, 1))
            return _Val.of(_Node(diag, (free[0], None), diag=M))
        for axis, sh in enumerate(shifts):  # x[i + 1]: x shifted by 1, on i
            if sh is not None:
                (k, c), (lo, hi) = sh, self.ranges[sh[0]]
                if _offset(lo + c, hi + c, m.shape[axis]) is None:
                    raise NotMatrix(f"{_user(e)} runs past an end of {M} (length {m.shape[axis]}) for {k} "
                                    f"from {lo} to {hi}")
                m = _M(_new(Shifted, m.expr, sp.Integer(axis), sp.Integer(c)), m.shape)
        for axis, (k, ix) in enumerate(zip(free, idx)):
            if k is None and ix.is_Integer and ix < 0:  # SymPy keeps M[i, -1] as written: no slice of it
                raise NotMatrix(f"{_user(e)} has the negative index {ix}: write the "
                                f"{'row' if axis == 0 else 'column'} counted from 0")
            if k is None and ix.is_Integer and isinstance(M, sp.MatrixSymbol) and m.shape[axis] != 1:
                # a fixed row (column) of a summed entry, means[k, 0]: that row (column), a slice
                whole = sp.Tuple(0, m.shape[1 - axis], 1)
                part = sp.Tuple(ix, ix + 1, 1)
                m = _M(_new(MatrixSlice, m.expr, *((part, whole) if axis == 0 else (whole, part))),
                       (1, m.shape[1]) if axis == 0 else (m.shape[0], 1))
            elif k is None and not (ix == 0 and m.shape[axis] == 1):
                raise NotMatrix(f"{e} picks {'row' if axis == 0 else 'column'} {ix} of {M}, which has "
                                f"{m.shape[axis]} (SymPy writes a product over an integer dimension "
                                f"out entry by entry: give {M} a Symbol dimension, or build the "
                                f"model in a model file)")
        return _Val.of(_Node(m, free))

    def delta(self, e) -> _Val:
        i, j = e.args[:2]
        if i == j:
            return _Val.scalar(_ONE)
        if not (i in self.ranges and j in self.ranges):
            raise NotMatrix(f"{e} does not compare two summation indices")
        (lo_i, hi_i), (lo_j, hi_j) = self.ranges[i], self.ranges[j]
        if lo_i != 0 or lo_j != 0 or not _same(hi_i, hi_j):
            raise NotMatrix(f"{e} compares indices of different ranges")
        return _Val.of(_Node(_leaf(sp.Identity(hi_i + 1)), (i, j)))


def sum_to_matrix(expr):
    """``(result, bindings)``: the scalar ``expr`` with every indexed ``Sum`` in it turned into
    matrix operations (see the module docstring).

    ``bindings`` is empty unless an elementwise function of two or more different arrays was met:
    then it lists ``(P, body, args)`` in dependency order, where the placeholder MatrixSymbol ``P``
    stands for ``body`` -- a scalar expression in the Dummies that key ``args`` -- applied entry by
    entry to the matrix expressions ``args`` (all of ``P``'s shape).  Raises :class:`NotMatrix`,
    saying why, for a ``Sum`` that is not a matrix expression written out."""
    conv = _Converter()
    result = conv.convert(expr)
    return result, conv.bindings


# -- IndexedBase: its entries as the entries of a MatrixSymbol ---------------------------------------
def _walk(expr):
    """Every sub-expression of ``expr`` once (iterative, by object)."""
    seen, stack = set(), [expr]
    while stack:
        e = stack.pop()
        if id(e) in seen or not isinstance(e, sp.Basic):
            continue
        seen.add(id(e))
        yield e
        stack.extend(e.args)


def _scoped_entries(expr, idx, ranges):
    """``(entry, ranges)`` for every ``Indexed`` entry of ``expr``: the ranges of the summation
    indices of the Sums around it (the innermost one of an index wins) over ``ranges`` (the Idx
    ranges), so that two Sums over one dummy ``i`` with other bounds each read their own."""
    out, seen, stack = [], set(), [(expr, ranges)]
    while stack:
        e, scope = stack.pop()
        key = (id(e), tuple(sorted(scope.items(), key=str)))
        if key in seen or not isinstance(e, sp.Basic):
            continue
        seen.add(key)
        if isinstance(e, sp.Indexed):
            out.append((e, scope))
            continue
        if isinstance(e, sp.Sum):
            scope = {**scope, **{sp.sympify(lim[0]).xreplace(idx): (lim[1], lim[2])
                                 for lim in e.limits if len(lim) == 3}}
        stack.extend((a, scope) for a in e.args)
    return out


def _axis_length(base, axis, indices, shape_hint):
    """The length of ``base``'s ``axis``, read from the Sums whose indices run along it: one past
    the largest index, ``hi + c + 1`` of an index ``k + c`` summed up to ``hi`` (``n`` for ``x[i + 1]``
    with ``i`` up to ``n - 2``), which must be an integer or one Symbol."""
    found = []
    for ix, ranges in indices:  # an index and the ranges of the Sums around it
        k = next((s for s in sp.sympify(ix).free_symbols if s in ranges), None)
        c = sp.expand(ix - k) if k is not None else None
        if c is not None and c.is_Integer:
            end = sp.expand(ranges[k][1] + c + 1)
            if not any(_same(end, n) for n in found):
                found.append(end)
    last = [n for n in found if all(sp.expand(n - o).is_nonnegative for o in found)]
    if last and (last[0].is_Integer or last[0].is_Symbol):
        return last[0]
    why = (f"its indices run up to {' and to '.join(str(n - 1) for n in found)}" if found
           else "no Sum runs along it")
    raise NotMatrix(f"the length of axis {axis} of the IndexedBase {base} cannot be read from the Sums ({why}): "
                    f"give it a shape, IndexedBase('{base}', shape={shape_hint})")


def indexed_to_matrices(expr):
    """``(expr, matrices)``: ``expr`` with every entry of an ``IndexedBase`` written as the entry of a
    MatrixSymbol of the same name -- ``x[i]`` as ``x[i, 0]`` of a column ``x`` (N x 1), ``A[i, j]`` as
    ``A[i, j]`` of an N x d matrix -- so that a ``Sum`` over them is lowered, and run by the tape, as a
    Sum over matrix entries (see :func:`sum_to_matrix`); ``Idx`` indices become plain Symbols.
    ``matrices`` maps each IndexedBase (and its label) to its MatrixSymbol.  The shape is the
    IndexedBase's own, when it has one, else read from the bounds of the Sums over its indices.
    Raises :class:`NotMatrix` for an IndexedBase with more than two indices, or with an unknown length."""
    nodes = list(_walk(expr))
    entries = [e for e in nodes if isinstance(e, sp.Indexed)]
    if not entries:
        return expr, {}
    idx = {e: e.label for e in nodes if isinstance(e, sp.Idx)}
    # an Idx carries its own range
    own = {label: (i.lower, i.upper) for i, label in idx.items() if i.lower is not None}
    by_base: dict = {}
    for e, ranges in _scoped_entries(expr, idx, own):
        by_base.setdefault(e.base, []).append((tuple(sp.sympify(k).xreplace(idx) for k in e.indices), ranges))
    matrices, subs = {}, dict(idx)
    for base, uses in sorted(by_base.items(), key=lambda kv: str(kv[0])):
        ranks = {len(u) for u, _ in uses}
        if len(ranks) > 1 or max(ranks) > 2:
            raise NotMatrix(f"the IndexedBase {base} has {' and '.join(map(str, sorted(ranks)))} indices: "
                            "one (a column) or two (a matrix)")
        rank = ranks.pop()
        if base.shape is not None:
            if len(base.shape) != rank:
                raise NotMatrix(f"the IndexedBase {base} has shape {base.shape} but {rank} indices")
            shape = tuple(base.shape)
        else:
            hint = "(N,)" if rank == 1 else "(N, d)"
            shape = tuple(_axis_length(base, a, [(u[a], r) for u, r in uses], hint) for a in range(rank))
        M = sp.MatrixSymbol(str(base.label), *(shape + (1,) * (2 - rank)))
        matrices[base] = matrices[base.label] = M
    for e in entries:
        k = [sp.sympify(i).xreplace(idx) for i in e.indices]
        try:
            subs[e] = matrices[e.base][k[0], k[1] if len(k) == 2 else 0]
        except (IndexError, ValueError) as exc:
            raise NotMatrix(f"{e}: {exc}") from None
    return expr.xreplace(subs), matrices
