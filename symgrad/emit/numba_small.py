"""The Numba target's path for small inputs: a whole function body as one compiled call.

On small arrays a generated module's time is dispatch, not arithmetic: every loop call, product
and reduction between them costs a Python call and its argument checks (about 1-8 us each), and
a model of a few hundred numbers spends nearly all its time there.  So each function of a Numba
module (``forward``, ``value_and_grad``, ``vjp``...) also has a twin, ``_vag_small``..., a single
``@numba.njit`` function over the same units of the fusion pass in the same order:

- every cluster of elementwise work is written out as a loop in the function itself (a cluster of
  numbers as plain statements, no loop at all), reading its inputs in the forms the module's own
  loops read them (``t0[_r, _i]``, a bias row ``b1[0, _i]``...; an array whose shape is read at
  run time through ``_flat``);
- products are ``@`` (BLAS, through Numba), reductions ``np.sum``, and the rest (an entry, a
  one-hot cotangent, a slice and its cotangent, a broadcast) is what NumPy's spelling becomes
  inside Numba.  No work arrays: on small inputs a fresh array costs less than the lookup.

The module's function takes the twin (``_small``) when every input is a number or a C-contiguous
array, at most ``SMALL_MAX`` elements in all, the twin's intermediate arrays (counted from the
dimensions: it allocates them afresh on every call) at most ``WORK_MAX`` elements, and, in a model
of scalar symbols whose shapes are read at run time, the arrays share one shape; otherwise, and
always on large inputs, it runs its own body (the parallel loops, work arrays and column-ordered
loops that pay there; the crossover is measured in docs/speed.md).  A twin Numba cannot type
warns once and its function runs the body from then on (``_twin``).  A function
that uses something Numba cannot compile inside a function (a special function, a user
``symgrad.Function``, linear algebra, kron, a diagonal) has no twin.
"""
from __future__ import annotations

import math

from ..ops import OPS, is_bool, slice_text
from .fusion import Cluster
from .numba import _PREAMBLE, NumbaBody, _form, numba_fusable
from .printer import owned
from .targets import TARGETS, Target

SMALL_MAX = 1 << 21  # input elements: a call with more runs the module's loops
WORK_MAX = 1 << 20  # elements of the twin's fresh intermediate arrays (see _small)

# the ops a twin prints besides fusable elementwise ones (anything else: the function has no twin)
_SMALL_OPS = frozenset({"const", "dim", "input", "matmul", "transpose", "sum", "bcast", "item", "entry",
                        "onehot", "trace", "eye", "slice", "unslice", "sum_to", "zeros_like", "logsumexp",
                        "shift", "clamp"})

_HELPER_SMALL = f'''
SMALL_MAX = {SMALL_MAX}  # input elements: a call with more runs the module's loops
WORK_MAX = {WORK_MAX}  # elements of a twin's fresh intermediate arrays: beyond, the loops' work arrays pay


def _small(work, per, dynamic, *fixed):
    """Whether a call runs as its function's compiled twin: every input a number or a
    C-contiguous array, at most SMALL_MAX elements in all; the arrays of some dimensions among
    those whose shapes are read at run time (dynamic: scalar symbols) of one shape; and the
    twin's intermediate arrays (work elements, and per more of the dynamic arrays' size), which
    it allocates afresh on every call, at most WORK_MAX elements."""
    total, shape, size = 0, None, 0
    for a in dynamic + fixed:
        if type(a) is not {{m}}.ndarray:
            continue
        if not a.flags.c_contiguous:
            return False
        total += a.size
    for a in dynamic:
        if type(a) is {{m}}.ndarray and a.ndim:
            if shape is not None and a.shape != shape:
                return False
            shape, size = a.shape, a.size
    return total <= SMALL_MAX and work + per * size <= WORK_MAX


_BROKEN = set()  # twins Numba could not compile: their functions run the module's loops


def _twin(twin, dt, *args):
    """twin(a zero of dt, *args); None where Numba cannot compile it (a construct it does not
    type: a bug of the compiler), which a warning names once -- the module's loops run then."""
    if twin in _BROKEN:
        return None
    try:
        return twin(dt.type(0), *args)
    except _nb.core.errors.NumbaError as e:
        _BROKEN.add(twin)
        first = str(e).strip().splitlines()[0]
        warnings.warn(f"{{MODEL}}: {{twin.__name__}} (the compiled call for small inputs) does not compile "
                      f"({{first}}); its function runs the module's loops", RuntimeWarning, stacklevel=3)
        return None
'''

