"""Derivative kinds: one registry entry per function a module may have beyond ``forward``.

A :class:`Kind` says everything the stages need about one derivative function, side by side (as
JAX registers a primitive): which kinds' functions it calls (``needs``), how its nodes are added
to the graph (``build``, run by :func:`symgrad.pipeline.differentiate`), how it is printed
(``function``: the fields of the emitted function; ``helpers``: the module-level driver a
function without nodes of its own calls, and what it calls; ``definitions``: module-level code
printed from the model's graph; ``signature``: its header line), which targets have it
(``targets``; a SymgradError names the others at compile time), what it returns (``returns``,
labels :mod:`symgrad.verify` reads the call by) and how it is checked against the tape (``check``:
``"module:function"`` under ``symgrad``, resolved when a check runs, because verification sits
above the compiler and imports NumPy and the tape; the check calls the tape's oracle it needs).

Adding a kind is one entry here plus its check in ``verify.py`` (and a tape oracle there or in
``tape.py`` when the tape has none yet).  Nothing here imports NumPy or SymPy; the sparse kinds'
pattern program is printed by ``emit/sparsity.py``, imported when a module is emitted.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

from .diff import gradients
from .errors import SymgradError
from .forward import tangents


@dataclass(frozen=True)
class Kind:
    name: str                       # as in --emit and a module's DERIVATIVES
    function_name: str              # the module's function
    needs: tuple = ()               # kinds whose functions it calls
    build: Callable | None = None   # (program) -> its derived nodes (a dict), None: no nodes
    function: Callable | None = None  # (program, names) -> the emitted function's fields
    signature: str = ""             # the line the module's header gives it ("" for none)
    returns: tuple = ()             # labels of what it returns after the value (a dict per label
    #                                 unless the label is in ``single``)
    single: tuple = ()              # labels of returned parts that are one array, not a dict
    helpers: tuple = ()             # module-level helpers: the driver ``_<name>(inputs)`` of a
    #                                 function with no nodes of its own, and what it calls
    definitions: Callable | None = None  # (program, names) -> {name: module-level code of this model}
    constants: tuple = ()           # module constants the driver reads
    second_order: bool = False      # the header notes piecewise-linear second derivatives
    check: str = ""                 # "module:function" of its check against the tape
    targets: tuple | None = None    # targets that have it (None: every target with these needs)

    def checker(self):
        """The check function (see the module docstring), imported on first use."""
        return _resolve("symgrad", self.check)


def emitter(path: str):
    """``"module:function"`` of ``symgrad.emit``, resolved when a module is emitted: the emitter
    reads this registry (it sits above it), so a kind that prints code of its own (the sparse
    kinds' pattern program, the batched sweeps) names the printer late, as ``check`` names its
    check."""
    return _resolve("symgrad.emit", path)


def _resolve(package: str, path: str):
    """The function ``"module:function"`` names in ``package``, imported on first use."""
    module, _, fn = path.partition(":")
    return getattr(importlib.import_module(f"{package}.{module}"), fn)


KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    KINDS[kind.name] = kind
    return kind


def derivatives(requested) -> tuple:
    """The kinds a module has for ``requested`` (names of KINDS, a sequence or a comma separated
    string): always ``grad`` (``value_and_grad``), plus what the requested ones call, in registry
    order; a SymgradError names an unknown one."""
    if isinstance(requested, str):
        requested = [r.strip() for r in requested.split(",") if r.strip()]
    wanted = {"grad"}

    def want(name):
        if name not in wanted:
            wanted.add(name)
            for n in KINDS[name].needs:
                want(n)
    for r in requested:
        if r not in KINDS:
            raise SymgradError(f"unknown derivative {r!r} (choose from {', '.join(KINDS)})")
        want(r)
    return tuple(d for d in KINDS if d in wanted)


# -- graph builders: each returns the nodes its function computes ---------------------------------
def _wrt_nodes(program):
    return [program.input_nodes[w] for w in program.wrt]


def _build_grad(program):
    program.grads, program.cotangents = gradients(program.graph, program.out, _wrt_nodes(program))
    return {"grads": program.grads, "cotangents": program.cotangents}


def _build_vjp(program):
    G, out = program.graph, program.out
    seed = G.input(("cotangent",), out.shape)  # a tuple: never a symbol's name
    grads, cotangents = gradients(G, out, _wrt_nodes(program), seed=seed)
    return {"seed": seed, "grads": grads, "cotangents": cotangents}


def tangent_inputs(program) -> dict:
    """wrt name -> its tangent input node (one set, shared by the forward-mode kinds)."""
    return {w: program.graph.input(("tangent", w), n.shape) for w, n in zip(program.wrt, _wrt_nodes(program))}


def _seeds(program):
    nodes = tangent_inputs(program)
    return nodes, {program.input_nodes[w].id: t for w, t in nodes.items()}


def _build_jvp(program):
    nodes, seeds = _seeds(program)
    (out,) = tangents(program.graph, [program.out], seeds)
    return {"seeds": nodes, "out": out}


def _build_hvp(program):
    nodes, seeds = _seeds(program)
    return {"seeds": nodes, "hvps": tangents(program.graph, program.grads, seeds)}


# -- emitted functions: the fields of emit.module.ModuleFunction -----------------------------------------
@dataclass
class Names:
    """What a kind's ``function`` may use to name things in the module."""
    namer: object                   # emit.module.Namer of the module
    wrt_local: list                 # the wrt inputs' local names, in WRT order
    wrt_text: str                   # "x, y" (or "nothing") for docstrings
    local: dict = field(default_factory=dict)      # input name -> its Python name
    dim_local: dict = field(default_factory=dict)  # dimension name -> its Python name
    shape_text: Callable | None = None             # a static shape -> its text
    m: str = "np"                                  # the module's alias of its array module
    target: str = "numpy"                          # the target's name


def _grad_names(program, names):
    return {g.id: "grad_" + w for g, w in zip(program.grads, names.wrt_local)}


def _fn_grad(program, names):
    n = len(program.wrt)
    return dict(name="value_and_grad", kernel="vag", roots=[program.out] + program.grads,
                final=_grad_names(program, names),
                doc=f"Value of {program.name} and the gradients of its sum with respect to {names.wrt_text}.",
                cot_of=program.cotangents, groups=((n, program.wrt),))


def _fn_vjp(program, names):
    d, wl = program.derived["vjp"], names.wrt_local
    return dict(name="vjp", kernel="vjp", roots=[program.out] + d["grads"],
                final={g.id: "grad_" + w for g, w in zip(d["grads"], wl)},
                doc=f"Value of {program.name} and cotangent^T J for each of {names.wrt_text} (J: the Jacobian of "
                    "the value); value_and_grad is vjp with a cotangent of ones.",
                seed_param=names.namer.fresh("cotangent"), seeds={d["seed"].id: names.namer.fresh("cotangent_in")},
                cot_of=d["cotangents"], groups=((len(program.wrt), program.wrt),), like_value=True)


def _fn_jvp(program, names):
    d = program.derived["jvp"]
    param = names.namer.fresh("tangents")
    seeds = {d["seeds"][w].id: names.namer.fresh("tan_" + lw) for w, lw in zip(program.wrt, names.wrt_local)}
    return dict(name="jvp", kernel="jvp", roots=[program.out, d["out"]], final={d["out"].id: "tangent_out"},
                doc=f"Value of {program.name} and its directional derivative J t along tangents t "
                    f"(a dict by name of {names.wrt_text}).",
                seed_param=param, seeds=seeds, groups=((1, None),))


def _fn_hvp(program, names):
    d, wl, n = program.derived["hvp"], names.wrt_local, len(program.wrt)
    vectors = names.namer.fresh("vectors")
    seeds = {d["seeds"][w].id: names.namer.fresh("v_" + lw) for w, lw in zip(program.wrt, wl)}
    return dict(name="hvp", kernel="hvp", roots=[program.out] + program.grads + d["hvps"],
                final={**_grad_names(program, names), **{h.id: "hvp_" + w for h, w in zip(d["hvps"], wl)}},
                doc=f"Value of {program.name}, the gradients of its sum and the Hessian of its sum times the "
                    f"direction v (a dict by name of {names.wrt_text}), forward over reverse.",
                seed_param=vectors, seeds=seeds, cot_of=program.cotangents,
                groups=((n, program.wrt), (n, program.wrt)))


def _driver(name, doc):
    """A function with no nodes of its own: it calls the module's ``_<name>(inputs)`` helper."""
    def function(program, names):
        return dict(name=name, kernel="", roots=[], final={}, doc=doc(program, names))
    return function


_HELPER_JACOBIAN = '''
def _jacobian(inputs):
    """(value, {name: J}) with J.shape == value.shape + input.shape, as jax.jacrev lays it out:
    rows by vjp (one per entry of the value) or columns by jvp (one per entry of the inputs),
    whichever are fewer; all of them in one batched sweep where the module has one."""
    value = {m}.asarray(forward(**inputs))
    shapes = {n: {m}.shape(inputs[n]) for n in WRT}
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    J = {}
    if value.size <= sum(sizes.values()):
        if _vjp_batched is not None:
            g = _vjp_batched({"cotangent": {m}.eye(value.size, dtype=value.dtype).reshape((-1,) + value.shape)}, inputs)
            return value, {n: g[n].reshape(value.shape + shapes[n]) for n in WRT}
        J = {n: {m}.zeros((value.size, sizes[n]), value.dtype) for n in WRT}
        for k in range(value.size):
            u = {m}.zeros(value.size, value.dtype)
            u[k] = 1
            _, g = vjp(u.reshape(value.shape), **inputs)
            for n in WRT:
                J[n][k] = {m}.asarray(g[n]).reshape(-1)
    else:
        for n in WRT:
            if _jvp_batched is not None:  # J's columns as rows of a fresh array: returned as its transpose
                t = {w: {m}.zeros((sizes[n],) + s, value.dtype) for w, s in shapes.items()}
                t[n].reshape(sizes[n], sizes[n])[...] = {m}.eye(sizes[n], dtype=value.dtype)
                J[n] = _jvp_batched(t, inputs)["out"].reshape(sizes[n], value.size).T
                continue
            J[n] = {m}.zeros((value.size, sizes[n]), value.dtype)
            for e in range(sizes[n]):
                t = {w: {m}.zeros(s, value.dtype) for w, s in shapes.items()}
                t[n].reshape(-1)[e] = 1
                J[n][:, e] = {m}.asarray(jvp(t, **inputs)[1]).reshape(-1)
    return value, {n: J[n].reshape(value.shape + shapes[n]) for n in WRT}
'''

_HELPER_HESSIAN = '''
def _hessian(inputs):
    """(value, grads, {(a, b): H_ab}): the dense Hessian of sum(value), one hvp per entry of the
    inputs (all of them, and the value and gradients, in one batched sweep where the module has
    one), made symmetric ((H + H.T) / 2, exact up to rounding), H_ab.shape == a.shape + b.shape."""
    batched = _hvp_batched is not None and WRT
    if batched:
        shapes = {n: {m}.shape(inputs[n]) for n in WRT}
        dt = _promote(*(inputs[n] for n in INPUTS))[0]
    else:
        value, grads = value_and_grad(**inputs)
        shapes = {n: {m}.shape(grads[n]) for n in WRT}
        dt = {m}.result_type(*grads.values()) if grads else {m}.float64
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    total, itemsize = sum(sizes.values()), {m}.zeros((), dt).itemsize
    if total * total * itemsize > HESSIAN_MAX_BYTES:
        raise ValueError(f"{MODEL}: the dense Hessian has {total} x {total} entries "
                         f"({total * total * itemsize / 2**30:.3g} GiB, more than "
                         f"HESSIAN_MAX_BYTES = {HESSIAN_MAX_BYTES}): use hvp, or raise the limit")
    cols = {(a, b): {m}.zeros((sizes[a], sizes[b]), dt) for a in WRT for b in WRT}
    if batched:  # direction j is e_j of all the variables: H e_j for every j at once
        starts = {w: sum(sizes[u] for u in WRT[:k]) for k, w in enumerate(WRT)}
        v = {w: {m}.zeros((total,) + s, dt) for w, s in shapes.items()}
        for w in WRT:
            v[w].reshape(total, sizes[w])[starts[w]:starts[w] + sizes[w]] = {m}.eye(sizes[w], dtype=dt)
        (value, *g), hv = _hvp_batched(v, inputs)
        grads = dict(zip(WRT, g))
        for a in WRT:
            for b in WRT:
                cols[a, b][...] = hv[a][starts[b]:starts[b] + sizes[b]].reshape(sizes[b], sizes[a]).T
    else:
        for b in WRT:
            for e in range(sizes[b]):
                v = {w: {m}.zeros(s, dt) for w, s in shapes.items()}
                v[b].reshape(-1)[e] = 1
                hv = hvp(v, **inputs)[2]
                for a in WRT:
                    cols[a, b][:, e] = {m}.asarray(hv[a]).reshape(-1)
    H = {(a, b): ((cols[a, b] + cols[b, a].T) / 2).reshape(shapes[a] + shapes[b]) for a, b in cols}
    return value, grads, H
'''


_HELPER_BMATMUL = '''
def _bmatmul(a, b):
    """a @ b where one of them has a leading batch axis (3-D) and the other is a matrix: one GEMM
    with the batch folded into a free axis where it can be (NumPy's matmul would loop over it)."""
    if a.shape[-1] == 1:  # a product over one column is the outer product (the same multiplications)
        return a * b
    if a.ndim == 3 and b.ndim == 2:
        B, r, k = a.shape
        return (a.reshape(B * r, k) @ b).reshape(B, r, b.shape[1])  # a view where a's layout allows
    if a.ndim == 2 and b.ndim == 3:
        B, k, c = b.shape
        if c == 1:  # a stack of columns: (a @ S.T).T for S (B, k), in the orientation OpenBLAS runs faster
            return (a @ b.reshape(B, k).T).T.reshape(B, a.shape[0], 1)
    return {m}.matmul(a, b)
'''

_HELPER_BSUM_TO = '''
def _bsum_to(g, x, value):
    """_sum_to for a stack g ((B,) + a shape): broadcast each like the value, sum to x's shape."""
    sv, sx = {m}.shape(value), {m}.shape(x)
    g = {m}.broadcast_to(g.reshape(g.shape[:1] + (1,) * (len(sv) + 1 - g.ndim) + g.shape[1:]), g.shape[:1] + sv)
    if len(sv) > len(sx):
        g = g.sum(axis=tuple(range(1, 1 + len(sv) - len(sx))))
    axes = tuple(1 + i for i, (p, q) in enumerate(zip(sx, g.shape[1:])) if p == 1 and q != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g
'''

_HELPER_BPLACE = '''
def _bplace(g, shape, index, dtype):
    """Zeros of (B,) + shape with the stack g at [:, index] (onehot and unslice, batched)."""
    out = {m}.zeros(g.shape[:1] + tuple(shape), dtype=dtype)
    out[(slice(None),) + tuple(index)] = g
    return out
'''

# the run-time helpers of the batched sweeps (symgrad/emit/batched.py)
BATCHED_HELPERS = (_HELPER_BMATMUL, _HELPER_BSUM_TO, _HELPER_BPLACE)

_BATCH_CONSTANT = "BATCH_MAX_BYTES = 2**27  # the batched sweeps of hessian/jacobian take directions in chunks of this size"


def _batched_definitions(kinds):
    """The module-level batched sweeps (emit/batched.py) of the derived nodes of ``kinds``."""
    def definitions(program, names):
        batched_function = emitter("batched:batched_function")
        out = {"BATCH_MAX_BYTES": _BATCH_CONSTANT}
        for kind in kinds:
            d = program.derived[kind]
            extras = ()
            if kind == "hvp":
                seeds, roots, keys = d["seeds"], d["hvps"], list(program.wrt)
                extras = [program.out] + list(program.grads)
            elif kind == "jvp":
                seeds, roots, keys = d["seeds"], [d["out"]], ["out"]
            else:
                seeds, roots, keys = {"cotangent": d["seed"]}, d["grads"], list(program.wrt)
            out[f"_{kind}_batched"] = batched_function(program, names, f"_{kind}_batched", seeds, roots, keys, extras)
        return out
    return definitions


register(Kind("grad", "value_and_grad", build=_build_grad, function=_fn_grad, returns=("grad",),
              check=""))
register(Kind("vjp", "vjp", build=_build_vjp, function=_fn_vjp, returns=("grad",), check="verify:_check_vjp",
              signature="vjp(cotangent, **inputs) -> (value, {name: cotangent^T J}); cotangent shaped like the value."))
register(Kind("jvp", "jvp", build=_build_jvp, function=_fn_jvp, returns=("tangent",), single=("tangent",),
              check="verify:_check_jvp",
              signature="jvp(tangents, **inputs) -> (value, J t); tangents: {name: array shaped like the input}."))
register(Kind("jacobian", "jacobian", needs=("vjp", "jvp"), returns=("jacobian",),
              helpers=(_HELPER_JACOBIAN, *BATCHED_HELPERS), definitions=_batched_definitions(("vjp", "jvp")),
              function=_driver("jacobian", lambda p, n: (
                  f"Value of {p.name} and its Jacobian with respect to each of {n.wrt_text}: "
                  "J[name].shape == value.shape + input.shape (rows by vjp or columns by "
                  "jvp, whichever are fewer).")),
              check="verify:_check_jacobian",
              signature="jacobian(**inputs) -> (value, {name: J}), J.shape == value.shape + input.shape."))
register(Kind("hvp", "hvp", build=_build_hvp, function=_fn_hvp, returns=("grad", "hvp"), second_order=True,
              check="verify:_check_hvp",
              signature="hvp(vectors, **inputs) -> (value, grads, {name: H v}), H the Hessian of sum(value)."))
register(Kind("hessian", "hessian", needs=("hvp",), returns=("grad", "hessian"),
              helpers=(_HELPER_HESSIAN, *BATCHED_HELPERS), definitions=_batched_definitions(("hvp",)),
              constants=("HESSIAN_MAX_BYTES = 2**30  # hessian() refuses a dense Hessian larger than this",),
              function=_driver("hessian", lambda p, n: (
                  f"Value of {p.name}, its gradients and the dense Hessian of its sum: blocks "
                  "H[(a, b)] of shape input_a.shape + input_b.shape for each pair of "
                  f"{n.wrt_text}, symmetric; one hvp per entry of the inputs.")),
              second_order=True, check="verify:_check_hessian",
              signature="hessian(**inputs) -> (value, grads, {(a, b): H_ab}), H_ab.shape == a.shape + b.shape."))


# -- sparse derivatives: patterns from the graph, colorings, one jvp / hvp per color -----------------
_HELPER_SPARSITY = '''
_SPARSITY = {}  # (what, the inputs' shapes) -> its pattern and coloring, computed once per shapes


def _sparsity(inputs, what):
    """The pattern and coloring of the sparse "jacobian" or "hessian" for the inputs' shapes
    (_pattern_program, then _jacobian_plan or _hessian_plan), cached; a warning, once, when the
    Hessian pattern is dense."""
    key = (what,) + tuple({m}.shape(inputs[n]) for n in INPUTS)
    plan = _SPARSITY.get(key)
    if plan is None:
        value, H, n = _pattern_program(inputs, what == "hessian")
        plan = _jacobian_plan(value[0]) if what == "jacobian" else _hessian_plan(H, n)
        if _pattern_is_dense(plan[0]) and min(plan[0].shape) > 1:  # a gradient is dense by nature
            colors = plan[2] if what == "jacobian" else plan[1]
            warnings.warn(f"{MODEL}: the {what.capitalize()} pattern is dense ({plan[0].shape[0]} x "
                          f"{plan[0].shape[1]}): {int(colors.max()) + 1} derivative calls", stacklevel=3)
        _SPARSITY[key] = plan
    return plan


def sparsity_info(**inputs):
    """{"jacobian": {...}, "hessian": {...}} for the shapes of inputs, as the module has them: the
    shape, stored entries (nnz) and colors (one derivative call each) of each sparse derivative,
    and the ops its pattern takes as dense dependence (they have no rule of their own)."""
    out = {}
    for what in ("jacobian", "hessian"):
        if "sparse_" + what in DERIVATIVES:
            plan = _sparsity(inputs, what)
            colors = plan[2] if what == "jacobian" else plan[1]
            out[what] = {"shape": plan[0].shape, "nnz": int(plan[0].nnz),
                         "colors": int(colors.max()) + 1 if colors.size else 0}
            if what == "jacobian":
                out[what]["by"] = plan[1]  # "columns" (jvp per color) or "rows" (vjp per color)
            out[what]["dense_rule"] = _DENSE_RULE
    return out
'''

_HELPER_SPARSE_JACOBIAN = '''
def _sparse_jacobian(inputs):
    """(value, J): J the CSR Jacobian of the value raveled (rows) with respect to the variables
    (columns), from one jvp per color of its columns or one vjp per color of its rows."""
    P, how, colors = _sparsity(inputs, "jacobian")
    value = {m}.asarray(forward(**inputs))
    names = WRT
    shapes = [{m}.shape(inputs[n]) for n in names]

    def along(mode, seed):
        if mode == "columns":
            return {m}.asarray(jvp(_unflatten(seed, names, shapes), **inputs)[1]).reshape(-1)
        return _flatten(vjp(seed.reshape(value.shape), **inputs)[1], names)
    return value, _jacobian_values(P, how, colors, along, value.dtype)
'''

_HELPER_SPARSE_HESSIAN = '''
def _sparse_hessian(inputs):
    """(value, grads, H): H the CSR Hessian of sum(value) with respect to the variables, from one
    hvp per color of a star coloring of its pattern (the first hvp gives the value and gradients)."""
    A, colors, rows, cols = _sparsity(inputs, "hessian")
    if not A.nnz:
        value, grads = value_and_grad(**inputs)
        dt = {m}.result_type(*grads.values()) if grads else {m}.float64
        return value, grads, _sparse.csr_matrix(A.shape, dtype=dt)
    names = WRT
    shapes = [{m}.shape(inputs[n]) for n in names]
    first = []

    def hvp_of(v):
        value, grads, hv = hvp(_unflatten(v, names, shapes), **inputs)
        first.append((value, grads))
        return _flatten(hv, names)
    H = _hessian_values(A, colors, rows, cols, hvp_of)
    return first[0] + (H,)
'''


def _pattern_definitions(program, names):
    text, _ = emitter("sparsity:pattern_program")(program, names.local, names.dim_local, names.shape_text)
    text = text.replace("{m}", names.m)
    return {"_pattern_program": text}


register(Kind("sparse_jacobian", "sparse_jacobian", needs=("vjp", "jvp"), returns=("jacobian",),
              single=("jacobian",), helpers=(_HELPER_SPARSE_JACOBIAN, _HELPER_SPARSITY), definitions=_pattern_definitions,
              function=_driver("sparse_jacobian", lambda p, n: (
                  f"Value of {p.name} and its Jacobian with respect to {n.wrt_text} as a scipy.sparse CSR "
                  "matrix of shape (value.size, n): only entries that can be non-zero are stored.")),
              check="verify:_check_sparse_jacobian", targets=("numpy", "numba"),
              signature="sparse_jacobian(**inputs) -> (value, J), J CSR (value.size, n) over the raveled wrt inputs."))
register(Kind("sparse_hessian", "sparse_hessian", needs=("hvp",), returns=("grad", "hessian"),
              single=("hessian",), helpers=(_HELPER_SPARSE_HESSIAN, _HELPER_SPARSITY), definitions=_pattern_definitions,
              function=_driver("sparse_hessian", lambda p, n: (
                  f"Value of {p.name}, its gradients and the Hessian of its sum with respect to {n.wrt_text} "
                  "as a scipy.sparse CSR matrix of shape (n, n): only entries that can be non-zero are stored.")),
              second_order=True, check="verify:_check_sparse_hessian", targets=("numpy", "numba"),
              signature="sparse_hessian(**inputs) -> (value, grads, H), H CSR (n, n) over the raveled wrt inputs."))


DERIVATIVES = tuple(KINDS)  # every kind's name, in registry order
