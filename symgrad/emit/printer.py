"""The array printer: one assignment per op of a function body, in NumPy's spelling.

:class:`Body` prints the nodes that compute a function's roots from its inputs: each op by the op
table's template (``ops.OPS[op].code``, ``{m}`` the array module's alias) unless the target
overrides it (``Target.overrides``) or the op needs more than a template (a broadcast its consumer
does by itself, a transpose printed inline, a slice, a select between numbers...: ``_print_<op>``
methods).  A dead value's array is lent to a later one through ``out=`` (``into``, planned by
``buffers.py``).  A target whose spelling differs subclasses :class:`Body` and overrides only that
(``emit/torch.py``; the fusing targets print through ``emit/fused.py``).  Names come from
:class:`Namer`; :func:`owned` makes every returned array the caller's own.
"""
from __future__ import annotations

import keyword
import re
import unicodedata

from ..errors import SymgradError
from ..ir import DimProduct
from ..ops import OPS, is_bool, slice_text
from ..program import render
from .buffers import plan
from .printing import VIEWS, literal
from .text import visible


# a tall array of at most this many columns is summed over its rows column by column (_colsums)
_NARROW = 8
# a work array of a static shape of at most this many entries is allocated fresh: a small array
# costs less than the call that keeps one between calls (_scratch)
_SMALL = 256


def _plain(name: str) -> bool:
    return (name.isidentifier() and not keyword.iskeyword(name)
            and unicodedata.normalize("NFKC", name) == name and not name.startswith("_"))


