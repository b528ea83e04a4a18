"""Assemble the generated module: names, one assignment per op, header, helpers.

Layout of a generated module::

    docstring header (model, source hash, symgrad version, inputs, conventions)
    import <array module>
    MODEL, TARGET, INPUTS, WRT, DIMS, SHAPES constants
    helpers it needs (_promote: one float type for the inputs, ``_dt``; _dims: bind and check
    shapes; _sum_to: un-broadcast a gradient; _sigmoid, _logsumexp; _buf: an out= guard)
    def forward(*, inputs...)            -> value
    def value_and_grad(*, inputs...)     -> (value, {wrt name: gradient})

Work is one op per line.  A value whose array is dead after its last use lends that array to a
later value of the same shape (``t5 = np.add(t2, t4, out=t4)``, planned in ``buffers.py``):
large elementwise work is bound by memory, and fresh memory costs a page fault per 4 KiB.

Names: inputs keep their symbol's name wherever Python allows (keywords and other unusable names
are mangled, and the functions then take ``**inputs``); forward temporaries are ``t<k>``, the
adjoint of ``t<k>`` is ``b_t<k>``, the gradient of input ``W`` is ``grad_W``; any of these that
would clash with an input is suffixed with ``_``.  Same model, same bytes.
"""
from __future__ import annotations

import keyword
import re
import unicodedata

from .. import __version__
from ..ir import topo_order
from ..ops import OPS, is_bool
from .buffers import plan
from ..program import render
from ..errors import SymgradError
from .text import docstring, visible

_HELPER_DIMS = '''
def _dims(arrays):
    """Read the dimensions of SHAPES from the arrays' shapes and check that they agree."""
    dims = {}
    for name, spec in SHAPES.items():
        shape = {m}.shape(arrays[name])
        ok = len(shape) == len(spec)
        for want, got in zip(spec, shape):
            ok = ok and dims.setdefault(want, got) == got if isinstance(want, str) else ok and want == got
        if not ok:
            raise ValueError(f"{MODEL}: input {name!r} has shape {shape}, expected {spec} "
                             f"(dimensions so far: {dims})")
        if 0 in shape:
            raise ValueError(f"{MODEL}: input {name!r} is empty (shape {shape}); every dimension "
                             "must be at least 1")
    return tuple(dims[d] for d in DIMS)
'''

_HELPER_BUF = '''
def _buf(t):
    """t as an out= array when it is one (values of scalar inputs may be plain numbers)."""
    return t if isinstance(t, {m}.ndarray) else None
'''

_HELPER_PROMOTE = '''
def _promote(*inputs):
    """(dt, *inputs) with every input in one float type dt: float32 arrays stay float32; Python
    numbers, bools and integer arrays bind like float64 (Python numbers as NumPy scalars, so that
    division by zero or a negative base gives inf/nan as for arrays, never an exception or a
    complex number).  A complex or non-numeric input is a TypeError naming it."""
    arrays = []
    for name, x in zip(INPUTS, inputs):
        if type(x) in (float, int, bool):
            arrays.append(None)
            continue
        try:
            a = x if isinstance(x, {m}.ndarray) else {m}.asarray(x)
        except Exception:  # noqa: BLE001 - whatever the array module refuses
            a = None
        if a is None or a.dtype.kind not in "biuf":
            what = type(x).__name__ + (f" of dtype {a.dtype}" if a is not None else "")
            raise TypeError(f"{MODEL}: input {name!r} must be real numbers, got {what}")
        arrays.append(a)
    kinds = [a.dtype if a.dtype.kind == "f" else {m}.float64 for a in arrays if a is not None]
    dt = {m}.result_type(*kinds) if kinds else {m}.result_type({m}.float64)
    return (dt,) + tuple(dt.type(x) if a is None else a if a.dtype == dt else a.astype(dt)
                         for x, a in zip(inputs, arrays))
'''

