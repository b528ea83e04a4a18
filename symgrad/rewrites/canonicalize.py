"""Canonicalizing rewrites: one spelling per value -- constants folded, identities removed, signs,
constants, transposes and broadcasts moved to one place, terms in one order -- so that equal
values are one node and the later phases have one form to match."""
from __future__ import annotations

import math

from ..errors import SymgradError
from ..ir import ONE, broadcast_shapes
from ..ops import OPS, const_value as _cval, is_bool
from .registry import ELEMENTWISE, canonicalize


def _same_shape_as(n, *args) -> bool:
    """True when broadcasting ``args`` gives exactly ``n``'s shape (so ``n`` may replace the op)."""
    try:
        return broadcast_shapes(*(a.shape for a in args)) == n.shape
    except SymgradError:
        return False


# -- every elementwise op ----------------------------------------------------------------------
@canonicalize(ELEMENTWISE)
def hoist_transpose(G, op, *args, attr=None):
    """f(A.T, B.T, c) is f(A, B, c).T: SymPy pushes transposes down to the leaves (E.T of X*W + b is
    W.T*X.T + b.T); hoisting them back up makes both spellings one node."""
    if (any(a.op == "transpose" for a in args)
            and all(a.op == "transpose" or a.shape in (None, ()) for a in args)):
        return G.T(G.op(op, *[a.args[0] if a.op == "transpose" else a for a in args], attr=attr))
    return None


@canonicalize(ELEMENTWISE)
def hoist_bcast(G, op, *args, attr=None):
    """f(bcast(a, s), c) is bcast(f(a, c), s) when no argument has a shape of its own: the work is
    done on the small values, and broadcasting stays an explicit node."""
    if (any(a.op == "bcast" for a in args)
            and all(a.op == "bcast" or a.shape in (None, ()) for a in args)):
        shape = OPS[op].shape(*[a.shape for a in args], attr=attr)
        return G.bcast(G.op(op, *[a.args[0] if a.op == "bcast" else a for a in args], attr=attr), shape)
    return None


@canonicalize(ELEMENTWISE)
def fold_constants(G, op, *args, attr=None):
    """f(c1, c2) of constants is its float value (the op's ev), where that is a finite real."""
    ev = OPS[op].ev
    if ev is None or not all(a.op == "const" for a in args):
        return None
    try:
        v = ev(*[a.attr for a in args])
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    if isinstance(v, (bool, complex)) or not math.isfinite(v):  # (-1.0) ** (1/3) is complex
        return None
    return G.const(v)


# -- sums and differences ------------------------------------------------------------------------
def _terms(n, sign, out, limit):
    """The signed terms of a chain of add/sub nodes (into ``out``); False past ``limit`` terms."""
    stack = [(n, sign)]
    while stack:
        n, sign = stack.pop()
        if n.op in ("add", "sub"):
            a, b = n.args
            stack += [(b, sign if n.op == "add" else -sign), (a, sign)]
        else:
            out.append((sign, n))
        if len(out) + len(stack) > limit:
            return False
    return True


_MAX_TERMS = 32  # longer sums keep the order they were written in


def _canonical_sum(G, a, b, sign):
    """``a + sign*b`` as one canonical chain: constants first, then terms by node id, so that
    equal sums are one node however the model ordered them (``t + (b - y)`` and ``b + (t - y)``)."""
    terms: list = []
    ok = _terms(a, 1, terms, _MAX_TERMS)
    mine = list(terms)  # a's own terms, in the order a has them
    if not (ok and _terms(b, sign, terms, _MAX_TERMS)) or len(terms) < 3:
        if len(terms) == 2 and sign == 1 and a.op != "const" and b.op != "const" and b.id < a.id:
            return G.add(b, a)  # two terms: the smaller id first
        return None
    canon = sorted(terms, key=lambda t: (t[1].op != "const", t[1].id, -t[0]))
    head = next((i for i, (sg, _) in enumerate(canon) if sg > 0), None)
    if head is None:
        return None  # all negative: left as written (the neg rewrites handle signs)
    order = [canon[head]] + canon[:head] + canon[head + 1:]
    if mine == order[:-1] and order[-1] == (sign, b):
        return None  # already canonical
    acc = order[0][1]
    for sg, t in order[1:]:
        acc = G.add(acc, t) if sg > 0 else G.sub(acc, t)
    return acc


