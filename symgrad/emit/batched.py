"""Batched sweeps: one call carries a stack of tangents (or cotangents), for dense Hessians and Jacobians.

``hessian`` needs ``H e_j`` for every variable ``j`` and ``jacobian`` ``J e_j`` (or ``e_i^T J``).
One ``hvp``/``jvp``/``vjp`` call per direction repeats the whole sweep and does matrix-vector work.
The derived nodes of those kinds are linear in their seed, so the same nodes evaluated on a stack
of ``B`` seeds (a leading axis) give ``B`` directions at once, with matrix-matrix work:

    def _hvp_batched(_V, _inputs):      # _V: {wrt name: (B,) + its shape} -> {wrt name: (B,) + its shape}

The function computes the nodes that do not depend on the seed once, printed by the module's own
:class:`~symgrad.emit.module.Body` (kept alive: none lends its array), then, in chunks of
directions bounded by ``BATCH_MAX_BYTES``, every node that does, with a leading batch axis: an
elementwise op broadcasts (an argument with fewer axes gets them after the batch axis), a product
is one GEMM (``_bmatmul``), a transpose swaps the last two axes, a reduction skips the batch axis,
an index keeps it.  A node whose op has no batched form here makes the function ``None`` (named
in its comment): the drivers then loop over single directions as before.  NumPy target only.
"""
from __future__ import annotations

from collections import Counter

from ..ir import topo_order
from ..ops import OPS, is_bool, slice_text
from .module import _users
from .printer import Body, owned as owned_copies
from .printing import literal as _literal
from .targets import TARGETS

_B = "_b"  # the chunk's number of directions, in the printed loop


