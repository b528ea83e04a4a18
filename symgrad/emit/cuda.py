"""CUDA C printing of elementwise ops: the table the CuPy target's fused kernels are written with.

The templates are the ``c`` column of the op table (``ops.OPS[...].c``; a test fails when an
elementwise op has none).
``{0}``, ``{1}``... are C operands: a kernel local, a parameter or a literal, never a compound
expression, so templates parenthesise only their own result.  Every value is of the kernel's
floating type ``T`` (``float`` or ``double``, bound by CuPy from the argument arrays) or ``bool``
(comparisons, logical ops and selects between them, see ``ops.is_bool``).  Literals are printed as ``(T)0.5``, so a float32
kernel never computes in double; CUDA's C++ overloads of ``exp``, ``fmax``... then stay in ``T``.

Semantics follow NumPy's where they differ from plain C: ``maximum``/``minimum`` propagate NaN,
``sign`` returns its argument at 0 and NaN, ``softplus`` is ``max(x, 0) + log1p(exp(-|x|))``.
"""
from __future__ import annotations

import re

from ..ops import OPS
from .printing import product, small_power

# names a kernel variable must not take: C++ keywords (alternative tokens too), what CuPy's kernel
# around the body uses (its loop index i, CUPY_FOR's ptrdiff_t), CUDA's names, and every function
# the table's templates call (an input named erf would hide erf)
RESERVED = frozenset("""
    T i auto bool break case char const continue default do double else enum extern float for goto
    if inline int long register return short signed sizeof static struct switch typedef union
    unsigned void volatile while true false new delete class this template typename operator
    namespace using private public protected friend virtual NULL INFINITY NAN
    static_cast const_cast reinterpret_cast dynamic_cast nullptr constexpr decltype noexcept alignas
    alignof char16_t char32_t wchar_t thread_local static_assert export mutable explicit asm catch
    try throw typeid and or not xor bitand bitor compl and_eq or_eq xor_eq not_eq
    ptrdiff_t size_t threadIdx blockIdx blockDim gridDim warpSize CIndexer CArray fmax fmin
""".split()) | {name for op in OPS.values() if op.c for name in re.findall(r"\b([A-Za-z_]\w*)\(", op.c)}

def c_pow(base: str, exponent: float | None, exponent_text: str) -> str:
    """``base ** exponent``: products for small integer exponents, else ``pow``."""
    e = small_power(exponent)
    return product(base, e, "(T)1") if e is not None else OPS["pow"].c.format(base, exponent_text)


def c_expr(op: str, args: list[str]) -> str:
    """The C expression of elementwise ``op`` applied to the operands ``args``."""
    template = OPS[op].c if op in OPS else None
    if op in ("maximum", "minimum") and args[0].startswith("(T)"):  # a literal is never NaN
        template = "({0} > {1} ? {0} : {1})" if op == "maximum" else "({0} < {1} ? {0} : {1})"
    if template is None:
        raise KeyError(f"elementwise op {op!r} has no CUDA C entry: give its row in symgrad/ops.py c=...")
    return template.format(*args)
