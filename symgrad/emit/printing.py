"""What every printer shares: how a number is written, when a power is written as products, and
which ops return a view of an argument.

Each target's printer (the NumPy :class:`~symgrad.emit.printer.Body`, the CuPy kernels' CUDA C,
the Numba loops, the Python-float fast path) writes literals and powers through these, so that
the rules exist once; what differs per target is data (the cast around a literal, whether a
negative exponent may be written as a reciprocal).
"""
from __future__ import annotations

# x ** e for an integer 0 < |e| <= this is written as e multiplications (a power is a libm call)
MAX_MULTIPLY = 4

# ops whose value may be (a view of) an argument's memory, as printed: read through to the base
VIEWS = frozenset({"transpose", "sum_to", "bcast", "slice"})

# nan and the infinities, as Python expressions and as C expressions of floating type
_PYTHON = {"nan": "float('nan')", "inf": "float('inf')", "-inf": "-float('inf')"}
_C = {"nan": "0.0 / 0.0", "inf": "1.0 / 0.0", "-inf": "-1.0 / 0.0"}


def literal(v: float, as_int: bool = False, cast: str = "") -> str:
    """The constant ``v`` as one operand: Python (``2.0``, ``(-1.5)``, ``float('nan')``); with
    ``cast`` a typed one -- ``"(T)"`` CUDA C (``(T)2``, ``(T)(-1.5)``), ``"_T"`` a Numba loop's
    (``_T(2)``).  A typed literal, and an untyped one with ``as_int``, writes an integral value
    as an integer."""
    v = float(v)
    if v != v or v in (float("inf"), float("-inf")):
        s = (_C if cast == "(T)" else _PYTHON)[repr(v)]
    elif (as_int or cast) and v.is_integer() and abs(v) < 2**53:
        s = str(int(v))
    else:
        s = repr(v)
    return f"{cast}({s})" if cast == "_T" or s.startswith("-") or " " in s else f"{cast}{s}"


def small_power(exponent, negative: bool = True) -> int | None:
    """``exponent`` as an int when ``x ** exponent`` is written with multiplications (``1 / (x *
    x)`` for -2 when ``negative``; the fast path takes none, see ``floats.py``), else None."""
    if exponent is None or not float(exponent).is_integer():
        return None
    e = int(exponent)
    return e if 0 < (abs(e) if negative else e) <= MAX_MULTIPLY else None


def product(base: str, e: int, one: str) -> str:
    """``base ** e`` for a small integer ``e`` (:func:`small_power`) as products: ``(x * x)``,
    ``(one / (x * x))``."""
    prod = " * ".join([base] * abs(e))
    return f"({prod})" if e > 0 else f"({one} / ({prod}))"
