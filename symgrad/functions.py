"""Functions of your own, with their own derivatives: ``symgrad.Function``.

::

    f = symgrad.Function("f", "mypkg.special:f", derivative="mypkg.special:df")
    model = symgrad.Model(f(x) * y, wrt=[x, y])

``impl`` and each derivative are ``"module:attribute"`` paths of elementwise functions of arrays
(NumPy arrays in the ``numpy`` target, CuPy arrays in the ``cupy`` target: the generated module
imports the module and calls the function).  ``derivative`` is one path for a function of one
argument, or a list of paths, one partial derivative per argument, each taking all the arguments.
A derivative path may itself be a ``symgrad.Function`` (then it has derivatives of its own, and
second derivatives -- ``hvp``, ``hessian`` -- work through it); a plain path has none, so a second
derivative through it is a clear error.  The tape calls the same functions: ``--check``'s finite
differences are what catch a wrong derivative.  The paths are part of the function's identity:
two Functions of one name but other paths are two functions (in SymPy, and in the module cache's
key).  A path's names are identifiers that are not Python keywords.
"""
from __future__ import annotations

import importlib
import keyword
import re

import sympy as sp

from .errors import SymgradError

__all__ = ["Function"]

_PATH = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*", re.ASCII)


def _check_path(path, what):
    if not isinstance(path, str) or not _PATH.fullmatch(path):
        raise SymgradError(f"symgrad.Function: {what} must be a 'module:function' path, got {path!r}")
    bad = [w for w in re.split(r"[.:]", path) if keyword.iskeyword(w)]
    if bad:  # the generated module imports the module and calls the function by these names
        raise SymgradError(f"symgrad.Function: {what} {path!r} has the Python keyword {bad[0]!r} "
                           "as a name; a module or function of that name cannot be imported or called")
    return path


def resolve(path: str):
    """The function a ``module:attribute`` path names."""
    module, attr = path.split(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise SymgradError(f"symgrad.Function: cannot import {path}: {exc}") from None


def Function(name: str, impl: str, derivative=None, nargs: int | None = None):  # noqa: N802 - a class factory
    """A SymPy function class ``name`` computed by ``impl``, differentiated by ``derivative``
    (see the module docstring)."""
    if not (isinstance(name, str) and name.isidentifier()):
        raise SymgradError(f"symgrad.Function: the name must be an identifier, got {name!r}")
    _check_path(impl, "impl")
    parts = [] if derivative is None else ([derivative] if not isinstance(derivative, (list, tuple)) else list(derivative))
    partials = tuple(p if hasattr(p, "_symgrad_spec") else _check_path(p, "a derivative") for p in parts)
    arity = nargs or max(1, len(partials))
    if partials and len(partials) != arity:
        raise SymgradError(f"symgrad.Function {name}: {arity} arguments but {len(partials)} partial derivatives")
    # the spec is part of the class's identity (SymPy compares and caches function classes by
    # name and keyword arguments): two Functions of one name but other paths are two functions
    return sp.Function(name, nargs=arity, real=True, _symgrad_spec=(name, impl, partials))


def spec_of(fn_or_path):
    """``(name, impl, partials)`` of a symgrad.Function class; a plain path is a function of that
    path without derivatives."""
    spec = getattr(fn_or_path, "_symgrad_spec", None)
    if spec is not None:
        return spec
    return (fn_or_path.split(":")[1], fn_or_path, ())


def describe(spec):
    """``(name, impl, partials' descriptions)``: everything of a symgrad.Function's ``spec`` that
    the generated code depends on, through its derivative Functions, with no SymPy class in it."""
    name, impl, partials = spec
    return (name, impl, tuple(describe(spec_of(p)) for p in partials))