_HELPER_FLAT = '''
def _flat(a, like):
    """The elements of a (an array or a number) broadcast to the shape of the array like, flat
    and contiguous."""
    return {m}.ascontiguousarray({m}.broadcast_to(a, like.shape)).reshape(-1)


if not _nb.config.DISABLE_JIT:
    @_nb.extending.overload(_flat)
    def _flat_typed(a, like):
        """_flat for Numba: a number (or a 0-d array) is filled in (Numba cannot broadcast it)."""
        if isinstance(a, _nb.types.Array) and a.ndim and a.ndim == like.ndim and a.layout == "C":
            def flat(a, like):  # an array of the loop's shape is read in place
                return a.reshape(-1) if a.shape == like.shape else \
                    {m}.ascontiguousarray({m}.broadcast_to(a, like.shape)).reshape(-1)
            return flat
        if isinstance(a, _nb.types.Array) and a.ndim:
            return lambda a, like: {m}.ascontiguousarray({m}.broadcast_to(a, like.shape)).reshape(-1)
        return lambda a, like: {m}.full(like.size, {m}.asarray(a).sum())
'''

_HELPER_SUM_TO = '''
def _sum_to_small(g, x, value):
    """The gradient of the input x from its cotangent g inside a compiled twin, where an array
    has the value's shape or none (0-d): for x of no shape, g broadcast like the value and summed,
    in x's type; else g itself, or g filled in."""
    if {m}.ndim(x) == 0:
        s = {m}.broadcast_to(g, {m}.shape(value)).sum()
        return {m}.full((), s, x.dtype) if isinstance(x, {m}.ndarray) else {m}.result_type(x).type(s)
    return g if {m}.ndim(g) == {m}.ndim(x) else {m}.full({m}.shape(x), g, {m}.result_type(x))


if not _nb.config.DISABLE_JIT:
    @_nb.extending.overload(_sum_to_small)
    def _sum_to_small_typed(g, x, value):
        """_sum_to_small for Numba, by the types of g, x and the value."""
        # (Numba cannot broadcast to the shape (): a value of no shape has g's one element)
        if isinstance(value, _nb.types.Array) and value.ndim:
            def total(g, value):
                return {m}.broadcast_to(g, value.shape).sum()
        else:
            def total(g, value):
                return {m}.asarray(g).sum()
        total = _nb.njit(total)
        if not isinstance(x, _nb.types.Array):
            return lambda g, x, value: type(x)(total(g, value))
        if x.ndim == 0:
            return lambda g, x, value: {m}.full((), total(g, value), x.dtype)
        if isinstance(g, _nb.types.Array) and g.ndim == x.ndim:
            return lambda g, x, value: g
        return lambda g, x, value: {m}.full(x.shape, {m}.asarray(g).sum(), x.dtype)  # g of no shape
'''

_HELPER_LSE = '''
@_jit()
def _logsumexp_small(z, axis):
    """log(sum(exp(z))) of a matrix over axis (0, 1; -1: all of it), shifted by the maximum."""
    if axis == 0:
        out = {m}.empty((1, z.shape[1]), z.dtype)
        for i in range(z.shape[1]):
            c = z[:, i].max()
            out[0, i] = c + {m}.log({m}.exp(z[:, i] - c).sum())
        return out
    if axis == 1:
        out = {m}.empty((z.shape[0], 1), z.dtype)
        for i in range(z.shape[0]):
            c = z[i, :].max()
            out[i, 0] = c + {m}.log({m}.exp(z[i, :] - c).sum())
        return out
    c = z.max()
    out = {m}.empty((1, 1), z.dtype)
    out[0, 0] = c + {m}.log({m}.exp(z - c).sum())
    return out
'''

