"""The Python-number fast path of ``forward`` and ``value_and_grad``.

A model of scalar Symbols only, called with Python numbers (``int``, ``float``, ``bool``), needs
none of the array machinery -- no dtype promotion, no shapes, no work arrays: the function first
tries the whole computation as plain ``float`` arithmetic with the ``math`` module, one
assignment per node as the array body has them (names ``_f_x`` for input ``x``, ``_f3`` for
temporaries, so nothing the array path uses is touched)::

    if type(x) in _NUMBERS and type(y) in _NUMBERS:
        try:
            _f_x, _f_y = float(x), float(y)
            _f0 = math.sin(_f_x)
            ...
            return np.float64(_f4), {'x': np.float64(_f6), 'y': np.float64(_f0)}
        except (ArithmeticError, ValueError):
            pass  # inf or nan ahead (1/0, log(0), exp(1000)): NumPy's answer, by the array path

Where Python raises and NumPy would give inf or nan (division by zero, a domain error, an
overflow), the exception sends the call down the array path, which gives NumPy's answer; ``x ** p``
is ``math.pow`` (it raises where Python's ``**`` would make a complex number).  Every formula
gives NumPy's bits on float64 arrays (signed zeros and nan included; the ``math`` functions within a
few ulp of NumPy's, as libm's are): ``tests/test_fast_path.py`` runs each one against its array
twin at special values.  The scipy.special functions have no form here: ``math.gamma``, ``lgamma``,
``erfc`` differ from scipy's by far more than that (scipy's ``gammaln(-inf)`` is ``-inf``).  Results are NumPy
float64 scalars, as the array path returns for Python numbers (immutable: the caller owns them).  A body with an op that has no plain-float form here
(a scipy.special function, a user Function, a matrix op) gets no fast path,
nor does a body of more than MAX_LINES assignments (a deep model: the module would carry a second
body for a per-call saving that is small beside its work).
"""
from __future__ import annotations

from ..ops import is_bool
from .printing import literal, product, small_power

# a body longer than this gets no fast path: per-call overhead matters for small models, and a
# deep one would pay for a second body in module size and import time (benchmarks/bench_compile.py)
MAX_LINES = 1000

FLOAT = {
    "add": "{0} + {1}", "sub": "{0} - {1}", "mul": "{0} * {1}", "div": "{0} / {1}", "neg": "-{0}",
    "pow": "math.pow({0}, {1})",
    "exp": "math.exp({0})", "log": "math.log({0})", "log1p": "math.log1p({0})", "expm1": "math.expm1({0})",
    "sin": "math.sin({0})", "cos": "math.cos({0})", "tan": "math.tan({0})", "tanh": "math.tanh({0})",
    "sinh": "math.sinh({0})", "cosh": "math.cosh({0})", "arcsin": "math.asin({0})", "arccos": "math.acos({0})",
    "arctan": "math.atan({0})", "arcsinh": "math.asinh({0})", "arccosh": "math.acosh({0})",
    "arctanh": "math.atanh({0})", "sqrt": "math.sqrt({0})", "abs": "abs({0})",
    # math.floor/ceil return ints, which have no -0.0: the result takes the argument's sign, as
    # NumPy's does (ceil(-0.5) is -0.0, and atan2(-0.0, -1) is -pi, not pi)
    "floor": "math.copysign(math.floor({0}), {0})", "ceil": "math.copysign(math.ceil({0}), {0})",
    "sign": "(1.0 if {0} > 0 else -1.0 if {0} < 0 else {0} + 0.0)",  # NumPy's: +0.0 at +-0, nan at nan
    "sigmoid": "1.0 / (1.0 + math.exp(-{0}))",
    "softplus": "(max({0}, 0.0) + math.log1p(math.exp(-abs({0}))))",
    "maximum": "({0} if {0} > {1} or {0} != {0} else {1})",  # nan propagates, as NumPy's
    "minimum": "({0} if {0} < {1} or {0} != {0} else {1})",
    "arctan2": "math.atan2({0}, {1})", "where": "({1} if {0} else {2})",
    "powlog": "(0.0 if {0} == 0 else {0} * math.log({1}))",
    "gt": "{0} > {1}", "ge": "{0} >= {1}", "lt": "{0} < {1}", "le": "{0} <= {1}", "eq": "{0} == {1}",
    "ne": "{0} != {1}", "and": "({0} and {1})", "or": "({0} or {1})", "not": "(not {0})",
}


def float_path(order, roots, inputs: dict, returns, m: str = "np") -> list[str] | None:
    """Lines of the fast path (indented for a function body) computing ``roots`` from the inputs
    ({node id: local name}, in argument order) as Python floats; ``returns(texts)`` gives the
    return expression from the roots' texts (each a NumPy float64, as the array path gives: ``m`` is
NumPy's alias).  None where some node has no float form."""
    if not inputs or any(n.op == "input" and n.shape is not None for n in order) or is_bool(roots[0]):
        return None
    names = {i: f"_f_{name}" for i, name in inputs.items()}
    body, k = [], 0
    for n in order:
        if n.id in names:
            continue
        if n.op == "const":
            names[n.id] = literal(n.attr)
            continue
        if n.shape is not None and n.shape != ():
            return None
        a = [names[x.id] for x in n.args]
        if n.op in ("sum_to", "bcast"):  # of scalars: the value itself
            names[n.id] = a[0]
            continue
        if n.op == "zeros_like":
            names[n.id] = "0.0"
            continue
        # positive exponents only: Python's 1 / (x * x) raises at 0 where math.pow's inf is wanted
        e = small_power(n.args[1].attr, negative=False) if n.op == "pow" and n.args[1].op == "const" else None
        if e is not None:
            text = product(a[0], e, "1.0")
        elif n.op in FLOAT:
            text = FLOAT[n.op].format(*a)
        else:
            return None
        names[n.id] = f"_f{k}"
        k += 1
        body.append(f"{names[n.id]} = {text}")
    if len(body) > MAX_LINES:
        return None
    check = " and ".join(f"type({name}) in _NUMBERS" for name in inputs.values())
    convert = ", ".join(names[i] for i in inputs)
    floats = ", ".join(f"float({name})" for name in inputs.values())
    return [f"if {check}:  # Python numbers: plain float arithmetic (see _NUMBERS)",
            "    try:",
            f"        {convert} = {floats}",
            *("        " + ln for ln in body),
            f"        return {returns([f'{m}.float64({names[r.id]})' for r in roots])}",
            "    except (ArithmeticError, ValueError):",
            "        pass  # inf or nan ahead (1/0, log(0), exp(1000)): NumPy's answer, by the array path"]
