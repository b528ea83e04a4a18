"""Models and model files.

A :class:`Model` is a SymPy expression plus the symbols to differentiate with respect to.
Everything else symgrad knows about a model is derived here, once:

* ``dims``   -- the dimension symbols of its MatrixSymbols (``N`` in ``MatrixSymbol('X', N, d)``),
  bound from the arrays' shapes at call time;
* ``wrt``    -- the Symbols / MatrixSymbols to differentiate with respect to;
* ``inputs`` -- every free Symbol / MatrixSymbol that is not a dimension: ``wrt`` first, in the
  order given, then the data inputs sorted by name.  This is the generated module's ``INPUTS``.
  An ``IndexedBase`` is a MatrixSymbol of its name (one index: a column), its entries the
  MatrixSymbol's (:func:`symgrad.indexed.indexed_to_matrices`); ``expr`` is written with those.

:func:`load_models` executes a model file and collects its module-level ``Model`` objects.
"""
from __future__ import annotations

import collections
import collections.abc
import contextlib
import hashlib
import re
import runpy
import sys
import traceback
from pathlib import Path

import numpy as np
import sympy as sp

from .errors import SymgradError
from .functions import describe
from .indexed import NotMatrix, indexed_to_matrices
from .kinds import derivatives as _derivatives

__all__ = ["Model", "SymgradError", "load_models"]


def _is_leaf(s) -> bool:
    return isinstance(s, (sp.Symbol, sp.MatrixSymbol))


@contextlib.contextmanager
def deep_recursion(limit: int = 100_000):
    """SymPy's printers and ``srepr`` recurse once per level of the expression; symgrad's own
    walks are iterative, but a deep model (a 256-deep chain) still needs room for SymPy's."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, limit))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def leaves(expr) -> set:
    """The free Symbols and MatrixSymbols of ``expr`` (and of its MatrixSymbols' shapes), found
    iteratively: SymPy's own ``free_symbols`` recurses and fails on deep models."""
    found, bound, seen, stack = set(), set(), set(), [expr]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if _is_leaf(e):
            found.add(e)
            if isinstance(e, sp.MatrixSymbol):
                stack.extend(sp.sympify(d) for d in e.shape)
            continue
        if isinstance(e, (sp.Lambda, sp.concrete.expr_with_limits.ExprWithLimits)):
            bound.update(e.variables)
        stack.extend(a for a in getattr(e, "args", ()) if isinstance(a, sp.Basic))
    return found - bound


def _check_domain(model, domain) -> dict:
    """``Model(domain=...)`` validated: ``{input name: (lo, hi)}`` with float bounds, lo < hi."""
    if domain is None:
        return {}
    if not isinstance(domain, collections.abc.Mapping):
        raise SymgradError(f"domain must be a dict {{symbol or name: (lo, hi)}}, got {domain!r}")
    names = [str(s) for s in model.inputs]
    out = {}
    for key, bounds in domain.items():
        name = str(key) if _is_leaf(key) or isinstance(key, sp.IndexedBase) else key
        if not isinstance(name, str) or name not in names:
            what = "a dimension" if str(key) in map(str, model.dims) else "not an input"
            raise SymgradError(f"domain names {key!r}, which is {what} of the model "
                               f"(inputs: {', '.join(names)})")
        try:
            lo, hi = bounds
            lo, hi = (float(sp.sympify(v)) if v is not None else default
                      for v, default in ((lo, -np.inf), (hi, np.inf)))
        except (TypeError, ValueError, sp.SympifyError):
            raise SymgradError(f"domain of {name} must be a pair (lo, hi) of real numbers or None, "
                               f"got {bounds!r}") from None
        if not lo < hi:
            raise SymgradError(f"domain of {name} is empty: ({lo:g}, {hi:g}) needs lo < hi")
        if name in out:
            raise SymgradError(f"domain gives {name} twice")
        out[name] = (lo, hi)
    return {n: out[n] for n in names if n in out}


def _sized_symbols(expr) -> set:
    """Symbols that are sizes in ``expr``: in the shapes of OneMatrix / ZeroMatrix / Identity and
    in the bounds of Sums (SymPy writes ``(OneMatrix(1, N)*M*OneMatrix(d, 1))[0, 0]`` out as a Sum
    over ``0..N-1``) -- an iterative walk."""
    found, seen, stack = set(), set(), [expr]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, (sp.OneMatrix, sp.ZeroMatrix, sp.Identity)):
            for d in e.shape:
                found |= sp.sympify(d).free_symbols
            continue
        if isinstance(e, sp.Sum):
            for _, lo, hi in e.limits:
                found |= (lo.free_symbols | hi.free_symbols) - set(e.variables)
            stack.append(e.function)
            continue
        stack.extend(a for a in getattr(e, "args", ()) if isinstance(a, sp.Basic))
    return found


