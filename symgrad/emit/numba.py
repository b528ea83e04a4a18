"""The Numba target: the NumPy module's layout, with elementwise work fused into compiled CPU loops.

The generated module has exactly the NumPy module's API; only function bodies differ.  Which
nodes form a loop, and the order of loops and other nodes, comes from the target-neutral pass
:class:`symgrad.emit.fusion.Fusion` (the one the CuPy target prints as CUDA kernels); here each
cluster is printed as one ``@numba.njit`` function over the flat elements, forward and backward
work together: the seed-003 ``value_and_grad`` is one loop that reads x, y once and writes f,
df/dx, df/dy.  A loop writes only the values needed outside it (forward values the backward pass
reuses, masks as ``bool``, cotangents).  Everything else is printed as by the NumPy target:
matmuls stay on BLAS through ``@`` (transposes are views), reductions are NumPy's ``.sum``,
special functions (scipy.special) and the user's ``symgrad.Function``\\ s are NumPy calls between
loops -- Numba cannot compile them, so they are never fused.

A loop ``_vag_k0(_lo, _hi, _z, y, x, t0, b_x, b_y)`` runs over the elements ``[_lo, _hi)``; its
array arguments are flat (``_at(a, _i)`` reads element ``_i`` of an array, or a scalar as it
is), ``_z`` is a zero of the inputs' float type and ``_T = type(_z)`` that type (``np.float32``
or ``np.float64``): every literal is written ``_T(0.5)`` and every scalar argument is passed as
``_T``, so float32 stays float32 throughout.  (The type itself as an argument would cost Numba's
dispatcher about 5 us per call, more than a loop over a thousand elements.)
``_vag_k0_parallel`` runs the same loop over chunks of ``CHUNK`` elements in parallel
(``numba.prange``); ``_run`` (a helper of the module) takes it where the loop has at least
``PARALLEL_MIN`` elements -- below that, starting threads costs more than they save (measured:
benchmarks/README.md).  Loops compile on first use for each combination of argument types
(float32/float64, array/scalar) and are cached on disk (``cache=True``) beside a module file, so
a second process does not compile again (one set of entries per name the module is imported
under: ``_jit``); a module loaded from text (no file) compiles in memory.
``error_model="numpy"``: a division by zero gives inf/nan as NumPy does, never an exception.
``exp`` (and the sigmoid), ``expm1``, ``log``, ``log1p`` (and the softplus) and ``tanh`` in a
loop are the module's ``_exp``, ``_expm1``, ``_log``, ``_log1p`` and ``_tanh``, written in
arithmetic that LLVM vectorises (Numba's ``np.exp``, ``np.log``, ``np.tanh`` are a C library call
per element, which keeps the loop scalar).  Each is compiled once, for float64 (a float32 loop
passes ``float(v)``), with ``forceinline``: LLVM inlines it into the loop, where it vectorises.
Numba's own inlining (``inline="always"``) copied every helper into the loop's IR at each call:
an 80-term model took 30-50 s to compile, about 90% of it there.

``_run`` lays the operands out.  A flat loop: an array of the loop's shape that is C-contiguous
goes flat (a view), one of one element as a zero-stride view, any other is broadcast and copied
first; every output is a new array of the loop's shape.  A loop over a
matrix knows its inputs' static shapes: the matrix itself is read ``t0[_r, _i]``, a bias row
``b1[0, _i]``, a column ``y[_r, 0]``, a number as it is -- contiguous arrays, no broadcast views,
so that LLVM can vectorise the inner loop.  It runs row by row (``_vag_k0_serial``), or column by
column (``_vag_k0_cols_serial``) where most of its matrices' bytes are column-ordered -- a float64
product that ``_matmul`` turned around -- writing column-ordered outputs; an input in the other
order is copied first.  Numba's OpenMP threads are started passive (``_start_threads``), so that
they do not spin against the BLAS threads of the products between loops.

On small inputs each function runs as its compiled twin instead, loops and products inside one
``@numba.njit`` function: :mod:`symgrad.emit.numba_small`, which registers the target.
"""
from __future__ import annotations

import builtins
import keyword
import math
import re

from ..ops import OPS, is_bool
from .fused import FusedBody
from .fusion import Cluster, Fusion
from .printing import VIEWS, literal, product, small_power

