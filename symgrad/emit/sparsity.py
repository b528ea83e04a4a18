"""The pattern program of a module with sparse derivatives: one line per node of the value's graph.

``_pattern_program(inputs, hessian)`` returns ``(pattern of the value, Hessian terms, n)`` (see
:mod:`symgrad.runtime.sparse`, whose ``_sp_*`` rules each line calls).  Dimensions are read from the
inputs at call time, so one module serves every size; the module caches the result per set of
input shapes.  Ops with no rule of their own take the conservative dense-dependence rule
(``_sp_dense``), which is never wrong, only less sparse; :func:`pattern_program` names them.
"""
from __future__ import annotations

import inspect
import re

from ..ir import topo_order
from ..ops import BOOL_OPS, OPS, _zero_grad
from ..runtime import sparse as _runtime
from .text import docstring

# how an elementwise op's second derivative couples its arguments (runtime.sparse._sp_ew)
_LINEAR = {"add", "sub", "neg", "abs", "maximum", "minimum"}  # piecewise linear: second derivative 0
_HOW = {"mul": "mul", "div": "div"}
# ops with a rule of their own besides the elementwise ones: node -> the call's text
_RULES = {
    "matmul": lambda n, a, s: f"_sp_matmul(_H, {a[0]}, {a[1]})",
    "transpose": lambda n, a, s: f"_sp_transpose({a[0]})",
    "sum": lambda n, a, s: f"_sp_sum({a[0]}, {n.attr})",
    "logsumexp": lambda n, a, s: f"_sp_reduce(_H, {a[0]}, {n.attr})",
    "bcast": lambda n, a, s: f"_sp_broadcast({a[0]}, {s(n.shape)})",
    "item": lambda n, a, s: f"_sp_entry({a[0]}, 0, 0)",
    "entry": lambda n, a, s: f"_sp_entry({a[0]}, {n.attr[0]}, {n.attr[1]})",
    "slice": lambda n, a, s: f"_sp_slice({a[0]}, {tuple(tuple(x) for x in n.attr)!r})",
    "trace": lambda n, a, s: f"_sp_dense(_H, (), False, {a[0]})",  # a scalar: the dense rule is exact
    "where": lambda n, a, s: f"_sp_where(_H, {a[0]}, {a[1]}, {a[2]})",
    "shift": lambda n, a, s: f"_sp_shift({a[0]}, {n.attr[0]}, {n.attr[1]})",
    "clamp": lambda n, a, s: f"_sp_clamp({a[0]}, {n.attr[0]}, {n.attr[1]}, {n.attr[2]})",
    "diag": lambda n, a, s: f"_sp_diag({a[0]})",
    "diagonal": lambda n, a, s: f"_sp_diagonal({a[0]})",
    "onehot": lambda n, a, s: f"_sp_onehot({a[0]}, {s(n.attr[0])}, {n.attr[1]}, {n.attr[2]})",
    "kron": lambda n, a, s: f"_sp_kron(_H, {a[0]}, {a[1]})",
    "solve": lambda n, a, s: f"_sp_solve(_H, {a[0]}, {a[1]})",
    "zeros_like": lambda n, a, s: f"_sp_empty({a[0]}[1], _n)",
    "eye": lambda n, a, s: f"_sp_empty({s(n.shape)}, _n)",
    "const": lambda n, a, s: "_sp_empty((), _n)",
    "dim": lambda n, a, s: "_sp_empty((), _n)",
}
# ops without a rule whose value is linear in their arguments (the dense rule adds no Hessian term);
# these and the rest (inv, det, logdet: every entry depends on every entry of a general matrix) are
# named in docs/sparse.md
_LINEAR_DENSE = {"unslice", "sum_to", "kron_a", "kron_b"}
# ops whose value a node that depends on no input is built of (a window's condition: runtime _sp_value)
_KNOWN = {"const", "bcast", "shift"} | BOOL_OPS


