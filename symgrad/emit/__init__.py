"""Emit a generated module from a differentiated :class:`~symgrad.program.Program`.

The printing of single ops is data (``ops.OPS[...].code`` for NumPy, overridden per target in
:mod:`symgrad.emit.targets`).  The module it writes is plain Python that imports only its array
module: see :mod:`symgrad.emit.module` for its layout.  Nothing here imports SymPy.
"""
from __future__ import annotations

import importlib.util
import linecache
import sys
import types

from ..errors import SymgradError
from .module import assemble
from .targets import TARGETS
from . import cupy as _cupy  # noqa: F401 - registers the target
from . import dask as _dask  # noqa: F401 - registers the target
from . import numba_small as _numba  # noqa: F401 - registers the target (imports no Numba)
from . import torch as _torch  # noqa: F401 - registers the target (imports no torch)

__all__ = ["emit", "load_source", "target_named", "TARGETS"]


def target_named(name: str):
    """The registered target ``name``; a SymgradError listing the targets otherwise."""
    if name not in TARGETS:
        raise SymgradError(f"unknown target {name!r} (choose from {', '.join(sorted(TARGETS))})")
    return TARGETS[name]


def emit(program, target: str = "numpy") -> str:
    """Source text of the module of ``program`` (built and differentiated for ``target``, see
    :func:`symgrad.pipeline.build`) for ``target`` (deterministic)."""
    return assemble(program, target_named(target))


def load_source(source: str, module_name: str) -> types.ModuleType:
    """Import generated ``source`` as a fresh module object (not registered in sys.modules)."""
    safe = "".join(c if c.isalnum() or c == "_" else "_" for c in module_name)
    spec = importlib.util.spec_from_loader(f"symgrad_generated.{safe}", loader=None)
    mod = importlib.util.module_from_spec(spec)
    mod.__file__ = f"<symgrad {module_name}>"
    # linecache knows the source: tracebacks show the generated lines, inspect.getsource works
    linecache.cache[mod.__file__] = (len(source), None, source.splitlines(True), mod.__file__)
    exec(compile(source, mod.__file__, "exec"), mod.__dict__)  # noqa: S102 - our own output
    sys.modules.pop(mod.__name__, None)
    return mod
