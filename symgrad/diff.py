"""Symbolic reverse mode over the IR DAG.

:func:`gradients` sweeps the forward graph once in reverse topological order.  Each node's total
cotangent is built from its consumers' contributions (fan-in is added up here, once), its op's VJP
rule gives one cotangent per argument, and every contribution is brought to its argument's shape
here, in one place: rules never un-broadcast.

Three facts travel with a contribution (a :class:`Cot`):

* ``g``    -- the cotangent node;
* ``root`` -- for an argument of dynamic shape (a value of scalar Symbols, whose shape is known
  only at run time), the node whose run-time shape ``g`` stands for: ``g`` may be smaller than
  that (the seed ``1`` stands for the whole output) and the sum over broadcast axes is deferred to
  where it is needed (``sum_to``).  Contributions with different roots are summed down to the
  argument's own shape before they are added: a value counted once must never be broadcast again.
  A static value meeting a dynamic argument (``s * A``, ``s`` a scalar Symbol) sums its
  contribution to the argument's run-time shape at once (the root is then the argument itself);
* ``mask`` -- selections (``where`` from Piecewise, ``maximum``/``minimum``) pass the cotangent
  to a branch only where it is selected.  The mask is applied lazily, once, where the branch's
  contribution leaves elementwise work of the same shape, so that ``0 * inf`` from a branch that
  is not taken (``x*log(x)`` guarded by ``x > 0``) never becomes a NaN gradient: the mask is a
  ``where`` on the finished contribution, the "double where" idiom done by the engine.

Only nodes that lie on a path to a ``wrt`` input are visited, so no gradient of data is asked for.
"""
from __future__ import annotations

from dataclasses import dataclass

from .ir import ONE, Graph, Node, topo_order
from .errors import SymgradError
from .ops import OPS, Masked


SEED = -1  # the root of the seed's cotangent (see _Sweep.roots)


@dataclass(frozen=True)
class Cot:
    g: Node
    root: int | None = None     # dynamic shapes: id of the node whose run-time shape g stands for
    mask: tuple = ()            # ((condition node, polarity), ...) still to apply, sorted


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


def apply_mask(G: Graph, c: Cot) -> Node:
    """``c.g`` with its selection masks applied: exactly 0 where a branch is not taken."""
    g, zero = c.g, G.const(0)
    for cond, taken in c.mask:
        g = G.where(cond, g, zero) if taken else G.where(cond, zero, g)
    return g


