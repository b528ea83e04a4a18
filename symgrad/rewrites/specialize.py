"""Specializing rewrites: the same value by a cheaper op -- a square root for a power of one half,
sums for products with matrices of equal entries, an elementwise product for the trace of a
product."""
from __future__ import annotations

from ..ir import ONE
from ..ops import size
from .registry import specialize


@specialize("pow")
def pow_half(G, op, a, b, attr=None):
    """x ** 0.5 is sqrt(x)"""
    return G.call("sqrt", a) if b.op == "const" and b.attr == 0.5 else None


@specialize("pow")
def pow_minus_one(G, op, a, b, attr=None):
    """x ** -1 is 1 / x"""
    return G.div(G.const(1), a) if b.op == "const" and b.attr == -1 else None


@specialize("pow")
def pow_minus_half(G, op, a, b, attr=None):
    """x ** -0.5 is 1 / sqrt(x)"""
    return G.div(G.const(1), G.call("sqrt", a)) if b.op == "const" and b.attr == -0.5 else None


def _scalar_bcast(n):
    """The scalar ``s`` when ``n`` is a matrix of equal entries ``s`` (OneMatrix, bcast), else None."""
    if n.op == "bcast" and n.args[0].shape in ((), None):
        return n.args[0]
    return None


@specialize("matmul")
def matmul_equal_entries(G, op, a, b, attr=None):
    """a matrix of equal entries s (OneMatrix, a broadcast scalar) times B is s times B's column
    sums (and A times one is s times A's row sums)"""
    sa, sb = _scalar_bcast(a), _scalar_bcast(b)
    if sa is not None:
        return G.mul(sa, G.bcast(G.sum(b, 0), (a.shape[0], b.shape[1])))
    if sb is not None:
        return G.mul(sb, G.bcast(G.sum(a, 1), (a.shape[0], b.shape[1])))
    return None


@specialize("sum")
def sum_of_bcast(G, op, a, attr=None):
    """summing a broadcast value is a multiplication by the broadcast size"""
    if a.op != "bcast":
        return None
    x = a.args[0]
    axes = (0, 1) if attr is None else (attr,)
    if x.shape in (None, ()) or all(x.shape[i] == ONE for i in axes):
        for i in axes:
            x = G.mul(size(G, a.shape[i]), x)
        if attr is None:
            return G.sum(x)
        keep = list(a.shape)
        keep[attr] = ONE
        return G.bcast(x, keep)
    return None


@specialize("trace")
def trace_of_product(G, op, a, attr=None):
    """tr(A @ B) is sum(A * B.T): the n x n product is never formed"""
    if a.op == "matmul":
        x, y = a.args
        return G.sum(G.mul(x, G.T(y)))
    return None


@specialize("trace")
def trace_of_1x1(G, op, a, attr=None):
    """the trace of a 1x1 matrix is its entry"""
    return G.op("item", a) if a.shape[0] == ONE else None
