"""Check a generated module against the runtime tape and finite differences, called as users call it.

Contract:

* ``sample_inputs(model, rng, dtype=np.float64, sizes=None, fixed=None) -> {name: array}`` draws
  inputs inside the model's domain.  Dimension symbols get small distinct sizes (3, 4, 5, ...
  skipping the fixed sizes the model already uses), MatrixSymbols 2-D arrays, scalar Symbols arrays
  of shape ``(4,)`` in a purely scalar model and 0-d arrays where matrices are involved.  ``sizes``
  overrides a dimension's size (``{"N": 7}``) or a scalar input's shape (``{"x": ()}``); ``fixed``
  gives inputs that are kept as they are.  Where values are drawn from:

  - an input named in ``Model(..., domain={x: (lo, hi)})``: inside that interval, away from its ends;
  - else an input that the argument of ``log``, ``sqrt`` (any non-integer power), ``asin``,
    ``acos``, ``atanh``, ``acosh`` or ``loggamma`` is affine in (``log(x - 5)``, ``sqrt(1 - x)``,
    ``acos(2*x)``, elementwise through ``.applyfunc`` or ``X[i, j]`` too): inside the interval where
    every such argument is defined (the expression is walked once, iteratively, memoised by
    ``id()``: deep DAGs are never expanded into trees);
  - else ``|v| >= 0.2`` (away from the kinks of Abs / Max / Piecewise / Heaviside at 0); a square
    MatrixSymbol that ``det`` or an inverse (a solve) takes is then made diagonally dominant (not
    symmetric), so it stays invertible, with ``det > 0``, when the check rounds it to integers.

  A singular matrix (``numpy.linalg.LinAlgError``) counts as outside the domain, as a floating-point
  error does (``DOMAIN_ERRORS``): raised by the tape, the draw is redone (or that way of calling
  skipped with a note); raised by the module where the tape is not finite either, that way of
  calling is skipped with a note.

  When the tape's value or gradients are not finite, or raise a floating-point warning, other
  value ranges are tried for the other inputs (positive ones for log / sqrt, then (-1, 1), (0, 1)
  and [1.5, 3]), then the same without the derived intervals.  Symbol assumptions
  (``positive=True``, ``negative=True``) are respected.
* ``check(model, module=None, *, seed=0, trials=2, rtol=1e-6, fd_rtol=1e-5, float32=True,
  inputs=None, calls=True) -> CheckReport``.  Each trial runs on random inputs, or on one input set
  of ``inputs`` (a dict, a list of dicts, or the path of an ``.npz`` file; inputs a set leaves out
  are drawn), and compares, in float64:

  - value and gradients with ``symgrad.tape``.  Errors are norm-relative: ``max|got - want|`` over
    one input's gradient divided by that gradient's largest ``|want|``, but never by less than
    ``1e-8`` x the scale of the whole gradient (its largest entry over every wrt input, the
    value's, or 1).  So a small gradient (1e-5 of the whole) that is 0.1% off fails, and a zero
    or vanishing one (the first layers of a 32-deep tanh chain, 1e-15) is held to the rounding of
    the whole gradient, not to its own size;
  - the gradients with finite differences (FD) of ``sum(forward(...))``: along one random direction
    through all wrt inputs at once (relative to the whole gradient), one direction per wrt input
    (relative to that input's gradient), and entry by entry for inputs of at most 16 entries
    (relative to that input's largest entry).  Steps are relative to each entry (``x + h*|x|*u``).
    The first estimate is a central difference with ``h = 1e-5``.  Only when it disagrees are
    Richardson extrapolations (``h = 1e-3, 1e-2, 1e-4``) and central differences (``1e-6, 1e-7,
    1e-8``: near a kink or a singularity) tried, and the best one counts.  The rounding noise
    expected of an estimate is subtracted from its error before dividing, so FD never fails a
    gradient below what differences resolve (the tape still compares it).  That noise is
    ``(e + 32*eps*sum|x*grad|) / h``, where ``e``, the noise of one ``sum(forward)``, is
    ``32*eps*sum|value|`` or 8 x what steps of 1e-11 show, whichever is larger (a value that
    cancels, like ``sin(x)**2 + cos(x)**2 - 1``, is noisier than its size says).  A trial does at
    most 24 per-input directions and 24 entries, fewer when one forward call is slow (about
    0.25 s of calls, at least 16 calls), a random pick each time;
  - that no call changes its inputs; that every array it returns (value and gradients) is
    writable and shares memory (``np.shares_memory``) with no input, no other returned array and
    nothing a later call returns (a work array of the module), as the README's "Values a module takes and gives" says;
  - gradient shapes, and dtypes (float64 in, float64 out);
  - every function of the module's ``DERIVATIVES`` beyond the gradient (``vjp``, ``jvp``,
    ``jacobian``, ``hvp``, ``hessian``), called as above: against the tape's VJP with a random
    cotangent, its Jacobian (one exact VJP per entry of a value of at most ``JAC_EXACT_MAX``
    entries, else through a random cotangent), and central differences of its gradient along a
    random direction (``tape.hvp``), plus the Hessian's symmetry; the largest error per function
    is ``CheckReport.derivatives``;
  - the dot-product test, the module against itself (``_dot_products``): ``<v, jvp(u)>`` against
    ``<vjp(v), u>`` (``value_and_grad``'s gradient with ``v`` all ones where there is no ``vjp``)
    and ``<w, hvp(v)>`` against ``<v, hvp(w)>`` for random ``u``, ``v``, ``w``: equal up to
    rounding, tolerance ``rtol``; the largest errors are ``CheckReport.dot_products``.

  Once per check (``calls=True``) the module is also called the other ways users call it, each
  compared with the tape and checked as above: scalar Symbols as Python floats and as 0-d arrays;
  Python ints with integer arrays (results must be float64 and not truncated); float32 arrays
  (results stay float32; tolerance 1e-3, floor 1e-3) and float32 arrays with Python floats; and,
  in a purely scalar model, scalars bound to a column ``(3, 1)``, a row ``(1, 4)`` and full
  ``(3, 4)`` arrays.  Each failing property is one line of ``CheckReport.problems``, naming it and
  the ways of calling it fails under.
* ``load_inputs(path)`` reads an ``.npz`` file of inputs; ``validate_inputs(model, given)`` checks
  their names, dtypes and shapes; ``resolve_inputs(model, given, rng)`` also draws the missing ones;
  ``inferred_domain(model)`` is the ``{name: (lo, hi)}`` derived from the model's functions.
"""
from __future__ import annotations

import collections.abc
import math
import os
import time
import weakref
from dataclasses import dataclass, field

import numpy as np
import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction
from sympy.matrices.expressions.matexpr import MatrixElement

from . import tape
from .cache import compile_model
from .errors import SymgradError
from .kinds import KINDS

__all__ = ["CheckReport", "check", "inferred_domain", "input_shapes", "load_inputs", "rel_err",
           "resolve_inputs", "sample_inputs", "validate_inputs"]

FLOOR = 1e-8          # gradients below FLOOR x (scale of the whole gradient) are compared absolutely
FLOOR32 = 1e-3        # the same for float32 results
RTOL32 = 1e-3         # float32 results vs the tape
FD_FULL_MAX = 16      # inputs with at most this many elements also get an element-by-element FD gradient
FD_DIRECTIONS = 24    # per trial: at most this many per-input directional derivatives ...
FD_ENTRIES = 24       # ... and this many entry-by-entry ones,
FD_SECONDS = 0.25     # fewer where one forward call is slow: about this many seconds of forward calls
FD_MIN_CALLS, FD_MAX_CALLS = 16, 98   # ... but never fewer than 16 nor more than 98 of them per trial
FD_LEVELS = ((1e-5, False), (1e-3, True), (1e-2, True), (1e-4, True), (1e-6, False), (1e-7, False),
             (1e-8, False))  # (relative step h, Richardson extrapolation)
FD_NOISE = 32 * np.finfo(np.float64).eps
BOUNDARY_MARGIN = 0.1  # finite domain intervals are sampled in their middle 80%


def _signed(rng, shape):
    z = rng.standard_normal(shape)
    return np.copysign(0.2 + 0.8 * np.abs(z), z)


# Tried in order until the tape's value and gradients are finite without a floating-point warning.
_STRATEGIES = (
    _signed,                                                    # normal-ish, |v| >= 0.2
    lambda rng, shape: rng.uniform(0.5, 2.0, shape),            # log, sqrt, x**y
    lambda rng, shape: np.copysign(rng.uniform(0.1, 0.9, shape), rng.standard_normal(shape)),  # asin, atanh
    lambda rng, shape: rng.uniform(0.1, 0.9, shape),            # log(1 - x), sqrt(1 - x**2)
    lambda rng, shape: rng.uniform(1.5, 3.0, shape),            # acosh
)


