"""What the bridges share: binding inputs by name, the flat vector of contract 4e, and a VJP.

The flat layout: the named inputs in order (the module's ``WRT`` order for an objective, the state's
names for an ODE), each raveled in C order, float64.  Its shapes are fixed by the first ``pack``, or
read from the module's ``SHAPES`` and the shapes of the bound data before that: a ``MatrixSymbol``'s
dimensions from the data inputs that share them, a scalar ``Symbol`` as a scalar.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import SymgradError


def model_name(module) -> str:
    return getattr(module, "MODEL", getattr(module, "__name__", "module"))


def bind(owner: str, module, free: tuple, given: dict) -> dict:
    """``given`` checked to bind exactly the module's inputs that are not in ``free``."""
    inputs = tuple(module.INPUTS)
    unknown = [k for k in given if k not in inputs]
    if unknown:
        raise SymgradError(f"{owner}: {unknown[0]!r} is not an input of {model_name(module)}; "
                           f"its inputs are {list(inputs)}")
    clash = [k for k in given if k in free]
    if clash:
        raise SymgradError(f"{owner}: {clash[0]!r} is one of {list(free)}, which the vector holds: "
                           f"it cannot also be bound to a fixed value")
    missing = [k for k in inputs if k not in given and k not in free]
    if missing:
        raise SymgradError(f"{owner}: no value for the input(s) {missing} of {model_name(module)}: "
                           f"bind them by name")
    return dict(given)


def infer_shapes(owner: str, module, names: tuple, bound: dict) -> dict:
    """Shapes of ``names`` before any ``pack``: from ``SHAPES`` and the bound arrays' shapes."""
    spec_of = getattr(module, "SHAPES", None)
    if spec_of is None:
        raise SymgradError(f"{owner}: {model_name(module)} does not say its inputs' shapes: "
                           f"call pack({', '.join(f'{n}=...' for n in names)}) first")
    dims = {}
    for name, spec in spec_of.items():
        shape = np.shape(bound[name]) if name in bound else None
        if shape is not None and len(shape) == len(spec):
            dims.update((d, s) for d, s in zip(spec, shape) if isinstance(d, str))
    shapes = {}
    for name in names:
        spec = spec_of.get(name, ())          # a scalar Symbol: a scalar unless pack says otherwise
        unknown = [d for d in spec if isinstance(d, str) and d not in dims]
        if unknown:
            raise SymgradError(f"{owner}: the shape of {name!r} is not known: its dimension {unknown[0]!r} "
                               f"is no dimension of a bound input; call pack({name}=...) first")
        shapes[name] = tuple(dims.get(d, d) for d in spec)
    return shapes


class Layout:
    """Named arrays <-> one flat float64 vector; ``infer()`` gives the shapes until ``pack`` fixes them."""

    def __init__(self, owner: str, names: tuple, infer):
        self.owner, self.names, self._infer = owner, tuple(names), infer
        self.shapes = None

    def set_shapes(self, shapes: dict, fixed_by: str) -> None:
        """``fixed_by``: where the shapes came from, for the error of a later pack of others."""
        self.shapes, self._fixed_by = dict(shapes), fixed_by
        self.sizes = {n: math.prod(s) for n, s in self.shapes.items()}
        self.n = sum(self.sizes.values())
        bounds = np.cumsum([0] + [self.sizes[k] for k in self.names])
        self._slices = {k: slice(int(a), int(b)) for k, a, b in zip(self.names, bounds, bounds[1:])}

    def ensure(self) -> "Layout":
        if self.shapes is None:
            self.set_shapes(self._infer(), "read from the module's SHAPES and the bound inputs before any "
                                           "pack: to lay out other shapes, call pack() first")
        return self

    def pack(self, arrays: dict) -> np.ndarray:
        keys = set(arrays)
        if keys != set(self.names):
            raise SymgradError(f"{self.owner}: pack() takes exactly {list(self.names)}, got {sorted(keys)}")
        shapes = {n: np.shape(arrays[n]) for n in self.names}
        if self.shapes is None:
            self.set_shapes(shapes, "fixed by the first pack")
        for n in self.names:
            if shapes[n] != self.shapes[n]:
                raise SymgradError(f"{self.owner}: {n!r} has shape {shapes[n]}, but the layout has "
                                   f"{self.shapes[n]} ({self._fixed_by})")
        return np.array(self.flatten(arrays))          # never a view of the caller's array

    def vector(self, x, what: str = "x") -> np.ndarray:
        """A float64 copy of ``x`` (so a caller that changes ``x`` later changes nothing here)."""
        self.ensure()
        v = np.array(x, dtype=np.float64)
        if v.shape != (self.n,):
            raise SymgradError(f"{self.owner}: {what} has shape {v.shape}, expected ({self.n},): "
                               f"{', '.join(f'{k} {self.shapes[k]}' for k in self.names)}")
        return v

    def split(self, v: np.ndarray) -> dict:
        """Views of the checked vector ``v``, one per name, shaped."""
        return {k: v[self._slices[k]].reshape(self.shapes[k]) for k in self.names}

    def flatten(self, arrays: dict) -> np.ndarray:
        """A 1-D float64 vector, C order whatever each array's memory layout; new, or (for one
        name) possibly a view of the array given, which the caller owns (contract 4c)."""
        self.ensure()
        if len(self.names) == 1:
            return np.ravel(np.asarray(arrays[self.names[0]], dtype=np.float64))
        return np.concatenate([np.ravel(np.asarray(arrays[k], dtype=np.float64)) for k in self.names])


def need(owner: str, module, function: str):
    """The module's ``function``, or an error saying how to get it."""
    fn = getattr(module, function, None)
    if fn is None:
        raise SymgradError(f"{owner}: {model_name(module)} has no {function}(): compile it with "
                           f"emit=\"{function}\" (or --emit {function})")
    return fn


def vjp(owner: str, module, cotangent, inputs: dict) -> dict:
    """``cotangent^T J`` for each wrt input: the module's ``vjp``, or for a one-entry value without
    it, ``cotangent`` times ``value_and_grad``'s gradients."""
    if hasattr(module, "vjp"):
        return module.vjp(cotangent, **inputs)[1]
    if np.size(cotangent) != 1:
        need(owner, module, "vjp")
    c = np.reshape(cotangent, ())
    return {k: c * g for k, g in module.value_and_grad(**inputs)[1].items()}