def _head(e) -> str:
    """The name of ``e``'s class, and a symgrad.Function's paths (the name alone is not the
    function: two Functions of one name may call different code)."""
    spec = getattr(type(e), "_symgrad_spec", None)
    if spec is None:
        return type(e).__name__
    return f"{type(e).__name__}{describe(spec)!r}"


def _check_slices(expr) -> None:
    """Refuse a stepped slice whose step does not divide its extent: SymPy's ``MatrixSlice`` gives
    ``A[::2, :]`` of 3 rows the shape ``(1, 3)`` (it floors ``(stop - start)/step``) where Python,
    NumPy and SymPy's explicit matrices take rows 0 and 2.  Every shape built on it is SymPy's, so
    following it would drop a row silently; the compiler and the tape both read this check."""
    from sympy.matrices.expressions.slice import MatrixSlice

    seen, stack = set(), [expr]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, MatrixSlice):
            for axis, (start, stop, step) in zip(("rows", "columns"), (e.rowslice, e.colslice)):
                extent = sp.sympify(stop - start)
                if step == 1 or (extent % step).is_zero:
                    continue
                if extent.is_Integer:
                    took = list(range(start, stop, step))
                    one = [f"{e.parent}[{k}:{k + 1}, :]" if axis == "rows" else f"{e.parent}[:, {k}:{k + 1}]"
                           for k in took[:3]] + (["..."] if len(took) > 3 else [])
                    took, kept = f"{axis} {', '.join(map(str, took))}", f"only {len(took) - 1} of them"
                    fix = f"take the {axis} one slice each ({', '.join(one)}) or use a step that divides stop - start"
                else:
                    took = f"the {axis} {start}, {start} + {step}, ... below {stop}"
                    kept = f"one fewer unless {step} divides {extent}"
                    fix = f"use a step of 1, or integer bounds whose difference {step} divides"
                raise SymgradError(
                    f"the slice {e} takes {took} in Python and NumPy, but SymPy's MatrixSlice gives it "
                    f"shape {e.shape} (it floors (stop - start)/step = ({extent})/{step}), {kept}: {fix}")
        stack.extend(a for a in getattr(e, "args", ()) if isinstance(a, sp.Basic))


def _numbers(expr, inputs) -> tuple:
    """Names of the scalar Symbols used inside a matrix expression or an indexed ``Sum`` (``s*X``,
    ``applyfunc(lambda t: s*t)``, ``Sum(s*x[i], ...)``): each binds one number (a Python number, a
    0-d array, or an array of one entry and at most two axes, which broadcasts like it).  A larger
    array would be broadcast against the matrices' own axes (``s`` of shape ``(3,)`` times a 2 x 2
    ``X``), which is no matrix expression's meaning: the module and the tape refuse it, naming the
    input.  Outside matrices (``Trace(X.T*X) + s``) a scalar Symbol broadcasts as NumPy does."""
    found, seen, stack = set(), set(), [(expr, False)]
    while stack:
        e, inside = stack.pop()
        if (id(e), inside) in seen:
            continue
        seen.add((id(e), inside))
        if isinstance(e, sp.Symbol) and inside and e in inputs:
            found.add(e.name)
        inside = inside or (isinstance(e, (sp.MatrixExpr, sp.Sum)) and not isinstance(e, sp.MatrixSymbol))
        stack.extend((a, inside) for a in getattr(e, "args", ()) if isinstance(a, sp.Basic))
    return tuple(sorted(found))


