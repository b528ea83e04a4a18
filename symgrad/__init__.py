"""symgrad: symbolic reverse-mode gradients compiled to plain NumPy / CuPy modules.

Public API::

    model = symgrad.Model(expr, wrt=[...])        # a SymPy expression to differentiate
    mod = symgrad.compile(model, target="numpy")  # the generated module, imported
    value, grads = mod.value_and_grad(**inputs)

Handing a module's derivatives to the tools that use them (contract 4f; SciPy, PyTorch and JAX are
imported only when these are used)::

    obj = symgrad.Objective(mod, X=X, y=y)        # fun/jac/hessp/hess of one flat vector: scipy.optimize
    ode = symgrad.OdeSystem(mod, state="u", time="t", D=0.1)  # fun(t, y), jac(t, y): solve_ivp
    f = symgrad.to_torch(mod); g = symgrad.to_jax(mod)        # differentiable through mod's vjp

``symgrad.tape`` is the independent numeric reverse-mode oracle; ``symgrad.verify`` and
``symgrad.testing`` compare generated modules with it and with finite differences.

The compiler core (``ir``, ``ops``, ``diff``, ``program``, ``emit``) imports no SymPy, so a pickled
Program can be emitted where SymPy is not installed; the model side (``Model``, ``tape``,
``verify``...) needs it.
"""
from __future__ import annotations

import importlib
import types
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from .model import Model

from .errors import SymgradError

__version__ = "0.1.0"
__all__ = ["Function", "Model", "Objective", "OdeSystem", "SymgradError", "compile", "generate", "load_models",
           "to_jax", "to_torch", "__version__"]

# imported when first used: SciPy, PyTorch and JAX only by the bridges that need them
_LAZY = {"Model": "model", "load_models": "model", "Function": "functions", "Objective": "bridges.objective",
         "OdeSystem": "bridges.ode", "to_torch": "bridges.to_torch", "to_jax": "bridges.to_jax"}
_SUBMODULES = {"tape", "verify", "testing", "model", "pipeline", "lower", "emit", "diff", "ops", "ir", "program",
               "forward", "cache", "bridges"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'symgrad' has no attribute {name!r}")


def generate(model: "Model", target: str = "numpy", emit: "str | Sequence[str] | None" = None) -> str:
    """Return the source text of the generated module for ``model``; ``emit`` names its
    derivative functions (``("grad", "vjp", "jvp", "jacobian", "hvp", "hessian")``, any subset;
    default: the model's ``derivatives``)."""
    from .pipeline import generate as _generate
    return _generate(model, target, emit)


def compile(model: "Model", target: str = "numpy",  # noqa: A001 - the contract's name
            emit: "str | Sequence[str] | None" = None) -> "types.ModuleType":
    """The generated module of ``model``, imported: written to the module cache
    (:mod:`symgrad.cache`: ``$SYMGRAD_CACHE_DIR``, reused across processes) and imported from
    there, so that ``inspect``, tracebacks and pickling see a real module."""
    from .cache import load
    from .emit import target_named
    target_named(target)
    return load(model, target, emit, lambda: generate(model, target, emit))
