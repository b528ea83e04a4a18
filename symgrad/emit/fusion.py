"""Fusion of elementwise work: which nodes of a function body go into one kernel, and in what order.

This is a pass over the ordered nodes of one function body; it prints nothing and knows no target.
The CuPy target (:mod:`symgrad.emit.cupy`) prints each :class:`Cluster` it finds as one
``ElementwiseKernel`` and every other unit as the NumPy target would; a fused CPU target can print
the same units its own way.

What each node is (:attr:`Fusion.kind_of`):

* ``"input"``  -- an input of the function (it already has a name);
* ``"host"``   -- a value built from dimensions and constants only: it stays a Python number;
* ``"alias"``  -- a broadcast that every consumer does by itself (elementwise consumers, not a
  returned value): it is seen through, to its source (:attr:`Fusion.broadcast_source`);
* ``"fused"``  -- any other elementwise op (every ``OPS[op].elementwise``): it goes into a cluster;
* ``"other"``  -- everything else (matmuls, reductions, ``item``, ``trace``...): a unit of its own.

Clusters: a node joins the clusters of its elementwise arguments unless that would create a cycle
through a non-fused node (a matmul between two parts of a cluster), or -- for static shapes -- its
shape differs from the cluster's (every kernel output gets the kernel's iteration shape).  Values
of scalar Symbols have dynamic shapes: a kernel's output has the broadcast shape of *all* the
kernel's inputs, which is harmless where the consumer broadcasts anyway (elementwise ops,
``sum_to``); a value whose shape matters (the returned value, a reduction's argument, a static
consumer) is only put in a cluster whose inputs give exactly its own shape (checked to a fixpoint).

Shape sources: the shape of a dynamic value is the broadcast shape of a set of arrays, named by
node id -- its *shape sources*.  A node outside any cluster is its own source (a host value has
none); a fused node has the union of its arguments' sources; a cluster's iteration shape is that
of the union of its external arguments' sources.
"""
from __future__ import annotations

import heapq

from ..ops import OPS

# the kinds of node, as in Fusion.kind_of (see the module docstring)
INPUT, HOST, ALIAS, FUSED, OTHER = "input", "host", "alias", "fused", "other"

_HOST_OPS = {"add", "sub", "mul", "div", "neg", "pow"}  # arithmetic that Python does on Python numbers


class Cluster:
    """Elementwise nodes computed together by one kernel."""

    __slots__ = ("members", "shape", "shape_sources", "pinned", "upstream")

    def __init__(self, node, shape_sources, pinned: bool, upstream: set):
        self.members: list = [node]  # its nodes; in the body's order once clustering is done
        self.shape = node.shape  # the static shape of every member, or None (dynamic)
        # dynamic clusters: the ids of the arrays whose broadcast shape is the kernel's iteration
        # shape (None for a static cluster)
        self.shape_sources: frozenset | None = shape_sources
        # True when a member's shape matters: then its shape sources may no longer change
        self.pinned = pinned
        # indices (in the clustering's draft list) of clusters this one's members need computed
        # first, directly or through non-fused nodes; merged ones are resolved with Fusion._root
        self.upstream = upstream