def _dag_hash(expr) -> str:
    """sha256 of ``expr``'s structure: class names (:func:`_head`), atoms' ``srepr`` and the
    children's hashes, computed once per distinct object (post-order, explicit stack)."""
    memo: dict = {}
    stack = [expr]
    while stack:
        e = stack[-1]
        if id(e) in memo:
            stack.pop()
            continue
        kids = [a for a in getattr(e, "args", ()) if isinstance(a, sp.Basic)] if not e.is_Atom else []
        todo = [k for k in kids if id(k) not in memo]
        if todo:
            stack.extend(todo)
            continue
        stack.pop()
        if kids:
            text = _head(e) + "(" + ",".join(memo[id(k)] for k in kids) + ")"
        else:  # Dummy symbols are numbered per process: leave the number out
            text = re.sub(r"dummy_index=\d+", "", sp.srepr(e))
        memo[id(e)] = hashlib.sha256(text.encode()).hexdigest()
    return memo[id(expr)]


class Model:
    """A differentiable SymPy expression: ``Model(expr, wrt=None, name=None, domain=None)``.

    ``domain`` (optional) says where the model is defined, for the checks of
    :func:`symgrad.verify.check` (``symgrad compile --check``): a dict from an input (its Symbol or
    MatrixSymbol, or its name) to an open interval ``(lo, hi)``; ``None`` or ``sympy.oo`` leaves a
    side unbounded.  Every entry of that input is drawn inside the interval, away from its ends
    (``domain={x: (5, None)}`` for ``log(x - 5)``).  Inputs it does not name are drawn where the
    model's ``log``/``sqrt``/``asin``/``acos``/``atanh``/``acosh`` arguments are defined when those
    are affine in one input, else from a list of value ranges.  It does not change the generated
    module.

    ``derivatives`` (optional) names the functions the model's module has beyond ``forward`` and
    ``value_and_grad``: any of ``vjp``, ``jvp``, ``jacobian``, ``hvp``, ``hessian`` (a sequence
    or a comma separated string); ``symgrad compile --emit`` and ``symgrad.compile(emit=...)``
    override it.
    """

    def __init__(self, expr, wrt=None, name: str | None = None, domain=None, derivatives=("grad",)):
        if isinstance(expr, (sp.MatrixBase,)) and not isinstance(expr, sp.MatrixExpr):
            raise SymgradError(
                f"Model expr is an explicit Matrix {type(expr).__name__}; use MatrixSymbol "
                "expressions (X*W + b) or a scalar expression")
        try:
            expr = sp.sympify(expr)
        except (sp.SympifyError, TypeError) as exc:
            raise SymgradError(f"Model expr is not a SymPy expression: {expr!r} ({exc})") from None
        if not isinstance(expr, sp.Basic):
            raise SymgradError(f"Model expr is not a SymPy expression: {expr!r}")
        try:  # an IndexedBase's entries are the entries of a MatrixSymbol of its name
            expr, indexed = indexed_to_matrices(expr)
        except NotMatrix as exc:
            raise SymgradError(f"Model{' ' + name if name else ''}: {exc}") from None
        try:
            _check_slices(expr)
        except SymgradError as exc:
            raise SymgradError(f"Model{' ' + name if name else ''}: {exc}") from None
        self.expr = expr
        self.name = name
        found = leaves(expr)
        mats = {s for s in found if isinstance(s, sp.MatrixSymbol)}
        dims = set()
        for m in mats:
            for d in m.shape:
                dims |= {s for s in sp.sympify(d).free_symbols}
        self.dims = tuple(sorted(dims, key=str))
        unbound = sorted(_sized_symbols(expr) - dims, key=str)
        if unbound:
            raise SymgradError(f"dimension {unbound[0]} (of a OneMatrix, ZeroMatrix or Identity, or a bound "
                               "of a Sum) is not a "
                               "dimension of any MatrixSymbol input, so its size cannot be read from "
                               "the inputs: use an integer or the dimension of an input")
        free = sorted((s for s in found if s not in dims), key=str)
        if wrt is None:
            wrt = free
        elif _is_leaf(wrt) or isinstance(wrt, sp.IndexedBase):
            wrt = [wrt]
        wrt = [indexed.get(w, w) for w in wrt]
        for w in wrt:
            if not _is_leaf(w):
                raise SymgradError(f"wrt entries must be Symbols or MatrixSymbols, got {w!r}")
            if w in dims:
                raise SymgradError(f"cannot differentiate with respect to dimension symbol {w}")
        if len(set(wrt)) != len(wrt):
            raise SymgradError(f"wrt lists a symbol twice: {wrt}")
        self.wrt = tuple(wrt)
        wrt_set = set(self.wrt)
        self.inputs = self.wrt + tuple(s for s in free if s not in wrt_set)
        names = [str(s) for s in self.inputs] + [str(d) for d in self.dims]
        dup = sorted(n for n, k in collections.Counter(names).items() if k > 1)
        if dup:
            raise SymgradError(f"two different symbols share the name {dup[0]!r}")
        self.numbers = _numbers(expr, set(self.inputs))
        self.domain = _check_domain(self, domain)
        try:
            self.derivatives = _derivatives(derivatives)
        except SymgradError as exc:
            raise SymgradError(f"Model {self.name}: {exc}" if self.name else f"Model: {exc}") from None

    # -- derived facts -------------------------------------------------------------------------
    @property
    def is_matrix(self) -> bool:
        return isinstance(self.expr, sp.MatrixExpr)

    @property
    def shape(self):
        """Static shape of the value: ``(r, c)`` for a matrix expression, ``None`` for a scalar one."""
        return tuple(self.expr.shape) if self.is_matrix else None

    def source_hash(self) -> str:
        """A hash of the expression (with its symgrad.Functions' paths), ``wrt`` and name: all of
        the model that its generated code depends on, but for the functions it has
        (``derivatives``).  Linear in the size of the expression DAG (a shared sub-expression is
        hashed once, never once per path to it)."""
        text = "|".join([_dag_hash(self.expr), ",".join(map(_dag_hash, self.wrt)), str(self.name)])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def dim_values(self, inputs: dict) -> dict:
        """Bind dimension symbols from the arrays in ``inputs`` (name -> array); check they agree."""
        values: dict = {}
        for s in self.inputs:
            if not isinstance(s, sp.MatrixSymbol):
                continue
            if str(s) not in inputs:
                raise SymgradError(f"model {self.name}: missing input {s}")
            shape = np.shape(inputs[str(s)])
            if len(shape) != 2:
                raise SymgradError(f"model {self.name}: input {s} must be 2-D with shape {s.shape}, got shape {shape}")
            for d, n in zip(s.shape, shape):
                d = sp.sympify(d)
                if d.is_Symbol:
                    if values.setdefault(d, n) != n:
                        raise SymgradError(f"model {self.name}: dimension {d} is {values[d]} elsewhere "
                                           f"but input {s} has shape {shape}")
        for s in self.inputs:
            if isinstance(s, sp.MatrixSymbol):
                want = tuple(int(sp.sympify(d).subs(values)) for d in s.shape)
                got = np.shape(inputs[str(s)])
                if want != got:
                    raise SymgradError(f"model {self.name}: input {s} has shape {got}, expected {want} "
                                       f"from {s.shape}")
        return values

    def __repr__(self) -> str:
        return f"Model(name={self.name!r}, wrt={[str(w) for w in self.wrt]}, inputs={[str(i) for i in self.inputs]})"