@canonicalize("add")
def add_self(G, op, a, b, attr=None):
    """x + x is 2*x"""
    return G.mul(G.const(2), a) if a is b else None


@canonicalize("add")
def add_zero(G, op, a, b, attr=None):
    """0 + x and x + 0 are x (where x has the sum's shape)"""
    if _cval(a) == 0 and _same_shape_as(b, a, b):
        return b
    if _cval(b) == 0 and _same_shape_as(a, a, b):
        return a
    return None


@canonicalize("add")
def add_negated(G, op, a, b, attr=None):
    """a + (-b) is a - b, and (-a) + b is b - a"""
    if b.op == "neg":
        return G.sub(a, b.args[0])
    if a.op == "neg":
        return G.sub(b, a.args[0])
    return None


@canonicalize("add")
def add_constant_first(G, op, a, b, attr=None):
    """x + c is c + x"""
    return G.add(b, a) if b.op == "const" and a.op != "const" else None


@canonicalize("add")
def add_in_order(G, op, a, b, attr=None):
    """a chain of sums and differences in one order: constants first, then terms by node id"""
    return _canonical_sum(G, a, b, 1)


@canonicalize("sub")
def sub_zero(G, op, a, b, attr=None):
    """x - 0 is x, and 0 - x is -x (where x has the difference's shape)"""
    if _cval(b) == 0 and _same_shape_as(a, a, b):
        return a
    if _cval(a) == 0 and _same_shape_as(b, a, b):
        return G.neg(b)
    return None


@canonicalize("sub")
def sub_negated(G, op, a, b, attr=None):
    """a - (-b) is a + b"""
    return G.add(a, b.args[0]) if b.op == "neg" else None


@canonicalize("sub")
def sub_of_negated(G, op, a, b, attr=None):
    """(-a) - b is -(a + b): signs travel outwards until an add or sub absorbs them"""
    return G.neg(G.add(a.args[0], b)) if a.op == "neg" else None


@canonicalize("sub")
def sub_in_order(G, op, a, b, attr=None):
    """a chain of sums and differences in one order (as add_in_order)"""
    return _canonical_sum(G, a, b, -1)


# -- negation --------------------------------------------------------------------------------------
@canonicalize("neg")
def neg_neg(G, op, x, attr=None):
    """-(-x) is x"""
    return x.args[0] if x.op == "neg" else None


@canonicalize("neg")
def neg_sub(G, op, x, attr=None):
    """-(a - b) is b - a"""
    return G.sub(x.args[1], x.args[0]) if x.op == "sub" else None


@canonicalize("neg")
def neg_sum(G, op, x, attr=None):
    """-(a + b) is (-a) - b when a is a negation or a constant (so the sign is absorbed)"""
    if x.op != "add":
        return None
    a, b = x.args
    if a.op in ("neg", "const"):
        return G.sub(G.neg(a), b)
    if b.op in ("neg", "const"):
        return G.sub(G.neg(b), a)
    return None


@canonicalize("neg")
def neg_scaled(G, op, x, attr=None):
    """-(c*x) is (-c)*x"""
    if x.op == "mul" and x.args[0].op == "const":
        return G.mul(G.const(-x.args[0].attr), x.args[1])
    return None


# -- products --------------------------------------------------------------------------------------
@canonicalize("mul")
def mul_constant_first(G, op, a, b, attr=None):
    """x * c is c * x"""
    return G.mul(b, a) if b.op == "const" and a.op != "const" else None