def input_shapes(model, sizes=None) -> dict:
    """Shape of every input of ``model`` (name -> tuple), with the defaults described above."""
    sizes = dict(sizes or {})
    fixed = {int(n) for s in model.inputs if isinstance(s, sp.MatrixSymbol)
             for n in s.shape if sp.sympify(n).is_Integer}
    free = (n for n in range(3, 100) if n not in fixed)
    dims = {d: sizes[str(d)] if str(d) in sizes else next(free) for d in model.dims}
    scalar_shape = () if _has_matrices(model) else (4,)
    shapes = {}
    for s in model.inputs:
        if isinstance(s, sp.MatrixSymbol):
            shapes[str(s)] = tuple(int(sp.sympify(n).subs(dims)) for n in s.shape)
        else:
            shapes[str(s)] = tuple(sizes.get(str(s), scalar_shape))
    return shapes


def _has_matrices(model) -> bool:
    """Matrices in the model: then its scalar inputs are drawn and called as one number each (the
    scalars of an explicit ``sp.Matrix`` must be, ``Model.numbers``, even with no MatrixSymbol)."""
    return bool(model.is_matrix or model.dims or getattr(model, "numbers", ())
                or any(isinstance(s, sp.MatrixSymbol) for s in model.inputs))


# -- where a model is defined ------------------------------------------------------------------------
_INF = math.inf
_ARG_INTERVALS = ((sp.log, (0.0, _INF)), (sp.asin, (-1.0, 1.0)), (sp.acos, (-1.0, 1.0)),
                  (sp.atanh, (-1.0, 1.0)), (sp.acosh, (1.0, _INF)), (sp.loggamma, (0.0, _INF)))
_AFFINE_MAX_NODES = 48
_INFERRED = weakref.WeakKeyDictionary()


def _affine(arg):
    """``(var, c, d)`` when ``arg == c*var + d`` for numbers ``c != 0``, ``d`` and one variable (a
    Symbol or an entry ``X[i, j]`` of a MatrixSymbol); else None.  Looks at small arguments only
    (at most 48 nodes, counted as a tree), so SymPy's own recursive tools are safe on them."""
    var, stack, count = None, [arg], 0
    while stack:
        e = stack.pop()
        count += 1
        if count > _AFFINE_MAX_NODES:
            return None
        if isinstance(e, MatrixElement):
            if not (isinstance(e.parent, sp.MatrixSymbol)
                    and all(ix.is_Integer or ix.is_Symbol for ix in (e.i, e.j))):  # X[i, j] of a Sum too
                return None
            cand = e
        elif isinstance(e, sp.Symbol):
            cand = e
        elif isinstance(e, sp.MatrixExpr) or not isinstance(e, sp.Expr):
            return None
        else:
            if not (e.is_Number or e.is_NumberSymbol):
                stack.extend(e.args)
            continue
        if var is None:
            var = cand
        elif var != cand:
            return None
    if var is None:
        return None
    t = sp.Dummy("t")
    try:
        poly = sp.Poly(arg.xreplace({var: t}), t)
        if poly.degree() != 1:
            return None
        c, d = (complex(v) for v in poly.all_coeffs())
    except (sp.PolynomialError, sp.GeneratorsNeeded, TypeError, ValueError):
        return None
    if c.imag or d.imag or c.real == 0 or not (math.isfinite(c.real) and math.isfinite(d.real)):
        return None
    return var, c.real, d.real


def _constraints(expr):
    """[(node, (lo, hi))]: each argument (node) of a function that is defined only on (lo, hi).
    Walks ``expr`` once, iteratively, memoised by id()."""
    out, seen, stack = [], set(), [expr]
    while stack:
        e = stack.pop()
        if id(e) in seen or not isinstance(e, sp.Basic):
            continue
        seen.add(id(e))
        for kind, interval in _ARG_INTERVALS:
            if isinstance(e, kind):
                out.append((e.args[0], interval))
        if isinstance(e, (sp.Pow, sp.HadamardPower)):
            base, p = e.args
            if (p.is_Number and not p.is_Integer) or not p.is_Number:
                out.append((base, (0.0, _INF)))
        stack.extend(e.args)
    return out


def inferred_domain(model) -> dict:
    """``{input name: (lo, hi)}`` derived from the model's log / sqrt / acos / ... arguments that are
    affine in one input (see the module docstring).  Cached per model."""
    try:
        return _INFERRED[model]
    except (KeyError, TypeError):
        pass
    names = {str(s) for s in model.inputs}
    lambdas, found = {}, {}
    seen, stack = set(), [model.expr]
    while stack:  # applyfunc's Lambda variables stand for the entries of the matrix they are applied to
        e = stack.pop()
        if id(e) in seen or not isinstance(e, sp.Basic):
            continue
        seen.add(id(e))
        if isinstance(e, ElementwiseApplyFunction) and isinstance(e.expr, sp.MatrixSymbol):
            lam = e.function
            if isinstance(lam, sp.Lambda) and len(lam.variables) == 1:
                lambdas.setdefault(lam.variables[0], set()).add(str(e.expr))
        stack.extend(e.args)
    for arg, (lo, hi) in _constraints(model.expr):
        if isinstance(arg, sp.MatrixSymbol):  # HadamardPower(X, 1/2)
            var, c, d = arg, 1.0, 0.0
        else:
            aff = _affine(arg)
            if aff is None:
                continue
            var, c, d = aff
        if isinstance(var, MatrixElement):
            targets = {str(var.parent)}
        elif var in lambdas:
            targets = lambdas[var]
        else:
            targets = {str(var)}
        a, b = (lo - d) / c, (hi - d) / c
        a, b = min(a, b), max(a, b)
        for name in targets & names:
            old = found.get(name, (-_INF, _INF))
            found[name] = (max(old[0], a), min(old[1], b))
    result = {n: ab for n, ab in found.items() if ab[0] < ab[1]}
    try:
        _INFERRED[model] = result
    except TypeError:
        pass
    return result


def _inverted(model) -> set:
    """Names of the square MatrixSymbols that ``det``, an inverse (``S.I``, ``S**-1``) or a solve
    takes, directly or transposed: they are drawn diagonally dominant (see ``_dominant``).  Walks
    the expression once, iteratively, memoised by id()."""
    out, seen, stack = set(), set(), [model.expr]
    while stack:
        e = stack.pop()
        if id(e) in seen or not isinstance(e, sp.Basic):
            continue
        seen.add(id(e))
        arg = None
        if isinstance(e, (sp.Determinant, sp.Inverse)):
            arg = e.args[0]
        elif isinstance(e, sp.MatPow) and e.exp.is_negative:
            arg = e.base
        if isinstance(arg, sp.Transpose):
            arg = arg.arg
        if isinstance(arg, sp.MatrixSymbol) and arg.shape[0] == arg.shape[1]:
            out.add(str(arg))
        stack.extend(e.args)
    return out


def _dominant(v):
    """``v`` with each diagonal entry raised above its row's other entries: strictly diagonally
    dominant with a positive diagonal, so its eigenvalues have positive real parts (det > 0, log det
    defined) and it stays so after rounding every entry to an integer (a margin of n + 1 > the n
    changes of at most 1).  Not symmetric: a transposed gradient still shows."""
    off = np.abs(v).sum(axis=1) - np.abs(np.diagonal(v))
    return v + np.diag(off + v.shape[0] + 1.0 - np.diagonal(v))


def _assumed(sym):
    if sym.is_positive or sym.is_nonnegative:
        return (0.0, _INF)
    if sym.is_negative or sym.is_nonpositive:
        return (-_INF, 0.0)
    return None


def _respect_assumptions(sym, v):
    if sym.is_positive or sym.is_nonnegative:
        return np.abs(v)
    if sym.is_negative or sym.is_nonpositive:
        return -np.abs(v)
    return v


def _draw_interval(rng, shape, lo, hi):
    """Values in (lo, hi), away from its ends, and away from 0 (|v| >= 0.2) where the interval allows."""
    if math.isfinite(lo) and math.isfinite(hi):
        a, b = lo + BOUNDARY_MARGIN * (hi - lo), hi - BOUNDARY_MARGIN * (hi - lo)
    elif math.isfinite(lo):
        a, b = lo + 0.5, lo + 2.0
    elif math.isfinite(hi):
        a, b = hi - 2.0, hi - 0.5
    else:
        return _signed(rng, shape)
    pieces = [(p, q) for p, q in ((a, min(b, -0.2)), (max(a, 0.2), b)) if q - p > 0.05 * (b - a)]
    if not pieces:
        return rng.uniform(a, b, shape)
    lengths = np.array([q - p for p, q in pieces])
    which = rng.choice(len(pieces), size=shape, p=lengths / lengths.sum())
    starts, widths = np.array([p for p, _ in pieces])[which], lengths[which]
    return starts + widths * rng.uniform(0.0, 1.0, shape)


def _finite(value, grads) -> bool:
    return all(np.all(np.isfinite(np.asarray(a, dtype=np.float64))) for a in [value, *grads.values()])