# element-level templates that differ from the NumPy column (``{m}``: numpy's alias; arguments are
# scalar locals or ``_T(...)`` literals): NaN-propagating extrema as NumPy's, selections as
# conditional expressions, the helpers' formulas written out; the helpers take float64 also in a
# float32 loop, so that each is compiled once
_SCALAR = {
    "where": "({1} if {0} else {2})",
    "maximum": "({0} if ({0} > {1} or {m}.isnan({0})) else {1})",
    "minimum": "({0} if ({0} < {1} or {m}.isnan({0})) else {1})",
    "exp": "_T(_exp(float({0})))",
    "sigmoid": "(_T(1) / (_T(1) + _T(_exp(float(-{0})))))",
    "log": "_T(_log(float({0})))",
    "log1p": "_T(_log1p(float({0})))",
    "expm1": "_T(_expm1(float({0})))",
    "tanh": "_T(_tanh(float({0})))",
    "softplus": "(({0} if {0} > _T(0) else _T(0)) + _T(_log1p(_exp(float(-abs({0}))))))",  # logaddexp(0, x)
    "powlog": "(_T(0) if {0} == _T(0) else {0} * _T(_log(float({1}))))",
    "not": "(not {0})",
}

# names a loop's parameter must not take: a builtin the loops call (range, type, min, abs, float),
# and those whose "_"-prefixed local would be one of the loop's own (_T, _z, _i, _r, _lo, _hi, _c,
# _n, _step; and _v<k>, which param() keeps v<k> from); such a parameter gets a "_" suffix, in the
# loop only
_LOOP_RESERVED = (frozenset(dir(builtins)) | frozenset(keyword.kwlist)
                  | {"T", "z", "i", "r", "lo", "hi", "c", "n", "step"})

PARALLEL_MIN = 1 << 18  # elements: a loop this long runs in parallel (see the module docstring)
CHUNK = 1 << 13  # elements per parallel task