_HELPER_SCRATCH = '''
_SCRATCH = threading.local()


def _scratch(key, shape, dtype):
    """A work array for temporaries that are never returned, kept between calls (one set per
    thread): a fresh array costs a page fault per 4 KiB, more than the arithmetic on it."""
    if not shape:
        return None
    arrays = _SCRATCH.__dict__
    a = arrays.get(key)
    if a is None or a.shape != shape or a.dtype != dtype:
        a = arrays[key] = {m}.empty(shape, dtype)
    return a


def release_scratch():
    """Free the work arrays this module keeps for the calling thread."""
    _SCRATCH.__dict__.clear()
'''

# helpers of the emitter's own, emitted when a body calls them (ops bring theirs: OPS[...].helper)
_EMITTER_HELPERS = {"_buf": _HELPER_BUF, "_scratch": _HELPER_SCRATCH}

_HELPER_ARGS = '''
def _args(inputs):
    """The inputs in INPUTS order (used because some input names are not Python identifiers)."""
    missing = [n for n in INPUTS if n not in inputs]
    extra = [n for n in inputs if n not in INPUTS]
    if missing or extra:
        raise TypeError(f"{MODEL}: missing inputs {missing}, unexpected inputs {extra}")
    return tuple(inputs[n] for n in INPUTS)
'''


def _plain(name: str) -> bool:
    return (name.isidentifier() and not keyword.iskeyword(name)
            and unicodedata.normalize("NFKC", name) == name and not name.startswith("_"))


class Namer:
    """One namespace of Python identifiers for a generated function body."""

    def __init__(self):
        self.used: set[str] = set()

    def fresh(self, want: str) -> str:
        name = want if _plain(want) else re.sub(r"\W", "_", unicodedata.normalize("NFKC", want))
        if not name or not name.isidentifier() or keyword.iskeyword(name):
            name = "s_" + name
        if name.startswith("_"):
            name = "s" + name
        while name in self.used:
            name += "_"
        self.used.add(name)
        return name


def _literal(v: float, as_int: bool = False) -> str:
    if as_int and float(v).is_integer() and abs(v) < 2**53:
        s = str(int(v))
    elif v != v or v in (float("inf"), float("-inf")):
        s = {"nan": "float('nan')", "inf": "float('inf')", "-inf": "-float('inf')"}[repr(v)]
    else:
        s = repr(float(v))
    return f"({s})" if s.startswith("-") else s