# what the tape or a module raises at inputs outside the model's domain: a singular matrix is
# outside the domain of det / inv / solve as log(0) is outside log's (the draw is redone or skipped)
DOMAIN_ERRORS = (FloatingPointError, ZeroDivisionError, OverflowError, np.linalg.LinAlgError)


def _domain(model, inputs) -> str:
    """'clean', 'warned' (finite, but a floating-point warning on the way) or 'bad'."""
    try:
        with np.errstate(divide="raise", over="raise", invalid="raise", under="ignore"):
            if _finite(*tape.value_and_grad(model, **inputs)):
                return "clean"
            return "bad"
    except DOMAIN_ERRORS:
        pass
    try:
        with np.errstate(all="ignore"):
            return "warned" if _finite(*tape.value_and_grad(model, **inputs)) else "bad"
    except DOMAIN_ERRORS:
        return "bad"


def sample_inputs(model, rng, dtype=np.float64, sizes=None, fixed=None) -> dict:
    """Random inputs for ``model`` (name -> array of ``dtype``) where its value and gradients are finite."""
    fixed = {k: np.asarray(v, dtype=np.float64) for k, v in (fixed or {}).items()}
    shapes = input_shapes(model, sizes)
    explicit = dict(getattr(model, "domain", None) or {})
    inferred = inferred_domain(model)
    inverted = _inverted(model)
    free = [s for s in model.inputs if str(s) not in fixed]
    attempts = [(draw, True) for draw in _STRATEGIES]
    if any(str(s) in inferred and str(s) not in explicit for s in free):
        attempts += [(draw, False) for draw in _STRATEGIES]
    if not free:
        attempts = attempts[:1]
    fallback = None
    for draw, use_inferred in attempts:
        inputs = dict(fixed)
        for s in free:
            name = str(s)
            interval = explicit.get(name) or (inferred.get(name) if use_inferred else None)
            if interval is not None:
                assumed = _assumed(s)
                if assumed is not None and name not in explicit:
                    lo, hi = max(interval[0], assumed[0]), min(interval[1], assumed[1])
                    interval = (lo, hi) if lo < hi else None
            if interval is not None:
                v = _draw_interval(rng, shapes[name], *interval)
            else:
                v = _respect_assumptions(s, draw(rng, shapes[name]))
                if name in inverted:
                    v = _dominant(v)
            inputs[name] = np.asarray(v, dtype=np.float64)
        verdict = _domain(model, inputs)
        if verdict == "clean":
            break
        if verdict == "warned" and fallback is None:
            fallback = inputs
    else:
        if fallback is None:
            if not free:
                raise SymgradError(f"model {model.name}: the given inputs give a value or gradients "
                                   "that are not finite")
            raise SymgradError(f"model {model.name}: found no inputs where its value and gradients are "
                               f"finite (tried {len(attempts)} value ranges); say where it is defined "
                               "with Model(..., domain={symbol: (lo, hi)}) or give inputs "
                               "(--check-inputs FILE.npz)")
        inputs = fallback
    return {k: v.astype(dtype) for k, v in inputs.items()}


# -- user-supplied inputs ----------------------------------------------------------------------------
def load_inputs(path) -> dict:
    """The arrays of the ``.npz`` file at ``path`` (name -> array); SymgradError when it cannot be read."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SymgradError(f"{path}: no such inputs file")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - whatever NumPy says about a file that is not an .npz
        raise SymgradError(f"{path}: cannot read it as an .npz file of inputs ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise SymgradError(f"{path}: holds one array, not named inputs; write it with numpy.savez(path, x=..., ...)")
    try:
        with data:
            return {k: np.array(data[k]) for k in data.files}
    except Exception as exc:  # noqa: BLE001
        raise SymgradError(f"{path}: cannot read it as an .npz file of inputs ({type(exc).__name__}: {exc})") from None


def _as_real_array(model, name, v):
    if isinstance(v, (bool, int, float, np.integer, np.floating, np.bool_)):
        return np.asarray(float(v))
    a = np.asarray(v)
    if a.dtype.kind not in "biuf":
        raise SymgradError(f"model {model.name}: check input {name} has dtype {a.dtype}; inputs are real numbers")
    return np.array(a, dtype=np.float64)


def validate_inputs(model, given) -> dict:
    """``given`` (name -> array) as float64 arrays, after checking names, dtypes and shapes."""
    names = [str(s) for s in model.inputs]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise SymgradError(f"model {model.name}: check inputs name {', '.join(map(repr, unknown))}, "
                           f"which {'is' if len(unknown) == 1 else 'are'} not an input "
                           f"(inputs: {', '.join(names)})")
    out = {k: _as_real_array(model, k, given[k]) for k in names if k in given}
    dims = {}
    for s in model.inputs:
        if isinstance(s, sp.MatrixSymbol) and str(s) in out:
            shape = out[str(s)].shape
            if len(shape) != 2:
                raise SymgradError(f"model {model.name}: check input {s} must be 2-D with shape {s.shape}, "
                                   f"got shape {shape}")
            for d, n in zip(s.shape, shape):
                d = sp.sympify(d)
                if d.is_Integer and int(d) != n or d.is_Symbol and dims.setdefault(str(d), n) != n:
                    raise SymgradError(f"model {model.name}: check input {s} has shape {shape}, which "
                                       f"disagrees with {s.shape} (dimensions so far: {dims})")
    scalars = [np.shape(out[str(s)]) for s in model.inputs if not isinstance(s, sp.MatrixSymbol) and str(s) in out]
    try:
        np.broadcast_shapes(*scalars)
    except ValueError:
        raise SymgradError(f"model {model.name}: the scalar check inputs have shapes {scalars}, which do not "
                           "broadcast together") from None
    return out


def resolve_inputs(model, given, rng) -> dict:
    """The given inputs (validated) plus inputs drawn for the ones missing, in the model's domain."""
    out = validate_inputs(model, given)
    sizes = {}
    for s in model.inputs:
        if isinstance(s, sp.MatrixSymbol) and str(s) in out:
            for d, n in zip(s.shape, out[str(s)].shape):
                if sp.sympify(d).is_Symbol:
                    sizes[str(d)] = n
    scalars = [np.shape(out[str(s)]) for s in model.inputs if not isinstance(s, sp.MatrixSymbol) and str(s) in out]
    if not _has_matrices(model) and scalars:
        shape = np.broadcast_shapes(*scalars)
        sizes.update({str(s): shape for s in model.inputs if str(s) not in out})
    return sample_inputs(model, rng, sizes=sizes, fixed=out)


# -- the report --------------------------------------------------------------------------------------
@dataclass
class CheckReport:
    """Largest relative errors seen by :func:`check`; ``ok`` when every comparison is within tolerance."""
    model: str
    target: str
    trials: int
    rtol: float
    fd_rtol: float
    value_err: float = 0.0
    max_rel_err_tape: float = 0.0
    max_rel_err_fd: float = 0.0
    float32_ok: bool = True
    derivatives: dict = field(default_factory=dict)  # function -> largest relative error (beyond the gradient)
    dot_products: dict = field(default_factory=dict)  # "jvp/vjp", "hvp" -> largest error of the dot-product test
    problems: list = field(default_factory=list)
    calls: list = field(default_factory=list)     # the ways of calling the module that were checked
    notes: list = field(default_factory=list)     # what was skipped, and why
    _ways: dict = field(default_factory=dict, repr=False, compare=False)
    _pos: dict = field(default_factory=dict, repr=False, compare=False)
    _worst: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, text: str, how: str = "") -> None:
        """Record a problem once; seen again under another way of calling the module (``how``), the
        same line names that way too."""
        ways = self._ways.get(text)
        if ways is None:
            if text in self.problems:
                return
            ways = self._ways[text] = []
            self._pos[text] = len(self.problems)
            self.problems.append(text)
        if how in ways:
            return
        ways.append(how)
        shown = [w for w in ways if w]
        line = text + (f" ({'also ' if '' in ways else ''}{'; '.join(shown)})" if shown else "")
        self.problems[self._pos[text]] = line

    def error(self, what: str, against: str, err: float, tol: str, detail: str = "") -> None:
        """Record ``<what>: relative error vs <against> <err> > <tol> <detail>``: one line per ``what``
        and ``against``, the one with the largest error."""
        line = f"{what}: relative error {'vs ' + against + ' ' if against else ''}{err:.1e} > {tol}{detail}"
        key = (what, against)
        old = self._worst.get(key)
        if old is None:
            self._worst[key] = (err, len(self.problems))
            self.problems.append(line)
        elif err > old[0]:
            self._worst[key] = (err, old[1])
            self.problems[old[1]] = line

    def summary(self) -> str:
        ways = f", {len(self.calls)} ways of calling" if self.calls else ""
        errs = (f"value {self.value_err:.1e}, vs tape {self.max_rel_err_tape:.1e}, "
                f"vs finite differences {self.max_rel_err_fd:.1e}, "
                f"float32 {'ok' if self.float32_ok else 'FAILED'} ({self.trials} trials{ways})")
        if self.derivatives:
            errs += "; " + ", ".join(f"{fn} {err:.1e}" for fn, err in self.derivatives.items())
        if self.dot_products:
            errs += "; dot products " + ", ".join(f"{fn} {err:.1e}" for fn, err in self.dot_products.items())
        head = f"{self.model} [{self.target}]: largest relative errors: {errs}"
        if self.ok:
            return f"ok {head}"
        more = f" (+{len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        return f"FAILED {head}; {self.problems[0]}{more}"