_HELPER_RUN = '''
_WANT = {"a": lambda s: s, "r": lambda s: (1, s[1]), "c": lambda s: (s[0], 1), "e": lambda s: (1, 1)}
_THREADS = []  # [True] once Numba's thread pool is started (_start_threads)


def _start_threads():
    """Start Numba's thread pool before the first parallel loop, its OpenMP workers waiting
    passively: by default they spin for a while after each loop, and the BLAS threads of the
    matmul that follows then wait for a core (measured: 3-4x slower small products and loops
    after them, docs/speed.md).  OMP_WAIT_POLICY is read once, when the OpenMP runtime loads,
    and restored at once: the runtime stays passive for the process (so does any other library
    that uses the same libgomp); the caller's own OMP_WAIT_POLICY, or an OpenMP runtime that
    another library loaded before, is left as it is."""
    if "OMP_WAIT_POLICY" in os.environ:
        _nb.get_num_threads()
    else:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        try:
            _nb.get_num_threads()  # launches the threading layer
        finally:
            os.environ.pop("OMP_WAIT_POLICY", None)
    _THREADS.append(True)


def _run(loops, dt, kinds, shape, *inputs):
    """Run a fused loop (serial, parallel, forms[, by columns: serial, parallel]) over the
    elements of shape (None: the broadcast of the inputs' shapes).  A loop over a matrix reads
    each input in its form: "a" the matrix, "r" a row, "c" a column, "e" a 1x1 matrix
    (contiguous, by its own index), "s" a number of type dt, "b" a broadcast view; it runs row by
    row over row-ordered arrays, or column by column where most of its matrices' bytes are
    column-ordered (a float64 product that _matmul turned around), its outputs then column-ordered
    too.  Any other loop (forms None) reads flat arrays: C-contiguous inputs of the shape as views,
    numbers and one-element arrays as zero-stride views, others broadcast and copied.  Returns
    one array of the shape per output kind ("f": dt, "b": bool; "f:key": the work array key)."""
    if shape is None:  # inputs of one shape (the common case) need no broadcast_shapes (2 us)
        shapes = {{m}.shape(a) for a in inputs}
        shape = shapes.pop() if len(shapes) == 1 else {m}.broadcast_shapes(*shapes)
    n, matrix, args = math.prod(shape), loops[2] is not None, []
    forms = loops[2] or [None] * len(inputs)
    inputs = [a if form == "s" or isinstance(a, {m}.ndarray)
              else {m}.asarray(a, dtype={m}.bool_ if isinstance(a, (bool, {m}.bool_)) else dt)
              for a, form in zip(inputs, forms)]
    by_cols = False
    if matrix:  # by columns where most of the matrices' bytes are column-ordered
        mats = [a for a, form in zip(inputs, forms) if form == "a"]
        cols = sum(a.itemsize for a in mats if a.flags.f_contiguous and not a.flags.c_contiguous)
        by_cols = 2 * cols > sum(a.itemsize for a in mats)
    for a, form in zip(inputs, forms):
        if form == "s":
            args.append(a if isinstance(a, (bool, {m}.bool_)) else dt.type(a))
        elif form in _WANT:
            want = _WANT[form](shape)
            if a.shape != want:  # the loop indexes by the static shape: anything else is a compiler bug
                raise RuntimeError(f"{MODEL}: internal error: a loop input has shape {a.shape}, not {want}")
            if by_cols:
                args.append(a if a.flags.f_contiguous else {m}.asfortranarray(a))
            else:
                args.append(a if a.flags.c_contiguous else {m}.ascontiguousarray(a))
        elif form == "b":
            args.append({m}.broadcast_to(a, shape))
        elif a.shape == shape and a.flags.c_contiguous:
            args.append(a if a.ndim == 1 else a.reshape(-1))
        elif a.size == 1:
            args.append({m}.broadcast_to(a.reshape(-1), (n,)))
        else:
            args.append({m}.ascontiguousarray({m}.broadcast_to(a, shape)).reshape(-1))
    outs = []
    for k in kinds:  # "f" / "b": a new array; "f:key": the module's work array key (never returned)
        dtype = {m}.bool_ if k[0] == "b" else dt
        want = shape[::-1] if by_cols else shape  # column-ordered: the transpose of a row-ordered array
        a = _scratch(k[2:], want, dtype) if len(k) > 2 else None
        a = {m}.empty(want, dtype) if a is None else a
        outs.append(a.T if by_cols else a)
    views = outs if matrix or len(shape) == 1 else [o.reshape(-1) for o in outs]
    serial, parallel = loops[3:5] if by_cols else loops[:2]
    if matrix:  # lines: rows (or columns), a chunk of them at a time in parallel
        lines, other = shape[::-1] if by_cols else shape
        step = max(1, CHUNK // other)
    else:
        lines, step = n, CHUNK
    if n >= PARALLEL_MIN:
        if not _THREADS:
            _start_threads()
        parallel(lines, step, dt.type(0), *args, *views)
    else:
        serial(0, lines, dt.type(0), *args, *views)
    return outs[0] if len(outs) == 1 else tuple(outs)
'''


# exp(r) = sum r**k / k! for |r| <= ln(2)/2, k <= 13: the remainder is below 2**-57 of the sum
# (half an ulp is 2**-53)
_TAYLOR = "\n".join([f"    p = {1 / math.factorial(13)!r}"]
                    + [f"    p = p * r + {1 / math.factorial(k)!r}" for k in range(12, -1, -1)])
_HELPER_BITS = '''
if _nb.config.DISABLE_JIT:  # the loops run as Python (NUMBA_DISABLE_JIT=1, for debugging)
    def _from_bits(bits):
        """The float64 whose IEEE 754 bits are the int64 bits."""
        return {m}.int64(bits).view({m}.float64)

    def _to_bits(x):
        """The IEEE 754 bits of the float64 x, as an int64."""
        return {m}.float64(x).view({m}.int64)
else:
    @_nb.extending.intrinsic
    def _from_bits(typingctx, bits):
        """The float64 whose IEEE 754 bits are the int64 bits."""
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(_nb.types.float64))
        return _nb.types.float64(_nb.types.int64), codegen

    @_nb.extending.intrinsic
    def _to_bits(typingctx, x):
        """The IEEE 754 bits of the float64 x, as an int64."""
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(_nb.types.int64))
        return _nb.types.int64(_nb.types.float64), codegen
'''

_HELPER_REDUCE = '''
@_jit(forceinline=True)
def _reduce(x):
    """(k, r) with x = k ln(2) + r, k an integer (as a float) and |r| <= ln(2)/2 (Cody-Waite:
    ln(2) in two parts, so that k ln(2) is exact); k is 0 for a nan x (r is nan)."""
    k = (x * 1.4426950408889634 + 6755399441055744.0) - 6755399441055744.0  # x / ln(2), rounded
    k = k if k == k else 0.0  # x nan: r is nan whatever k is (a nan k would not convert to int)
    return k, (x - k * 0.6931471803691238) - k * 1.9082149292705877e-10
'''

