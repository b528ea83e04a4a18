"""Check a generated module against the runtime tape and central finite differences.

Contract:

* ``sample_inputs(model, rng, dtype=np.float64, sizes=None) -> {name: array}`` draws inputs inside
  the model's domain.  Dimension symbols get small distinct sizes (3, 4, 5, ... skipping the fixed
  sizes the model already uses), MatrixSymbols 2-D arrays, scalar Symbols arrays of shape ``(4,)``
  in a purely scalar model and 0-d arrays where matrices are involved.  ``sizes`` overrides a
  dimension's size (``{"N": 7}``) or a scalar input's shape (``{"x": ()}``).  Values keep
  ``|v| >= 0.2`` (away from the kinks of Abs / Max / Piecewise / Heaviside at 0); when the tape's
  value or gradients are not finite, or raise a floating-point warning, other value ranges are
  tried (positive ones for log / sqrt, then (-1, 1) and [1.5, 3]).  Symbol assumptions
  (``positive=True``, ``negative=True``) are respected.
* ``check(model, module=None, *, seed=0, trials=2, rtol=1e-6, fd_rtol=1e-5) -> CheckReport``
  compares, in float64, the module's ``forward`` and ``value_and_grad`` with ``symgrad.tape`` and
  with central differences of ``sum(forward(...))``: along a random direction per wrt input (as
  HIPS autograd's ``check_grads``), and element by element when the input is small.  It also
  checks gradient shapes, that inputs are not mutated, and that float64 / float32 inputs give
  value and gradients of the same dtype.  Errors are relative:
  ``max|got - want| / max(|want|, |got|, 1e-8)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from .model import SymgradError

__all__ = ["CheckReport", "check", "sample_inputs"]

FLOOR = 1e-8          # magnitudes below this are compared absolutely: a zero gradient may come out as 1e-17
FD_FULL_MAX = 16      # inputs with at most this many elements also get an element-by-element FD gradient


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
    scalar_shape = () if model.is_matrix or model.dims or any(
        isinstance(s, sp.MatrixSymbol) for s in model.inputs) else (4,)
    shapes = {}
    for s in model.inputs:
        if isinstance(s, sp.MatrixSymbol):
            shapes[str(s)] = tuple(int(sp.sympify(n).subs(dims)) for n in s.shape)
        else:
            shapes[str(s)] = tuple(sizes.get(str(s), scalar_shape))
    return shapes


def _respect_assumptions(sym, v):
    if sym.is_positive or sym.is_nonnegative:
        return np.abs(v)
    if sym.is_negative or sym.is_nonpositive:
        return -np.abs(v)
    return v


def _finite(value, grads) -> bool:
    return all(np.all(np.isfinite(np.asarray(a, dtype=np.float64))) for a in [value, *grads.values()])


def _domain(model, inputs) -> str:
    """'clean', 'warned' (finite, but a floating-point warning on the way) or 'bad'."""
    from . import tape
    try:
        with np.errstate(divide="raise", over="raise", invalid="raise", under="ignore"):
            if _finite(*tape.value_and_grad(model, **inputs)):
                return "clean"
            return "bad"
    except (FloatingPointError, ZeroDivisionError, OverflowError):
        pass
    try:
        with np.errstate(all="ignore"):
            return "warned" if _finite(*tape.value_and_grad(model, **inputs)) else "bad"
    except (FloatingPointError, ZeroDivisionError, OverflowError):
        return "bad"


def sample_inputs(model, rng, dtype=np.float64, sizes=None) -> dict:
    """Random inputs for ``model`` (name -> array of ``dtype``) where its value and gradients are finite."""
    shapes = input_shapes(model, sizes)
    fallback = None
    for draw in _STRATEGIES:
        inputs = {str(s): _respect_assumptions(s, np.asarray(draw(rng, shapes[str(s)]), dtype=np.float64))
                  for s in model.inputs}
        verdict = _domain(model, inputs)
        if verdict == "clean":
            break
        if verdict == "warned" and fallback is None:
            fallback = inputs
    else:
        if fallback is None:
            raise SymgradError(f"model {model.name}: found no inputs where its value and gradients are "
                               f"finite (tried {len(_STRATEGIES)} value ranges)")
        inputs = fallback
    return {k: v.astype(dtype) for k, v in inputs.items()}


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
    problems: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)

    def summary(self) -> str:
        errs = (f"value {self.value_err:.1e}, vs tape {self.max_rel_err_tape:.1e}, "
                f"vs finite differences {self.max_rel_err_fd:.1e}, "
                f"float32 {'ok' if self.float32_ok else 'FAILED'} ({self.trials} trials)")
        head = f"{self.model} [{self.target}]: largest relative errors: {errs}"
        if self.ok:
            return f"ok {head}"
        more = f" (+{len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        return f"FAILED {head}; {self.problems[0]}{more}"


def rel_err(got, want) -> float:
    """``max|got - want| / max(|want|, |got|, FLOOR)``; inf when shapes or non-finite entries differ."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return float("inf")
    fin_g, fin_w = np.isfinite(got), np.isfinite(want)
    if not np.array_equal(fin_g, fin_w) or not np.array_equal(got[~fin_g], want[~fin_w], equal_nan=True):
        return float("inf")
    if not fin_g.any():
        return 0.0
    got, want = got[fin_g], want[fin_w]
    scale = max(np.max(np.abs(want)), np.max(np.abs(got)), FLOOR)
    return float(np.max(np.abs(got - want)) / scale)


