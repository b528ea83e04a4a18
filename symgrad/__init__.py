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

This module only re-exports: ``compile`` is :func:`symgrad.cache.compile_model`, ``generate``
:func:`symgrad.pipeline.generate`.  They are imported when first used, so that the compiler core
(``ir``, ``ops``, ``rewrites``, ``diff``, ``program``, ``emit``) imports no SymPy: a pickled
Program can be emitted where SymPy is not installed; the model side (``Model``, ``tape``,
``verify``...) needs it.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__
from .errors import SymgradError

if TYPE_CHECKING:
    from .bridges.objective import Objective  # noqa: F401
    from .bridges.ode import OdeSystem  # noqa: F401
    from .bridges.to_jax import to_jax  # noqa: F401
    from .bridges.to_torch import to_torch  # noqa: F401
    from .cache import compile_model as compile  # noqa: A001, F401
    from .functions import Function  # noqa: F401
    from .model import Model, load_models  # noqa: F401
    from .pipeline import generate  # noqa: F401

__all__ = ["Function", "Model", "Objective", "OdeSystem", "SymgradError", "compile", "generate", "load_models",
           "to_jax", "to_torch", "__version__"]

# name -> (module, its name there): imported on first use (see the module docstring); SciPy, PyTorch
# and JAX only by the bridges that need them
_LAZY = {"Model": ("model", "Model"), "load_models": ("model", "load_models"), "Function": ("functions", "Function"),
         "compile": ("cache", "compile_model"), "generate": ("pipeline", "generate"),
         "Objective": ("bridges.objective", "Objective"), "OdeSystem": ("bridges.ode", "OdeSystem"),
         "to_torch": ("bridges.to_torch", "to_torch"), "to_jax": ("bridges.to_jax", "to_jax")}
_SUBMODULES = {"tape", "verify", "testing", "model", "pipeline", "lower", "emit", "diff", "ops", "ir", "program",
               "forward", "cache", "rewrites", "bridges", "kinds"}


def __getattr__(name):
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'symgrad' has no attribute {name!r}")