def load_models(path, only: str | None = None) -> list[Model]:
    """Execute the model file at ``path`` and return its module-level Models (named, sorted by name).

    While the file runs, ``M[0, 0]`` of a 1x1 matrix expression stays whole (see
    :func:`_keep_1x1_elements_whole`); SymPy is as it was before the call once it returns or raises."""
    path = Path(path)
    if not path.is_file():
        raise SymgradError(f"{path}: no such model file")
    try:
        with _keep_1x1_elements_whole(), _folder_on_path(path.resolve().parent):
            namespace = runpy.run_path(str(path), run_name="__symgrad_model__")
    except SymgradError as exc:
        raise SymgradError(f"{path}: {exc}") from None
    except SystemExit as exc:
        raise SymgradError(f"{path}: the model file called exit({exc.code})") from None
    except BaseException as exc:  # noqa: BLE001 - any error in user code becomes a user error
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve() == path.resolve()]
        where = f", line {frames[-1].lineno}" if frames else ""
        raise SymgradError(f"{path}{where}: {type(exc).__name__}: {exc}") from None
    found = [(k, v) for k, v in namespace.items() if isinstance(v, Model) and not k.startswith("_")]
    # one object bound to two names counts once
    seen, models = set(), []
    for var, m in found:
        if id(m) not in seen:
            seen.add(id(m))
            models.append((var, m))
    if not models:
        raise SymgradError(f"{path}: no symgrad.Model bound at module level")
    unnamed = [m for _, m in models if m.name is None]
    for var, m in models:
        if m.name is None:
            m.name = path.stem if len(unnamed) == 1 else f"{path.stem}_{var}"
    models.sort(key=lambda vm: vm[1].name)
    names = [m.name for _, m in models]
    if len(set(names)) != len(names):
        raise SymgradError(f"{path}: two models share a name: {names}")
    if only is not None:
        models = [vm for vm in models if vm[1].name == only or vm[0] == only]
        if not models:
            raise SymgradError(f"{path}: no model named {only!r} (have: {', '.join(names)})")
    return [m for _, m in models]