_HELPER_EXP = '''
@_jit(forceinline=True)
def _exp(x):
    """exp(x) in float64 (for a float32 x too) within 1 ulp of NumPy's, in operations that LLVM
    vectorises -- Numba's exp calls the C library once per element: x = k ln(2) + r with
    |r| <= ln(2)/2 (ln(2) in two parts, so that k ln(2) is exact), exp(r) by its Taylor polynomial
    of degree 13, times 2**k as the product of two powers of two (a subnormal result is rounded
    once).  exp(inf) and overflow are inf, exp(-inf) and underflow 0, exp(nan) nan."""
    x = float(x)  # float64 also where the loop runs as Python (NumPy would keep a float32 float32)
    x = 710.0 if x > 710.0 else x  # exp(710) overflows: so does everything above
    x = -746.0 if x < -746.0 else x  # exp(-746) rounds to 0
    k, r = _reduce(x)
%s
    k1 = _nb.int64(k) >> 1
    return p * _from_bits((k1 + 1023) << 52) * _from_bits((_nb.int64(k) - k1 + 1023) << 52)
''' % _TAYLOR

_HELPER_LOG = '''
@_jit(forceinline=True)
def _log(x):
    """log(x) in float64 (for a float32 x too) within 1 ulp of NumPy's, in operations that LLVM
    vectorises (fdlibm's method): x = 2**k m with sqrt(1/2) < m <= sqrt(2), read from x's bits (a
    subnormal x scaled by 2**54 first); with f = m - 1 and s = f / (2 + f),
    log(m) = f - (f*f/2 - s (f*f/2 + R(s*s))), R fdlibm's minimax polynomial of degree 7, and
    k ln(2) added in two parts.  log(0) is -inf, log(x < 0) nan, log(inf) inf, log(nan) nan."""
    x = float(x)
    tiny = x < 2.2250738585072014e-308  # subnormal (or not positive: see the end)
    bits = _to_bits(x * 18014398509481984.0 if tiny else x)
    e = ((bits >> 52) & 0x7FF) - (1077 if tiny else 1023)
    m = _from_bits((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)  # in [1, 2)
    big = m > 1.4142135623730951
    m = m * 0.5 if big else m
    k = float(e + 1 if big else e)
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    r = (z * (6.666666666666735130e-01 + w * (2.857142874366239149e-01 + w * (1.818357216161805012e-01
         + w * 1.479819860511658591e-01)))
         + w * (3.999999999940941908e-01 + w * (2.222219843214978396e-01 + w * 1.531383769920937332e-01)))
    hfsq = 0.5 * f * f
    y = k * 6.93147180369123816490e-01 - ((hfsq - (s * (hfsq + r) + k * 1.90821492927058770002e-10)) - f)
    y = y if x < {m}.inf else x  # inf (nan stays nan below)
    y = y if x > 0.0 else {m}.nan
    return -{m}.inf if x == 0.0 else y
'''

_HELPER_LOG1P = '''
@_jit(forceinline=True)
def _log1p(x):
    """log(1 + x) in float64, vectorised: log(u) x / (u - 1) with u = 1 + x rounded, which cancels
    u's rounding error (Goldberg, 1991: within a few ulp; x itself where u is 1)."""
    x = float(x)
    u = 1.0 + x
    y = _log(u) * (x / (u - 1.0)) if u != 1.0 else x
    return y if u < {m}.inf else u
'''

# expm1(r) = r + r**2 (1/2! + r/3! + ... + r**12/14!) for |r| <= ln(2)/2: the remainder is
# below 2**-56 of the sum
_TAYLOR_EXPM1 = "\n".join([f"    p = {1 / math.factorial(14)!r}"]
                          + [f"    p = p * r + {1 / math.factorial(k)!r}" for k in range(13, 1, -1)])