def rel_err(got, want, floor=FLOOR) -> float:
    """``max|got - want| / max(|want|, |got|, floor)``; inf when shapes or non-finite entries differ."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return float("inf")
    fin_g, fin_w = np.isfinite(got), np.isfinite(want)
    if not np.array_equal(fin_g, fin_w) or not np.array_equal(got[~fin_g], want[~fin_w], equal_nan=True):
        return float("inf")
    if not fin_g.any():
        return 0.0
    got, want = got[fin_g], want[fin_w]
    scale = max(np.max(np.abs(want)), np.max(np.abs(got)), floor)
    return float(np.max(np.abs(got - want)) / scale)


def _maxabs(a) -> float:
    a = np.asarray(a, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(np.max(np.abs(a))) if a.size else 0.0


# -- calling the module ------------------------------------------------------------------------------
_NUMBER = (bool, int, float)
_byte_bounds = getattr(getattr(np.lib, "array_utils", None), "byte_bounds", None) or np.byte_bounds


def _torch_arrays():
    """What the runner calls of an array module, for torch tensors (on the GPU where there is one)."""
    import types

    import torch
    device = "cuda" if torch.cuda.is_available() else "cpu"

    def shares_memory(a, b):  # one storage: the same memory for the check's purposes
        return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr() and a.numel() and b.numel()
    return types.SimpleNamespace(array=lambda v: torch.from_numpy(np.array(v)).to(device), ndarray=torch.Tensor,
                                 asnumpy=lambda x: x.detach().cpu().numpy(), shares_memory=shares_memory)


class _Runner:
    """Calls the module on host values, moving arrays to the GPU and back for the cupy target.  Every
    call gets fresh copies of the arrays, so a module that writes into its inputs cannot spoil the
    check's own."""

    def __init__(self, module):
        self.module = module
        self.xp = None
        if getattr(module, "TARGET", "numpy") == "cupy":
            import cupy
            self.xp = cupy
        elif getattr(module, "TARGET", "numpy") == "torch":
            self.xp = _torch_arrays()

    def device(self, v):
        if isinstance(v, _NUMBER):
            return v
        return self.xp.array(v) if self.xp is not None else np.array(v)

    def host(self, x):
        if self.xp is not None and not isinstance(x, (np.ndarray, np.generic) + _NUMBER):
            x = self.xp.asnumpy(x)
        return np.asarray(x)

    def fsum(self, inputs):
        """``(sum(forward), sum(|forward|))`` in float64, for finite differences."""
        out = self.host(self.module.forward(**{k: self.device(v) for k, v in inputs.items()}))
        out = out.astype(np.float64)
        return float(np.sum(out)), float(np.sum(np.abs(out)))

    def is_array(self, x) -> bool:
        return isinstance(x, np.ndarray) or (self.xp is not None and isinstance(x, getattr(self.xp, "ndarray", ())))

    def shares(self, a, b) -> bool:
        if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
            if not np.may_share_memory(a, b):
                return False
            try:
                return bool(np.shares_memory(a, b, max_work=100_000))
            except np.exceptions.TooHardError:
                return True
        fn = getattr(self.xp, "shares_memory", None) if self.xp is not None else None
        if fn is None or not (self.is_array(a) and self.is_array(b)):
            return False
        try:
            return bool(fn(a, b))
        except Exception:  # noqa: BLE001 - a check CuPy cannot do is not a failure
            return False

    def sharing(self, arrays) -> list:
        """Pairs ``(i, j)``, ``i < j``, of ``arrays`` that share memory.  NumPy arrays are sorted by
        their byte bounds first, so only overlapping ones are compared (a model with hundreds of
        inputs and gradients stays cheap)."""
        spans, others = [], []
        for i, a in enumerate(arrays):
            if isinstance(a, np.ndarray):
                if a.size:
                    lo, hi = _byte_bounds(a)
                    spans.append((lo, hi, i))
            elif self.is_array(a):
                others.append(i)
        spans.sort()
        pairs, active = [], []
        for lo, hi, i in spans:
            active = [(h, j) for h, j in active if h > lo]
            pairs += [(min(i, j), max(i, j)) for _, j in active if self.shares(arrays[i], arrays[j])]
            active.append((hi, i))
        for i in others:
            pairs += [(min(i, j), max(i, j)) for j in range(len(arrays)) if j != i and (j not in others or j > i)
                      and self.shares(arrays[i], arrays[j])]
        return sorted(set(pairs))

    @staticmethod
    def writable(a) -> bool:
        flags = getattr(a, "flags", None)
        return bool(getattr(flags, "writeable", True)) if flags is not None else True


def _same(a, b) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")


@dataclass
class _Call:
    """One call's results: ``items`` are (label, raw returned object); ``value``/``grads`` on the
    host, and ``parts`` every returned part after the value (label -> host array or dict)."""
    items: list
    value: np.ndarray
    grads: dict | None
    parts: dict = field(default_factory=dict)


# what each function returns after the value (kinds.Kind.returns): one label per part; a dict
# part is keyed by name unless the kind says it is single
_KIND_OF = {k.function_name: k for k in KINDS.values()}


class _Ctx:
    def __init__(self, model, module, report, rng, fd_rtol):
        self.model, self.module, self.report, self.rng, self.fd_rtol = model, module, report, rng, fd_rtol
        self.run = _Runner(module)
        self.wrt = [str(w) for w in model.wrt]
        # finite differences draw from their own generator: how many directions a trial takes (it
        # depends on the machine's speed) never changes the inputs of the next trial
        self.fd_rng = np.random.default_rng(int(rng.integers(2 ** 63)))

    # one call, with the properties every call must have
    def call(self, fn, inputs, how="", seed=None) -> _Call | None:
        """Call ``fn`` (``seed``: its first argument, an array or a dict of arrays, for vjp, jvp,
        hvp) and check what every call must do: leave its arguments as they were, return owned
        arrays of real numbers in the parts the README lists."""
        run, report = self.run, self.report
        args = {k: run.device(v) for k, v in inputs.items()}
        first = () if seed is None else ({k: run.device(v) for k, v in seed.items()} if isinstance(seed, dict)
                                         else run.device(seed),)
        seeds = {} if seed is None else ({f"{fn} argument [{k!r}]": v for k, v in first[0].items()}
                                         if isinstance(seed, dict) else {f"{fn} argument": first[0]})
        before = {k: np.array(run.host(a)) for k, a in {**args, **seeds}.items() if not isinstance(a, _NUMBER)}
        try:
            with np.errstate(all="ignore"):
                out = getattr(self.module, fn)(*first, **args)
        except Exception as exc:  # noqa: BLE001 - a crashing module is a failed check, not a crash of the checker
            # NumPy's linalg raises at a singular matrix where other functions give inf/nan (a
            # module never raises those: ZeroDivisionError from Python floats is a bug)
            if isinstance(exc, np.linalg.LinAlgError) and _domain(self.model, _as_f64(inputs)) != "clean":
                report.notes.append(f"{how or fn}: skipped ({fn} raised {type(exc).__name__} where the "
                                    "tape is not finite either: outside the model's domain)")
            else:
                report.problem(f"{fn} raised {type(exc).__name__}: {exc}", how)
            return None
        changed = [k for k, a in before.items() if not _same(run.host({**args, **seeds}[k]), a)]
        if changed:
            report.problem(f"{fn} modified its inputs in place: {', '.join(changed)}", how)
        kind = _KIND_OF.get(fn)
        labels, single = (kind.returns, kind.single) if kind else ((), ())
        if fn == "forward":
            items, parts = [("value", out)], {}
        else:
            try:
                value, *rest = out
                if len(rest) != len(labels):
                    raise ValueError
                parts = {label: dict(p) if label not in single else p for label, p in zip(labels, rest)}
            except (TypeError, ValueError):
                want = ", ".join(("value",) + tuple(f"{{{lb}s}}" if lb not in single else lb for lb in labels))
                report.problem(f"{fn} returned {type(out).__name__}, expected ({want})", how)
                return None
            items = [("value", value)]
            for label, p in parts.items():
                items += [(f"{label} of {k}", g) for k, g in p.items()] if isinstance(p, dict) else [(label, p)]
        self._ownership(fn, items, {**args, **seeds}, how)
        try:
            host = [run.host(obj) for _, obj in items]
        except Exception as exc:  # noqa: BLE001
            report.problem(f"{fn} returned something that is not an array: {type(exc).__name__}: {exc}", how)
            return None
        odd = [f"{what} ({h.dtype})" for (what, _), h in zip(items, host) if h.dtype.kind not in "biuf"]
        if odd:
            report.problem(f"{fn} returned non-real values: {', '.join(odd)}", how)
            return None
        by_label, k = {}, 1
        for label, p in parts.items():
            if isinstance(p, dict):
                by_label[label] = dict(zip(p, host[k:k + len(p)]))
                k += len(p)
            else:
                by_label[label], k = host[k], k + 1
        return _Call(items, host[0], by_label.get("grad"), by_label)

    def _ownership(self, fn, items, args, how):
        """Returned arrays are writable, and views of no input nor of each other."""
        run, report = self.run, self.report
        outs = [(what, a) for what, a in items if run.is_array(a)]
        for what, a in outs:
            if not run.writable(a):
                report.problem(f"{fn} returned a read-only array as its {what}", how)
        ins = [(k, a) for k, a in args.items() if run.is_array(a)]
        for i, j in run.sharing([a for _, a in outs] + [a for _, a in ins]):
            if j < len(outs):
                report.problem(f"{fn} returned arrays that share memory: its {outs[i][0]} and its {outs[j][0]}", how)
            elif i < len(outs):
                report.problem(f"{fn} returned a view of input {ins[j - len(outs)][0]} as its {outs[i][0]}", how)

    def later_calls(self, first_vag, first_fwd, inputs):
        """Results must not be work arrays that a later call overwrites or hands out again."""
        run, report = self.run, self.report
        kept = [(fn, what, obj, np.array(run.host(obj)))
                for fn, c in (("value_and_grad", first_vag), ("forward", first_fwd)) if c is not None
                for what, obj in c.items if run.is_array(obj)]
        again = [c for c in (self.call("value_and_grad", inputs, "called again"),
                             self.call("forward", inputs, "called again")) if c is not None]
        later = [obj for c in again for _, obj in c.items if run.is_array(obj)]
        shared = {i for i, j in run.sharing([obj for _, _, obj, _ in kept] + later) if i < len(kept) <= j}
        for i, (fn, what, obj, copy) in enumerate(kept):
            if not _same(run.host(obj), copy):
                report.problem(f"{fn}'s {what} changed when the module was called again (it is a work "
                               "array of the module, not the caller's)")
            elif i in shared:
                report.problem(f"{fn}'s {what} shares memory with what a later call returned (a work "
                               "array of the module, not the caller's)")


