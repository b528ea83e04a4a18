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

Names: inputs keep their symbol's name wherever Python allows (keywords, the globals the bodies
read -- ``BODY_GLOBALS`` -- and other unusable names are mangled, and the functions then take
``**inputs``); forward temporaries are ``t<k>``, the
adjoint of ``t<k>`` is ``b_t<k>``, the gradient of input ``W`` is ``grad_W``; any of these that
would clash with an input is suffixed with ``_``.  Same model, same bytes.
"""
from __future__ import annotations

import inspect
import keyword
import types
from dataclasses import dataclass, field
import re
import unicodedata

from .. import __version__
from ..ir import DimProduct, topo_order
from ..ops import OPS, is_bool, slice_text
from .buffers import plan
from .floats import float_path
from .printing import VIEWS, literal
from .sparsity import runtime_helpers
from ..program import render
from ..runtime import numpy_helpers as _rt
from ..errors import SymgradError
from ..kinds import KINDS, Names
from .text import docstring, visible

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
                    "_matmul_work": _HELPER_MATMUL_WORK, "_seed": _HELPER_SEED,
                    "_seeds": _HELPER_SEEDS,
                    **{re.search(r"^def (\w+)\(", h, re.M).group(1): h for k in KINDS.values() for h in k.helpers},
                    **{re.search(r"^def (\w+)\(", h, re.M).group(1): h for h in runtime_helpers()}}

_HELPER_ARGS = _source(_rt._args)


def _plain(name: str) -> bool:
    return (name.isidentifier() and not keyword.iskeyword(name)
            and unicodedata.normalize("NFKC", name) == name and not name.startswith("_"))


# the globals that the generated functions' bodies read besides the array module (the plain-float
# path's type(x), float(x), math.exp(x), ...): an input of one of these names is renamed inside the
# functions (``type_``, the functions then take ``**inputs``); tests/test_numba_target.py checks
# that the bodies read no other
BODY_GLOBALS = frozenset({"ArithmeticError", "ValueError", "TypeError", "abs", "float", "int", "bool",
                          "isinstance", "len", "max", "min", "slice", "type", "math"})


class Namer:
    """One namespace of Python identifiers for a generated function body."""

    def __init__(self, reserved=()):
        self.used: set[str] = set(reserved)

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


class Body:
    """Prints the assignments that compute ``roots`` from the inputs (NumPy's spelling; a
    target's printer subclass overrides what it spells differently)."""

    fast_path = True  # forward and value_and_grad try plain Python floats first (floats.py)
    promoted = "_dt"  # what _promote gives before the inputs: their float type (and more)
    factory = "dtype=_dt"  # the keywords of an array made from nothing (np.full, np.eye)

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
        self.scratch_prefix = ""  # key prefix of this function's work arrays; "" for none
        self.kernel_prefix = ""  # short name of the function, for the names of its kernels
        self.user_modules: dict = {}  # module path of a symgrad.Function -> its alias
        self.scratch_count = 0
        self.definitions: dict[str, str] = {}  # module-level code this body calls (e.g. kernels)

    def shape(self, shape) -> str:
        parts = [str(d) if isinstance(d, int) else _product_text(d, self.dim_names) if isinstance(d, DimProduct)
                 else self.dim_names[d] for d in shape]
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
                return f"{m}.full({self.shape(n.shape)}, {a[0]}, {self.factory})"
            return f"{m}.broadcast_to({a[0]}, {self.shape(n.shape)})"  # owned() copies a returned one
        if n.op == "transpose" and n.id not in final:
            self.names[n.id] = f"{a[0]}.T"  # a view: printed where it is used, as in X.T @ G
            return None
        if n.op == "sum":
            return f"{m}.sum({a[0]})" if n.attr is None else f"{a[0]}.sum(axis={n.attr}, keepdims=True)"
        if n.op == "eye":
            return f"{m}.eye({self.shape((n.attr,))[1:-2]}, {self.factory})"
        if n.op == "call":  # a symgrad.Function: its module is imported under an alias
            module, attr = n.attr[1].split(":")
            return f"{self.user_modules[module]}.{attr}({', '.join(a)})"
        if n.op == "slice":  # a view: owned() copies it where it is returned
            if any(sl[1] is not None and not isinstance(d, int) for d, sl in zip(n.args[0].shape, n.attr)):
                return f"_sliced({a[0]}, {_index_text(n.attr)}, {self.shape(n.shape)})"
            return f"{a[0]}[{slice_text(n.attr)}]"
        if n.op == "unslice":
            return f"_unslice({a[0]}, {self.shape(n.attr[0])}, {_index_text(n.attr[1])}, _dt)"
        if n.op == "onehot":
            return f"_onehot({a[0]}, {self.shape(n.attr[0])}, {n.attr[1]}, {n.attr[2]}, _dt)"
        if n.op == "where" and self.scalar_branches(n):
            # both branches are Python scalars: NumPy would make float64; keep the inputs' type
            if _is(_python_scalar(n.args[1]), 1) and _is(_python_scalar(n.args[2]), 0):
                return f"{a[0]}.astype(_dt)"
            return f"{m}.where({a[0]}, {a[1]}, {a[2]}).astype(_dt, copy=False)"
        if self.tall_product(n):
            return f"_matmul({a[0]}, {a[1]})"
        if n.op == "pow" and n.args[1].op == "const":
            a[1] = literal(n.args[1].attr, as_int=True)
        code = self.t.template(OPS[n.op])
        if code is None:
            raise SymgradError(f"op {n.op!r} has no {self.t.name} printer entry (symgrad/ops.py)")
        self.ops_used.add(n.op)
        return code.format(*a, m=m, attr=n.attr)

    @staticmethod
    def scalar_branches(n) -> bool:
        """A ``where`` whose branches are both Python scalars (printed with a cast to ``_dt``)."""
        return all(_python_scalar(v) is not None for v in n.args[1:])

    def copy(self, text: str) -> str:
        """A fresh, writable copy of the array ``text``."""
        return f"{self.m}.array({text})"

    def shape_of(self, text: str) -> str:
        """The run-time shape of the array ``text`` (a tuple)."""
        return f"{self.m}.shape({text})"

    def emit(self, order, users, final: dict) -> None:
        self.users, self.final = users, final
        stmts = []
        for n in order:
            if n.id in self.names:
                continue
            if n.op == "const":
                self.names[n.id] = literal(n.attr)
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
                text = self.work_product(n) if self.tall_product(n) else self.into(n, self.scratch(n), guard=False)
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

    def tall_product(self, n) -> bool:
        """A product of a data matrix (rows a dimension) that ``_matmul`` may turn around for BLAS:
        on NumPy's BLAS only, and never one already written as a transpose (``G.T @ X``)."""
        if n.op != "matmul" or self.t.module != "numpy":
            return False
        a = n.args[0]
        return a.op != "transpose" and a.shape is not None and not isinstance(a.shape[0], int)

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
        view_of, klass, dyn = {}, {}, _ShapeClasses()
        for n in order:
            dyn.add(n)
            # a broadcast is its source's memory unless printed as a fresh np.full; one that its
            # consumers do by themselves (no line of its own) is its source by name
            if n.op in ("transpose", "sum_to", "slice") or (n.op == "bcast" and (
                    n.args[0].shape not in (None, ()) or n.id not in emitted)):
                view_of[n.id] = n.args[0].id
            if n.id not in emitted or is_bool(n) or n.op == "input":
                continue
            if n.shape is None:
                klass[n.id] = ("dynamic", dyn.of[n.id])
            elif len(n.shape) == 2:
                klass[n.id] = ("static", n.shape)
        writes = {n.id for n in order if n.id in emitted and OPS[n.op].ufunc
                  and not (n.op == "where" and self.scalar_branches(n))}
        return plan(order, users, view_of, klass, writes, roots)

    def scratch_key(self) -> str:
        """The key of a new work array that the module keeps between calls (see ``_scratch``)."""
        self.ops_used.add("_scratch")
        key = f"{self.scratch_prefix}{self.scratch_count}"
        self.scratch_count += 1
        return key

    def work_product(self, n) -> str:
        """A product that ``_matmul`` may turn around, into a work array that it allocates only
        when it does not (a turned product is a fresh array)."""
        a, b = (self.names[x.id] for x in n.args)
        return f"_matmul_work({a}, {b}, {self.scratch_key()!r})"

    def scratch(self, n) -> str:
        """A work array for ``n`` that the module keeps between calls (see ``_scratch``)."""
        key = self.scratch_key()
        if n.shape is not None:
            shape = self.shape(n.shape)
        else:  # the broadcast of its operands' run-time shapes: one line's worth, whatever the depth
            shapes = list(dict.fromkeys(self.shape_of(self.names[a.id]) for a in n.args if a.shape is None))
            shape = shapes[0] if len(shapes) == 1 else f"{self.m}.broadcast_shapes({', '.join(shapes)})"
        return f"_scratch({key!r}, {shape}, {self.promoted})"  # the inputs' float type (and device)

    def into(self, n, out: str, guard: bool = True) -> str:
        """``n`` computed into the existing array ``out`` (the ufunc form of its op)."""
        m, a = self.m, [self.names[x.id] for x in n.args]
        if n.shape is None and guard:  # values of scalar Symbols may be Python numbers, never an out=
            out = f"_buf({out})"
            self.ops_used.add("_buf")
        if self.tall_product(n):
            return f"_matmul({a[0]}, {a[1]}, out={out})"
        if n.op == "pow" and n.args[1].op == "const":
            if n.args[1].attr == 2:
                return f"{m}.square({a[0]}, out={out})"
            a[1] = literal(n.args[1].attr, as_int=True)
        if n.op == "sigmoid":  # expr() has already asked for the helper
            return f"_sigmoid({a[0]}, out={out})"
        if n.op == "where":
            self.ops_used.add("where")
            return f"_where({', '.join(a)}, out={out})"
        if n.op == "softplus":
            a = ["0.0"] + a
        return f"{m}.{OPS[n.op].ufunc}({', '.join(a)}, out={out})"


class _ShapeClasses:
    """Classes of dynamic-shape values that surely have one run-time shape, for buffer reuse.

    A value of scalar Symbols has the broadcast shape of the scalar inputs it is built from; while
    that set is small (SMALL) the class is the set itself, so that ``x*y`` and ``x + sin(y)`` share
    arrays.  Beyond, a class is named by the classes of its operands (interned, so the work per
    value is constant and a 1024-deep network of scalar Symbols plans in linear time); two
    classes may then have one shape without knowing it, which only costs a reuse."""

    SMALL = 32

    def __init__(self):
        self.of: dict = {}          # node id -> class key (dynamic-shape values only)
        self.leaves: dict = {}      # class key -> its set of inputs, where known
        self.mixed: dict = {}       # frozenset of operand classes -> interned class key

    def add(self, n) -> None:
        if n.shape is not None:
            return
        if n.op == "input":
            key = ("leaves", frozenset([n.id]))
            self.leaves[key] = key[1]
        elif n.op in ("sum_to", "zeros_like"):  # the shape of its reference argument
            key = self.of[n.args[1 if n.op == "sum_to" else 0].id]
        else:
            parts = frozenset(self.of[a.id] for a in n.args if a.id in self.of)
            if len(parts) == 1:
                (key,) = parts
            elif all(p in self.leaves for p in parts) and \
                    len(union := frozenset().union(*(self.leaves[p] for p in parts))) <= self.SMALL:
                key = ("leaves", union)
                self.leaves[key] = union
            else:
                key = self.mixed.setdefault(parts, ("mixed", len(self.mixed)))
        self.of[n.id] = key


def _index_text(attr) -> str:
    """A slice's attribute as a tuple of ``slice`` objects (both array modules index with it)."""
    return "(" + ", ".join(f"slice({a}, {b}, {c})" for a, b, c in attr) + ")"


def _python_scalar(n):
    """The const/dim node that ``n`` prints as (a broadcast one is printed bare), else None."""
    if n.op == "bcast":
        n = n.args[0]
    return n if n.op in ("const", "dim") else None


def _is(n, value) -> bool:
    return n.op == "const" and n.attr == value


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
    G, out, grads, name = program.graph, program.out, program.grads, program.name
    inputs = [i.name for i in program.inputs]
    wrt_names = program.wrt
    namer = Namer(BODY_GLOBALS)
    local = {n: namer.fresh(n) for n in inputs}
    dim_local = {d: namer.fresh(d) for d in program.dims}
    m = target.alias  # the array module's name; an input may take it (then the module is np_)
    while m in local.values() or m in dim_local.values():
        m += "_"
    plain_sig = all(local[n] == n for n in inputs)
    matrices = program.matrices
    wrt_local = [local[w] for w in wrt_names]

    input_ids = {program.input_nodes[n].id: local[n] for n in inputs}
    forward_ids = {n.id for n in topo_order([out])}
    described: dict = {}
    wrt_text = ", ".join(wrt_names) or "nothing"
    layout = target.layout
    names = Names(namer, wrt_local, wrt_text, local, dim_local,
                  lambda shape: Body.shape(types.SimpleNamespace(dim_names=dim_local), shape), m)
    functions = layout.functions(program, namer, wrt_local, wrt_text) if layout else _functions(program, names)
    user_modules = _user_modules([r for fn in functions for r in fn.roots])

    def body(fn: ModuleFunction) -> Body:
        order = topo_order(fn.roots)
        cot_of = {}
        for fwd_id, c in (fn.cot_of or {}).items():
            cot_of.setdefault(c.id, fwd_id)
        b = (target.body or Body)(target, m, {**input_ids, **fn.seeds}, dim_local, cot_of, G.src)
        b.forward, b.keep, b.described = forward_ids, {out.id}, described
        b.scratch_prefix = fn.name if layout is None or layout.scratch else ""
        b.kernel_prefix = fn.kernel
        b.user_modules = user_modules
        if fn.seed_param:
            b.namer.used.add(fn.seed_param)
        b.emit(order, _users(order), fn.final)
        return b

    def prologue(fn: ModuleFunction, b: Body) -> list[str]:
        lines = []
        if not plain_sig:
            lines.append(", ".join(local[n] for n in inputs) + ("," if len(inputs) == 1 else "") + " = _args(inputs)")
        if inputs:
            names = ", ".join(local[n] for n in inputs)
            lines.append(f"{b.promoted}, {names} = _promote({names})")
        scalars = [i.name for i in program.inputs if i.name in program.numbers]
        if scalars:
            lines.append("_scalars(" + ", ".join(f"{n}={local[n]}" for n in scalars) + ")")
        if matrices:
            call = "_dims({" + ", ".join(f"{s.name!r}: {local[s.name]}" for s in matrices) + "})"
            if dim_local:
                lines.append(", ".join(dim_local.values()) + ("," if len(dim_local) == 1 else "") + " = " + call)
            else:
                lines.append(call)
        if fn.unpack:
            lines.append(", ".join(fn.seeds.values()) + ("," if len(fn.seeds) == 1 else "") + f" = {fn.seed_param}")
        elif fn.like_value:
            (seed,) = fn.seeds.values()
            lines.append(f"{seed} = _seed({fn.seed_param}, _dt, 'cotangent', {_shape_text(b, program, out)})")
        elif fn.seeds:
            shapes = ", ".join(f"{w!r}: {b.shape_of(local[w])}" for w in wrt_names)
            lhs = ", ".join(fn.seeds.values()) + ("," if len(fn.seeds) == 1 else "")
            lines.append(f"{lhs} = _seeds({fn.seed_param}, _dt, {fn.seed_param!r}, {{{shapes}}})")
        return lines

    sig = ("*, " + ", ".join(inputs)) if plain_sig and inputs else ("**inputs" if inputs else "")
    call_dict = "{" + ", ".join(f"{n!r}: {n}" for n in inputs) + "}" if plain_sig else "inputs"
    texts, definitions, bodies = [], {}, []
    for fn in functions:
        if not fn.roots:  # a driver over other functions (jacobian, hessian)
            texts += ["", f"def {fn.name}({sig}):", f'    """{docstring(fn.doc)}"""',
                      f"    return _{fn.name}({call_dict})", ""]
            bodies.append(f"_{fn.name}(")
            continue
        b = body(fn)
        returned = owned(b, fn.roots, {**input_ids, **fn.seeds}, m, [fn.final[r.id] for r in fn.roots[1:]])
        params = sig if fn.seed_param is None else (f"{fn.seed_param}, /" + (", " + sig if sig else ""))
        def returns(texts):
            parts, k = [texts[0]], 1
            for size, keys in fn.groups:
                if keys is None:
                    parts.append(texts[k])
                else:
                    parts.append("{" + ", ".join(f"{w!r}: {v}" for w, v in zip(keys, texts[k:k + size])) + "}")
                k += size
            return ", ".join(parts)
        fast = (float_path(topo_order(fn.roots), fn.roots, input_ids, returns, m)
                if fn.name in ("forward", "value_and_grad") and b.fast_path else None)
        lines = prologue(fn, b)
        lines = lines[:1] + (fast or []) + lines[1:] if not plain_sig else (fast or []) + lines
        lines += b.lines
        texts += ["", f"def {fn.name}({params}):", f'    """{docstring(fn.doc)}"""']
        texts += ["    " + ln for ln in lines]
        texts += [f"    return {returns(returned)}", ""]
        definitions.update(b.definitions)
        bodies += lines
    for d in program.derivatives:  # module-level code of the model's own that a kind's driver calls
        if KINDS[d].definitions is not None:
            definitions.update(KINDS[d].definitions(program, names))
    own = target.helpers  # the target's own forms of helpers, by name
    helpers = _helpers_called("\n".join(bodies + list(definitions.values())), definitions,
                              (layout.helpers if layout else ()), own)
    code = "\n".join(bodies + list(helpers.values()))
    imports = ((["import math"] if re.search(r"(?<![\w.])math\.", code) else [])
               + (["import threading"] if "_scratch" in helpers else [])
               + (["import warnings"] if re.search(r"(?<![\w.])warnings\.", code) else [])
               + [f"import {target.module}" + (f" as {m}" if m != target.module else "")]
               + list(target.imports)
               + [f"import {mod} as {alias}" for alias, mod in _SPECIAL_MODULES.items() if f"{alias}." in code]
               + [f"import {mod} as {alias}" for mod, alias in user_modules.items()])
    needs = ([target.module, *target.needs]
             + [mod for alias, mod in _SPECIAL_MODULES.items() if f"{alias}." in code] + list(user_modules))
    text = [_header(program, target, needs, layout.header_lines(program) if layout else ()), *dict.fromkeys(imports), ""]
    text += [f"MODEL = {name!r}", f"TARGET = {target.name!r}", f"INPUTS = {tuple(inputs)!r}",
             f"WRT = {tuple(wrt_names)!r}", f"DIMS = {tuple(dim_local)!r}",
             "SHAPES = {" + ", ".join(f"{s.name!r}: {s.shape!r}" for s in matrices) + "}",
             f"DERIVATIVES = {tuple(program.derivatives)!r}"] + (layout.constants(program) if layout else [])
    if "_NUMBERS)" in code:
        text.append("_NUMBERS = (float, int, bool)  # Python numbers: forward and value_and_grad try plain floats first")
    if target.preamble:
        text.append(target.preamble)
    text += [line for k in KINDS.values() if f"_{k.name}" in helpers for line in k.constants]
    text.append("")
    if inputs:
        text.append(own.get("_promote", _HELPER_PROMOTE).replace("{m}", m))
    if matrices:
        text.append(own.get("_dims", _HELPER_DIMS).replace("{m}", m))
    if "_scalars(" in code:
        text.append(own.get("_scalars", _HELPER_NUMBERS).replace("{m}", m))
    text += [helper.replace("{m}", m) for helper in helpers.values()]
    if "_scratch" not in helpers:  # every module has it, so callers need not ask
        text.append(_NO_SCRATCH)
    if not plain_sig:
        text.append(_HELPER_ARGS)
    for definition in definitions.values():
        text += ["", definition]
    text += texts
    return "\n".join(text)


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


def _product_text(d, dim_names) -> str:
    """A product dimension as a Python expression of the dimension locals: ``2 * N``."""
    return " * ".join(([str(d[0])] if d[0] != 1 else []) + [dim_names[n] for n in d[1:]])


def _shape_text(b: Body, program, node) -> str:
    """The run-time shape of ``node`` as text: static from the dimensions, or the shapes of the
    scalar inputs it is built from (``_seed`` broadcasts them)."""
    if node.shape is not None:
        return b.shape(node.shape)
    leaves = {n.id for n in topo_order([node]) if n.op == "input" and n.shape is None}
    return ", ".join(b.shape_of(b.names[program.input_nodes[i.name].id]) for i in program.inputs
                     if program.input_nodes[i.name].id in leaves)


def owned(b: Body, roots, input_ids, m, want=None) -> list[str]:
    """Text for each returned node such that the caller owns every array: never an input or a
    view of one, never the same memory as another returned array, never read-only.  A returned
    node that cannot be proven fresh is copied (``np.array``, which is fresh and writable)."""
    seen, texts = set(), []
    for k, n in enumerate(roots):
        base = n
        while (base.op in VIEWS and base.id not in input_ids
               and not (base.op == "bcast" and base.args[0].shape in ((), None))):  # np.full: fresh
            base = base.args[0]
        text = b.names[n.id]
        scalar = base.op in ("const", "dim", "item")  # Python and NumPy scalars are immutable
        if not scalar and (base.id in input_ids or base.id in seen or text in texts or _read_only(n)):
            copy = b.namer.fresh(want[k - 1] if want and k else "value")
            b.lines.append(f"{copy} = {b.copy(text)}  # a copy: the caller owns what is returned")
            text = copy
        seen.add(base.id)
        texts.append(text)
    return texts


def _read_only(n) -> bool:
    """A broadcast view of an array (printed as ``broadcast_to``) cannot be written."""
    while n.op == "transpose":
        n = n.args[0]
    return n.op == "bcast" and n.args[0].shape not in (None, ())


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
