"""Assemble the generated module (its layout): header, imports, constants, helpers, functions.

The bodies are printed by :mod:`symgrad.emit.printer` (a target's subclass of ``Body``), their
buffers planned by :mod:`symgrad.emit.buffers`; the run-time helpers are the functions of
:mod:`symgrad.runtime.numpy_helpers` (the ops' own come from the op table, a target's own from
``Target.helpers``).

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

Names: inputs keep their symbol's name wherever Python allows (keywords, the globals the bodies
read -- ``BODY_GLOBALS`` -- and other unusable names are mangled, and the functions then take
``**inputs``); forward temporaries are ``t<k>``, the
adjoint of ``t<k>`` is ``b_t<k>``, the gradient of input ``W`` is ``grad_W``; any of these that
would clash with an input is suffixed with ``_``.  Same model, same bytes.
"""
from __future__ import annotations

import inspect
import re
import types
from dataclasses import dataclass, field

from .._version import __version__
from ..ir import topo_order
from ..ops import OPS
from .floats import float_path
from .printer import BODY_GLOBALS, Body, Namer, owned  # noqa: F401 - BODY_GLOBALS: named here for callers
from .sparsity import runtime_helpers
from ..runtime import numpy_helpers as _rt
from ..kinds import KINDS, Names
from .text import docstring

_NP = re.compile(r"(?<![\w.])np\.")


def _source(fn) -> str:
    """A helper of :mod:`symgrad.runtime.numpy_helpers` as copied into a module: its text, with
    ``{m}`` for the array module's alias."""
    return "\n" + _NP.sub("{m}.", inspect.getsource(fn))


# the run-time helpers (real functions: symgrad/runtime/numpy_helpers.py), as module text
_HELPER_DIMS = _source(_rt._dims)
_HELPER_NUMBERS = _source(_rt._scalars)
_HELPER_BUF = _source(_rt._buf)
_HELPER_PROMOTE = "_F64, _F32 = {m}.dtype({m}.float64), {m}.dtype({m}.float32)\n" + _source(_rt._promote)
_HELPER_SCRATCH = "\n_SCRATCH = threading.local()\n\n" + _source(_rt._scratch) + "\n" + _source(_rt.release_scratch)
_HELPER_TURNS = _source(_rt._turns)
_HELPER_MATMUL = _source(_rt._matmul)
_HELPER_MATMUL_WORK = _source(_rt._matmul_work)
_HELPER_COLSUMS = _source(_rt._colsums)
_HELPER_SCATTER = _source(_rt._scatter)
_HELPER_SEED = _source(_rt._seed)
_HELPER_SEEDS = _source(_rt._seeds)

# special functions' modules, imported by a module whose code calls them (see ops._special)
_SPECIAL_MODULES = {"_scipy_special": "scipy.special", "_cupyx_special": "cupyx.scipy.special",
                    "_sparse": "scipy.sparse"}

_NO_SCRATCH = '''
def release_scratch():
    """Free the work arrays this module keeps for the calling thread (it keeps none)."""
'''

# helpers of the emitter's own, emitted when a body calls them (ops bring theirs: OPS[...].helper)
_EMITTER_HELPERS = {"_buf": _HELPER_BUF, "_scratch": _HELPER_SCRATCH, "_turns": _HELPER_TURNS, "_matmul": _HELPER_MATMUL,
                    "_matmul_work": _HELPER_MATMUL_WORK, "_colsums": _HELPER_COLSUMS,
                    "_scatter": _HELPER_SCATTER, "_seed": _HELPER_SEED,
                    "_seeds": _HELPER_SEEDS,
                    **{re.search(r"^def (\w+)\(", h, re.M).group(1): h for k in KINDS.values() for h in k.helpers},
                    **{re.search(r"^def (\w+)\(", h, re.M).group(1): h for h in runtime_helpers()}}

_HELPER_ARGS = _source(_rt._args)


_CALLED = re.compile(r"(?<![\w.])(\w+)\(")  # the names of the functions a text calls (not methods)


def _helpers_called(code: str, defined, more_helpers=(), own=None) -> dict:
    """{function name: helper source} of the helpers (ops' own, the emitter's, then the layout's
    ``more_helpers``; the target's ``own`` replace those of their names) that ``code`` calls and
    that no target definition already provides, in table order."""
    table = {re.search(r"^def (\w+)\(", h, re.M).group(1): h
             for h in [op.helper for op in OPS.values() if op.helper] + list(_EMITTER_HELPERS.values())
             + list(more_helpers)}
    table.update(own or {})
    called = set(_CALLED.findall(code))  # one pass over the code (a search per helper was O(helpers x code))
    found, more = set(), True
    while more:  # helpers may call helpers
        more = False
        for fn, helper in table.items():
            if fn not in defined and fn not in found and fn in called:
                found.add(fn)
                called.update(_CALLED.findall(helper))
                more = True
    return {fn: helper for fn, helper in table.items() if fn in found}