# the globals that the generated functions' bodies read besides the array module (the plain-float
# path's type(x), float(x), math.exp(x), ...): an input of one of these names is renamed inside the
# functions (``type_``, the functions then take ``**inputs``); tests/test_numba_target.py checks
# that the bodies read no other
BODY_GLOBALS = frozenset({"ArithmeticError", "ValueError", "TypeError", "abs", "float", "int", "bool",
                          "isinstance", "len", "max", "min", "range", "slice", "type", "math"})


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
    views = VIEWS  # ops whose value may be an argument's memory, as this printer writes them

    def __init__(self, target, alias: str, names: dict, dim_names: dict, cot_of: dict, src: dict):
        self.t, self.m = target, alias
        self.names = dict(names)  # node id -> expression text (inputs, and what we assign)
        self.dim_names = dim_names
        self.cot_of, self.src = cot_of, src
        self.lines: list[str] = []
        self.counter = 0
        self.namer = Namer()
        self.namer.used |= set(names.values()) | set(dim_names.values()) | {self.m}
        self.forward: set[int] = set()  # ids of forward nodes: never named as adjoints
        self.keep: set[int] = set()  # ids of returned values besides ``final`` ones: never overwritten
        self.described: dict = {}  # (node id, width) -> text; assemble shares one between bodies
        self.scratch_prefix = ""  # key prefix of this function's work arrays; "" for none
        self.kernel_prefix = ""  # short name of the function, for the names of its kernels
        self.user_modules: dict = {}  # module path of a symgrad.Function -> its alias
        self.scratch_count = 0
        self.definitions: dict[str, str] = {}  # module-level code this body calls (e.g. kernels)
        self.packs: dict = {}  # id of a sum of onehots/unslices -> its parts, printed as one array
        self.packed: set = set()  # ids of the sums and parts inside a pack: no line of their own

    def shape(self, shape) -> str:
        parts = [str(d) if isinstance(d, int) else _product_text(d, self.dim_names) if isinstance(d, DimProduct)
                 else self.dim_names[d] for d in shape]
        return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"

    def expr(self, n, users, final) -> str | None:
        """Text for node ``n``; None when ``n`` needs no line of its own (then self.names has it).
        An op prints by its ``_print_<op>`` method where it has one, else by its template."""
        self.t.check(n.op)
        if n.id in self.packed:
            return None
        if n.id in self.packs:
            return self.pack(n, self.packs[n.id])
        a = [self.names.get(x.id) for x in n.args]
        special = getattr(self, f"_print_{n.op}", None)
        return special(n, a) if special is not None else self.template(n, a)

    def template(self, n, a) -> str:
        """The op table's template for ``n`` (the target's own where it has one), filled in."""
        code = self.t.template(OPS[n.op])
        if code is None:
            raise SymgradError(f"op {n.op!r} has no {self.t.name} printer entry (symgrad/ops.py)")
        return code.format(*a, m=self.m, attr=n.attr)

    # -- ops that need more than a template (a, the arguments' texts; self.final: returned ids) ---
    def _print_const(self, n, a):
        return None  # named by its literal (emit)

    def _print_dim(self, n, a):
        self.names[n.id] = self.dim_names[n.attr]

    def _print_bcast(self, n, a):
        users = self.users.get(n.id, [])
        if n.id not in self.final and n.id not in self.keep and users and all(
                self.broadcasts_itself(u, n) for u in users):
            self.names[n.id] = a[0]  # the consumer broadcasts by itself
            return None
        if n.args[0].shape in (None, ()):  # a matrix of one value, in the inputs' float type
            return f"{self.m}.full({self.shape(n.shape)}, {a[0]}, {self.factory})"
        return f"{self.m}.broadcast_to({a[0]}, {self.shape(n.shape)})"  # owned() copies a returned one

    def _print_transpose(self, n, a):
        if n.id in self.final:
            return self.template(n, a)
        self.names[n.id] = f"{a[0]}.T"  # a view: printed where it is used, as in X.T @ G
        return None

    def _print_sum(self, n, a):
        shape = n.args[0].shape
        if n.attr is None:
            # an array's own method: np.sum's Python layer costs more than the sum of a small one
            return f"{a[0]}.sum()" if shape else f"{self.m}.sum({a[0]})"
        if self.t.module == "numpy" and shape is not None and not isinstance(shape[0], int):
            cols = shape[1]
            # NumPy sums a tall, narrow array along either axis with one short inner loop per row
            # (15 us for 1000 x 2): its columns added up give the same bits (NumPy adds fewer than
            # 8 in order), and a column's own sum is one long loop (pairwise: as exact or better)
            if n.attr == 1 and isinstance(cols, int) and 2 <= cols < 8:
                return " + ".join(f"{a[0]}[:, {j}:{j + 1}]" for j in range(cols))
            if n.attr == 0 and isinstance(cols, int) and 2 <= cols <= _NARROW:
                return f"_colsums({a[0]})"
        return f"{a[0]}.sum(axis={n.attr}, keepdims=True)"

    def _print_eye(self, n, a):
        return f"{self.m}.eye({self.shape((n.attr,))[1:-2]}, {self.factory})"

    def _print_call(self, n, a):  # a symgrad.Function: its module is imported under an alias
        module, attr = n.attr[1].split(":")
        return f"{self.user_modules[module]}.{attr}({', '.join(a)})"

    def _print_slice(self, n, a):  # a view: owned() copies it where it is returned
        if any(sl[1] is not None and not isinstance(d, int) for d, sl in zip(n.args[0].shape, n.attr)):
            return f"_sliced({a[0]}, {_index_text(n.attr)}, {self.shape(n.shape)})"
        return f"{a[0]}[{slice_text(n.attr)}]"

    def _print_unslice(self, n, a):
        return f"_unslice({a[0]}, {self.shape(n.attr[0])}, {_index_text(n.attr[1])}, _dt)"

    def _print_onehot(self, n, a):
        return f"_onehot({a[0]}, {self.shape(n.attr[0])}, {n.attr[1]}, {n.attr[2]}, _dt)"

    def _print_where(self, n, a):
        if not self.scalar_branches(n):
            return self.template(n, a)
        # both branches are Python scalars: NumPy would make float64; keep the inputs' type
        if _is(_python_scalar(n.args[1]), 1) and _is(_python_scalar(n.args[2]), 0):
            return f"{a[0]}.astype(_dt)"
        return f"{self.m}.where({a[0]}, {a[1]}, {a[2]}).astype(_dt, copy=False)"

    def _print_matmul(self, n, a):
        return f"_matmul({a[0]}, {a[1]})" if self.tall_product(n) else self.template(n, a)

    def _print_pow(self, n, a):
        if n.args[1].op == "const":  # an integer exponent stays an integer: x ** 2
            a = [a[0], literal(n.args[1].attr, as_int=True)]
        return self.template(n, a)

    @staticmethod
    def scalar_branches(n) -> bool:
        """A ``where`` whose branches are both Python scalars (printed with a cast to ``_dt``)."""
        return all(_python_scalar(v) is not None for v in n.args[1:])

    def may_alias(self, n) -> bool:
        """Whether ``n`` may be written into an argument's own array (``out=`` the argument):
        NumPy's functions copy an overlapping operand first."""
        return True

    def copy(self, text: str) -> str:
        """A fresh, writable copy of the array ``text``."""
        return f"{self.m}.array({text})"

    def shape_of(self, text: str) -> str:
        """The run-time shape of the array ``text`` (a tuple): an array's or a NumPy scalar's own
        ``.shape`` (promoted inputs and what is computed from them are never Python numbers;
        np.shape has a Python layer)."""
        return f"{text}.shape"

    def compiled_path(self, roots, inputs: dict, want, returns) -> list[str]:
        """Lines after the prologue that may compute and return everything in another way (the
        Numba target's compiled twin on small inputs); none here."""
        return []

    def emit(self, order, users, final: dict) -> None:
        self.users, self.final = users, final
        if self.t.module == "numpy":
            self.plan_packs(order)
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
        reuse, scratch = self.plan_buffers(order, self.pack_users(users), {n.id for n, _, _ in stmts},
                                           set(final) | self.keep)
        for n, name, text in stmts:
            if n.id in reuse:
                text = self.into(n, self.names[reuse[n.id]])
            elif n.id in scratch and self.scratch_prefix and not _small(n.shape):
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
        """A product of a data matrix (rows a dimension) that ``_matmul`` may turn around for BLAS
        or make an outer product: on NumPy's BLAS only, never one already written as a transpose
        (``G.T @ X``), nor one whose right factor's static shape rules both out (a plain matmul)."""
        if n.op != "matmul" or self.t.module != "numpy":
            return False
        a, b = n.args
        if b.shape is not None and all(isinstance(d, int) for d in b.shape) and 1 < b.shape[0] <= b.shape[1]:
            return False  # one _matmul never turns around (a square Q, a wide W) nor makes an outer product
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
            if n.op in self.views and (n.op != "bcast" or n.args[0].shape not in (None, ()) or n.id not in emitted):
                view_of[n.id] = n.args[0].id
            if n.id not in emitted or is_bool(n) or n.op == "input":
                continue
            if n.shape is None:
                klass[n.id] = ("dynamic", dyn.of[n.id])
            elif len(n.shape) == 2:
                klass[n.id] = ("static", n.shape)
        writes = {n.id for n in order if n.id in emitted and OPS[n.op].ufunc and n.id not in self.packs
                  and not (n.op == "where" and self.scalar_branches(n))}
        return plan(order, users, view_of, klass, writes, roots, {n.id for n in order if not self.may_alias(n)})

    def plan_packs(self, order) -> None:
        """Find the sums of one-entry and slice gradients (``onehot``, ``unslice``: zeros but for
        one part) of a matrix of a static shape -- a Q_k built from scalars, a gradient gathered
        entry by entry -- each printed as one array (``pack``) instead of a zeros per part and an
        add per sum; the sums and parts inside print nothing."""
        parts: dict = {}  # id of a part, or of a sum of parts only -> the parts, in order
        for n in order:
            if n.op in ("onehot", "unslice") and _small(n.shape, None) and (n.op == "unslice" or n.args[0].shape == ()):
                parts[n.id] = [n]
            elif n.op == "add" and n.args[0].id != n.args[1].id and all(
                    a.id in parts and a.shape == n.shape and self.users.get(a.id) == [n]
                    and a.id not in self.final and a.id not in self.keep for a in n.args):
                parts[n.id] = parts[n.args[0].id] + parts[n.args[1].id]
        self.packed = {a.id for n in order if n.op == "add" and n.id in parts for a in n.args}
        self.by_id = {n.id: n for n in order}
        self.packs = {i: p for i, p in parts.items() if i not in self.packed and len(p) > 1}

    def pack_users(self, users) -> dict:
        """``users`` with each pack (see ``plan_packs``) a user of what its parts read: the pack
        reads them where it is printed, so their arrays live until then."""
        users = dict(users)
        for root, parts in self.packs.items():
            for p in parts:
                users[p.args[0].id] = users.get(p.args[0].id, []) + [self.by_id[root]]
        return users

    def pack(self, n, parts) -> str:
        """One array of the parts of a pack (see ``plan_packs``): np.array of its entries where
        one-entry parts fill half of it or more (an entry of two parts is their sum, in order),
        np.concatenate of blocks of whole rows or columns that tile it, else zeros with each part
        added in (``_scatter``)."""
        rows, cols = n.shape
        if all(p.op == "onehot" for p in parts):
            entries: dict = {}
            for p in parts:
                entries.setdefault(p.attr[1:], []).append(self.names[p.args[0].id])
            if 2 * len(entries) >= rows * cols:
                lines = ["[" + ", ".join(" + ".join(entries.get((i, j), ["0.0"])) for j in range(cols)) + "]"
                         for i in range(rows)]
                sep = ", " if sum(map(len, lines)) <= 80 else ",\n" + 8 * " "  # a long one: a row a line
                return f"{self.m}.array([{sep.join(lines)}], dtype=_dt)"
        tiles = _tiling(parts, n.shape)
        if tiles is not None:
            axis, blocks = tiles
            return (f"{self.m}.concatenate(({', '.join(self.names[p.args[0].id] for p in blocks)})"
                    + (", axis=1)" if axis else ")"))
        where = [f"({p.attr[1]}, {p.attr[2]})" if p.op == "onehot" else _index_text(p.attr[1]) for p in parts]
        return f"_scatter({self.shape(n.shape)}, _dt, " + ", ".join(
            f"({w}, {self.names[p.args[0].id]})" for w, p in zip(where, parts)) + ")"

    def scratch_key(self) -> str:
        """The key of a new work array that the module keeps between calls (see ``_scratch``)."""
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
        """``n`` computed into the existing array ``out`` (the ufunc form of its op, or its
        ``_into_<op>`` method's)."""
        a = [self.names[x.id] for x in n.args]
        if n.shape is None and guard:  # values of scalar Symbols may be Python numbers, never an out=
            out = f"_buf({out})"
        special = getattr(self, f"_into_{n.op}", None)
        return special(n, a, out) if special is not None else self.out_call(n, a, out)

    def out_call(self, n, a, out: str) -> str:
        """The op's function that takes ``out=`` (``OPS[op].ufunc``: the array module's, or a
        helper's, ``_sigmoid``) called on ``a`` into ``out``."""
        fn = OPS[n.op].ufunc
        return f"{fn if fn.startswith('_') else self.m + '.' + fn}({', '.join(a)}, out={out})"

    def _into_matmul(self, n, a, out):
        return f"_matmul({a[0]}, {a[1]}, out={out})" if self.tall_product(n) else self.out_call(n, a, out)

    def _into_pow(self, n, a, out):
        if n.args[1].op == "const":
            if n.args[1].attr == 2:
                return f"{self.m}.square({a[0]}, out={out})"
            a = [a[0], literal(n.args[1].attr, as_int=True)]
        return self.out_call(n, a, out)

    def _into_softplus(self, n, a, out):
        return self.out_call(n, ["0.0"] + a, out)  # logaddexp(0, x)


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