_HELPER_EXPM1 = '''
@_jit(forceinline=True)
def _expm1(x):
    """exp(x) - 1 in float64 (for a float32 x too) within 2 ulp of NumPy's expm1, vectorised:
    x = k ln(2) + r as in _exp, expm1(r) by its Taylor polynomial (no cancellation near 0), and
    expm1(x) = 2**k expm1(r) + (2**k - 1); above 40 (where expm1 is exp) _exp(x), below -40 -1."""
    x = float(x)
    c = 40.0 if x > 40.0 else x
    c = -40.0 if c < -40.0 else c
    k, r = _reduce(c)
%s
    s = _from_bits((_nb.int64(k) + 1023) << 52)
    y = s * (r + (r * r) * p) + (s - 1.0)
    y = _exp(x) if x > 40.0 else y
    return x if x == 0.0 else y  # -0.0 stays -0.0
''' % _TAYLOR_EXPM1

_HELPER_TANH = '''
@_jit(forceinline=True)
def _tanh(x):
    """tanh(x) in float64 (for a float32 x too) within 3 ulp of NumPy's, vectorised:
    -expm1(-2|x|) / (expm1(-2|x|) + 2), with x's sign -- no cancellation (expm1(-2|x|) is in
    (-1, 0]); 1 from |x| = 20 on, nan stays nan, -0.0 -0.0."""
    x = float(x)
    e = _expm1(-2.0 * abs(x))
    return math.copysign(-e / (e + 2.0), x)
'''

# the module's vectorised functions: helper -> (its text, the helpers it calls), defined in order
_MATH = {"_bits": (_HELPER_BITS, ()), "_reduce": (_HELPER_REDUCE, ()),
         "_exp": (_HELPER_EXP, ("_bits", "_reduce")), "_log": (_HELPER_LOG, ("_bits",)),
         "_log1p": (_HELPER_LOG1P, ("_log",)), "_expm1": (_HELPER_EXPM1, ("_exp", "_reduce")),
         "_tanh": (_HELPER_TANH, ("_expm1",))}
_MATH_CALL = re.compile(r"\b(_exp|_expm1|_log|_log1p|_tanh)\(")


def _form(shape, loop) -> tuple[str, str]:
    """How a 2-d loop over ``loop`` reads an input of static ``shape``: (form for _run, index) --
    "a" the matrix, "r" a row, "c" a column, "e" a 1x1 matrix, "s" a number, "b" anything else
    (a broadcast view)."""
    if shape == ():
        return "s", ""
    if shape is None or len(shape) != 2:
        return "b", "_r, _i"
    rows = "_r" if shape[0] == loop[0] else "0" if shape[0] == 1 else None
    cols = "_i" if shape[1] == loop[1] else "0" if shape[1] == 1 else None
    if not (rows and cols):
        return "b", "_r, _i"
    return {("_r", "_i"): "a", ("0", "_i"): "r", ("_r", "0"): "c", ("0", "0"): "e"}[rows, cols], f"{rows}, {cols}"


def numba_fusable(op: str) -> bool:
    """Elementwise, and Numba compiles it: not a scipy.special function, not a user Function."""
    o = OPS[op]
    return o.elementwise and o.special is None and op not in ("call", "polygamma") and (
        op in _SCALAR or isinstance(o.code, str))