def _users(order) -> dict:
    users: dict = {}
    for n in order:
        for a in n.args:
            users.setdefault(a.id, []).append(n)
    return users


@dataclass
class ModuleFunction:
    """One generated function: what it computes and how it is called and returns."""
    name: str
    kernel: str                  # short prefix of its kernels and work arrays
    roots: list                  # value first
    final: dict                  # returned node id -> wanted variable name
    doc: str
    seed_param: str | None = None    # the positional parameter (cotangent, tangents, vectors)
    seeds: dict = field(default_factory=dict)   # seed input node id -> local name
    cot_of: dict | None = None   # adjoint node id -> forward node id (names b_t3)
    groups: tuple = ()           # how the returned roots after the value are grouped (sizes)
    unpack: bool = False         # seed_param is a tuple of the seeds' values, in seeds order
    like_value: bool = False     # seed_param is one array shaped like the value (a cotangent)


def assemble(program, target) -> str:
    """The source of the module of a differentiated :class:`~symgrad.program.Program`."""
    target.check_derivatives(program.derivatives)
    return _Assembly(program, target).text()


class _Assembly:
    """One module being assembled: its names, then its parts, each by a small method (header,
    imports, constants, helpers, and per function its signature, prologue, body and returns)."""

    def __init__(self, program, target):
        self.program, self.target, self.layout = program, target, target.layout
        self.inputs = [i.name for i in program.inputs]
        self.namer = Namer(BODY_GLOBALS)
        self.local = {n: self.namer.fresh(n) for n in self.inputs}
        self.dim_local = {d: self.namer.fresh(d) for d in program.dims}
        m = target.alias  # the array module's name; an input may take it (then the module is np_)
        while m in self.local.values() or m in self.dim_local.values():
            m += "_"
        self.m = m
        self.plain_sig = all(self.local[n] == n for n in self.inputs)
        self.input_ids = {program.input_nodes[n].id: self.local[n] for n in self.inputs}
        self.forward_ids = {n.id for n in topo_order([program.out])}
        self.described: dict = {}  # shared by the bodies: each sub-expression rendered once
        wrt_local = [self.local[w] for w in program.wrt]
        wrt_text = ", ".join(program.wrt) or "nothing"
        self.names = Names(self.namer, wrt_local, wrt_text, self.local, self.dim_local,
                           lambda shape: Body.shape(types.SimpleNamespace(dim_names=self.dim_local), shape), m,
                           self.target.name)
        self.functions = (self.layout.functions(program, self.namer, wrt_local, wrt_text) if self.layout
                          else _functions(program, self.names))
        self.user_modules = _user_modules([r for fn in self.functions for r in fn.roots])

    def text(self) -> str:
        texts, definitions, bodies = [], {}, []
        for fn in self.functions:
            lines, body = self.function(fn, definitions)
            texts += lines
            bodies += body
        for d in self.program.derivatives:  # module-level code of the model's own that a kind's driver calls
            if KINDS[d].definitions is not None:
                definitions.update(KINDS[d].definitions(self.program, self.names))
        helpers = _helpers_called("\n".join(bodies + list(definitions.values())), definitions,
                                  (self.layout.helpers if self.layout else ()), self.target.helpers)
        code = "\n".join(bodies + list(helpers.values()))
        text = [self.header(code), *self.imports(code, helpers), "", *self.constants(code, helpers), ""]
        text += self.helpers(code, helpers)
        for definition in definitions.values():
            text += ["", definition]
        return "\n".join(text + texts)

    # -- the module's parts ------------------------------------------------------------------------
    def header(self, code: str) -> str:
        target = self.target
        needs = ([target.module, *target.needs] + [mod for alias, mod in _SPECIAL_MODULES.items() if f"{alias}." in code]
                 + list(self.user_modules))
        return _header(self.program, target, needs, self.layout.header_lines(self.program) if self.layout else ())

    def imports(self, code: str, helpers: dict) -> list[str]:
        target, m = self.target, self.m
        return list(dict.fromkeys(
            (["import math"] if re.search(r"(?<![\w.])math\.", code) else [])
            + (["import threading"] if "_scratch" in helpers else [])
            + (["import warnings"] if re.search(r"(?<![\w.])warnings\.", code) else [])
            + [f"import {target.module}" + (f" as {m}" if m != target.module else "")]
            + list(target.imports)
            + [f"import {mod} as {alias}" for alias, mod in _SPECIAL_MODULES.items() if f"{alias}." in code]
            + [f"import {mod} as {alias}" for mod, alias in self.user_modules.items()]))

    def constants(self, code: str, helpers: dict) -> list[str]:
        program = self.program
        lines = [f"MODEL = {program.name!r}", f"TARGET = {self.target.name!r}", f"INPUTS = {tuple(self.inputs)!r}",
                 f"WRT = {tuple(program.wrt)!r}", f"DIMS = {tuple(self.dim_local)!r}",
                 "SHAPES = {" + ", ".join(f"{s.name!r}: {s.shape!r}" for s in program.matrices) + "}",
                 f"DERIVATIVES = {tuple(program.derivatives)!r}"]
        lines += self.layout.constants(program) if self.layout else []
        if "_NUMBERS)" in code:
            lines.append("_NUMBERS = (float, int, bool)  # Python numbers: forward and value_and_grad try plain floats first")
        if self.target.preamble:
            lines.append(self.target.preamble)
        return lines + [line for k in KINDS.values() if f"_{k.name}" in helpers for line in k.constants]

    def helpers(self, code: str, helpers: dict) -> list[str]:
        """The run-time helpers' text: the prologue's, then those the code calls."""
        own, m, texts = self.target.helpers, self.m, []
        if self.inputs:
            texts.append(own.get("_promote", _HELPER_PROMOTE).replace("{m}", m))
        if self.program.matrices:
            texts.append(own.get("_dims", _HELPER_DIMS).replace("{m}", m))
        if "_scalars(" in code:
            texts.append(own.get("_scalars", _HELPER_NUMBERS).replace("{m}", m))
        texts += [helper.replace("{m}", m) for helper in helpers.values()]
        if "_scratch" not in helpers:  # every module has it, so callers need not ask
            texts.append(_NO_SCRATCH)
        if not self.plain_sig:
            texts.append(_HELPER_ARGS)
        return texts

    # -- one function ------------------------------------------------------------------------------
    def function(self, fn: ModuleFunction, definitions: dict) -> tuple[list[str], list[str]]:
        """(its text, its body lines) for ``fn``; the module-level code it calls goes into
        ``definitions``."""
        sig = self.signature()
        doc = f'    """{docstring(fn.doc)}"""'
        if not fn.roots:  # a driver over other functions (jacobian, hessian)
            call_dict = "{" + ", ".join(f"{n!r}: {n}" for n in self.inputs) + "}" if self.plain_sig else "inputs"
            return ["", f"def {fn.name}({sig}):", doc, f"    return _{fn.name}({call_dict})", ""], [f"_{fn.name}("]
        b = self.body(fn)
        returned = owned(b, fn.roots, {**self.input_ids, **fn.seeds}, self.m, [fn.final[r.id] for r in fn.roots[1:]])
        params = sig if fn.seed_param is None else (f"{fn.seed_param}, /" + (", " + sig if sig else ""))
        fast = (float_path(topo_order(fn.roots), fn.roots, self.input_ids, lambda texts: _returns(fn, texts), self.m)
                if fn.name in ("forward", "value_and_grad") and b.fast_path else None)
        lines = self.prologue(fn, b) + b.compiled_path(fn.roots, {**self.input_ids, **fn.seeds},
                                                        [fn.final[r.id] for r in fn.roots[1:]], lambda t: _returns(fn, t))
        lines = lines[:1] + (fast or []) + lines[1:] if not self.plain_sig else (fast or []) + lines
        lines += b.lines
        definitions.update(b.definitions)
        text = ["", f"def {fn.name}({params}):", doc, *("    " + ln for ln in lines),
                f"    return {_returns(fn, returned)}", ""]
        return text, lines

    def signature(self) -> str:
        """Keyword-only inputs by name, or ``**inputs`` where some name is not an identifier."""
        if not self.inputs:
            return ""
        return ("*, " + ", ".join(self.inputs)) if self.plain_sig else "**inputs"

    def body(self, fn: ModuleFunction) -> Body:
        order = topo_order(fn.roots)
        cot_of = {}
        for fwd_id, c in (fn.cot_of or {}).items():
            cot_of.setdefault(c.id, fwd_id)
        b = (self.target.body or Body)(self.target, self.m, {**self.input_ids, **fn.seeds}, self.dim_local, cot_of,
                                       self.program.graph.src)
        b.forward, b.keep, b.described = self.forward_ids, {self.program.out.id}, self.described
        b.scratch_prefix = fn.name if self.layout is None or self.layout.scratch else ""
        b.kernel_prefix = fn.kernel
        b.user_modules = self.user_modules
        if fn.seed_param:
            b.namer.used.add(fn.seed_param)
        b.emit(order, _users(order), fn.final)
        return b

    def prologue(self, fn: ModuleFunction, b: Body) -> list[str]:
        """Inputs bound and promoted, dimensions read, seeds checked: the lines before the body."""
        program, local, dim_local, inputs = self.program, self.local, self.dim_local, self.inputs
        lines = []
        if not self.plain_sig:
            lines.append(", ".join(local[n] for n in inputs) + ("," if len(inputs) == 1 else "") + " = _args(inputs)")
        if inputs:
            names = ", ".join(local[n] for n in inputs)
            lines.append(f"{b.promoted}, {names} = _promote({names})")
        scalars = [i.name for i in program.inputs if i.name in program.numbers]
        if scalars:
            lines.append("_scalars(" + ", ".join(f"{n}={local[n]}" for n in scalars) + ")")
        if program.matrices:
            call = "_dims({" + ", ".join(f"{s.name!r}: {local[s.name]}" for s in program.matrices) + "})"
            if dim_local:
                lines.append(", ".join(dim_local.values()) + ("," if len(dim_local) == 1 else "") + " = " + call)
            else:
                lines.append(call)
        if fn.unpack:
            lines.append(", ".join(fn.seeds.values()) + ("," if len(fn.seeds) == 1 else "") + f" = {fn.seed_param}")
        elif fn.like_value:
            (seed,) = fn.seeds.values()
            lines.append(f"{seed} = _seed({fn.seed_param}, _dt, 'cotangent', {_shape_text(b, program, program.out)})")
        elif fn.seeds:
            shapes = ", ".join(f"{w!r}: {b.shape_of(local[w])}" for w in program.wrt)
            lhs = ", ".join(fn.seeds.values()) + ("," if len(fn.seeds) == 1 else "")
            lines.append(f"{lhs} = _seeds({fn.seed_param}, _dt, {fn.seed_param!r}, {{{shapes}}})")
        return lines


