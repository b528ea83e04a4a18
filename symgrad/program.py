"""The program between lowering and the emitters: a graph and plain facts, no SymPy.

Lowering (``lower.py``) is the one stage that reads SymPy.  It returns a :class:`Program`;
differentiation (``diff.py``), the rewrites applied as the graph is built (``rewrites/``) and the emitters
(``emit/``) read only this -- ints, strings and IR nodes -- so a Program can be pickled and emitted
where SymPy is not installed.

Provenance: ``Program.src`` maps a node id to how the model wrote it, as *parts*: strings and
child node ids (``("tanh(", 7, ")")``).  :func:`render` prints a node's parts with its children
printed the same way, or by a name when the caller has one (a generated variable), within a width:
comments read ``# tanh(w1*t3 + b1)`` and never spell out a deep sub-expression twice.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .ir import Graph, Node
from .kinds import DERIVATIVES, derivatives  # noqa: F401 - the registry's, re-exported


@dataclass(frozen=True)
class Input:
    """An input of the model: ``shape`` is ``(r, c)`` (ints or dimension names) for a matrix, or
    ``None`` for a scalar Symbol, which binds a number or an array of any shape."""
    name: str
    shape: tuple | None

    @property
    def is_matrix(self) -> bool:
        return self.shape is not None


@dataclass
class Program:
    name: str                      # the model's name (the module's MODEL)
    graph: Graph
    out: Node                      # the value
    inputs: list[Input]            # the module's INPUTS, in order: wrt first, then data
    input_nodes: dict[str, Node]   # input name -> its node
    wrt: list[str]                 # names to differentiate with respect to
    dims: list[str]                # dimension names, read from the inputs' shapes at call time
    source_hash: str
    src: dict = field(default_factory=dict)      # node id -> provenance parts
    grads: list[Node] | None = None              # set by differentiate(): one per wrt name
    cotangents: dict = field(default_factory=dict)  # forward node id -> its total cotangent
    derivatives: tuple = ("grad",)               # the module's functions beyond forward (kinds.KINDS)
    derived: dict = field(default_factory=dict)  # kind name -> its nodes (kinds.Kind.build)
    rows_plan: object | None = None              # dask: how the value splits over rows (rows.RowPlan)
    numbers: tuple = ()                          # scalar inputs that bind one number (Model.numbers)
    lowered_rewrites: int = 0                    # rewrites that fired in lowering (pipeline.fired_lines)

    @property
    def matrices(self) -> list[Input]:
        return [i for i in self.inputs if i.is_matrix]


    def value_text(self, width: int = 300) -> str:
        return render(self.src, self.out.id, width) or "(value)"


ELLIPSIS = "..."


def render(src: dict, node_id: int, width: int, names: dict | None = None) -> str | None:
    """The provenance of ``node_id`` in at most ``width`` characters, or None when it has none.

    Children print as their own provenance when it fits, else by their name in ``names`` (node
    id -> text), else as ``...``."""
    parts = src.get(node_id)
    if parts is None:
        return None
    text = _tidy(_fill(src, parts, width, names, depth=0))
    if len(text) > width:
        text = _tidy(_fill(src, parts, width, names, depth=-1))  # children by name only
    return text if len(text) <= width else text[: width - len(ELLIPSIS)] + ELLIPSIS


_BARE = re.compile(r"(?<![\w\]).])\(([\w.]+)\)")  # (t5) -> t5, but never tr(t5) -> trt5


def _tidy(text: str) -> str:
    return _BARE.sub(r"\1", text.replace(" + -", " - "))


def _fill(src, parts, width, names, depth) -> str:
    out = []
    budget = width
    for p in parts:
        if budget < 0:  # too long already: the caller prints the children by name
            break
        if isinstance(p, str):
            piece = p
        else:
            piece = None
            if depth >= 0 and depth < 40 and p in src:
                inner = _fill(src, src[p], budget, names, depth + 1)
                if len(inner) <= budget:
                    piece = inner
            if piece is None:
                piece = (names or {}).get(p) or ELLIPSIS
        out.append(piece)
        budget -= len(piece)
    return "".join(out)