class Fusion:
    """The fusion pass over one function body: node kinds, clusters, and the units to print.

    ``order`` is the body's nodes in a topological order, ``users`` maps a node id to the nodes
    that take it as an argument, ``final`` holds the ids of the returned gradients, ``forward``
    the ids of the forward pass's nodes, ``inputs`` the ids of the function's inputs.
    """

    def __init__(self, order, users: dict, final, forward, inputs, fusable=None):
        self.order = order
        self.fusable = fusable or _fusable  # op name -> may it go into a cluster (the target's say)
        self.users = users
        self.final = final
        self.forward = forward
        self.inputs = inputs
        self.position = {n.id: i for i, n in enumerate(order)}  # node id -> index in ``order``

        # -- classification (see the module docstring) --
        self.kind_of: dict[int, str] = {}  # node id -> INPUT, HOST, ALIAS, FUSED or OTHER
        self.broadcast_source: dict[int, object] = {}  # id of an ALIAS node -> the node it broadcasts
        self.aliases: list = []  # the ALIAS nodes, in order
        self.returned: set[int] = set()  # ids of values the function returns (forward value, gradients)
        self.shape_sources: dict[int, frozenset] = {}  # node id -> its shape sources
        # ids of dynamic fused nodes whose shape matters: a consumer that does not broadcast, or returned
        self.shape_matters: set[int] = set()

        # -- clustering: the working state of one greedy pass (reset by each) --
        self._draft: list[Cluster] = []  # clusters as made, merged ones included
        self._draft_index: dict[int, int] = {}  # id of a fused node -> index of its cluster in _draft
        self._merged_into: dict[int, int] = {}  # index of a merged draft cluster -> the one it joined
        self._depends_on: dict[int, set] = {}  # id of a non-fused node -> draft clusters it needs

        # -- the result --
        self.clusters: list[Cluster] = []  # the clusters, each with its members in order
        self.cluster_of: dict[int, Cluster] = {}  # id of a fused node -> its cluster
        self.units: list = []  # clusters and single nodes (not INPUT/ALIAS) in a dependency order

        self._classify()
        self._cluster()
        self.units = self._schedule()

    # -- what each node is ----------------------------------------------------------------------
    def real(self, n):
        """The node ``n`` shows: itself, or the source of a broadcast its consumers do themselves."""
        while n.id in self.broadcast_source:
            n = self.broadcast_source[n.id]
        return n

    def consumers(self, n):
        """The users of ``n``, seen through the broadcasts that are aliases."""
        for u in self.users.get(n.id, []):
            if self.kind_of.get(u.id) == ALIAS:
                yield from self.consumers(u)
            else:
                yield u

    def _classify(self) -> None:
        for n in self.order:
            self.kind_of[n.id] = self._kind(n)
        fwd = [n for n in self.order if n.id in self.forward]
        used_in_forward = {a.id for n in fwd for a in n.args}
        self.returned = {n.id for n in fwd if n.id not in used_in_forward} | set(self.final)
        for n in self.order:
            self.shape_sources[n.id] = self._own_shape_sources(n)
        self.shape_matters = {
            n.id for n in self.order if self.kind_of[n.id] == FUSED and n.shape is None
            and (n.id in self.returned
                 or not all(self._tolerates_broadcast(n, u) for u in self.users.get(n.id, [])))}

    def _kind(self, n) -> str:
        """The kind of ``n``; the kinds of the nodes before it are known (aliases recorded here)."""
        if n.id in self.inputs:
            return INPUT
        if n.op in ("const", "dim"):
            return HOST
        if (n.op == "bcast" and n.id not in self.final and self.users.get(n.id)
                and all(self.fusable(u.op) for u in self.users[n.id])):
            self.broadcast_source[n.id] = n.args[0]
            self.aliases.append(n)
            return ALIAS
        if self.fusable(n.op):
            on_host = n.op in _HOST_OPS and all(self.kind_of[self.real(a).id] == HOST for a in n.args)
            return HOST if on_host else FUSED
        return OTHER

    def _own_shape_sources(self, n) -> frozenset:
        """The arrays whose broadcast shape ``n``'s value has (its arguments' sources are known)."""
        kind = self.kind_of[n.id]
        if kind == HOST:
            return frozenset()
        if kind == ALIAS:
            return self.shape_sources[self.real(n).id]
        if kind == FUSED and n.shape is None:
            return frozenset().union(*(self.shape_sources[a.id] for a in n.args))
        return frozenset([n.id])

    def _tolerates_broadcast(self, n, u) -> bool:
        """Does consumer ``u`` still compute the right thing if dynamic ``n`` comes broadcast?"""
        if self.kind_of[u.id] == ALIAS:
            return u.shape is None and all(self._tolerates_broadcast(u, w) for w in self.users.get(u.id, []))
        if self.kind_of[u.id] in (FUSED, HOST):
            return u.shape is None
        return u.op == "sum_to" and u.args[0] is n and u.args[1] is not n and u.args[2] is not n

    # -- clusters -------------------------------------------------------------------------------
    def _cluster(self) -> None:
        """Greedy clustering, repeated with more constrained nodes until no shape is inflated."""
        constrained, dynamic_fusion = set(self.shape_matters), True
        for _ in range(len(self.order) + 2):
            self.clusters, self.cluster_of = self._greedy(constrained, dynamic_fusion)
            inflated = self._inflated(self._schedule(), constrained)
            if not inflated:
                break
            if inflated <= constrained:  # no progress: fall back to unfused dynamic values (always exact)
                dynamic_fusion = False
            constrained |= inflated

    def _greedy(self, constrained: set, dynamic_fusion: bool) -> tuple[list, dict]:
        """One pass in order: each fused node joins what clusters of its arguments it can.

        ``constrained``: ids of dynamic nodes that may only join a cluster whose shape sources are
        exactly their own; ``dynamic_fusion``: False puts no two dynamic nodes in one cluster.
        """
        self._draft, self._draft_index, self._merged_into, self._depends_on = [], {}, {}, {}
        for n in self.order:
            args = [self.real(a) for a in n.args]
            if self.kind_of[n.id] == FUSED:
                self._place(n, args, constrained, dynamic_fusion)
            elif self.kind_of[n.id] == OTHER:
                self._depends_on[n.id] = set().union(*[
                    {self._root(self._draft_index[a.id])} if a.id in self._draft_index
                    else self._depends_on.get(a.id, set()) for a in args])
            else:
                self._depends_on[n.id] = set()
        clusters = []
        for i, c in enumerate(self._draft):
            if self._root(i) == i:
                c.members.sort(key=lambda m: self.position[m.id])
                clusters.append(c)
        cluster_of = {m.id: c for c in clusters for m in c.members}
        return clusters, cluster_of

    def _root(self, index: int) -> int:
        """The draft cluster that draft cluster ``index`` has been merged into (itself if none)."""
        while self._merged_into.get(index, index) != index:
            index = self._merged_into[index]
        return index

    def _upstream_closure(self, indices) -> set:
        """The draft clusters (roots) of ``indices`` and everything upstream of them."""
        seen, stack = set(), [self._root(c) for c in indices]
        while stack:
            c = stack.pop()
            if c not in seen:
                seen.add(c)
                stack.extend(self._root(u) for u in self._draft[c].upstream)
        return seen

    def _argument_sources(self, a) -> frozenset:
        """The shape sources that argument ``a`` brings to a kernel: its cluster's if it is dynamic
        and clustered, else its own."""
        if a.shape is None and a.id in self._draft_index:
            return self._draft[self._root(self._draft_index[a.id])].shape_sources
        return self.shape_sources[a.id]

    def _argument_clusters(self, args) -> set:
        """The draft clusters (roots) that compute some of ``args``."""
        return {self._root(self._draft_index[a.id]) for a in args if a.id in self._draft_index}

    def _place(self, n, args, constrained: set, dynamic_fusion: bool) -> None:
        """Put fused node ``n`` into the clusters of its arguments it may join (merging them), or
        into a new cluster of its own."""
        candidates = []
        for a in args:
            c = self._root(self._draft_index[a.id]) if a.id in self._draft_index else None
            if c is not None and c not in candidates and self._draft[c].shape == n.shape and (
                    n.shape is not None or dynamic_fusion):
                candidates.append(c)
        # clusters that n's unclustered arguments need
        outside = set().union(*[self._depends_on.get(a.id, set()) for a in args if a.id not in self._draft_index])
        joined = []
        for c in candidates:
            trial = joined + [c]
            if self._may_join(n, args, trial, outside, constrained):
                joined = trial
        left_out = self._argument_clusters(args) - set(joined)
        if not joined:
            sources = frozenset().union(*[self._argument_sources(a) for a in args]) if n.shape is None else None
            self._draft.append(Cluster(n, sources, n.id in constrained, outside | left_out))
            self._draft_index[n.id] = len(self._draft) - 1
            return
        head = self._draft[joined[0]]
        for c in joined[1:]:
            head.members += self._draft[c].members
            head.upstream |= self._draft[c].upstream
            head.pinned |= self._draft[c].pinned
            self._merged_into[c] = joined[0]
        head.members.append(n)
        head.upstream |= outside | left_out
        head.pinned |= n.id in constrained
        if n.shape is None:
            head.shape_sources = frozenset().union(head.shape_sources, *[self._draft[c].shape_sources for c in joined],
                                                   *[self._argument_sources(a) for a in args])
        self._draft_index[n.id] = joined[0]

    def _may_join(self, n, args, trial: list, outside: set, constrained: set) -> bool:
        """May ``n`` join the draft clusters ``trial`` (merged into one)?  Not if the merged
        cluster would need itself through something outside it, nor if a pinned or constrained
        shape would change."""
        left_out = self._argument_clusters(args) - set(trial)
        upstream = self._upstream_closure(outside | left_out | set().union(*[self._draft[t].upstream for t in trial]))
        if upstream & set(trial):
            return False
        if n.shape is None:
            sources = frozenset().union(
                *[self._draft[t].shape_sources for t in trial],
                *[self._argument_sources(a) for a in args
                  if a.id not in self._draft_index or self._root(self._draft_index[a.id]) not in trial])
            if any(self._draft[t].pinned and self._draft[t].shape_sources != sources for t in trial):
                return False
            if n.id in constrained and sources != self.shape_sources[n.id]:
                return False
        return True

    def _inflated(self, units, constrained: set) -> set:
        """Ids of dynamic values whose shape matters but whose kernel would broadcast them (or of
        the clustered arguments that inflate them)."""
        iteration_sources = {}  # dynamic cluster -> the shape sources of its iteration shape
        inflated = set()
        for c in units:
            if not isinstance(c, Cluster) or c.shape is not None:
                continue
            ids = {m.id for m in c.members}
            external = [self.real(a) for m in c.members for a in m.args if self.real(a).id not in ids]
            sources = frozenset().union(*[
                iteration_sources.get(self.cluster_of.get(e.id), self.shape_sources[e.id]) if e.shape is None
                else self.shape_sources[e.id] for e in external])
            iteration_sources[c] = sources
            for m in c.members:
                if m.id in constrained and sources != self.shape_sources[m.id]:
                    inflated |= {e.id for e in external if e.id in self.cluster_of and e.shape is None
                                 and iteration_sources.get(self.cluster_of[e.id]) != self.shape_sources[e.id]} or {m.id}
        return inflated

    # -- schedule -------------------------------------------------------------------------------
    def _schedule(self) -> list:
        """Units (clusters and single nodes) in a dependency order, stable in the original order
        (Kahn's algorithm, taking the earliest ready unit first)."""
        units, unit_of = [], {}
        for n in self.order:
            if self.kind_of[n.id] in (INPUT, ALIAS):
                continue
            c = self.cluster_of.get(n.id)
            if c is None:
                unit_of[n.id] = n
                units.append(n)
            else:
                unit_of[n.id] = c
                if c.members[0] is n:
                    units.append(c)
        index = {id(u): i for i, u in enumerate(units)}
        needs = {i: set() for i in range(len(units))}
        for n in self.order:
            if n.id in unit_of:
                me = index[id(unit_of[n.id])]
                for a in n.args:
                    a = self.real(a)
                    if a.id in unit_of and index[id(unit_of[a.id])] != me:
                        needs[me].add(index[id(unit_of[a.id])])
        waiting = {i: len(d) for i, d in needs.items()}
        dependants = {i: [] for i in needs}
        for i, d in needs.items():
            for j in d:
                dependants[j].append(i)
        ready = [i for i, w in waiting.items() if w == 0]
        heapq.heapify(ready)
        scheduled = []
        while ready:
            i = heapq.heappop(ready)
            scheduled.append(units[i])
            for j in dependants[i]:
                waiting[j] -= 1
                if waiting[j] == 0:
                    heapq.heappush(ready, j)
        return scheduled


def _fusable(op: str) -> bool:
    """Elementwise with a CUDA C form (an op without one, polygamma, is called like a matmul)."""
    return OPS[op].elementwise and OPS[op].c is not None