class _Sweep:
    def __init__(self, G: Graph, out: Node):
        self.G = G
        self.pending: dict[int, list[Cot]] = {}
        # root id -> node, for sum_to's reference; the seed stands for the whole output, which is
        # never "exact" even when the output is an input itself (SEED is no node's id)
        self.roots: dict[int, Node] = {SEED: out}

    def exact(self, c: Cot, node: Node) -> Node:
        """The cotangent of ``node`` as an array of exactly its (run-time) shape, masks applied."""
        g = apply_mask(self.G, c)
        if node.shape is None and c.root != node.id:
            return self.G.op("sum_to", g, node, self.roots[c.root])
        return unbroadcast(self.G, g, node.shape)

    def merge(self, node: Node) -> Cot:
        """Add up the contributions to ``node``; contributions that differ in root or mask are
        made exact first, so nothing summed already is summed again."""
        G, parts = self.G, self.pending.pop(node.id)
        groups: dict = {}
        for c in parts:
            key = (c.root, c.mask)
            groups[key] = c.g if key not in groups else G.add(groups[key], c.g)
        if len(groups) == 1:
            (root, mask), g = next(iter(groups.items()))
            return Cot(g, root, mask)
        roots = {root for root, _ in groups}
        if len(roots) == 1:  # same shape bookkeeping: only the masks need applying
            (root,) = roots
            total = None
            for (_, mask), g in groups.items():
                g = apply_mask(G, Cot(g, root, mask))
                total = g if total is None else G.add(total, g)
            return Cot(total, root, self.union([mask for _, mask in groups]))
        total = None
        for (root, mask), g in groups.items():
            g = self.exact(Cot(g, root, mask), node)
            total = g if total is None else G.add(total, g)
        self.roots[node.id] = node
        return Cot(total, node.id if node.shape is None else None)

    def union(self, masks) -> tuple:
        """The mask under which at least one of ``masks`` passes its cotangent.

        Each group was masked before the sum, but the sum still meets this node's own partials,
        which may be NaN exactly where every branch is not taken (``sqrt(x)`` guarded by ``x > 0``
        and by ``x > 1``): the union travels on, so the finished contribution is 0 there too.
        """
        if any(not m for m in masks):
            return ()
        G, any_taken = self.G, None
        for mask in masks:
            taken = None
            for cond, polarity in mask:
                c = cond if polarity else G.op("not", cond)
                taken = c if taken is None else G.op("and", taken, c)
            any_taken = taken if any_taken is None else G.op("or", any_taken, taken)
        return ((any_taken, True),)

    def contribute(self, node: Node, c: Cot, a: Node, ga) -> None:
        """Record ``ga`` (a rule's cotangent for argument ``a`` of ``node``, cotangent ``c``)."""
        G = self.G
        mask = c.mask
        if isinstance(ga, Masked):
            ga, cond, taken = ga
            mask = tuple(sorted(set(mask) | {(cond, taken)}, key=lambda m: (m[0].id, m[1])))
        if node.shape is None and a.shape is None:          # dynamic -> dynamic: defer
            out = Cot(ga, c.root, mask)
        elif node.shape is None:                            # dynamic -> static: sum now
            g = apply_mask(G, Cot(ga, None, mask))
            out = Cot(G.op("sum_to", g, a, self.roots[c.root]))
        elif a.shape is None:                               # static -> dynamic: sum now
            g = apply_mask(G, Cot(ga, None, mask))
            self.roots[a.id] = a
            out = Cot(G.op("sum_to", g, a, node), a.id)
        elif a.shape == node.shape and OPS[node.op].elementwise:  # same static shape: defer the mask
            out = Cot(ga, None, mask)
        else:
            out = Cot(unbroadcast(G, apply_mask(G, Cot(ga, None, mask)), a.shape))
        self.pending.setdefault(a.id, []).append(out)


def gradients(G: Graph, out: Node, wrt: list[Node], seed: Node | None = None) -> tuple[list[Node], dict[int, Node]]:
    """Gradients of ``sum(out)`` with respect to the input nodes ``wrt`` -- or, given ``seed``
    (a node shaped like ``out``: the cotangent of a VJP), of ``sum(seed * out)``.

    Returns the gradient nodes (one per ``wrt`` entry, in order) and the map from forward node id
    to its total cotangent, which the emitter uses to name adjoints.
    """
    order = topo_order([out])
    wanted = {w.id for w in wrt}
    needs = set()
    for node in order:  # nodes whose value depends on a wrt input
        if node.id in wanted or any(a.id in needs for a in node.args):
            needs.add(node.id)
    sweep = _Sweep(G, out)
    if seed is None:
        seed = G.const(1) if out.shape in (None, ()) else G.bcast(G.const(1), out.shape)
    sweep.pending[out.id] = [Cot(seed, SEED if out.shape is None else None)]
    total: dict[int, Node] = {}
    final: dict[int, Cot] = {}
    for node in reversed(order):
        if node.id not in sweep.pending or node.id not in needs:
            sweep.pending.pop(node.id, None)
            continue
        c = sweep.merge(node)
        total[node.id] = apply_mask(G, c)  # the adjoint as printed (unused ones are never emitted)
        if not node.args:
            final[node.id] = c
            continue
        rule = OPS[node.op].vjp
        if rule is None:
            raise SymgradError(f"op {node.op!r} has no VJP rule: add one to its row in symgrad/ops.py")
        if c.mask and not OPS[node.op].elementwise:
            c = Cot(apply_mask(G, c), c.root)
        for a, ga in zip(node.args, rule(G, c.g, node, *node.args)):
            if ga is not None and a.id in needs:
                sweep.contribute(node, c, a, ga)
    grads = []
    for w in wrt:
        c = final.get(w.id)
        if c is None:
            grads.append(G.op("zeros_like", w))
        elif w.shape is None and c.root == w.id and not c.mask:
            grads.append(c.g)
        else:
            grads.append(sweep.exact(c, w))
    return grads, total