class _Runner:
    """Calls the module on host arrays, moving them to the GPU and back for the cupy target."""

    def __init__(self, module):
        self.module = module
        self.xp = None
        if getattr(module, "TARGET", "numpy") == "cupy":
            import cupy
            self.xp = cupy

    def _host(self, x):
        return np.asarray(self.xp.asnumpy(x) if self.xp is not None else x)

    def __call__(self, fn, inputs):
        args = {k: self.xp.asarray(v) if self.xp is not None else v.copy() for k, v in inputs.items()}
        out = getattr(self.module, fn)(**args)
        if self.xp is None and any(not np.array_equal(args[k], inputs[k]) for k in args):
            raise AssertionError(f"{fn} modified its inputs in place")
        if fn == "forward":
            return self._host(out)
        value, grads = out
        return self._host(value), {k: self._host(g) for k, g in dict(grads).items()}


def _call(run, fn, inputs, report):
    try:
        with np.errstate(all="ignore"):
            return run(fn, inputs)
    except Exception as exc:  # noqa: BLE001 - a crashing module is a failed check, not a crash of the checker
        report.problem(f"{fn} raised {type(exc).__name__}: {exc}")
        return None


def _fd_errors(run, inputs, name, grad, rng):
    """Relative errors of ``grad`` against central differences of ``sum(forward)``: (directional, full)."""
    x = inputs[name]

    def slope(direction):
        h = 1e-6 * max(1.0, float(np.max(np.abs(x))))
        up = run("forward", {**inputs, name: x + h * direction})
        down = run("forward", {**inputs, name: x - h * direction})
        return (np.sum(up) - np.sum(down)) / (2 * h)

    u = rng.standard_normal(x.shape)
    fd, dot = slope(u), float(np.sum(u * grad))
    directional = abs(fd - dot) / max(abs(fd), float(np.linalg.norm(u) * np.linalg.norm(grad)), FLOOR)
    if not np.isfinite(directional):
        directional = float("inf")
    full = 0.0
    if x.size <= FD_FULL_MAX:
        basis = np.eye(x.size).reshape((x.size,) + x.shape)
        full = rel_err(np.array([slope(e) for e in basis]).reshape(x.shape), grad)
    return directional, full