class NumbaBody(FusedBody):
    """Prints a function body with each elementwise cluster as one call of a compiled loop."""

    def emit(self, order, users, final):
        self.final, self.users = final, users
        self.prefix = self.kernel_prefix
        if self.fusion is None:  # a compiled twin is given its function's pass (numba_small.py)
            self.fusion = Fusion(order, users, final, self.forward, set(self.names), fusable=numba_fusable)
        # values returned, and what a returned value is a view of: never in a work array
        by_id, self.protected = {n.id: n for n in order}, set()
        for rid in set(final) | self.keep | self.fusion.returned:
            n = by_id.get(rid)
            while n is not None and n.id not in self.protected:
                self.protected.add(n.id)
                n = self.fusion.real(n.args[0]) if n.op in VIEWS else None
        self._print_units(self._emit_loop)

    def _print_matmul(self, n, a):
        if n.id not in self.protected and self.scratch_prefix and n.shape is not None:
            if self.tall_product(n):  # a product that is never returned: a work array
                return self.work_product(n)
            return f"{self.m}.matmul({a[0]}, {a[1]}, out={self.scratch(n)})"
        return super()._print_matmul(n, a)

    def _shown_shape(self, a):
        """The static shape of the array that ``a``'s name holds: a broadcast its consumers do
        by themselves is printed as its source (``b2``), a transpose of it as ``b2.T``."""
        text = self.names[a.id]
        if a.op == "bcast" and self.names.get(a.args[0].id) == text:
            return self._shown_shape(a.args[0])
        if a.op == "transpose" and text == f"{self.names.get(a.args[0].id)}.T":
            inner = self._shown_shape(a.args[0])
            return tuple(reversed(inner)) if inner is not None and len(inner) == 2 else a.shape
        return a.shape

    def _define_math(self, helper: str) -> None:
        """Define one of the module's vectorised functions (_MATH), after those it calls."""
        text, needs = _MATH[helper]
        for need in needs:
            self._define_math(need)
        self.definitions.setdefault(helper, text.replace("{m}", self.m).strip("\n") + "\n")

    @staticmethod
    def _loop_pair(kernel: str, sig: str, what: str, loop: list[str], body: list[str]) -> list[str]:
        """The serial loop over ``what`` [_lo, _hi) and the parallel one that runs it in chunks."""
        indent = " " * (4 * len(loop) + 4)
        return [
            "@_jit()",
            f"def {kernel}_serial(_lo, _hi, _z, {sig}):",
            f'    """{what} [_lo, _hi) of the loop."""',
            "    _T = type(_z)  # the loop's float type",
            *("    " + ln for ln in loop),
            *(indent + ln for ln in body),
            "",
            "",
            "@_jit(parallel=True)",
            f"def {kernel}_parallel(_n, _step, _z, {sig}):",
            f'    """The loop over {what.lower()} [0, _n) in parallel, _step at a time."""',
            "    for _c in _nb.prange((_n + _step - 1) // _step):",
            f"        {kernel}_serial(_c * _step, min(_n, (_c + 1) * _step), _z, {sig})",
            "",
            "",
        ]

    def loop_inputs(self, c: Cluster) -> list:
        """The values cluster ``c`` reads from outside it (not its members, not constants), each
        once, in the order its members first read them."""
        ids, seen, out = {m.id for m in c.members}, set(), []
        for m in c.members:
            for a in map(self.fusion.real, m.args):
                if a.id not in ids and a.id not in seen and a.op != "const":
                    seen.add(a.id)
                    out.append(a)
        return out

    def loop_body(self, c: Cluster, local: dict) -> tuple[list[str], list]:
        """(lines, outputs) of cluster ``c``'s loop body: one assignment per member to its local
        name (``local``: node id -> name, for the members and the values the loop reads), and
        the members needed outside the loop (read later, or returned)."""
        ids, real = {m.id for m in c.members}, self.fusion.real
        body, outputs = [], []
        for m in c.members:
            args = [local[a.id] if a.op != "const" else literal(a.attr, cast="_T") for a in map(real, m.args)]
            exponent = real(m.args[1]) if m.op == "pow" else None
            e = small_power(exponent.attr) if exponent is not None and exponent.op == "const" else None
            if e is not None:
                text = product(args[0], e, "_T(1)")
            else:
                template = _SCALAR.get(m.op, OPS[m.op].code)
                text = template.format(*args, m=self.m)
            for helper in _MATH_CALL.findall(text):
                self._define_math(helper)
            line = f"{local[m.id]} = {text}"
            comment = self.describe(m.id, 48)
            body.append(line + (f"  # {comment}" if comment and len(line) < 72 else ""))
            if m.id in self.fusion.returned or any(u.id not in ids for u in self.fusion.consumers(m)):
                outputs.append(m)
        return body, outputs

    def _emit_loop(self, c: Cluster) -> None:
        used = set(_LOOP_RESERVED) | {self.m}

        def param(want: str, fallback: str) -> str:  # the body's names are never _-prefixed
            name = want if re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", want) else fallback
            while name in used or re.fullmatch(r"v\d+", name):
                name += "_"
            used.add(name)
            return name

        matrix = c.shape is not None and len(c.shape) == 2  # a 2-d loop over rows and columns
        index = "_r, _i" if matrix else "_i"
        params, call_args, local, loads, forms = [], [], {}, [], []
        for a in self.loop_inputs(c):
            text = self.names[a.id]
            p = param(text, f"in{len(params)}")
            params.append(p)
            call_args.append(text)
            local[a.id] = f"_{p}"
            form, at = _form(self._shown_shape(a), c.shape) if matrix else (None, index)
            forms.append(form)
            loads.append(f"_{p} = {p}" + (f"[{at}]" if at else ""))
        for k, m in enumerate(c.members):
            local[m.id] = f"_v{k}"
        body, outputs = self.loop_body(c, local)
        names = [self.new_name(m) for m in outputs]
        outs = [param(nm, f"out{i}") for i, nm in enumerate(names)]
        body += [f"{o}[{index}] = {local[m.id]}" for o, m in zip(outs, outputs)]
        kernel = f"_{self.prefix}_k{len([d for d in self.definitions if d.startswith('_' + self.prefix + '_k')])}"
        sig = ", ".join(params + outs)
        self.definitions.setdefault("_run", _HELPER_RUN.replace("{m}", self.m).strip("\n") + "\n")
        if matrix:  # row by row, and column by column for column-ordered arrays (_run)
            text = self._loop_pair(kernel, sig, "Rows", ["for _r in range(_lo, _hi):",
                                                         f"    for _i in range({outs[0]}.shape[1]):"], loads + body)
            text += self._loop_pair(f"{kernel}_cols", sig, "Columns", [
                "for _i in range(_lo, _hi):", f"    for _r in range({outs[0]}.shape[0]):"], loads + body)
            text.append(f"{kernel} = ({kernel}_serial, {kernel}_parallel, {''.join(forms)!r}, "
                        f"{kernel}_cols_serial, {kernel}_cols_parallel)  # the forms of the inputs: _run")
        else:
            text = self._loop_pair(kernel, sig, "Elements", ["for _i in range(_lo, _hi):"], loads + body)
            text.append(f"{kernel} = ({kernel}_serial, {kernel}_parallel, None)  # serial, parallel; flat")
        self.definitions[kernel] = "\n".join(text + [""])
        kinds = []
        for m in outputs:  # values that are never returned (nor viewed by one) go to work arrays
            kind = "b" if is_bool(m) else "f"
            if m.id not in self.protected and self.scratch_prefix:
                kind += ":" + self.scratch_key()
            kinds.append(kind)
        kinds = "".join(kinds) if all(len(k) == 1 for k in kinds) else tuple(kinds)
        shape = self.shape(c.shape) if c.shape is not None else "None"
        line = f"{', '.join(names)} = _run({kernel}, _dt, {kinds!r}, {shape}, {', '.join(call_args)})"
        comment = self.describe(outputs[0].id, 60)
        self.lines.append(line + (f"  # {comment}" if comment and len(line) < 60 else ""))
        for m, nm in zip(outputs, names):
            self.names[m.id] = nm