# -- comparisons -------------------------------------------------------------------------------------
def _grad_floor(want_value, want_grads, floor) -> float:
    scale = max([1.0, _maxabs(want_value)] + [_maxabs(g) for g in want_grads.values()])
    return floor * scale


def _check_dtypes(value, grads, dtype, report, label=None) -> bool:
    """Inputs of one float dtype must give value and gradients of that dtype."""
    bad = [f"value ({value.dtype})"] if value.dtype != dtype else []
    bad += [f"grad of {k} ({g.dtype})" for k, g in grads.items() if g.dtype != dtype]
    if bad:
        name = np.dtype(dtype).name
        head = f"{name} inputs gave" if label is None else f"{label}: gave"
        report.problem(f"{head} non-{name} " + ", ".join(bad))
    return not bad


def _compare(ctx, inputs, got, fwd, want_value, want_grads, *, how, rtol, floor, main):
    """Value and gradients of one call against the tape; problems prefixed with ``how``."""
    report = ctx.report
    pre = f"{how}: " if how else ""
    value, grads = got.value, got.grads
    vfloor = floor * max(1.0, _maxabs(want_value))
    err = rel_err(value, want_value, floor=vfloor)
    if fwd is not None:
        err = max(err, rel_err(fwd.value, value, floor=vfloor))
    if main:
        report.value_err = max(report.value_err, err)
    if err > rtol:
        report.error(f"{pre}value", "", err, f"rtol {rtol:g}", f" (shapes: module {np.shape(value)}, forward "
                     f"{np.shape(fwd.value) if fwd else '?'}, tape {np.shape(want_value)})")
    if sorted(grads) != sorted(ctx.wrt):
        report.problem(f"grads has keys {sorted(grads)}, expected {sorted(ctx.wrt)}")
    gfloor = _grad_floor(want_value, want_grads, floor)
    ok = {}
    for name in ctx.wrt:
        if name not in grads:
            continue
        g = grads[name]
        if np.shape(g) != np.shape(inputs[name]):
            report.problem(f"{pre}grad of {name} has shape {np.shape(g)}, input has shape {np.shape(inputs[name])}")
            if main:
                report.max_rel_err_tape = report.max_rel_err_fd = float("inf")
            continue
        err = rel_err(g, want_grads[name], floor=gfloor)
        if main:
            report.max_rel_err_tape = max(report.max_rel_err_tape, err)
        if err > rtol:
            report.error(f"{pre}grad of {name}", "tape", err, f"rtol {rtol:g}")
        ok[name] = g
    return ok


def _as_f64(inputs) -> dict:
    return {k: np.asarray(v, dtype=np.float64) for k, v in inputs.items()}


def _tape(model, inputs):
    with np.errstate(all="ignore"):
        return tape.value_and_grad(model, **_as_f64(inputs))


# -- finite differences ------------------------------------------------------------------------------
def _step_scale(x):
    """Per-entry step scale: the entry's magnitude, at least a tenth of the input's rms (1 for zeros)."""
    rms = float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0
    return np.maximum(np.abs(x), 0.1 * rms if rms > 0 else 1.0)


class _FD:
    def __init__(self, ctx, inputs, grads):
        self.ctx, self.inputs = ctx, {k: np.asarray(v, dtype=np.float64) for k, v in inputs.items()}
        self.grads = grads
        start = time.perf_counter()
        self.f0, self.F = ctx.run.fsum(self.inputs)
        self.seconds = time.perf_counter() - start      # one forward call: sizes the FD budget
        self.sigma = {k: _step_scale(self.inputs[k]) for k in grads}
        # rounding noise of one evaluation of sum(forward): at least 32 eps sum|value|, and at least
        # 8 x what steps too small to change the value (1e-11 of each entry) show: a value that
        # cancels (sin(x)**2 + cos(x)**2 - 1) is far noisier than its own size says
        u = {k: ctx.fd_rng.standard_normal(g.shape) * self.sigma[k] for k, g in grads.items()}
        dot = sum(float(np.sum(grads[k] * u[k])) for k in grads)
        delta = 1e-11
        up = ctx.run.fsum({**self.inputs, **{k: self.inputs[k] + delta * u[k] for k in u}})[0]
        down = ctx.run.fsum({**self.inputs, **{k: self.inputs[k] - delta * u[k] for k in u}})[0]
        seen = max(abs(up - down - 2 * delta * dot), abs(up + down - 2 * self.f0)) / 2
        self.eps_f = max(FD_NOISE * self.F, 8 * seen) if math.isfinite(seen) else FD_NOISE * self.F

    def slope(self, dirs, h, richardson):
        def central(h):
            up, down = dict(self.inputs), dict(self.inputs)
            for k, u in dirs.items():
                up[k], down[k] = self.inputs[k] + h * u, self.inputs[k] - h * u
            return (self.ctx.run.fsum(up)[0] - self.ctx.run.fsum(down)[0]) / (2 * h)
        d1 = central(h)
        return (4 * central(h / 2) - d1) / 3 if richardson else d1

    def error(self, dirs, dot, scale, xg) -> float:
        """Smallest error over the step ladder of the directional derivative along ``dirs`` (name ->
        direction) against ``dot``, beyond the expected rounding noise, relative to ``scale`` (and
        never to less than FLOOR times the whole gradient's scale along ``dirs``)."""
        scale = max(scale, self.floor * math.sqrt(sum(float(np.sum(np.square(u))) for u in dirs.values())))
        noise0 = self.eps_f + FD_NOISE * xg
        best = float("inf")
        for h, richardson in FD_LEVELS:
            with np.errstate(all="ignore"):
                fd = self.slope(dirs, h, richardson)
            if not math.isfinite(fd):
                continue
            noise = noise0 / h * (3.0 if richardson else 1.0)
            excess = max(0.0, abs(fd - dot) - noise)
            den = max(scale, abs(fd), abs(dot))
            best = min(best, excess / den if den > 0 else (0.0 if excess == 0 else float("inf")))
            if best <= self.ctx.fd_rtol:
                break
        return best