def batched_function(program, names, fname: str, seeds: dict, roots: list, keys: list, extras=()) -> str:
    """The source of ``fname(_S, _inputs)``: the nodes ``roots`` for a stack of seeds (``seeds``:
    {key: seed input node}; ``_S[key]`` has a leading batch axis), returned as {key of
    ``keys``: stack}, after ``[the values of extras]`` when there are some (nodes that do not
    depend on the seed: the value and gradients come with the sweep); ``fname = None`` with the
    reason when a node has no batched form."""
    why = _unbatchable(program, names, seeds, roots)
    if why:
        return f"{fname} = None  # no batched sweep: {why}"
    m, target = names.m, TARGETS["numpy"]
    G = program.graph
    order = topo_order(list(extras) + list(roots))
    batched = _dependents(order, {s.id for s in seeds.values()})
    input_ids = {program.input_nodes[i.name].id: names.local[i.name] for i in program.inputs}
    primal = [n for n in order if n.id not in batched]
    b = Body(target, m, input_ids, names.dim_local, {}, G.src)
    b.keep = {a.id for n in order if n.id in batched for a in n.args if a.id not in batched}
    b.keep |= {r.id for r in roots if r.id not in batched} | {e.id for e in extras}
    b.emit(primal, _users(order), {})
    extra_texts = owned_copies(b, list(extras), input_ids, m, [f"copy{j}" for j in range(len(extras))])
    text = dict(b.names)
    seed_names = {}
    for j, (key, s) in enumerate(seeds.items()):
        text[s.id] = seed_names[key] = f"_s{j}"
    lines, sizes = [], Counter()
    users = Counter(a.id for n in order for a in set(n.args))
    owned = set()  # batched values in an array of their own, that an elementwise op may write into
    root_ids = {r.id for r in roots}
    for k, n in enumerate(n for n in order if n.id in batched and n.id not in text):
        a = [text[x.id] for x in n.args]
        if n.op == "pow" and n.args[1].op == "const":
            a[1] = _literal(n.args[1].attr, as_int=True)
        call = _batched_text(n, a, batched, m, target, names)
        ufunc = OPS[n.op].ufunc if OPS[n.op].elementwise and not is_bool(n) else None
        dead = [x for x in n.args if x.id in owned and users[x.id] == 1 and x.shape == n.shape
                and x.id not in root_ids]
        if ufunc and ufunc.isidentifier() and not ufunc.startswith("_") and n.op != "softplus" and dead:
            call = f"{m}.{ufunc}({', '.join(call_args(n, a, batched))}, out={text[dead[0].id]})"
        if n.op == "matmul" or OPS[n.op].elementwise:
            owned.add(n.id)
        text[n.id] = f"_u{k}"
        lines.append(f"_u{k} = {call}")
        sizes[names.shape_text(n.shape)] += 1
    inputs = [names.local[i.name] for i in program.inputs]
    out = []
    out.append(f"def {fname}(_S, _inputs):")
    out.append(f'    """{{key: stack}} of the seeds\' stack _S[key] (a leading axis of directions): the '
               f'derived\n    nodes, batched (see symgrad/emit/batched.py)."""')
    if inputs:
        out.append(f"    {', '.join(inputs)} = {', '.join(f'_inputs[{i.name!r}]' for i in program.inputs)}")
        out.append(f"    _dt, {', '.join(inputs)} = _promote({', '.join(inputs)})")
    if program.matrices:
        call = "_dims({" + ", ".join(f"{s.name!r}: {names.local[s.name]}" for s in program.matrices) + "})"
        dims = [names.dim_local[d] for d in program.dims]
        out.append(f"    {', '.join(dims)}{',' if len(dims) == 1 else ''} = {call}" if dims else f"    {call}")
    out += ["    " + ln for ln in b.lines]
    first = next(iter(seeds))
    out.append(f"    _n = _S[{first!r}].shape[0]")
    per = " + ".join(f"{c} * math.prod({s})" for s, c in sorted(sizes.items())) or "1"
    out.append(f"    _step = max(1, BATCH_MAX_BYTES // (_dt.itemsize * max(1, {per})))")
    results = {}
    for j, (key, r) in enumerate(zip(keys, roots)):  # filled chunk by chunk (one chunk: see below)
        results[key] = f"_r{j}"
        shape = f"{m}.shape({text[r.id]})" if r.id not in batched else names.shape_text(r.shape)
        alloc = f"{m}.empty((_n,) + {shape}, _dt)"
        out.append(f"    _r{j} = {alloc} if _step < _n else None" if r.id in owned else f"    _r{j} = {alloc}")
    out.append("    for _lo in range(0, _n, _step):")
    for key, s in seed_names.items():
        out.append(f"        {s} = {m}.asarray(_S[{key!r}][_lo:_lo + _step], dtype=_dt)")
    out.append(f"        {_B} = {seed_names[first]}.shape[0]")
    out += ["        " + ln for ln in lines]
    for key, r in zip(keys, roots):
        value = text[r.id] if r.id in batched else "0.0"
        fill = f"{results[key]}[_lo:_lo + {_B}] = {value}"
        if r.id in owned:  # a fresh array: the whole stack when it is one chunk
            out += [f"        if {_B} == _n:", f"            {results[key]} = {value}", "        else:",
                    f"            {fill}"]
        else:
            out.append(f"        {fill}")
    stacks = "{" + ", ".join(f"{k!r}: {v}" for k, v in results.items()) + "}"
    out.append(f"    return [{', '.join(extra_texts)}], {stacks}" if extras else f"    return {stacks}")
    return "\n".join(out).replace("{m}", m) + "\n"


def _dependents(order, seed_ids) -> set:
    out = set(seed_ids)
    for n in order:
        if any(a.id in out for a in n.args):
            out.add(n.id)
    return out


# ops with a batched form besides the elementwise ones (see _batched_text)
_BATCHED = {"matmul", "transpose", "sum", "bcast", "item", "entry", "slice", "shift", "trace", "sum_to",
            "onehot", "unslice", "solve"}


