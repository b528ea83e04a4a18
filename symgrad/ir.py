"""The IR: a hash-consed DAG of array operations with static shapes.

A :class:`Node` is ``(op, args, attr)`` plus a shape.  Shapes are

* ``None``   -- "dynamic": a value built from scalar Symbols that bind to arrays of any shape and
  broadcast like NumPy; its shape is only known at run time;
* ``()``     -- a 0-d scalar (a constant, a dimension, a trace, ``M[0, 0]``);
* ``(r, c)`` -- a matrix; ``r`` and ``c`` are ints, dimension names (plain strings) or, for the
  values of Kronecker products and what is built with them, a :class:`DimProduct` (``2*N``).

The IR knows nothing of SymPy: lowering (``lower.py``) is the one place that reads SymPy.

A :class:`Graph` interns nodes: building the same ``(op, args, attr)`` twice returns the same
node, so common sub-expressions -- within the forward pass, within the backward pass and across
the two -- are one node by construction.  Before interning, the graph's rewriter
(:mod:`symgrad.rewrites`) may rewrite the node into a simpler one (constant folding, algebraic
identities, stable forms).  The graph is given the op table's shape rule and the rewriter: the IR
imports neither.
Every walk over the graph is iterative, so depth never meets Python's recursion limit.
"""
from __future__ import annotations

from .errors import SymgradError

ONE = 1
MAX_FOLD_DEPTH = 64  # rewrites nested deeper than this intern their node unrewritten


class Node:
    __slots__ = ("op", "args", "attr", "shape", "id")

    def __init__(self, op: str, args: tuple, attr, shape, id_: int):
        self.op, self.args, self.attr, self.shape, self.id = op, args, attr, shape, id_

    @property
    def is_const(self) -> bool:
        return self.op == "const"

    def __repr__(self) -> str:
        inner = ", ".join(f"%{a.id}" for a in self.args)
        attr = "" if self.attr is None else f" {self.attr!r}"
        return f"%{self.id} = {self.op}({inner}){attr} : {self.shape}"


class DimProduct(tuple):
    """A dimension that is a product ``(coefficient, name, name, ...)``, names sorted: ``2*N`` is
    ``DimProduct((2, "N"))``.  Built by :func:`mul_dims` only, so equal products are equal tuples."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "*".join(([str(self[0])] if self[0] != 1 else []) + list(self[1:]))

    __str__ = __repr__


def mul_dims(a, b):
    """The dimension ``a * b``: an int, a name (a times 1), or a :class:`DimProduct`."""
    if a == ONE:
        return b
    if b == ONE:
        return a
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    coeff, names = 1, []
    for d in (a, b):
        if isinstance(d, int):
            coeff *= d
        elif isinstance(d, DimProduct):
            coeff *= d[0]
            names += d[1:]
        else:
            names.append(d)
    return DimProduct((coeff, *sorted(names)))


def broadcast_shapes(*shapes, where: str = ""):
    """NumPy broadcasting on static shapes; ``None`` (dynamic) takes the shape of the others."""
    known = [s for s in shapes if s is not None]
    if not known or (len(known) < len(shapes) and all(s == () for s in known)):
        return None
    ndim = max(len(s) for s in known)
    out = []
    for i in range(ndim):
        dims = [s[len(s) - ndim + i] for s in known if len(s) - ndim + i >= 0]
        big = [d for d in dims if d != ONE]
        if any(d != big[0] for d in big):
            raise SymgradError(f"shapes {' and '.join(map(str, known))} do not broadcast{where}")
        out.append(big[0] if big else ONE)
    return tuple(out)


def topo_order(roots) -> list[Node]:
    """Nodes reachable from ``roots``, every node after its arguments (iterative DFS, stable)."""
    order, done, stack = [], set(), [(r, False) for r in reversed(list(roots))]
    while stack:
        node, expanded = stack.pop()
        if node.id in done:
            continue
        if expanded:
            done.add(node.id)
            order.append(node)
            continue
        stack.append((node, True))
        for a in reversed(node.args):
            if a.id not in done:
                stack.append((a, False))
    return order


class Graph:
    """Builds interned nodes.  ``G.op(name, *args, attr=...)`` is the one constructor; the
    convenience builders (``G.add``, ``G.mul``, ...) are thin wrappers used by the rules.

    ``shape_of(name, *arg_shapes, attr=...)`` is the op table's shape rule (``ops.shape_of``);
    ``rewriter(G, name, args, attr)`` returns a replacement node or None (``rewrites.Rewriter``;
    None: no rewrites).  ``symgrad.rewrites.graph()`` makes the graph the compiler uses."""

    def __init__(self, shape_of, rewriter=None):
        self.shape_of, self.rewriter = shape_of, rewriter
        self._table: dict = {}
        self._folded: dict = {}  # key -> the node a rewrite replaced it with
        self._folding: set = set()  # keys whose rewriting is running (a cycle guard)
        self.src: dict[int, str] = {}  # node id -> SymPy sub-expression it came from (for comments)

    def op(self, name: str, *args: Node, attr=None) -> Node:
        """The node ``name(*args)``: the rewriter's replacement when it has one, else interned.

        Rewriting terminates by construction: a rewrite never sees the node it is rewriting again
        (a rewrite that would undo another, directly or through others, finds its own key on the
        stack and the node is interned as it is), the nesting of rewrites is bounded, and each key
        is rewritten once (its result is remembered)."""
        key = (name, tuple(a.id for a in args), attr)
        node = self._table.get(key) or self._folded.get(key)
        if node is not None:
            return node
        if self.rewriter is not None and key not in self._folding and len(self._folding) < MAX_FOLD_DEPTH:
            self._folding.add(key)
            try:
                folded = self.rewriter(self, name, args, attr)
            finally:
                self._folding.discard(key)
            if folded is not None:
                self._folded[key] = folded
                return folded
        node = self._table.get(key)  # a rewrite below may have interned this very key on a cycle
        if node is None:
            shape = self.shape_of(name, *[a.shape for a in args], attr=attr)
            node = self._table[key] = Node(name, tuple(args), attr, shape, len(self._table))
        return node

    # -- leaves
    def const(self, value) -> Node:
        v = float(value)
        return self.op("const", attr=0.0 if v == 0 else v)  # one zero, never -0.0

    def input(self, name: str, shape) -> Node:
        return self.op("input", attr=(name, shape))

    # -- builders the rules use
    def add(self, a, b): return self.op("add", a, b)
    def sub(self, a, b): return self.op("sub", a, b)
    def mul(self, a, b): return self.op("mul", a, b)
    def div(self, a, b): return self.op("div", a, b)
    def neg(self, a): return self.op("neg", a)
    def where(self, c, a, b): return self.op("where", c, a, b)
    def matmul(self, a, b): return self.op("matmul", a, b)
    def T(self, a): return self.op("transpose", a)
    def sum(self, a, axis=None): return self.op("sum", a, attr=axis)
    def bcast(self, a, shape): return self.op("bcast", a, attr=tuple(shape))
    def call(self, fn: str, *args): return self.op(fn, *args)
