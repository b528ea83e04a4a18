"""Symbolic reverse mode over the IR DAG.

:func:`gradients` sweeps the forward graph once in reverse topological order.  Each node's total
cotangent is built from its consumers' contributions (fan-in is added up here, once), its op's VJP
rule gives one cotangent per argument, and each contribution is summed down to the argument's
static shape here (un-broadcasting lives in the engine, never in the rules).  Only nodes that lie
on a path to a ``wrt`` input are visited, so no gradient of data is ever asked for.

Values built from scalar Symbols have a dynamic shape (``None``): their cotangents may still be
broadcast, and the input's gradient sums them to the input's run-time shape with ``sum_to``.
"""
from __future__ import annotations

from .ir import ONE, Graph, Node, topo_order
from .model import SymgradError
from .ops import OPS


def unbroadcast(G: Graph, g: Node, shape) -> Node:
    """Sum cotangent ``g`` down to the static ``shape`` of the value it belongs to."""
    if shape is None or g.shape == shape:
        return g
    if shape == ():
        return G.sum(g)
    if g.shape is None or g.shape == ():
        return G.bcast(g, shape)
    for axis in (0, 1):
        if shape[axis] == ONE and g.shape[axis] != ONE:
            g = G.sum(g, axis)
    return G.bcast(g, shape)


def gradients(G: Graph, out: Node, wrt: list[Node]) -> tuple[list[Node], dict[int, Node]]:
    """Gradients of ``sum(out)`` with respect to the input nodes ``wrt``.

    Returns the gradient nodes (one per ``wrt`` entry, in order) and the map from forward node id
    to its total cotangent, which the emitter uses to name adjoints.
    """
    order = topo_order([out])
    wanted = {w.id for w in wrt}
    needs = set()
    for node in order:  # nodes whose value depends on a wrt input
        if node.id in wanted or any(a.id in needs for a in node.args):
            needs.add(node.id)
    seed = G.const(1) if out.shape in (None, ()) else G.bcast(G.const(1), out.shape)
    cot: dict[int, Node] = {out.id: seed}
    total: dict[int, Node] = {}
    for node in reversed(order):
        g = cot.get(node.id)
        if g is None or node.id not in needs:
            continue
        total[node.id] = g
        if not node.args:
            continue
        rule = OPS[node.op].vjp
        if rule is None:
            raise SymgradError(f"op {node.op!r} has no VJP rule: add one to its row in symgrad/ops.py")
        for a, ga in zip(node.args, rule(G, g, node, *node.args)):
            if ga is None or a.id not in needs:
                continue
            if node.shape is None and a.shape is not None:
                # a static value (a trace, M[0, 0]) used in a dynamic one: g may still be
                # broadcast to the value's run-time shape, so sum it there
                ga = G.op("sum_to", ga, a, out)
            else:
                ga = unbroadcast(G, ga, a.shape)
            cot[a.id] = ga if a.id not in cot else G.add(cot[a.id], ga)
    grads = []
    for w in wrt:
        g = total.get(w.id)
        if g is None:
            grads.append(G.op("zeros_like", w))
        elif w.shape is None:
            grads.append(G.op("sum_to", g, w, out))
        else:
            grads.append(g)
    return grads, total