def _check_dtypes(value, grads, dtype, report) -> bool:
    """Inputs of one float dtype must give value and gradients of that dtype."""
    bad = [f"value ({value.dtype})"] if value.dtype != dtype else []
    bad += [f"grad of {k} ({g.dtype})" for k, g in grads.items() if g.dtype != dtype]
    if bad:
        name = np.dtype(dtype).name
        report.problem(f"{name} inputs gave non-{name} " + ", ".join(bad))
    return not bad


def _trial(model, run, inputs, rng, report, float32):
    from . import tape
    with np.errstate(all="ignore"):
        want_value, want_grads = tape.value_and_grad(model, **inputs)
    got = _call(run, "value_and_grad", inputs, report)
    fwd = _call(run, "forward", inputs, report)
    if got is None or fwd is None:
        return
    value, grads = got
    err = max(rel_err(value, want_value), rel_err(fwd, value))
    report.value_err = max(report.value_err, err)
    if err > report.rtol:
        report.problem(f"value: relative error {err:.1e} > rtol {report.rtol:g} (shapes: module "
                       f"{np.shape(value)}, forward {np.shape(fwd)}, tape {np.shape(want_value)})")
    wrt = [str(w) for w in model.wrt]
    if sorted(grads) != sorted(wrt):
        report.problem(f"grads has keys {sorted(grads)}, expected {sorted(wrt)}")
    for name in wrt:
        if name not in grads:
            continue
        g = grads[name]
        if np.shape(g) != np.shape(inputs[name]):
            report.problem(f"grad of {name} has shape {np.shape(g)}, input has shape {np.shape(inputs[name])}")
            report.max_rel_err_tape = report.max_rel_err_fd = float("inf")
            continue
        err = rel_err(g, want_grads[name])
        report.max_rel_err_tape = max(report.max_rel_err_tape, err)
        if err > report.rtol:
            report.problem(f"grad of {name}: relative error vs tape {err:.1e} > rtol {report.rtol:g}")
        try:
            with np.errstate(all="ignore"):
                err = max(_fd_errors(run, inputs, name, g, rng))
        except Exception as exc:  # noqa: BLE001
            report.problem(f"finite differences of forward raised {type(exc).__name__}: {exc}")
            continue
        report.max_rel_err_fd = max(report.max_rel_err_fd, err)
        if err > report.fd_rtol:
            report.problem(f"grad of {name}: relative error vs finite differences {err:.1e} > {report.fd_rtol:g}")
    _check_dtypes(value, grads, np.float64, report)
    if float32:
        got32 = _call(run, "value_and_grad", {k: v.astype(np.float32) for k, v in inputs.items()}, report)
        if got32 is not None and not _check_dtypes(*got32, np.float32, report):
            report.float32_ok = False


def check(model, module=None, *, seed=0, trials=2, rtol=1e-6, fd_rtol=1e-5, float32=True) -> CheckReport:
    """Compare ``module`` (default: ``symgrad.compile(model)``) with the tape and finite differences."""
    if module is None:
        from . import compile as _compile
        module = _compile(model)
    report = CheckReport(model=str(model.name), target=str(getattr(module, "TARGET", "?")),
                         trials=trials, rtol=rtol, fd_rtol=fd_rtol)
    for const, want in (("INPUTS", model.inputs), ("WRT", model.wrt)):
        have = getattr(module, const, None)
        if have is None or tuple(have) != tuple(str(s) for s in want):
            report.problem(f"{const} is {have!r}, expected {tuple(str(s) for s in want)!r}")
    run = _Runner(module)
    rng = np.random.default_rng(seed)
    scalar_wrt = [str(w) for w in model.wrt if not isinstance(w, sp.MatrixSymbol)]
    for t in range(trials):
        # odd trials: scalar parameters as plain scalars (their gradient must be summed down to
        # shape ()) and other dimension sizes
        sizes = None
        if t % 2:
            sizes = {str(d): 5 + i for i, d in enumerate(model.dims)} | {w: () for w in scalar_wrt}
        inputs = sample_inputs(model, rng, sizes=sizes)
        _trial(model, run, inputs, rng, report, float32=float32 and t == 0)
    return report