_HELPER_WINDOWS = {"shift": """
@_jit()
def _shift_small(x, axis, c):
    \"\"\"y with y[p] = x[p + c] along axis (rows 0, columns 1), 0 where p + c is past an end.\"\"\"
    out = {m}.zeros(x.shape, x.dtype)
    n = x.shape[axis]
    for r in range(x.shape[0]):
        for i in range(x.shape[1]):
            p = (r if axis == 0 else i) + c
            if 0 <= p < n:
                out[r, i] = x[p, i] if axis == 0 else x[r, p]
    return out
""", "clamp": """
@_jit()
def _clamp_small(x, axis, lo, m):
    \"\"\"y with y[p] = x[min(max(p, lo), n - 1 - m)] along axis (rows 0, columns 1).\"\"\"
    out = {m}.empty(x.shape, x.dtype)
    n = x.shape[axis]
    for r in range(x.shape[0]):
        for i in range(x.shape[1]):
            p = r if axis == 0 else i
            p = min(max(p, lo), n - 1 - m) if n - 1 - m >= lo else p
            out[r, i] = x[p, i] if axis == 0 else x[r, p]
    return out
"""}

# a matrix summed over an axis, as a loop: Numba's np.sum(a, axis=k) is a generic reduction,
# several times slower than the loop on a tall narrow matrix (the GMM's n x 2 arrays)
_HELPER_AXIS_SUM = """
@_jit()
def _sum_axis_small(a, axis):
    \"\"\"a summed over axis 0 (a row) or 1 (a column), with the sum's axis kept.\"\"\"
    out = {m}.zeros((1, a.shape[1]) if axis == 0 else (a.shape[0], 1), a.dtype)
    for r in range(a.shape[0]):
        for i in range(a.shape[1]):
            if axis == 0:
                out[0, i] += a[r, i]
            else:
                out[r, 0] += a[r, i]
    return out
"""


class _NoTwin(Exception):
    """The function uses an op that a compiled twin cannot print."""