class Body:
    """Prints the assignments that compute ``roots`` from the inputs."""

    def __init__(self, target, alias: str, names: dict, dim_names: dict, cot_of: dict, src: dict):
        self.t, self.m = target, alias
        self.names = dict(names)  # node id -> expression text (inputs, and what we assign)
        self.dim_names = dim_names
        self.cot_of, self.src = cot_of, src
        self.lines: list[str] = []
        self.counter = 0
        self.namer = Namer()
        self.namer.used |= set(names.values()) | set(dim_names.values()) | {self.m}
        self.ops_used: set[str] = set()
        self.forward: set[int] = set()  # ids of forward nodes: never named as adjoints
        self.keep: set[int] = set()  # ids of returned values besides ``final`` ones: never overwritten
        self.described: dict = {}  # (node id, width) -> text; assemble shares one between bodies
        self.leaves: dict = {}  # node id -> ids of the dynamic-shape inputs it depends on
        self.scratch_prefix = ""  # key prefix of this function's work arrays; "" for none
        self.scratch_count = 0
        self.definitions: dict[str, str] = {}  # module-level code this body calls (e.g. kernels)

    def shape(self, shape) -> str:
        parts = [str(d) if isinstance(d, int) else self.dim_names[d] for d in shape]
        return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"

    def expr(self, n, users, final) -> str | None:
        """Text for node ``n``; None when ``n`` needs no line of its own (then self.names has it)."""
        m, a = self.m, [self.names.get(x.id) for x in n.args]
        if n.op == "const":
            return None
        if n.op == "dim":
            self.names[n.id] = self.dim_names[n.attr]
            return None
        if n.op == "bcast":
            if n.id not in final and n.id not in self.keep and users and all(
                    self.broadcasts_itself(u, n) for u in users):
                self.names[n.id] = a[0]  # the consumer broadcasts by itself
                return None
            if n.args[0].shape in (None, ()):  # a matrix of one value, in the inputs' float type
                return f"{m}.full({self.shape(n.shape)}, {a[0]}, dtype=_dt)"
            return f"{m}.broadcast_to({a[0]}, {self.shape(n.shape)})"  # owned() copies a returned one
        if n.op == "transpose" and n.id not in final:
            self.names[n.id] = f"{a[0]}.T"  # a view: printed where it is used, as in X.T @ G
            return None
        if n.op == "sum":
            return f"{m}.sum({a[0]})" if n.attr is None else f"{a[0]}.sum(axis={n.attr}, keepdims=True)"
        if n.op == "eye":
            return f"{m}.eye({self.shape((n.attr,))[1:-2]}, dtype=_dt)"
        if n.op == "onehot":
            return f"_onehot({a[0]}, {self.shape(n.attr[0])}, {n.attr[1]}, {n.attr[2]}, _dt)"
        if n.op == "where" and all(_python_scalar(v) is not None for v in n.args[1:]):
            # both branches are Python scalars: NumPy would make float64; keep the inputs' type
            if _is(_python_scalar(n.args[1]), 1) and _is(_python_scalar(n.args[2]), 0):
                return f"{a[0]}.astype(_dt)"
            return f"{m}.where({a[0]}, {a[1]}, {a[2]}).astype(_dt, copy=False)"
        if n.op == "pow" and n.args[1].op == "const":
            a[1] = _literal(n.args[1].attr, as_int=True)
        code = self.t.template(OPS[n.op])
        if code is None:
            raise SymgradError(f"op {n.op!r} has no {self.t.name} printer entry (symgrad/ops.py)")
        self.ops_used.add(n.op)
        return code.format(*a, m=m, attr=n.attr)

    def emit(self, order, users, final: dict) -> None:
        self.users, self.final = users, final
        stmts = []
        for n in order:
            if n.id in self.names:
                continue
            if n.op == "const":
                self.names[n.id] = _literal(n.attr)
                continue
            text = self.expr(n, users.get(n.id, []), final)
            if text is None:
                continue
            name = self.new_name(n)
            stmts.append((n, name, text))
            self.names[n.id] = name
        reuse, scratch = self.plan_buffers(order, users, {n.id for n, _, _ in stmts}, set(final) | self.keep)
        for n, name, text in stmts:
            if n.id in reuse:
                text = self.into(n, self.names[reuse[n.id]])
            elif n.id in scratch and self.scratch_prefix:
                text = self.into(n, self.scratch(n), guard=False)
            self.assign(n, name, text)

    def new_name(self, n) -> str:
        """``grad_W`` for a returned gradient, ``b_t3`` for the adjoint of ``t3``, else ``t<k>``."""
        if n.id in self.final:
            return self.namer.fresh(self.final[n.id])
        if n.id in self.cot_of and self.cot_of[n.id] in self.names and n.id not in self.forward:
            return self.namer.fresh("b_" + self.names[self.cot_of[n.id]])
        self.counter += 1
        return self.namer.fresh(f"t{self.counter - 1}")

    def assign(self, n, name: str, text: str) -> None:
        """Append ``name = text`` with a comment pointing back to the SymPy sub-expression."""
        comment = self.describe(n.id, 60)
        fwd = self.cot_of.get(n.id)
        if comment is None and fwd is not None and (fwd in self.src or fwd in self.names):
            comment = "adjoint of " + (self.describe(fwd, 48) or self.names[fwd])
        line = f"{name} = {text}"
        self.lines.append(line + (f"  # {comment}" if comment and len(line) < 60 else ""))

    def broadcasts_itself(self, user, n) -> bool:
        """True when ``user`` broadcasts its argument ``n`` by itself (an elementwise op that has
        another argument of its full shape), or is a transpose printed inline into such ops only:
        then the broadcast ``n`` needs no array of its own."""
        if user.op == "transpose" and user.id not in self.final and user.id not in self.keep:
            return all(self.broadcasts_itself(u, user) for u in self.users.get(user.id, ()))
        if not OPS[user.op].elementwise:
            return False
        # a static result needs one operand that already has its shape: else nothing stretches it
        return user.shape is None or any(a is not n and a.shape == user.shape and a.op != "bcast"
                                         and not (a.op == "transpose" and a.args[0].op == "bcast")
                                         for a in user.args)

    def describe(self, node_id: int, width: int) -> str | None:
        """The SymPy sub-expression a node came from, cut to ``width`` (printed once per node)."""
        if node_id not in self.src:
            return None
        key = (node_id, width)
        if key not in self.described:
            text = render(self.src, node_id, width, self.names)
            self.described[key] = None if text is None or text == self.names.get(node_id) else visible(text)
        return self.described[key]

    def plan_buffers(self, order, users, emitted: set, roots: set) -> tuple[dict, set]:
        """Which values are written into dead arrays (see ``buffers.py``)."""
        view_of, klass, leaves = {}, {}, self.leaves
        for n in order:
            leaves[n.id] = (frozenset([n.id]) if n.op == "input" and n.shape is None else
                            frozenset().union(*(leaves[a.id] for a in n.args)))
            if n.op in ("transpose", "sum_to") or (n.op == "bcast" and n.args[0].shape not in (None, ())):
                view_of[n.id] = n.args[0].id
            if n.id not in emitted or is_bool(n) or n.op == "input":
                continue
            if n.shape is None:
                klass[n.id] = ("dynamic", leaves[n.id])
            elif len(n.shape) == 2:
                klass[n.id] = ("static", n.shape)
        writes = {n.id for n in order if n.id in emitted and OPS[n.op].ufunc
                  and not (n.op == "where" and all(_python_scalar(v) is not None for v in n.args[1:]))}
        return plan(order, users, view_of, klass, writes, roots)

    def scratch(self, n) -> str:
        """A work array for ``n`` that the module keeps between calls (see ``_scratch``)."""
        self.ops_used.add("_scratch")
        key = f"{self.scratch_prefix}{self.scratch_count}"
        self.scratch_count += 1
        if n.shape is not None:
            shape = self.shape(n.shape)
        else:
            shapes = [f"{self.m}.shape({self.names[i]})" for i in sorted(self.leaves[n.id])]
            shape = shapes[0] if len(shapes) == 1 else f"{self.m}.broadcast_shapes({', '.join(shapes)})"
        return f"_scratch({key!r}, {shape}, _dt)"

    def into(self, n, out: str, guard: bool = True) -> str:
        """``n`` computed into the existing array ``out`` (the ufunc form of its op)."""
        m, a = self.m, [self.names[x.id] for x in n.args]
        if n.shape is None and guard:  # values of scalar Symbols may be Python numbers, never an out=
            out = f"_buf({out})"
            self.ops_used.add("_buf")
        if n.op == "pow" and n.args[1].op == "const":
            if n.args[1].attr == 2:
                return f"{m}.square({a[0]}, out={out})"
            a[1] = _literal(n.args[1].attr, as_int=True)
        if n.op == "sigmoid":  # expr() has already asked for the helper
            return f"_sigmoid({a[0]}, out={out})"
        if n.op == "where":
            self.ops_used.add("where")
            return f"_where({', '.join(a)}, out={out})"
        if n.op == "softplus":
            a = ["0.0"] + a
        return f"{m}.{OPS[n.op].ufunc}({', '.join(a)}, out={out})"


