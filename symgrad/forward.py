"""Symbolic forward mode over the IR DAG: tangents, JVPs and (forward over reverse) HVPs.

:func:`tangents` walks the graph once in topological order and builds, for each node that depends
on a seeded input, the node of its tangent: the directional derivative of the node's value along
the seeds.  The rules are the op table's (``ops.py``): a non-elementwise op has its own ``jvp``
rule; an elementwise op's VJP rule serves both modes, because its Jacobian is diagonal -- the rule
given an argument's tangent in place of the cotangent is that argument's share of the tangent.
A :class:`~symgrad.ops.Masked` share is masked after its partials, as the reverse sweep does, so a
branch that is not selected contributes an exact 0, never a NaN.

The gradient is itself a graph, so the tangent of the gradient nodes along ``v`` is the
Hessian-vector product ``H v`` (forward over reverse): it shares the forward and the backward
pass, and costs a small multiple of ``value_and_grad``.

Tangents may be smaller than their node while only elementwise work uses them (the tangent of a
broadcast bias is a row); :func:`~symgrad.ops.full` makes them exact where a reduction or a
product needs every entry, and for every returned tangent.
"""
from __future__ import annotations

from .diff import Cot, apply_mask
from .errors import SymgradError
from .ir import Graph, Node, topo_order
from .ops import OPS, Masked, full


def tangents(G: Graph, roots: list[Node], seeds: dict[int, Node]) -> list[Node]:
    """The tangent of each of ``roots`` (exactly its shape; zeros where none flows) given the
    tangents ``seeds`` ({input node id: tangent node}) of the inputs."""
    tan: dict[int, Node] = dict(seeds)
    for node in topo_order(roots):
        if node.id in tan or not any(a.id in tan for a in node.args):
            continue
        spec = OPS[node.op]
        if spec.elementwise:
            t = None
            for k, a in enumerate(node.args):
                if a.id not in tan:
                    continue
                share = spec.vjp(G, tan[a.id], node, *node.args)[k]
                if share is None:
                    continue
                if isinstance(share, Masked):
                    share = apply_mask(G, Cot(share.g, None, ((share.cond, share.taken),)))
                t = share if t is None else G.add(t, share)
        elif spec.jvp is None:
            raise SymgradError(f"op {node.op!r} has no JVP rule: add one to its row in symgrad/ops.py")
        else:
            t = spec.jvp(G, [tan.get(a.id) for a in node.args], node, *node.args)
        if t is not None:
            tan[node.id] = t
    return [full(G, tan[r.id], r) if r.id in tan else G.op("zeros_like", r) for r in roots]