@canonicalize("mul")
def mul_broadcast_number(G, op, a, b, attr=None):
    """a broadcast number times a full-shaped x is the plain number times x"""
    for c, x in ((a, b), (b, a)):
        if c.op == "bcast" and c.args[0].op == "const" and _same_shape_as(x, a, b):
            return G.mul(c.args[0], x)
    return None


@canonicalize("mul")
def mul_number_by_mask(G, op, a, b, attr=None):
    """a number times a boolean mask is a select, in the inputs' float type"""
    for c, mask in ((a, b), (b, a)):
        if is_bool(mask) and (c.op == "const" or (c.op == "bcast" and c.args[0].op == "const")):
            return G.where(mask, c, G.const(0))
    return None


@canonicalize("mul")
def mul_one(G, op, a, b, attr=None):
    """1 * x and x * 1 are x (where x has the product's shape)"""
    if _cval(a) == 1 and _same_shape_as(b, a, b):
        return b
    if _cval(b) == 1 and _same_shape_as(a, a, b):
        return a
    return None


@canonicalize("mul")
def mul_minus_one(G, op, a, b, attr=None):
    """-1 * x is -x"""
    return G.neg(b) if a.op == "const" and a.attr == -1 else None


@canonicalize("mul")
def mul_constants(G, op, a, b, attr=None):
    """c1 * (c2 * x) is (c1*c2) * x, and c * (-x) is (-c) * x"""
    if a.op != "const":
        return None
    if b.op == "mul" and b.args[0].op == "const":
        return G.mul(G.const(a.attr * b.args[0].attr), b.args[1])
    if b.op == "neg":
        return G.mul(G.const(-a.attr), b.args[0])
    return None


@canonicalize("mul")
def mul_negated(G, op, a, b, attr=None):
    """(-a) * b and a * (-b) are -(a * b)"""
    if a.op != "const" and (a.op == "neg" or b.op == "neg"):
        return G.neg(G.mul(a.args[0], b) if a.op == "neg" else G.mul(a, b.args[0]))
    return None


@canonicalize("mul")
def mul_in_order(G, op, a, b, attr=None):
    """a * b with the smaller node id first (a product is one node however it was written)"""
    if a.op not in ("const", "neg") and b.op not in ("const", "neg") and b.id < a.id:
        return G.mul(b, a)
    return None


@canonicalize("mul")
def mul_scalars_first(G, op, a, b, attr=None):
    """s * (c * X) is (s * c) * X for scalars s, c and an array X: one pass over X (only for an
    array X: among scalars it would cycle)"""
    for s, m in ((a, b), (b, a)):
        s = s.args[0] if s.op == "bcast" else s
        if (s.shape == () and m.op == "mul" and m.args[0].shape == () and m.args[1].shape != ()
                and _same_shape_as(m, a, b)):
            return G.mul(G.mul(s, m.args[0]), m.args[1])
    return None


# -- quotients, powers, logarithms -----------------------------------------------------------------
@canonicalize("div")
def div_one(G, op, a, b, attr=None):
    """x / 1 is x"""
    return a if _cval(b) == 1 and _same_shape_as(a, a, b) else None


@canonicalize("div")
def div_negated(G, op, a, b, attr=None):
    """(-a) / b and a / (-b) are -(a / b)"""
    if a.op == "neg" or b.op == "neg":
        return G.neg(G.div(a.args[0], b) if a.op == "neg" else G.div(a, b.args[0]))
    return None


@canonicalize("pow")
def pow_one(G, op, a, b, attr=None):
    """x ** 1 is x"""
    return a if b.op == "const" and b.attr == 1 else None


@canonicalize("log")
def log_of_exp(G, op, a, attr=None):
    """log(exp(t)) is t"""
    return a.args[0] if a.op == "exp" else None


# -- selections ------------------------------------------------------------------------------------
@canonicalize("where")
def where_same(G, op, c, a, b, attr=None):
    """where(c, x, x) is x"""
    return a if a is b and _same_shape_as(a, c, a, b) else None