class SmallBody(NumbaBody):
    """Prints a function body as the body of one ``@numba.njit`` function (the twin): loops
    inline, products ``@``, no work arrays.  Raises :class:`_NoTwin` on an op it cannot print."""

    factory = "dtype=_T"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loops = 0  # loops printed so far: names their locals (_v3_0, _a3_1...)
        self.fresh: list = []  # the nodes whose arrays the twin allocates (loops' outputs, products)

    def _emit_node(self, n) -> None:
        if n.op not in _SMALL_OPS and not (OPS[n.op].elementwise and numba_fusable(n.op)):
            raise _NoTwin(n.op)
        super()._emit_node(n)

    def template(self, n, a) -> str:
        if n.op == "sum_to":
            self.define("_sum_to_small", _HELPER_SUM_TO)
            return f"_sum_to_small({a[0]}, {a[1]}, {a[2]})"
        if n.op == "logsumexp":
            self.define("_logsumexp_small", _HELPER_LSE)
            return f"_logsumexp_small({a[0]}, {-1 if n.attr is None else n.attr})" + ("[0, 0]" if n.attr is None else "")
        if n.op in _HELPER_WINDOWS:  # the shifted and clamped windows of indexed sums
            self.define(f"_{n.op}_small", _HELPER_WINDOWS[n.op])
            return f"_{n.op}_small({a[0]}, {', '.join(map(str, n.attr))})"
        if n.op == "zeros_like" and n.shape == ():
            return "_T(0)"
        return super().template(n, a)

    def define(self, name: str, text: str) -> None:
        self.definitions.setdefault(name, text.replace("{m}", self.m).strip("\n") + "\n")

    def copy(self, text: str) -> str:
        return f"{self.m}.copy({text})"

    def _contiguous(self, n, text: str) -> str:
        """``text`` as a product's operand: a slice or broadcast (a strided view) copied first,
        so that Numba's ``@`` takes BLAS's contiguous path (and warns of nothing)."""
        while n.op == "transpose":
            n = n.args[0]
        return f"{self.m}.ascontiguousarray({text})" if n.op in ("slice", "bcast") else text

    def _print_matmul(self, n, a):
        self.fresh.append(n)
        return " @ ".join(self._contiguous(x, t) for x, t in zip(n.args, a))

    def _print_sum(self, n, a):
        if n.attr is None:
            return f"{self.m}.sum({a[0]})"
        self.define("_sum_axis_small", _HELPER_AXIS_SUM)
        return f"_sum_axis_small({a[0]}, {n.attr})"

    def _print_bcast(self, n, a):
        text = super()._print_bcast(n, a)
        if text is not None and n.args[0].shape is None:  # a number, or a 0-d array (a flat loop's)
            return f"{self.m}.broadcast_to({a[0]}, {self.shape(n.shape)}).copy()"
        return text

    def _print_eye(self, n, a):
        return f"{self.m}.eye({self.shape((n.attr,))[1:-2]}, dtype=_T)"

    def _print_slice(self, n, a):
        text = super()._print_slice(n, a)
        if not text.startswith("_sliced("):
            return text
        # within a dimension read at run time: NumPy would cut the slice short where the input is
        # smaller; the module's body raises (_sliced), and so does the twin (a constant message)
        name = self.names[n.id] = self.new_name(n)
        self.assign(n, name, f"{a[0]}[{slice_text(n.attr)}]")
        self.lines += [f"if {name}.shape != {self.shape(n.shape)}:",
                       "    raise ValueError('a slice is shorter than the model needs: an input dimension is smaller "
                       "than the slice')"]
        return None

    def _fill(self, n, value: str, index: str) -> None:
        """``name = zeros of n's shape; name[index] = value``: a one-hot or unsliced cotangent."""
        name = self.names[n.id] = self.new_name(n)
        self.assign(n, name, f"{self.m}.zeros({self.shape(n.attr[0])}, _T)")
        self.lines.append(f"{name}[{index}] = {value}")

    def _print_onehot(self, n, a):
        self._fill(n, a[0], f"{n.attr[1]}, {n.attr[2]}")

    def _print_unslice(self, n, a):
        self._fill(n, a[0], slice_text(n.attr[1]))

    def _print_where(self, n, a):
        raise _NoTwin("where")  # a select outside a loop: never met inside Numba bodies

    def _print_call(self, n, a):
        raise _NoTwin("call")

    def _emit_loop(self, c: Cluster) -> None:
        """Cluster ``c`` written out in the function: plain statements for numbers, a loop over
        rows and columns for a matrix, a flat loop over a shape read at run time otherwise."""
        q, m = self.loops, self.m
        self.loops += 1
        matrix = c.shape is not None and len(c.shape) == 2
        scalar = c.shape == ()
        local, before, loads, flat = {}, [], [], []
        for a in self.loop_inputs(c):
            text, v = self.names[a.id], f"_a{q}_{len(local)}"
            local[a.id] = v
            form, at = _form(self._shown_shape(a), c.shape) if matrix else ("s" if a.shape == () else "f", "")
            if form == "s":
                before.append(f"{v} = {text}" if is_bool(a) else f"{v} = _T({text})")
            elif form == "b":
                before.append(f"{v}b = {m}.broadcast_to({text}, {self.shape(c.shape)})")
                loads.append(f"{v} = {v}b[_r, _i]")
            elif form == "f":
                flat.append((v, text))
                loads.append(f"{v} = {v}f[_i]")
            else:
                loads.append(f"{v} = {text}[{at}]")
        for k, x in enumerate(c.members):
            local[x.id] = f"_v{q}_{k}"
        body, outputs = self.loop_body(c, local)
        names = [self.new_name(x) for x in outputs]
        self.lines += before
        if scalar:
            self.lines += body + [f"{nm} = {local[x.id]}" for nm, x in zip(names, outputs)]
        else:
            if matrix:
                shape = self.shape(c.shape)
            else:  # read at run time: the broadcast of what the loop reads
                shape = f"_s{q}"
                self.lines.append(f"{shape} = {m}.broadcast_shapes(" + ", ".join(f"{m}.shape({t})" for _, t in flat) + ")")
            for nm, x in zip(names, outputs):
                self.lines.append(f"{nm} = {m}.empty({shape}, {m + '.bool_' if is_bool(x) else '_T'})")
            self.fresh += outputs
            if flat:
                self.lines += [f"{v}f = _flat({t}, {names[0]})" for v, t in flat]
                self.define("_flat", _HELPER_FLAT)
            written = names  # what the loop writes: the arrays, or a flat loop's flat views of them
            if matrix:
                self.lines += [f"for _r in range({names[0]}.shape[0]):", f"    for _i in range({names[0]}.shape[1]):"]
                index, indent = "_r, _i", " " * 8
            else:
                written = [f"{nm}f" for nm in names]
                self.lines += [f"{w} = {nm}.reshape(-1)" for w, nm in zip(written, names)]
                self.lines.append(f"for _i in range({names[0]}.size):")
                index, indent = "_i", " " * 4
            self.lines += [indent + ln for ln in loads + body]
            self.lines += [f"{indent}{w}[{index}] = {local[x.id]}" for w, x in zip(written, outputs)]
        for x, nm in zip(outputs, names):
            self.names[x.id] = nm