def _python_scalar(n):
    """The const/dim node that ``n`` prints as (a broadcast one is printed bare), else None."""
    if n.op == "bcast":
        n = n.args[0]
    return n if n.op in ("const", "dim") else None


def _is(n, value) -> bool:
    return n.op == "const" and n.attr == value


def _helpers_called(code: str, defined) -> dict:
    """{function name: helper source} of the helpers (ops' own, then the emitter's) that ``code``
    calls and that no target definition already provides, in table order."""
    out = {}
    for helper in [op.helper for op in OPS.values() if op.helper] + list(_EMITTER_HELPERS.values()):
        fn = re.search(r"def (\w+)\(", helper).group(1)
        if fn not in defined and re.search(rf"(?<![\w.]){fn}\(", code):
            out[fn] = helper
    return out


def _users(order) -> dict:
    users: dict = {}
    for n in order:
        for a in n.args:
            users.setdefault(a.id, []).append(n)
    return users


def assemble(program, target) -> str:
    """The source of the module of a differentiated :class:`~symgrad.program.Program`."""
    G, out, grads, name = program.graph, program.out, program.grads, program.name
    inputs = [i.name for i in program.inputs]
    wrt_names = program.wrt
    namer = Namer()
    local = {n: namer.fresh(n) for n in inputs}
    dim_local = {d: namer.fresh(d) for d in program.dims}
    m = target.alias  # the array module's name; an input may take it (then the module is np_)
    while m in local.values() or m in dim_local.values():
        m += "_"
    plain_sig = all(local[n] == n for n in inputs)
    matrices = program.matrices

    input_ids = {program.input_nodes[n].id: local[n] for n in inputs}
    cot_of = {}
    for fwd_id, c in program.cotangents.items():
        cot_of.setdefault(c.id, fwd_id)

    forward_ids = {n.id for n in topo_order([out])}
    described: dict = {}

    def body(roots, final, prefix):
        order = topo_order(roots)
        b = (target.body or Body)(target, m, input_ids, dim_local, cot_of, G.src)
        b.forward, b.keep, b.described, b.scratch_prefix = forward_ids, {out.id}, described, prefix
        b.emit(order, _users(order), final)
        return b

    fwd = body([out], {}, "forward")
    grad_names = {g.id: "grad_" + local[w] for g, w in zip(grads, wrt_names)}
    vag = body([out] + grads, {k: v for k, v in grad_names.items()}, "value_and_grad")
    value = owned(fwd, [out], input_ids, m)[0]
    returned = owned(vag, [out] + grads, input_ids, m, ["grad_" + local[w] for w in wrt_names])
    value_vag, entries = returned[0], list(zip(wrt_names, returned[1:]))

    def prologue(b: Body) -> list[str]:
        lines = []
        if not plain_sig:
            lines.append(", ".join(local[n] for n in inputs) + ("," if len(inputs) == 1 else "") + " = _args(inputs)")
        if inputs:
            names = ", ".join(local[n] for n in inputs)
            lines.append(f"_dt, {names} = _promote({names})")
        if matrices:
            call = "_dims({" + ", ".join(f"{s.name!r}: {local[s.name]}" for s in matrices) + "})"
            if dim_local:
                lines.append(", ".join(dim_local.values()) + ("," if len(dim_local) == 1 else "") + " = " + call)
            else:
                lines.append(call)
        return lines

    wrt_text = ", ".join(wrt_names) or "nothing"
    sig = ("*, " + ", ".join(inputs)) if plain_sig and inputs else ("**inputs" if inputs else "")
    definitions = {**fwd.definitions, **vag.definitions}
    helpers = _helpers_called("\n".join(fwd.lines + vag.lines + list(definitions.values())), definitions)
    imports = (["import threading"] if "_scratch" in helpers else []) + [f"import {target.module} as {m}"]
    text = [_header(program, target), *imports, ""]
    text += [f"MODEL = {name!r}", f"TARGET = {target.name!r}", f"INPUTS = {tuple(inputs)!r}",
             f"WRT = {tuple(wrt_names)!r}", f"DIMS = {tuple(dim_local)!r}",
             "SHAPES = {" + ", ".join(f"{s.name!r}: {s.shape!r}" for s in matrices) + "}", ""]
    if inputs:
        text.append(_HELPER_PROMOTE.replace("{m}", m))
    if matrices:
        text.append(_HELPER_DIMS.replace("{m}", m))
    text += [helper.replace("{m}", m) for helper in helpers.values()]
    if not plain_sig:
        text.append(_HELPER_ARGS)
    for definition in definitions.values():
        text += ["", definition]
    text += ["", f"def forward({sig}):", f'    """{docstring(f"Value of {name}.")}"""']
    text += ["    " + ln for ln in prologue(fwd) + fwd.lines]
    text += [f"    return {value}", "", ""]
    text += [f"def value_and_grad({sig}):",
             f'    """{docstring(f"Value of {name} and the gradients of its sum with respect to {wrt_text}.")}"""']
    text += ["    " + ln for ln in prologue(vag) + vag.lines]
    grads_text = "{" + ", ".join(f"{k!r}: {v}" for k, v in entries) + "}"
    text += [f"    return {value_vag}, {grads_text}", ""]
    return "\n".join(text)