def pattern_program(program, local: dict, dim_local: dict, shape_text) -> tuple[str, list[str]]:
    """(source of ``_pattern_program``, the ops that took the dense rule) for ``program``;
    ``local``/``dim_local``: input / dimension name -> its Python name, ``shape_text``: a static
    shape -> its text."""
    names, lines, dense = {}, [], []
    wrt = {program.input_nodes[w].id: k for k, w in enumerate(program.wrt)}
    by_id = {program.input_nodes[i.name].id: i.name for i in program.inputs}
    order = topo_order([program.out])
    known = dict.fromkeys(_known_conditions(order))  # node id -> the name of its value, once written
    for k, n in enumerate(order):
        a = [names[x.id] for x in n.args]
        if n.op == "input":
            name = names[n.id] = "_p_" + local[by_id[n.id]]
            shape = f"{{m}}.shape({local[by_id[n.id]]})"
            call = (f"_sp_variable({shape}, _offsets[{wrt[n.id]}], _n)" if n.id in wrt
                    else f"_sp_empty({shape}, _n)")
            lines.append(f"{name} = {call}")
            continue
        name = names[n.id] = f"_p{k}"
        if n.id in known:
            known[n.id] = f"_v{k}"
            attr = "" if n.attr is None else f", attr={shape_text(n.attr) if n.op == 'bcast' else repr(n.attr)}"
            lines.append(f"_v{k} = _sp_value({n.op!r}{''.join(', ' + known[x.id] for x in n.args)}{attr})")
        if n.op == "where" and known.get(n.args[0].id):
            call = f"_sp_where(_H, {a[0]}, {a[1]}, {a[2]}, {known[n.args[0].id]})"
        elif n.op in _RULES:
            call = _RULES[n.op](n, a, shape_text)
        elif OPS[n.op].elementwise:
            how = ("zero" if OPS[n.op].vjp is _zero_grad else "linear" if n.op in _LINEAR
                   else _HOW.get(n.op, "nonlinear"))
            call = f"_sp_ew(_H, {how!r}, {', '.join(a)})"
        else:
            dense.append(n.op)
            call = f"_sp_dense(_H, {shape_text(n.shape)}, {n.op not in _LINEAR_DENSE}, {', '.join(a)})"
        lines.append(f"{name} = {call}  # {n.op}")
    wrt_shapes = ", ".join(f"{{m}}.shape({local[w]})" for w in program.wrt)
    params = ", ".join(local[i.name] for i in program.inputs)
    values = ", ".join(f"_inputs[{i.name!r}]" for i in program.inputs)
    dims = _dims_line(program, local, dim_local)
    doc = ["(the value's pattern, the Hessian terms, n): one line per node of the value's graph,",
           "    each a rule of the runtime helpers _sp_* (which variables each entry depends on and,",
           "    with _hessian, which pairs of variables each nonlinear op couples: _H).  Locals",
           "    start with _ (the inputs' names never do)."]
    if dense:
        doc.append(f"    Ops without a rule of their own, taken as dense dependence: {', '.join(sorted(set(dense)))}.")
    head = [
        "def _pattern_program(_inputs, _hessian):",
        '    """' + docstring(*doc) + '"""',
        f"    {params} = {values}" if program.inputs else "",
        *([f"    {dims}"] if dims else []),
        f"    _offsets, _n = _layout([{wrt_shapes}])",
        "    _H = [] if _hessian else None",
    ]
    body = ["    " + ln for ln in lines]
    tail = [f"    return {names[program.out.id]}, _H, _n"]
    rule = f"_DENSE_RULE = {tuple(sorted(set(dense)))!r}  # ops the pattern program takes as dense dependence\n\n\n"
    return rule + "\n".join([h for h in head if h] + body + tail) + "\n", sorted(set(dense))


def _known_conditions(order) -> set:
    """The nodes that ``where`` conditions depending on no input are made of (a window's mask):
    the pattern program computes their values (``_sp_value``), so that each entry of such a
    ``where`` depends on its selected branch only."""
    free = set()
    for n in order:
        if n.op in _KNOWN and all(x.id in free for x in n.args):
            free.add(n.id)
    by_id = {n.id: n for n in order}
    stack = [n.args[0].id for n in order if n.op == "where" and n.args[0].id in free]
    needed = set()
    while stack:
        i = stack.pop()
        if i not in needed:
            needed.add(i)
            stack.extend(x.id for x in by_id[i].args)
    return needed


def _dims_line(program, local, dim_local) -> str:
    matrices = program.matrices
    if not matrices:
        return ""
    dims = ", ".join(dim_local[d] for d in program.dims)
    call = "_dims({" + ", ".join(f"{s.name!r}: {local[s.name]}" for s in matrices) + "})"
    if not dims:
        return call
    return f"{dims}{',' if len(program.dims) == 1 else ''} = {call}"


_NP = re.compile(r"(?<![\w.])np\.")


def runtime_helpers() -> list[str]:
    """The source of every function of :mod:`symgrad.runtime.sparse`, with ``{m}`` for its NumPy
    alias (the module's own is written in), in the order the file defines them."""
    out = []
    for name, fn in vars(_runtime).items():
        if inspect.isfunction(fn) and fn.__module__ == _runtime.__name__:
            out.append("\n" + _NP.sub("{m}.", inspect.getsource(fn)))
    return out