def _unbatchable(program, names, seeds, roots) -> str:
    """Why the derived nodes have no batched sweep here ("" when they have one)."""
    if names.target != "numpy":
        return f"target {names.target}"
    if not program.matrices:  # then scalar Symbols take arrays of any shape, which broadcast
        return "a model of scalar Symbols only (the inputs' shapes are known at run time only)"
    order = topo_order(roots)
    if any(n.op == "call" for n in order):
        return "a symgrad.Function"
    batched = _dependents(order, {s.id for s in seeds.values()})
    for n in order:
        if n.id not in batched or n.op == "input":
            continue
        if n.shape is None or any(a.shape is None for a in n.args):
            return "a value of scalar Symbols (its shape is known at run time only)"
        if not (OPS[n.op].elementwise or n.op in _BATCHED):
            return f"op {n.op}"
        if n.op == "solve" and n.args[0].id in batched:
            return "a solve whose matrix depends on the direction"
        if n.op == "slice" and any(sl[1] is not None and not isinstance(d, int)
                                   for d, sl in zip(n.args[0].shape, n.attr)):
            return "a slice that ends inside a symbolic dimension"
        if n.op == "sum_to" and n.args[0].id not in batched:
            return "op sum_to"
    return ""


def call_args(n, a, batched) -> list:
    """An elementwise op's arguments: a stack with fewer axes than the value gets them after its
    batch axis (a plain array broadcasts from the left by itself)."""
    nd = len(n.shape)
    return [f"{t}[:{', None' * (nd - len(x.shape))}]" if x.id in batched and len(x.shape) < nd else t
            for t, x in zip(a, n.args)]


def _batched_text(n, a, batched, m, target, names) -> str:
    """The text of node ``n`` on stacks: ``a`` its arguments' texts (stacks where batched)."""
    if OPS[n.op].elementwise:
        return target.template(OPS[n.op]).format(*call_args(n, a, batched), m=m, attr=n.attr)
    if n.op == "matmul":
        return f"_bmatmul({a[0]}, {a[1]})"
    if n.op == "transpose":
        return f"{m}.swapaxes({a[0]}, -1, -2)"
    if n.op == "sum":
        return (f"{a[0]}.reshape({_B}, -1).sum(axis=1)" if n.attr is None
                else f"{a[0]}.sum(axis={n.attr + 1}, keepdims=True)")
    if n.op == "bcast":
        src = n.args[0]
        lifted = f"{a[0]}[:{', None' * (len(n.shape) - len(src.shape))}]" if len(src.shape) < len(n.shape) else a[0]
        return f"{m}.broadcast_to({lifted}, ({_B},) + {names.shape_text(n.shape)})"
    if n.op == "item":
        return f"{a[0]}.reshape({_B})"
    if n.op == "entry":
        return f"{a[0]}[:, {n.attr[0]}, {n.attr[1]}]"
    if n.op == "slice":
        return f"{a[0]}[:, {slice_text(n.attr)}]"
    if n.op == "shift":
        return f"_shift({a[0]}, {n.attr[0] + 1}, {n.attr[1]})"
    if n.op == "trace":
        return f"{m}.trace({a[0]}, axis1=1, axis2=2)"
    if n.op == "sum_to":
        return f"_bsum_to({a[0]}, {a[1]}, {a[2]})"
    if n.op == "onehot":
        return f"_bplace({a[0]}, {names.shape_text(n.attr[0])}, ({n.attr[1]}, {n.attr[2]}), _dt)"
    if n.op == "unslice":
        return f"_bplace({a[0]}, {names.shape_text(n.attr[0])}, {_index(n.attr[1])}, _dt)"
    if n.op == "solve":
        return f"{m}.linalg.solve({a[0]}, {a[1]})"
    raise AssertionError(n.op)  # _unbatchable said it has a form


def _index(attr) -> str:
    return "(" + ", ".join(f"slice({x}, {y}, {z})" for x, y, z in attr) + ",)"