# ops whose value may be (a view of) an argument's memory, as printed: read through to the base
_VIEWS = {"transpose", "sum_to", "bcast"}


def owned(b: Body, roots, input_ids, m, want=None) -> list[str]:
    """Text for each returned node such that the caller owns every array: never an input or a
    view of one, never the same memory as another returned array, never read-only.  A returned
    node that cannot be proven fresh is copied (``np.array``, which is fresh and writable)."""
    seen, texts = set(), []
    for k, n in enumerate(roots):
        base = n
        while (base.op in _VIEWS and base.id not in input_ids
               and not (base.op == "bcast" and base.args[0].shape in ((), None))):  # np.full: fresh
            base = base.args[0]
        text = b.names[n.id]
        scalar = base.op in ("const", "dim", "item")  # Python and NumPy scalars are immutable
        if not scalar and (base.id in input_ids or base.id in seen or text in texts or _read_only(n)):
            copy = b.namer.fresh(want[k - 1] if want and k else "value")
            b.lines.append(f"{copy} = {m}.array({text})  # a copy: the caller owns what is returned")
            text = copy
        seen.add(base.id)
        texts.append(text)
    return texts


def _read_only(n) -> bool:
    """A broadcast view of an array (printed as ``broadcast_to``) cannot be written."""
    while n.op == "transpose":
        n = n.args[0]
    return n.op == "bcast" and n.args[0].shape not in (None, ())


def _header(program, target) -> str:
    described = ", ".join(f"{i.name} ({'x'.join(map(str, i.shape))})" if i.is_matrix
                          else f"{i.name} (scalar, broadcasts)" for i in program.inputs)
    wrt = ", ".join(program.wrt) or "nothing"
    lines = [
        f"Generated by symgrad {__version__} from model {program.name!r}. Do not edit: regenerate.",
        "",
        f"Model:    {program.name}  (source sha256 {program.source_hash})",
        f"Target:   {target.name}",
        f"Value:    {program.value_text(300)}",  # bounded: a deep model prints its top levels
        f"Inputs:   {described}",
        f"Gradient: of sum(value) with respect to {wrt}",
        "",
        "forward(**inputs) -> value",
        "value_and_grad(**inputs) -> (value, {name: gradient}), each gradient shaped like its input.",
        "At non-differentiable points (Max/Min ties, Abs and sign at 0, Heaviside, Piecewise boundaries)",
        f"the derivative is taken as 0.  Needs only {target.module} at run time.",
        "",
    ]
    return '"""' + docstring(*lines) + '"""'
