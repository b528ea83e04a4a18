"""The body printer shared by the fusing targets (CuPy: CUDA kernels; Numba: compiled loops).

Which nodes form a fused cluster, and the order of clusters and other nodes, is decided by the
target-neutral pass :class:`symgrad.emit.fusion.Fusion`; :class:`FusedBody` walks its units,
printing a node outside any cluster as the NumPy :class:`~symgrad.emit.printer.Body` does and
handing each cluster to the target's own printer (``print_cluster``).
"""
from __future__ import annotations

from .fusion import Cluster, Fusion
from .printer import Body
from .printing import literal


class FusedBody(Body):
    """Prints a function body unit by unit of the :class:`~symgrad.emit.fusion.Fusion` pass: a
    cluster by the target's printer, any other node as by the NumPy target."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.prefix = ""  # "fwd" or "vag": names this function's kernels (_fwd_k0...); set by emit
        self.fusion: Fusion | None = None  # the fusion pass over this body; set by emit

    def _print_units(self, print_cluster) -> None:
        """Every unit of the fusion pass in its order: a cluster by ``print_cluster``, any other
        node by ``_emit_node``."""
        for unit in self.fusion.units:
            if isinstance(unit, Cluster):
                print_cluster(unit)
            else:
                self._emit_node(unit)
            for n in self.fusion.aliases:  # a broadcast the consumer does by itself has its source's name
                if n.id not in self.names and self.fusion.real(n).id in self.names:
                    self.names[n.id] = self.names[self.fusion.real(n).id]

    def _emit_node(self, n) -> None:
        """One non-fused node, printed as by the NumPy target (no out= buffers: kernels allocate)."""
        if n.id in self.names:
            return
        if n.op == "const":
            self.names[n.id] = literal(n.attr)
            return
        text = self.expr(n, self.users.get(n.id, []), self.final)
        if text is None:
            return
        self.names[n.id] = self.new_name(n)
        self.assign(n, self.names[n.id], text)
