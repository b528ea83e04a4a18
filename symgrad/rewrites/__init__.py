"""Rewrites: small named functions, registered into ordered phases, applied as the graph is built.

Three phases, tried in this order at every node (``registry.PHASES``):

* **canonicalize** (:mod:`.canonicalize`): one spelling per value -- constants folded, identities
  removed, signs, constants, transposes and broadcasts in one place, terms in one order;
* **stabilize** (:mod:`.stabilize`): the same value without overflow or cancellation
  (``expm1``, ``log1p``, ``softplus``, log-sum-exp, ``slogdet``, a solve for an inverse);
* **specialize** (:mod:`.specialize`): the same value by a cheaper op (``sqrt`` for ``x**0.5``,
  column sums for a product with ``OneMatrix``, ``sum(A*B.T)`` for ``tr(A@B)``).

A :class:`Rewriter` is given to the :class:`~symgrad.ir.Graph` (:func:`graph`): when a node is
built, the first rewrite of its op (phase order, then registration order) that returns a node
replaces it, and what that rewrite built was rewritten the same way.  ``list()`` gives the
rewrites in that order; ``rewrites_off=`` (``symgrad.generate``/``compile``) or
``SYMGRAD_REWRITES_OFF=name,name`` switches some off; ``Rewriter.fired`` records each firing, and
``SYMGRAD_TRACE_REWRITES=1`` or ``symgrad compile -v`` prints them with the node and the model's
sub-expression each rewrote.

Termination is guaranteed by the graph, whatever the rewrites do (``ir.Graph.op``): a node's key
is rewritten at most once (its replacement is remembered), a rewrite never sees the key it is
rewriting again (a rewrite that would undo another, directly or through others, finds that key on
the stack and the node is interned as it is), and rewrites nest at most ``ir.MAX_FOLD_DEPTH``
deep.  Each rewrite builds finitely many nodes, so building a graph ends.
"""
from __future__ import annotations

from ..ir import Graph
from ..ops import shape_of
from . import canonicalize, specialize, stabilize  # noqa: F401 - each module registers its rewrites
from .registry import ELEMENTWISE, OFF_ENV, PHASES, Fired, Rewrite, Rewriter, names, registered

__all__ = ["ELEMENTWISE", "OFF_ENV", "PHASES", "Fired", "Rewrite", "Rewriter", "graph", "list", "names"]

list = registered  # noqa: A001 - symgrad.rewrites.list(): the rewrites, in the order they are tried


def graph(rewriter: Rewriter | None = None) -> Graph:
    """A graph built with the op table's shapes and ``rewriter`` (default: every registered rewrite,
    less those ``$SYMGRAD_REWRITES_OFF`` names)."""
    return Graph(shape_of, rewriter if rewriter is not None else Rewriter())
