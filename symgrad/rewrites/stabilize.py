"""Stabilizing rewrites: the same value, in a form that keeps its digits -- no overflow, no
underflow, no cancellation (expm1, log1p, softplus, log-sum-exp, slogdet, a solve for an inverse)."""
from __future__ import annotations

import math

from ..ops import const_value as _cval
from .registry import stabilize


@stabilize("add", "sub")
def expm1(G, op, a, b, attr=None):
    """exp(x) - 1 (and -1 + exp(x), as SymPy writes it) is expm1(x)"""
    if op == "add" and a.op == "const" and a.attr == -1 and b.op == "exp":
        return G.call("expm1", b.args[0])
    if op == "sub" and a.op == "exp" and b.op == "const" and b.attr == 1:
        return G.call("expm1", a.args[0])
    return None


@stabilize("div")
def sigmoid(G, op, a, b, attr=None):
    """1 / (1 + exp(u)) is sigmoid(-u): stable, and its derivative reuses the forward value"""
    if _cval(a) == 1 and b.op == "add" and _cval(b.args[0]) == 1 and b.args[1].op == "exp":
        return G.call("sigmoid", G.neg(b.args[1].args[0]))
    return None


@stabilize("log")
def log_sigmoid(G, op, a, attr=None):
    """log(sigmoid(t)) is -softplus(-t)"""
    return G.neg(G.call("softplus", G.neg(a.args[0]))) if a.op == "sigmoid" else None


@stabilize("log")
def log_one_minus_sigmoid(G, op, a, attr=None):
    """log(1 - sigmoid(t)) is -softplus(t)"""
    if a.op == "sub" and _cval(a.args[0]) == 1 and a.args[1].op == "sigmoid":
        return G.neg(G.call("softplus", a.args[1].args[0]))
    return None


@stabilize("log")
def softplus(G, op, a, attr=None):
    """log(1 + exp(t)) is softplus(t)"""
    if a.op == "add" and _cval(a.args[0]) == 1 and a.args[1].op == "exp":
        return G.call("softplus", a.args[1].args[0])
    return None


@stabilize("log")
def log1mexp(G, op, a, attr=None):
    """log(1 - exp(t)), t < 0, by Maechler's log1mexp: each form where it keeps its digits"""
    if a.op == "sub" and _cval(a.args[0]) == 1 and a.args[1].op == "exp":
        t = a.args[1].args[0]
        return G.where(G.op("gt", t, G.const(-math.log(2))), G.call("log", G.neg(G.call("expm1", t))),
                       G.call("log1p", G.neg(a.args[1])))
    return None


def _add_terms(a) -> list:
    """The terms of a tree of additions."""
    return _add_terms(a.args[0]) + _add_terms(a.args[1]) if a.op == "add" else [a]


def _exponent(G, t):
    """``u`` with ``t = exp(u)``: of ``exp(u)``, ``c * exp(u)`` (``exp(u + log c)``) and a
    constant ``c`` (``exp(log c)``), ``c > 0``; else None."""
    if t.op == "exp":
        return t.args[0]
    if t.op == "mul" and t.args[1].op == "exp" and (_cval(t.args[0]) or 0) > 0:
        return G.add(t.args[1].args[0], G.const(math.log(_cval(t.args[0]))))
    if t.op == "const" and t.attr > 0:
        return G.const(math.log(t.attr))
    return None


@stabilize("log")
def log_sum_exp(G, op, a, attr=None):
    """log(exp(u1) + ... + exp(un)) is m + log(exp(u1 - m) + ... + exp(un - m)), m the largest u: a
    Gaussian mixture's log-likelihood far from every mean stays finite, and so does its gradient.
    Only where every term is an exponential (two at least) or a positive constant."""
    if a.op != "add":
        return None
    terms = _add_terms(a)
    if sum(t.op == "exp" or (t.op == "mul" and t.args[1].op == "exp") for t in terms) < 2 \
            or any(t.op not in ("exp", "mul", "const") for t in terms):
        return None
    us = [_exponent(G, t) for t in terms]
    if any(u is None for u in us):
        return None
    # already shifted (this very rewrite's inner log): every exponent is u - m for one maximum m
    firsts = {u.args[1].id if u.op == "sub" and u.args[1].op == "maximum" else None for u in us}
    if len(firsts) == 1 and None not in firsts:
        return None
    m = us[0]
    for u in us[1:]:
        m = G.op("maximum", m, u)
    shifted = [G.sub(u, m) for u in us]
    if any(d.op != "sub" or d.args[1] is not m for d in shifted):  # a rewrite took one apart: none here
        return None
    total = G.call("exp", shifted[0])
    for d in shifted[1:]:
        total = G.add(total, G.call("exp", d))
    return G.add(m, G.call("log", total))


@stabilize("log")
def log1p(G, op, a, attr=None):
    """log(1 + x) is log1p(x), and log(1 - x) is log1p(-x)"""
    if a.op in ("add", "sub") and a.args[0].op == "const" and a.args[0].attr == 1:
        return G.call("log1p", a.args[1] if a.op == "add" else G.neg(a.args[1]))
    return None


@stabilize("log")
def logdet(G, op, a, attr=None):
    """log(det(A)) is slogdet's log|det A|, never the overflowing det itself"""
    return G.op("logdet", a.args[0]) if a.op == "det" else None


@stabilize("log")
def logsumexp(G, op, a, attr=None):
    """log(sum(exp(z))) is logsumexp(z): shifted by the maximum, it never overflows"""
    if a.op == "sum" and a.args[0].op == "exp":
        return G.op("logsumexp", a.args[0].args[0], attr=a.attr)
    return None


@stabilize("matmul")
def inverse_as_solve(G, op, a, b, attr=None):
    """inv(A) @ B is solve(A, B), and B @ inv(A) is solve(A.T, B.T).T: an inverse is formed only
    where the inverse itself is wanted"""
    if a.op == "inv":
        return G.op("solve", a.args[0], b)
    if b.op == "inv":
        return G.T(G.op("solve", G.T(b.args[0]), G.T(a)))
    return None