def _fd_check(ctx, inputs, grads, gscale):
    """Finite differences of sum(forward) against ``grads`` (the wrt inputs with the right shapes);
    ``gscale``: the scale of the whole gradient (and value), for the floor of the errors."""
    report, rng = ctx.report, ctx.fd_rng
    grads = {k: np.asarray(g, dtype=np.float64) for k, g in grads.items()}
    if not grads or not all(np.all(np.isfinite(g)) for g in grads.values()):
        return
    try:
        with np.errstate(all="ignore"):
            fd = _FD(ctx, inputs, grads)
        fd.floor = FLOOR * gscale
        if not (math.isfinite(fd.f0) and math.isfinite(fd.F)):
            report.problem("forward is not finite at the inputs of the finite differences")
            return
        x, s = fd.inputs, fd.sigma
        # forward calls at the first step of the ladder: fewer where one call is slow
        calls = int(min(FD_MAX_CALLS, max(FD_MIN_CALLS, FD_SECONDS / max(fd.seconds, 1e-9))))
        n_dir = min(FD_DIRECTIONS, max(1, (calls - 2) // 4))
        budget = min(FD_ENTRIES, max(1, (calls - 2 - 2 * min(n_dir, len(grads))) // 2))

        def record(err, text, detail=""):
            report.max_rel_err_fd = max(report.max_rel_err_fd, err)
            if err > ctx.fd_rtol:
                report.error(text, "finite differences", err, f"{ctx.fd_rtol:g}", detail)

        # one direction through every wrt input: relative to the whole gradient
        dirs = {k: rng.standard_normal(g.shape) * s[k] for k, g in grads.items()}
        contrib = np.concatenate([(grads[k] * u).ravel() for k, u in dirs.items()])
        xg = sum(float(np.sum(np.abs(x[k] * g))) for k, g in grads.items())
        if len(grads) > 1:
            record(fd.error(dirs, float(np.sum(contrib)), float(np.linalg.norm(contrib)), xg),
                   f"gradient along a random direction in all of {', '.join(grads)}")
        # one direction per input: relative to that input's gradient
        names = list(grads)
        order = [names[i] for i in rng.permutation(len(names))]
        for k in order[:n_dir]:
            c = grads[k] * dirs[k]
            record(fd.error({k: dirs[k]}, float(np.sum(c)), float(np.linalg.norm(c)),
                            float(np.sum(np.abs(x[k] * grads[k])))), f"grad of {k}")
        # entry by entry for small inputs: relative to that input's largest entry
        for k in order:
            g = grads[k]
            if g.size > FD_FULL_MAX or g.size > budget or g.size == 0:
                continue
            budget -= g.size
            scale = float(np.max(np.abs(g * s[k])))
            worst, where = 0.0, None
            for idx in np.ndindex(g.shape):
                e = np.zeros(g.shape)
                e[idx] = s[k][idx]
                err = fd.error({k: e}, float(g[idx] * s[k][idx]), scale, float(abs(x[k][idx] * g[idx])))
                if err > worst:
                    worst, where = err, idx
            at = f" (worst at entry {where})" if where is not None and g.ndim else ""
            record(worst, f"grad of {k}, entry by entry", at)
    except Exception as exc:  # noqa: BLE001
        report.problem(f"finite differences of forward raised {type(exc).__name__}: {exc}")


# -- beyond the gradient ------------------------------------------------------------------------------
JAC_EXACT_MAX = 256   # a value of at most this many entries is checked against the tape's whole Jacobian


class _Env:
    """What the checks of one trial share: the inputs, a random cotangent ``u`` and direction
    ``t``, the tape's results (each computed once, when a check first asks), and ``compare``."""

    def __init__(self, ctx, inputs, want_value, want_grads):
        self.ctx, self.inputs, self.want_value, self.want_grads = ctx, inputs, want_value, want_grads
        self.model, self.report, self.wrt = ctx.model, ctx.report, ctx.wrt
        self.x = {k: np.asarray(v, dtype=np.float64) for k, v in inputs.items()}
        self.u = ctx.fd_rng.standard_normal(np.shape(want_value))
        self.t = {k: ctx.fd_rng.standard_normal(np.shape(self.x[k])) for k in self.wrt}
        self.exact = np.size(want_value) <= JAC_EXACT_MAX
        self._memo = {}

    def once(self, key, make):
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def jacobian(self):
        """The tape's Jacobian (a value of at most JAC_EXACT_MAX entries), else None."""
        return self.once("J", lambda: tape.jacobian(self.model, **self.x)[1] if self.exact else None)

    def vjp_u(self):
        """The tape's u^T J, for a larger value."""
        return self.once("uJ", lambda: None if self.exact else tape.vjp(self.model, self.u, **self.x)[1])

    def hvp_t(self):
        """The tape's H t (central differences of its gradient) and the floor of errors in it."""

        def make():
            hv = tape.hvp(self.model, self.t, **self.x)[2]
            floor = FLOOR * max([1.0] + [_maxabs(self.want_grads[k]) * _maxabs(self.t[k]) for k in self.wrt]
                                + [_maxabs(h) for h in hv.values()])
            return hv, floor
        return self.once("Ht", make)

    def compare(self, fn, what, got, want, tol, floor, against="tape"):
        report = self.report
        if isinstance(want, dict):
            if got is None or sorted(got) != sorted(want):
                report.problem(f"{fn}: {what} has keys {sorted(got or {})}, expected {sorted(want)}")
                return
            for k in want:
                self.compare(fn, f"{what} of {k}", got[k], want[k], tol, floor, against)
            return
        if np.shape(got) != np.shape(want):
            report.problem(f"{fn}: {what} has shape {np.shape(got)}, expected {np.shape(want)}")
            report.derivatives[fn] = float("inf")
            return
        err = rel_err(got, want, floor=floor)
        report.derivatives[fn] = max(report.derivatives.get(fn, 0.0), err)
        if err > tol:
            report.error(f"{fn}: {what}", against, err, f"rtol {tol:g}")

    def common(self, fn, c):
        """The value, and the gradient of sum(value) a function returns beside its own part."""
        report, want_value, want_grads = self.report, self.want_value, self.want_grads
        self.compare(fn, "value", c.value, want_value, report.rtol, FLOOR * max(1.0, _maxabs(want_value)))
        if "grad" in c.parts and fn != "vjp":  # the gradient of sum(value), beside H v
            self.compare(fn, "grad", c.grads, want_grads, report.rtol, _grad_floor(want_value, want_grads, FLOOR))


def _derivative_checks(ctx, inputs, want_value, want_grads):
    """Every function of the module's DERIVATIVES beyond value_and_grad, at ``inputs``, checked
    against the tape by its kind's check (``kinds.Kind.check``, the ``_check_<kind>`` below)."""
    have = [d for d in getattr(ctx.module, "DERIVATIVES", ("grad",)) if d != "grad"]
    if not have:
        return
    env = _Env(ctx, inputs, want_value, want_grads)
    with np.errstate(all="ignore"):
        for d in have:
            if d in KINDS and KINDS[d].check:
                KINDS[d].checker()(env)


def _check_vjp(env):
    """vjp with a random cotangent against the tape's exact VJP."""
    if (c := env.ctx.call("vjp", env.inputs, seed=env.u)) is not None:
        env.common("vjp", c)
        _, tg = tape.vjp(env.model, env.u, **env.x)
        env.compare("vjp", "grad", c.grads, tg, env.report.rtol, _grad_floor(env.want_value, tg, FLOOR))


def _check_jvp(env):
    """jvp against the tape's Jacobian, or, for a value of more than JAC_EXACT_MAX entries,
    through a random cotangent u (``u . J t == tape_vjp(u) . t``)."""
    report, t, wrt, want_value = env.report, env.t, env.wrt, env.want_value
    if (c := env.ctx.call("jvp", env.inputs, seed=t)) is None:
        return
    env.common(fn := "jvp", c)
    got = c.parts["tangent"]
    if env.exact:
        J = env.jacobian()
        want = sum((np.tensordot(J[k], t[k], axes=t[k].ndim) for k in wrt), np.zeros(np.shape(want_value)))
        env.compare(fn, "tangent", got, want, report.rtol, FLOOR * max(1.0, _maxabs(want)))
    elif np.shape(got) != np.shape(want_value):
        report.problem(f"jvp: tangent has shape {np.shape(got)}, expected {np.shape(want_value)}")
    else:
        ut = env.vjp_u()
        dot = sum(float(np.sum(ut[k] * t[k])) for k in wrt)
        env.compare(fn, "u . tangent", float(np.sum(env.u * got)), dot, report.rtol,
                    FLOOR + float(np.linalg.norm(env.u) * np.linalg.norm(got)) * report.rtol)


def _check_jacobian(env):
    """jacobian against the tape's Jacobian, or through a random cotangent (as jvp)."""
    if (c := env.ctx.call("jacobian", env.inputs)) is None:
        return
    env.common(fn := "jacobian", c)
    got, u = c.parts["jacobian"], env.u
    if env.exact:
        J = env.jacobian()
        env.compare(fn, "jacobian", got, J, env.report.rtol, _grad_floor(env.want_value, J, FLOOR))
    else:
        ut = env.vjp_u()
        contracted = {k: np.tensordot(u, got[k], axes=u.ndim) for k in got}
        env.compare(fn, "u . jacobian", contracted, ut, env.report.rtol, _grad_floor(env.want_value, ut, FLOOR))


def _check_hvp(env):
    """hvp against central differences of the tape's exact gradient (``tape.hvp``)."""
    if (c := env.ctx.call("hvp", env.inputs, seed=env.t)) is not None:
        env.common(fn := "hvp", c)
        hv, hfloor = env.hvp_t()
        env.compare(fn, "hvp", c.parts["hvp"], hv, env.ctx.fd_rtol, hfloor, "finite differences of the tape's gradient")


def _check_hessian(env):
    """hessian: its blocks' shapes, its symmetry, and times a random direction against
    ``tape.hvp``."""
    report, wrt, x, t = env.report, env.wrt, env.x, env.t
    if (c := env.ctx.call("hessian", env.inputs)) is None:
        return
    env.common(fn := "hessian", c)
    H, pairs = c.parts["hessian"], [(a, b) for a in wrt for b in wrt]
    if sorted(H) != sorted(pairs):
        report.problem(f"hessian: blocks {sorted(H)}, expected {pairs}")
        return
    shapes = {k: np.shape(x[k]) for k in wrt}
    for a, b in pairs:
        if np.shape(H[a, b]) != shapes[a] + shapes[b]:
            report.problem(f"hessian: block {(a, b)} has shape {np.shape(H[a, b])}, "
                           f"expected {shapes[a] + shapes[b]}")
            return
    asym = max(rel_err(H[a, b].reshape(x[a].size, x[b].size), H[b, a].reshape(x[b].size, x[a].size).T)
               for a, b in pairs)
    if asym > 1e-12:
        report.error("hessian", "its transpose", asym, "1e-12")
    Ht = {a: sum(np.tensordot(H[a, b], t[b], axes=t[b].ndim) if t[b].ndim else H[a, b] * t[b]
                 for b in wrt) for a in wrt}
    hv, hfloor = env.hvp_t()
    env.compare(fn, "hessian times a direction", Ht, hv, env.ctx.fd_rtol, hfloor,
                "finite differences of the tape's gradient")


def _dot_products(ctx, inputs):
    """The dot-product test (autograd's and PyTorch's fast gradcheck): for random ``u``, ``v``, ``w``,
    ``<v, J u>`` from ``jvp`` equals ``<J^T v, u>`` from ``vjp`` (from ``value_and_grad``, ``v`` all
    ones, where the module has no ``vjp``), and ``<w, H v>`` equals ``<v, H w>`` from two ``hvp``
    calls.  The module against itself, exact up to rounding: no tape, no finite differences, so it
    catches a wrong tangent rule however the tape is built.  Errors are relative to the
    Cauchy-Schwarz bound of the two sides (``||v|| ||J u|| + ||J^T v|| ||u||``), at least FLOOR x
    ``||u|| ||v||`` x the gradient's scale; they go to ``CheckReport.dot_products``."""
    have, report, rng = getattr(ctx.module, "DERIVATIVES", ("grad",)), ctx.report, ctx.fd_rng
    x = _as_f64(inputs)

    def vec():
        return {k: rng.standard_normal(np.shape(x[k])) for k in ctx.wrt}

    def dot(a, b):
        return sum(float(np.sum(np.asarray(a[k], np.float64) * b[k])) for k in b)

    def norm(a):
        return math.sqrt(dot(a, a))

    def record(name, what, against, lhs, rhs, bound, scale):
        err = abs(lhs - rhs) / max(bound, FLOOR * scale)
        report.dot_products[name] = max(report.dot_products.get(name, 0.0), err)
        if err > report.rtol:
            report.error(f"dot-product test: {what}", against, err, f"rtol {report.rtol:g}")

    def by_input(c, part):
        """``c``'s ``part``, a dict shaped like the wrt inputs, else None (the comparisons with the
        tape report a wrong key or shape)."""
        d = None if c is None else c.parts.get(part)
        fits = isinstance(d, dict) and sorted(d) == sorted(ctx.wrt) and all(
            np.shape(d[k]) == np.shape(x[k]) for k in ctx.wrt)
        return d if fits else None

    if "jvp" in have and (jv := ctx.call("jvp", x, seed=(u := vec()))) is not None:
        v = rng.standard_normal(np.shape(jv.value)) if "vjp" in have else np.ones(np.shape(jv.value))
        jtv = by_input(ctx.call("vjp", x, seed=v) if "vjp" in have else ctx.call("value_and_grad", x), "grad")
        ju, v = {"": jv.parts["tangent"]}, {"": v}
        if jtv is not None and np.shape(ju[""]) == np.shape(v[""]):
            record("jvp/vjp", "<v, jvp(u)>", f"<{'vjp(v)' if 'vjp' in have else 'grad'}, u>", dot(ju, v),
                   dot(jtv, u), norm(v) * norm(ju) + norm(jtv) * norm(u),
                   norm(u) * norm(v) * max([1.0] + [_maxabs(g) for g in jtv.values()]))
    if "hvp" in have:
        v, w = vec(), vec()
        hv, hw = by_input(ctx.call("hvp", x, seed=v), "hvp"), by_input(ctx.call("hvp", x, seed=w), "hvp")
        if hv is not None and hw is not None:
            record("hvp", "<w, hvp(v)>", "<v, hvp(w)>", dot(hv, w), dot(hw, v),
                   norm(w) * norm(hv) + norm(v) * norm(hw),
                   norm(v) * norm(w) * max([1.0] + [_maxabs(h) for h in (*hv.values(), *hw.values())]))


SPARSE_DENSE_MAX = 64  # sparse_hessian is compared entry by entry with the tape's up to this many variables


def _call_sparse(env, fn):
    """``module.fn(**inputs)``, its matrix checked to be a CSR matrix of real numbers (the last
    returned part), or None after a problem is reported."""
    try:
        with np.errstate(all="ignore"):
            out = getattr(env.ctx.module, fn)(**env.inputs)
    except Exception as exc:  # noqa: BLE001 - a crashing module is a failed check
        env.report.problem(f"{fn} raised {type(exc).__name__}: {exc}")
        return None
    M = out[-1]
    if getattr(M, "format", None) != "csr" or np.dtype(M.dtype).kind != "f":
        env.report.problem(f"{fn} returned {type(M).__name__} of {getattr(M, 'dtype', '?')}, expected a "
                           "scipy.sparse CSR matrix of floats")
        return None
    return out


def _check_pattern(env, fn, M, want, floor):
    """Every entry of ``want`` (the tape's dense matrix) larger than ``floor`` is stored in ``M``."""
    stored = np.zeros(M.shape, bool)
    coo = M.tocoo()
    stored[coo.row, coo.col] = True
    missing = np.argwhere((np.abs(want) > floor) & ~stored)
    if missing.size:
        env.report.problem(f"{fn}: the pattern misses {len(missing)} entries that are non-zero here, e.g. "
                           f"{tuple(int(v) for v in missing[0])} = {want[tuple(missing[0])]:.3g}")


def _check_sparse_jacobian(env):
    """sparse_jacobian: a CSR matrix (value.size, n) equal to the tape's exact Jacobian (for a
    value of at most JAC_EXACT_MAX entries; else through a random cotangent), whose pattern holds
    every entry that is non-zero at these inputs."""
    if (out := _call_sparse(env, fn := "sparse_jacobian")) is None:
        return
    value, J = out
    env.compare(fn, "value", np.asarray(value, dtype=np.float64), env.want_value, env.report.rtol,
                FLOOR * max(1.0, _maxabs(env.want_value)))
    n = sum(np.size(env.x[k]) for k in env.wrt)
    if J.shape != (np.size(env.want_value), n):
        env.report.problem(f"{fn}: J has shape {J.shape}, expected {(np.size(env.want_value), n)}")
        return
    if env.exact:
        want = tape.dense_jacobian(env.model, **env.x)[1]
        floor = FLOOR * max(1.0, _maxabs(want))
        env.compare(fn, "J", J.toarray(), want, env.report.rtol, floor)
        _check_pattern(env, fn, J, want, floor)
    else:
        ut = env.vjp_u()
        want = np.concatenate([np.ravel(ut[k]) for k in env.wrt])
        env.compare(fn, "u^T J", J.T @ env.u.ravel(), want, env.report.rtol, FLOOR * max(1.0, _maxabs(want)))


def _check_sparse_hessian(env):
    """sparse_hessian: a symmetric CSR matrix (n, n); times a random direction it is the tape's
    H t (differences of its exact gradient); up to SPARSE_DENSE_MAX variables, entry by entry the
    tape's dense Hessian, and its pattern holds every entry that is non-zero at these inputs."""
    if (out := _call_sparse(env, fn := "sparse_hessian")) is None:
        return
    value, grads, H = out
    c = _Call([], np.asarray(value, dtype=np.float64), {k: np.asarray(g, dtype=np.float64) for k, g in grads.items()},
              {"grad": grads})
    env.common(fn, c)
    n = sum(np.size(env.x[k]) for k in env.wrt)
    if H.shape != (n, n):
        env.report.problem(f"{fn}: H has shape {H.shape}, expected {(n, n)}")
        return
    if (H != H.T).nnz:
        env.report.problem(f"{fn}: H is not symmetric")
    hv, hfloor = env.hvp_t()
    t = np.concatenate([np.ravel(env.t[k]) for k in env.wrt] + [np.zeros(0)])
    want = np.concatenate([np.ravel(hv[k]) for k in env.wrt] + [np.zeros(0)])
    env.compare(fn, "H times a direction", H @ t, want, env.ctx.fd_rtol, hfloor,
                "finite differences of the tape's gradient")
    if n <= SPARSE_DENSE_MAX:
        dense = tape.dense_hessian(env.model, **env.x)[1]
        floor = env.ctx.fd_rtol * max(1.0, _maxabs(dense))
        env.compare(fn, "H", H.toarray(), dense, env.ctx.fd_rtol, floor, "finite differences of the tape's gradient")
        _check_pattern(env, fn, H, dense, floor)


# -- one trial and the ways of calling -------------------------------------------------------------
def _trial(ctx, inputs):
    report = ctx.report
    want_value, want_grads = _tape(ctx.model, inputs)
    got = ctx.call("value_and_grad", inputs)
    fwd = ctx.call("forward", inputs)
    if got is None or fwd is None:
        return
    ok = _compare(ctx, inputs, got, fwd, want_value, want_grads, how="", rtol=report.rtol,
                  floor=FLOOR, main=True)
    _check_dtypes(got.value, got.grads, np.float64, report)
    ctx.later_calls(got, fwd, inputs)
    _fd_check(ctx, inputs, ok, _grad_floor(want_value, want_grads, 1.0))
    _derivative_checks(ctx, inputs, want_value, want_grads)
    _dot_products(ctx, inputs)


def _first(v):
    """The first entry of an array (along every axis), so that broadcast inputs stay consistent."""
    v = np.asarray(v, dtype=np.float64)
    return float(v[(0,) * v.ndim]) if v.size else 0.0


def _integer_inputs(model, scalars, arrays):
    """Integer inputs in the model's domain near the given ones, or None."""
    base = {**scalars, **arrays}

    def nonzero_round(v):
        r = np.round(v)
        return np.where(r == 0, np.sign(v), r)

    for rounding in (nonzero_round, np.round, np.trunc, np.ceil, np.floor):
        cand = {k: np.asarray(rounding(np.asarray(v, dtype=np.float64))) for k, v in base.items()}
        if _domain(model, cand) == "clean":
            passed = {k: int(cand[k]) for k in scalars} | {k: cand[k].astype(np.int64) for k in arrays}
            if scalars and not arrays:  # an integer array among the Python ints
                first = next(iter(scalars))
                passed[first] = cand[first].astype(np.int64)
            return passed, cand
    return None


def _ways(ctx, inputs, float32):
    """The other ways users call a module: [(label, inputs as passed, their float64 values, dtype)]."""
    model = ctx.model
    scalar = [str(s) for s in model.inputs if not isinstance(s, sp.MatrixSymbol)]
    mats = {str(s): np.asarray(inputs[str(s)], dtype=np.float64)
            for s in model.inputs if isinstance(s, sp.MatrixSymbol)}
    zero_d = {k: _first(inputs[k]) for k in scalar}
    ways = []
    if scalar:
        ways.append(("scalars as Python floats", zero_d | mats, zero_d | mats, np.float64))
        ways.append(("scalars as 0-d arrays", {k: np.asarray(v) for k, v in zero_d.items()} | mats,
                     zero_d | mats, np.float64))
    ints = _integer_inputs(model, zero_d, mats)
    if ints is None:
        ctx.report.notes.append("Python ints: skipped (no integer inputs near the sampled ones are in the domain)")
    else:
        ways.append(("Python ints and integer arrays", ints[0], ints[1], np.float64))
    if float32:
        f32 = {k: np.asarray(v, dtype=np.float32) for k, v in inputs.items()}
        ways.append(("float32", f32, f32, np.float32))
        if scalar and (mats or len(scalar) > 1):
            first = scalar[0] if not mats else None
            mixed = {k: (float(np.float32(zero_d[k])) if k != first else np.asarray(zero_d[k], np.float32))
                     for k in scalar} | {k: v.astype(np.float32) for k, v in mats.items()}
            ways.append(("float32 arrays with Python floats", mixed, mixed, np.float32))
    if scalar and not _has_matrices(model):
        shapes = [(3, 1), (1, 4)] + [(3, 4)] * (len(scalar) - 2)
        data = getattr(ctx.module, "DATA", None)
        if data:  # a module that cuts the data into blocks of rows: parameters broadcast over them
            shapes = [(3, 4) if k in data else [(1, 4), (4,)][i % 2] for i, k in enumerate(scalar)]
        try:
            b = sample_inputs(model, ctx.rng, sizes=dict(zip(scalar, shapes)))
            how = "scalars broadcast: " + ", ".join(f"{k} {sh}" for k, sh in zip(scalar[:2], shapes))
            ways.append((how + (", the others (3, 4)" if len(scalar) > 2 and not data else
                                ", ..." if len(scalar) > 2 else ""), b, b, np.float64))
        except SymgradError as exc:
            ctx.report.notes.append(f"broadcast inputs: skipped ({exc})")
    return ways


def _calling_conventions(ctx, inputs, float32):
    report = ctx.report
    for how, passed, values, dtype in _ways(ctx, inputs, float32):
        try:
            want_value, want_grads = _tape(ctx.model, values)
        except DOMAIN_ERRORS as exc:  # e.g. a matrix that float32 rounding made singular
            report.notes.append(f"{how}: skipped (the tape raised {type(exc).__name__}: outside the model's domain)")
            continue
        report.calls.append(how)
        got = ctx.call("value_and_grad", passed, how)
        fwd = ctx.call("forward", passed, how)
        if got is None:
            continue
        f32 = dtype == np.float32
        _compare(ctx, passed, got, fwd, want_value, want_grads, how=how, rtol=RTOL32 if f32 else report.rtol,
                 floor=FLOOR32 if f32 else FLOOR, main=False)
        label = None if how == "float32" else how
        if not _check_dtypes(got.value, got.grads, dtype, report, label) and f32:
            report.float32_ok = False
        if fwd is not None and fwd.value.dtype != dtype:
            report.problem(f"{how}: forward gave a non-{np.dtype(dtype).name} value ({fwd.value.dtype})")
            if f32:
                report.float32_ok = False


def _input_sets(model, inputs):
    if inputs is None:
        return None
    if isinstance(inputs, (str, os.PathLike)):
        inputs = load_inputs(inputs)
    if isinstance(inputs, collections.abc.Mapping):
        inputs = [inputs]
    sets = [dict(s) for s in inputs]
    for s in sets:
        validate_inputs(model, s)
    return sets or None


def check(model, module=None, *, seed=0, trials=2, rtol=1e-6, fd_rtol=1e-5, float32=True,
          inputs=None, calls=True) -> CheckReport:
    """Compare ``module`` (default: ``symgrad.compile(model)``) with the tape and finite differences,
    called the ways users call it.  ``inputs``: a dict (name -> array), a list of them or an ``.npz``
    path; each is one trial (inputs it leaves out are drawn).  See the module docstring."""
    sets = _input_sets(model, inputs)
    if module is None:
        module = compile_model(model)
    report = CheckReport(model=str(model.name), target=str(getattr(module, "TARGET", "?")),
                         trials=len(sets) if sets else trials, rtol=rtol, fd_rtol=fd_rtol)
    for const, want in (("INPUTS", model.inputs), ("WRT", model.wrt)):
        have = getattr(module, const, None)
        if have is None or tuple(have) != tuple(str(s) for s in want):
            report.problem(f"{const} is {have!r}, expected {tuple(str(s) for s in want)!r}")
    ctx = _Ctx(model, module, report, np.random.default_rng(seed), fd_rtol)
    scalar_wrt = [str(w) for w in model.wrt if not isinstance(w, sp.MatrixSymbol)]
    for t in range(report.trials):
        if sets:
            trial_inputs = resolve_inputs(model, sets[t], ctx.rng)
        else:
            # odd trials: scalar parameters as plain scalars (their gradient must be summed down to
            # shape ()) and other dimension sizes
            sizes = None
            if t % 2:
                sizes = {str(d): 5 + i for i, d in enumerate(model.dims)} | {w: () for w in scalar_wrt}
            data = getattr(module, "DATA", None)
            if data and not _has_matrices(model):  # blocks of data rows: parameters broadcast over them
                sizes = (sizes or {}) | {str(s): () for s in model.inputs if str(s) not in data}
            trial_inputs = sample_inputs(model, ctx.rng, sizes=sizes)
        _trial(ctx, trial_inputs)
        if t == 0 and calls:
            _calling_conventions(ctx, trial_inputs, float32)
        elif t == 0 and float32:
            got = ctx.call("value_and_grad", {k: v.astype(np.float32) for k, v in trial_inputs.items()}, "float32")
            if got is not None and not _check_dtypes(got.value, got.grads, np.float32, report):
                report.float32_ok = False
    return report