def _returns(fn: ModuleFunction, texts) -> str:
    """The return expression of ``fn`` from its roots' texts: the value, then each group (a dict
    by name, or one array)."""
    parts, k = [texts[0]], 1
    for size, keys in fn.groups:
        if keys is None:
            parts.append(texts[k])
        else:
            parts.append("{" + ", ".join(f"{w!r}: {v}" for w, v in zip(keys, texts[k:k + size])) + "}")
        k += size
    return ", ".join(parts)


def _functions(program, names) -> list[ModuleFunction]:
    """The functions of the module, in the order they are printed: forward, then one per kind."""
    return ([ModuleFunction("forward", "fwd", [program.out], {}, f"Value of {program.name}.")]
            + [ModuleFunction(**KINDS[d].function(program, names)) for d in program.derivatives])


def _user_modules(roots) -> dict:
    """{module path: alias} of the symgrad.Functions the roots call (aliases never clash)."""
    paths = sorted({n.attr[1].split(":")[0] for n in topo_order(roots) if n.op == "call"})
    out, used = {}, set()
    for path in paths:
        alias = "_user_" + path.replace(".", "_")
        while alias in used:
            alias += "_"
        used.add(alias)
        out[path] = alias
    return out


def _shape_text(b: Body, program, node) -> str:
    """The run-time shape of ``node`` as text: static from the dimensions, or the shapes of the
    scalar inputs it is built from (``_seed`` broadcasts them)."""
    if node.shape is not None:
        return b.shape(node.shape)
    leaves = {n.id for n in topo_order([node]) if n.op == "input" and n.shape is None}
    return ", ".join(b.shape_of(b.names[program.input_nodes[i.name].id]) for i in program.inputs
                     if program.input_nodes[i.name].id in leaves)


def _header(program, target, needs, more=()) -> str:
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
        *[KINDS[d].signature for d in program.derivatives if KINDS[d].signature],
        *more,
        "At non-differentiable points (Max/Min ties, Abs and sign at 0, Heaviside, Piecewise boundaries)",
        "the derivative is taken as 0" + (", and second derivatives of piecewise-linear ops are 0"
                                          if any(KINDS[d].second_order for d in program.derivatives) else "")
        + f".  Needs only {' and '.join(needs)} at run time.",
        "",
    ]
    return '"""' + docstring(*lines) + '"""'