_PREAMBLE = f"""PARALLEL_MIN = {PARALLEL_MIN}  # a loop over at least this many elements runs in parallel
CHUNK = {CHUNK}  # elements per parallel task
# compiled loops are cached on disk beside the module file, where Numba can import the module by
# name again (a module run from text, or not registered in sys.modules, compiles in memory)
_CACHE = os.path.isfile(__file__) and sys.modules.get(__name__) is not None
""" + '''

def _jit(**options):
    """numba.njit with this module's options: cached on disk, NumPy's division (inf/nan, never an
    exception).  Numba's cache records the name the module was imported under and cannot load a
    loop cached under another (the same file imported as ``pkg.model`` and as ``model``): the
    loop's qualified name carries a checksum of the module's name (short: it is part of the cache
    files' names), so each name keeps its own cache entries."""
    def jit(f):
        f.__qualname__ = f"{f.__name__}_{zlib.crc32(__name__.encode()):08x}"
        return _healing(_nb.njit(cache=_CACHE, error_model="numpy", **options)(f))
    return jit


def _healing(dispatcher):
    """``dispatcher`` whose cache files, where they cannot be read (a truncated write, a disk
    error), are emptied and the loop compiled again -- not an error on every call."""
    cache = getattr(dispatcher, "_cache", None)  # None: NUMBA_DISABLE_JIT gave the function back
    if cache is None:
        return dispatcher
    load = cache.load_overload

    def load_overload(*args):
        try:
            return load(*args)
        except Exception:  # noqa: BLE001 - unpickling a broken file raises any of several errors
            cache.flush()  # an empty index: the next save writes a whole data file again
            return None
    cache.load_overload = load_overload
    return dispatcher
'''
