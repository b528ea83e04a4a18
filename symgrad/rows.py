"""Row separability: is the value a sum over data rows?  (The analysis behind ``--target dask``.)

Most models people compile are sums over the rows of their data -- MSE, negative log-likelihoods,
cross-entropy over N samples.  Then the data can be cut into blocks of rows, the NumPy kernel run
on each block where the block lives, and the blocks' values and parameter gradients added up: the
gradient of a sum is the sum of the gradients.  This module decides whether a Program is such a
model and builds the *block value* that the kernel computes on one block.

Roles of the inputs
    *data* -- the inputs cut into blocks: in a matrix model the matrices that are not
    differentiated and whose first axis is the rows dimension (the leading dimension they share,
    one that no parameter has); in a model of scalar Symbols every Symbol that is not
    differentiated (arrays whose first axis is the rows).  *Parameters* -- everything else: the
    ``wrt`` inputs, matrices without the rows dimension, scalar Symbols of a matrix model.

Classes of a value (one per node, bottom-up; see :func:`split_rows`)
    ``PARAMS`` depends on no data; ``ROWS`` has the rows as its first axis and its row i depends
    on data row i only (``X @ W + b``, ``tanh``, a softmax along a row); ``COLS`` is the transpose
    of such a value; ``SUM`` is *linear* in sums over the rows (``1.T @ R``, ``sum(R)``,
    ``X.T @ R``, then sums, scalings and products of these with parameters).  Anything else --
    a nonlinear function of a sum over rows (``log(sum(...))``, a normalisation by a data mean), a
    product of two such sums, a reduction along the rows that is not a sum (``logsumexp`` over
    rows), a row picked by index, an N x N value -- couples the rows and is refused, naming it.

The block value
    The value is a sum over blocks when it is ``SUM`` (add the blocks), ``ROWS`` or ``COLS``
    (concatenate them; the gradient of their sum is still a sum over blocks), or ``PARAMS`` (no
    data: one block).  A ``SUM`` may add parameter-only terms (``loss + lam * |w|^2``): in the block
    value those are multiplied by ``share``, an input that is 1 on the first block and 0 on the
    others, so that they count once -- by linearity this holds wherever they are added.  A rows
    dimension used as a number (``1/N``) is the number of rows of *all* blocks: the input ``total``.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .errors import SymgradError
from .ir import Node, topo_order
from .ops import OPS
from .program import render

PARAMS, ROWS, COLS, SUM = "params", "rows", "cols", "sum"
COMBINE = {SUM: "sum", ROWS: "rows", COLS: "cols", PARAMS: "once"}  # how the blocks' values combine

# elementwise ops that are linear in their argument(s) of class SUM
_LINEAR = {"add", "sub", "neg", "mul", "div"}


@dataclass
class RowPlan:
    """How the value splits over row blocks."""
    rows: str | None       # the rows dimension of a matrix model; None in a model of scalar Symbols
    data: list[str]        # input names cut into blocks (first axis); the others are whole, NumPy
    combine: str           # "sum", "rows" (concatenate along axis 0), "cols" (axis 1), "once"
    out: Node              # the block value (see the module docstring)
    total: Node            # input: the number of rows of all blocks (used where the model reads N)
    share: Node            # input: 1 on the first block, 0 on the others


def split_rows(program) -> RowPlan:
    """The :class:`RowPlan` of ``program`` (lowered); a SymgradError naming the part of the model
    that couples the rows, or the input whose layout does not split."""
    G = program.graph
    rows, data = _roles(program)
    cls: dict[int, str] = {}
    order = topo_order([program.out])
    for n in order:
        cls[n.id] = _class(n, [cls[a.id] for a in n.args], rows, data, program)
    total = G.input(("rows total",), ())  # tuples: never a symbol's name
    share = G.input(("first block",), ())
    first = G.op("gt", share, G.const(0))
    new: dict[int, Node] = {}
    for n in order:
        args = [new[a.id] for a in n.args]
        if n.op == "dim" and n.attr == rows:
            new[n.id] = total
            continue
        if n.op in ("add", "sub") and cls[n.id] == SUM:  # a selection, not a product: 0 * inf is NaN
            args = [G.where(first, b, G.const(0)) if cls[a.id] == PARAMS else b for a, b in zip(n.args, args)]
        same = all(b is a for a, b in zip(n.args, args))
        new[n.id] = n if same else G.op(n.op, *args, attr=n.attr)
    return RowPlan(rows, data, COMBINE[cls[program.out.id]], new[program.out.id], total, share)


def _roles(program) -> tuple[str | None, list[str]]:
    """(rows dimension, data input names), see the module docstring; the others are parameters."""
    wrt = set(program.wrt)
    matrices = [i for i in program.inputs if i.is_matrix]
    if not matrices:  # scalar Symbols: the data are the ones not differentiated
        return None, [i.name for i in program.inputs if i.name not in wrt]
    in_params = {d for i in matrices if i.name in wrt for d in i.shape}
    square = {i.shape[0] for i in matrices if i.shape[0] == i.shape[1]}
    leading = Counter(i.shape[0] for i in matrices if i.name not in wrt and isinstance(i.shape[0], str)
                      and i.shape[0] not in in_params and i.shape[0] not in square)
    second = Counter(i.shape[1] for i in matrices)
    # the rows: first axes of data, rarely a second axis anywhere (X (N x d), C (d x k): N, not d)
    score = {d: (second[d], -leading[d]) for d in leading}
    best = sorted(d for d in score if score[d] == min(score.values()))
    if len(best) > 1:
        raise SymgradError(f"the rows do not split into blocks: the data have {len(best)} candidate rows "
                           f"dimensions ({', '.join(best)}), and the dask target cuts the data along one")
    rows = best[0] if best else None
    data = [i.name for i in matrices if i.name not in wrt and i.shape[0] == rows]
    for i in program.inputs:
        if i.is_matrix and rows in i.shape and i.name not in data:
            where = "its second axis" if i.shape[0] != rows else "its first axis and is differentiated"
            raise SymgradError(f"the rows do not split into blocks: input {i.name} "
                               f"({'x'.join(map(str, i.shape))}) has the rows dimension {rows} as {where} "
                               f"(data must have the rows first; parameters must not have them)")
    return rows, data


def _class(n: Node, args: list[str], rows, data, program) -> str:
    """The class of node ``n`` from its arguments' classes (see the module docstring)."""
    op, shape = n.op, n.shape
    if op == "input":
        name = n.attr[0]
        return ROWS if name in data else PARAMS
    if op in ("const", "dim"):
        return PARAMS
    if op == "eye":
        return _coupled(n, program, "is an identity matrix over the rows") if n.attr == rows else PARAMS
    kinds = set(args)
    if kinds == {PARAMS} and not (shape and rows in shape):
        return PARAMS
    if op == "bcast":
        return _by_axes(n, program, rows, args[0])
    if OPS[op].elementwise:
        if kinds <= {ROWS, PARAMS} or kinds <= {COLS, PARAMS}:
            return (kinds - {PARAMS}).pop()
        if SUM in kinds and kinds <= {SUM, PARAMS} and op in _LINEAR:
            a = args
            if op in ("add", "sub", "neg") or (op == "mul" and PARAMS in a) or (op == "div" and a[1] == PARAMS):
                return SUM
        if SUM in kinds:
            return _coupled(n, program, "is a nonlinear function of a sum over the rows")
        return _coupled(n, program, "combines the rows with their transpose")
    if op == "transpose":
        return {ROWS: COLS, COLS: ROWS}.get(args[0], args[0])
    if op == "matmul":
        table = {(ROWS, PARAMS): ROWS, (PARAMS, COLS): COLS, (COLS, ROWS): SUM, (PARAMS, SUM): SUM,
                 (SUM, PARAMS): SUM}
        if tuple(args) in table:
            return table[tuple(args)]
        why = ("is an N x N product of the rows" if tuple(args) == (ROWS, COLS)
               else "is a product of two sums over the rows" if tuple(args) == (SUM, SUM)
               else "multiplies the rows by a sum over the rows" if SUM in args
               else "is a product that mixes the rows")
        return _coupled(n, program, why)
    if op in ("sum", "logsumexp"):
        a, axis = args[0], n.attr
        if a in (PARAMS, SUM):
            if op == "sum" or a == PARAMS:
                return a
            return _coupled(n, program, "is a logsumexp of a sum over the rows")
        along_rows = axis is None or (axis == 0) == (a == ROWS)
        if not along_rows:
            return a
        if op == "sum":
            return SUM
        return _coupled(n, program, "is a logsumexp over the rows (only sums over the rows split)")
    if op == "solve":  # A^-1 B: B's columns one by one
        if args[0] == PARAMS and args[1] in (PARAMS, COLS, SUM):
            return args[1]
        return _coupled(n, program, "solves a system built from the rows")
    if op in ("item", "entry", "trace", "diag", "diagonal", "unslice"):
        if args[0] in (PARAMS, SUM):
            return args[0]
        return _coupled(n, program, "picks entries of the rows by position")
    if op == "slice":
        if args[0] in (PARAMS, SUM):
            return args[0]
        axis = 0 if args[0] == ROWS else 1
        if n.attr[axis][1] is None:  # the whole axis
            return args[0]
        return _coupled(n, program, "slices the rows")
    if args and all(a == PARAMS for a in args):
        return PARAMS
    return _coupled(n, program, f"is a {op} of data over the rows")


def _by_axes(n: Node, program, rows, arg: str) -> str:
    """The class of a broadcast: where the rows dimension is in its shape."""
    shape = n.shape or ()
    at = [i for i, d in enumerate(shape) if d == rows]
    if arg == SUM and not at:
        return SUM
    if arg in (PARAMS, ROWS, COLS) and len(at) <= 1:
        if not at:
            return arg
        got = ROWS if at == [0] else COLS
        if arg in (PARAMS, got):
            return got
    return _coupled(n, program, "spreads a sum over the rows back over the rows" if arg == SUM
                    else "is an N x N value")


def _coupled(n: Node, program, why: str):
    what = render(program.src, n.id, 70)
    if what is None:  # a node the rewrites made: name it by the first argument the model wrote
        inner = next((t for t in (render(program.src, a.id, 60) for a in n.args) if t), None)
        what = f"a {n.op}" + (f" of {inner}" if inner else "")
    raise SymgradError(f"the rows do not split into blocks: {what} {why}")