@contextlib.contextmanager
def _folder_on_path(folder: Path):
    """The model file's folder first on ``sys.path`` while it runs, as for ``python model.py``:
    a helper module beside it can be imported."""
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        try:
            sys.path.remove(str(folder))
        except ValueError:
            pass


@contextlib.contextmanager
def _keep_1x1_elements_whole():
    """While a model file runs (:func:`load_models`), ``M[0, 0]`` of a 1x1 matrix *expression*
    (``(E.T*E)[0, 0]``, the usual way to write a squared error) stays whole, an unevaluated
    ``MatrixElement``: the same value, with the matrix structure that symgrad compiles to BLAS.
    SymPy itself would write the product out as indexed ``Sum``s over its entries (which
    :mod:`symgrad.indexed` turns back into matrix operations, for models built in-process).

    This patches ``MatrixExpr.__getitem__`` only for the duration of the ``with`` block and puts
    SymPy's own back on the way out, error or not; a nested block (a model file that loads
    another) leaves the restoring to the outermost one.  Not thread-safe: another thread
    indexing matrix expressions while a model file loads sees the patch too."""
    from sympy.matrices.expressions.matexpr import MatrixElement, MatrixExpr

    original = MatrixExpr.__dict__["__getitem__"]
    if getattr(original, "_symgrad", False):  # already active
        yield
        return

    def __getitem__(self, key):
        if (isinstance(key, tuple) and len(key) == 2 and all(k == 0 for k in key)
                and not isinstance(self, sp.MatrixSymbol) and self.shape == (1, 1)):
            return MatrixElement(self, 0, 0)
        return original(self, key)

    __getitem__._symgrad = True
    __getitem__.__doc__ = original.__doc__
    MatrixExpr.__getitem__ = __getitem__
    try:
        yield
    finally:
        MatrixExpr.__getitem__ = original