class NumbaModuleBody(NumbaBody):
    """The Numba target's body printer: the module's own body (loops, work arrays), and its
    compiled twin for small inputs where every op of the function can be printed there."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.twin_args = (args, kwargs)  # a SmallBody starts from the same names
        self.twin: SmallBody | None = None

    def emit(self, order, users, final):
        super().emit(order, users, final)
        self.dynamic = {n.id for n in order if n.op == "input" and n.shape is None}  # shapes read at run time
        args, kwargs = self.twin_args
        twin = SmallBody(*args, **kwargs)
        twin.forward, twin.keep, twin.described = self.forward, self.keep, self.described
        twin.kernel_prefix = self.kernel_prefix
        twin.user_modules = self.user_modules
        twin.fusion = self.fusion  # the same clusters, in the same order
        try:
            twin.emit(order, users, final)
        except _NoTwin:
            return
        self.twin = twin

    def compiled_path(self, roots, inputs: dict, want, returns) -> list[str]:
        """The lines that run the function as its twin on small inputs and return (``inputs``:
        node id -> parameter name; ``returns(texts)``: the return expression)."""
        s = self.twin
        if s is None:
            return []
        texts = owned(s, roots, inputs, self.m, want)
        # numbers in the inputs' type; a value of a shape read at run time as an array (0-d for a
        # number, as the module's body gives)
        texts = [f"_T({t})" if r.shape == () else f"{self.m}.asarray({t})" if r.shape is None else t
                 for r, t in zip(roots, texts)]
        params = list(dict.fromkeys(list(inputs.values()) + list(self.dim_names.values())))
        name = f"_{self.kernel_prefix}_small"
        self.definitions["_small"] = _HELPER_SMALL.replace("{m}", self.m).strip("\n") + "\n"
        self.definitions.update(s.definitions)
        self.definitions[name] = "\n".join([
            "@_jit()", f"def {name}(_z, {', '.join(params)}):",
            f'    """{self.scratch_prefix or self.kernel_prefix} as one compiled call, for small inputs (_small)."""',
            "    _T = type(_z)  # the inputs' float type",
            *("    " + ln for ln in s.lines),
            f"    return {', '.join(texts)}" + ("," if len(texts) == 1 else ""), ""])
        work, per = self.intermediates(s, roots)
        dynamic = [p for i, p in inputs.items() if i in self.dynamic]
        fixed = [p for i, p in inputs.items() if i not in self.dynamic]
        arrays = ", ".join([work, str(per), f"({', '.join(dynamic)}{',' if len(dynamic) == 1 else ''})"] + fixed)
        # Numba gives numbers back as Python floats: the inputs' type again, as the module's body gives
        result = [f"_dt.type(_out[{k}])" if r.shape == () else f"_out[{k}]" for k, r in enumerate(roots)]
        return [f"_out = _twin({name}, _dt, {', '.join(params)}) if _small({arrays}) else None",
                "if _out is not None:  # small inputs: one compiled call, no dispatch per operation",
                f"    return {returns(result)}"]

    def intermediates(self, s: SmallBody, roots) -> tuple[str, int]:
        """The elements of the intermediate arrays twin ``s`` allocates (returned ones are new
        either way): the text of their sum over static shapes (``60 + 61 * n``), and how many
        more have the shape read at run time."""
        shapes = [x.shape for x in s.fresh if x.id not in {r.id for r in roots}]
        terms: dict = {}  # a product of dimensions -> how many elements per unit of it
        for shape in (sh for sh in shapes if sh is not None):
            dims = tuple(sorted(self.shape((d,))[1:-2] for d in shape if not isinstance(d, int)))
            terms[dims] = terms.get(dims, 0) + math.prod(d for d in shape if isinstance(d, int))
        work = " + ".join(" * ".join(([str(k)] if k != 1 or not dims else []) + list(dims))
                          for dims, k in sorted(terms.items()))
        return work or "0", sum(shape is None for shape in shapes)


TARGETS["numba"] = Target("numba", "numpy", "np", body=NumbaModuleBody, needs=("numba",), preamble=_PREAMBLE,
                          imports=("import math", "import os", "import sys", "import warnings", "import zlib",
                                   "import numba as _nb"))
