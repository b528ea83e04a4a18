"""Emit a generated module for a model: lowering, reverse mode, naming, printing.

:func:`generate` is the whole pipeline; the printing of single ops is data (``ops.OPS[...].code``
for NumPy, overridden per target in :mod:`symgrad.emit.targets`).  The module it writes is plain
Python that imports only its array module: see :mod:`symgrad.emit.module` for its layout.
"""
from __future__ import annotations

import importlib.util
import sys
import types

from ..diff import gradients
from ..ir import Graph
from ..lower import leaf_shape, lower
from ..model import Model, SymgradError, deep_recursion
from .module import assemble
from .targets import TARGETS
from . import cupy as _cupy  # registers the target

__all__ = ["generate", "load_source", "TARGETS"]


def generate(model: Model, target: str = "numpy") -> str:
    """Source text of the generated module of ``model`` for ``target`` (deterministic)."""
    if target not in TARGETS:
        raise SymgradError(f"unknown target {target!r} (choose from {', '.join(sorted(TARGETS))})")
    name = model.name or "model"
    try:
        with deep_recursion():
            G = Graph()
            out = lower(G, model)
            wrt = [G.input(w.name, leaf_shape(w)) for w in model.wrt]
            grads, cotangents = gradients(G, out, wrt)
            return assemble(model, G, out, wrt, grads, cotangents, TARGETS[target])
    except SymgradError as exc:
        raise SymgradError(f"model {name}: {exc}") from None


def load_source(source: str, module_name: str) -> types.ModuleType:
    """Import generated ``source`` as a fresh module object (not registered in sys.modules)."""
    safe = "".join(c if c.isalnum() or c == "_" else "_" for c in module_name)
    spec = importlib.util.spec_from_loader(f"symgrad_generated.{safe}", loader=None)
    mod = importlib.util.module_from_spec(spec)
    mod.__file__ = f"<symgrad {module_name}>"
    exec(compile(source, mod.__file__, "exec"), mod.__dict__)  # noqa: S102 - our own output
    sys.modules.pop(mod.__name__, None)
    return mod