def _tiling(parts, shape):
    """``(axis, parts in order)`` where the parts are all slice gradients (``unslice``) of blocks
    of whole rows (axis 0) or whole columns (axis 1) that tile ``shape`` once each; else None."""
    if not all(p.op == "unslice" for p in parts):
        return None
    for axis in (0, 1):
        if not all(p.attr[1][1 - axis] == (0, None, 1) and p.attr[1][axis][2] == 1 for p in parts):
            continue
        blocks, end = sorted(parts, key=lambda p: p.attr[1][axis][0]), 0
        for p in blocks:
            start, stop, _ = p.attr[1][axis]
            if start != end:
                return None
            end = shape[axis] if stop is None else stop
        return (axis, blocks) if end == shape[axis] else None
    return None


def _small(shape, limit=_SMALL) -> bool:
    """A static shape (of at most ``limit`` entries where one is given)."""
    if shape is None or not all(isinstance(d, int) for d in shape):
        return False
    size = 1
    for d in shape:
        size *= d
    return limit is None or size <= limit


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


def _product_text(d, dim_names) -> str:
    """A product dimension as a Python expression of the dimension locals: ``2 * N``."""
    return " * ".join(([str(d[0])] if d[0] != 1 else []) + [dim_names[n] for n in d[1:]])


def owned(b: Body, roots, input_ids, m, want=None) -> list[str]:
    """Text for each returned node such that the caller owns every array: never an input or a
    view of one, never the same memory as another returned array, never read-only.  A returned
    node that cannot be proven fresh is copied (``np.array``, which is fresh and writable)."""
    seen, texts = set(), []
    for k, n in enumerate(roots):
        base = n
        while (base.op in b.views and base.id not in input_ids
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