@canonicalize("where")
def where_constant_condition(G, op, c, a, b, attr=None):
    """where(True, a, b) is a, where(False, a, b) is b"""
    if c.op == "const":
        return a if c.attr else b
    return None


@canonicalize("where")
def where_boolean(G, op, c, a, b, attr=None):
    """a select between a boolean and True/False is logic (SymPy's ITE, a Piecewise of conditions):
    the value stays boolean, never a float 0/1 that a later select would take as its condition"""
    if is_bool(a) and b.op == "const" and b.attr in (0, 1):
        return G.op("and", c, a) if b.attr == 0 else G.op("or", G.op("not", c), a)
    if is_bool(b) and a.op == "const" and a.attr in (0, 1):
        return G.op("and", G.op("not", c), b) if a.attr == 0 else G.op("or", c, b)
    return None


# -- array ops -------------------------------------------------------------------------------------
@canonicalize("matmul")
def matmul_identity(G, op, a, b, attr=None):
    """I @ B is B, and A @ I is A"""
    if a.op == "eye":
        return b
    if b.op == "eye":
        return a
    return None


@canonicalize("matmul")
def matmul_transposes(G, op, a, b, attr=None):
    """A.T @ B.T is (B @ A).T"""
    if a.op == "transpose" and b.op == "transpose":
        return G.T(G.matmul(b.args[0], a.args[0]))
    return None


@canonicalize("sum")
def sum_of_scalar(G, op, a, attr=None):
    """the sum of a scalar is the scalar"""
    return a if a.shape == () else None


@canonicalize("sum")
def sum_of_transpose(G, op, a, attr=None):
    """sum(A.T) is sum(A), and sum(A.T, axis) is sum(A, other axis).T"""
    if a.op == "transpose":
        return G.sum(a.args[0]) if attr is None else G.T(G.sum(a.args[0], 1 - attr))
    return None


@canonicalize("sum")
def sum_over_length_one(G, op, a, attr=None):
    """a sum over an axis of length 1 is the value itself"""
    if attr is not None and a.shape is not None and a.shape[attr] == ONE:
        return a
    return None


@canonicalize("transpose")
def transpose_transpose(G, op, a, attr=None):
    """A.T.T is A"""
    return a.args[0] if a.op == "transpose" else None


@canonicalize("transpose")
def transpose_of_bcast(G, op, a, attr=None):
    """a broadcast scalar transposed is the scalar broadcast to the reversed shape"""
    if a.op == "bcast" and a.args[0].shape in ((), None):
        return G.bcast(a.args[0], a.shape[::-1])
    return None


@canonicalize("bcast")
def bcast_same_shape(G, op, a, attr=None):
    """broadcasting a value to its own shape is the value"""
    return a if a.shape == attr else None


@canonicalize("bcast")
def bcast_of_transpose(G, op, a, attr=None):
    """bcast(A.T, s) is bcast(A, reversed s).T"""
    return G.T(G.bcast(a.args[0], attr[::-1])) if a.op == "transpose" else None


@canonicalize("bcast")
def bcast_of_bcast(G, op, a, attr=None):
    """a broadcast of a broadcast is one broadcast"""
    return G.bcast(a.args[0], attr) if a.op == "bcast" else None


@canonicalize("trace")
def trace_of_transpose(G, op, a, attr=None):
    """tr(A.T) is tr(A)"""
    return G.op("trace", a.args[0]) if a.op == "transpose" else None


@canonicalize("item")
def item_of_transpose(G, op, a, attr=None):
    """A.T[0, 0] is A[0, 0]"""
    return G.op("item", a.args[0]) if a.op == "transpose" else None


@canonicalize("entry")
def entry_of_transpose(G, op, a, attr=None):
    """A.T[i, j] is A[j, i]"""
    return G.op("entry", a.args[0], attr=attr[::-1]) if a.op == "transpose" else None


@canonicalize("shift")
def shift_by_zero(G, op, a, attr=None):
    """a shift by 0 is the value itself"""
    return a if attr[1] == 0 else None
