"""``symgrad.OdeSystem``: a model as the right-hand side of ``dy/dt = f(t, y)`` and its Jacobian,
for ``scipy.integrate.solve_ivp``.

    sol = solve_ivp(ode.fun, (0, T), y0, method="BDF", jac=ode.jac)

The model's value is ``dy/dt``, as many entries as the state.  ``state`` names the wrt input(s)
that hold ``y`` (one name, or several laid out like contract 4e: in order, each raveled in C
order); ``time`` names the input that takes ``t`` (``None``: an autonomous system); every other
input is bound by name.  ``jac`` is the module's ``sparse_jacobian`` (CSR) when it has one, else
its dense ``jacobian``; only the state's columns are kept.  A single state input that is a scalar
``Symbol`` takes the shape of ``y`` at the first call.
"""
from __future__ import annotations

import numpy as np

from ..errors import SymgradError
from . import core


class OdeSystem:
    """``fun(t, y)`` and ``jac(t, y)`` of a generated module for ``solve_ivp`` (and ``pack``/``unpack``
    between the state inputs and ``y``)."""

    def __init__(self, module, /, state, time=None, **params):
        self.module = module
        self.owner = owner = f"OdeSystem({core.model_name(module)})"
        names = (state,) if isinstance(state, str) else tuple(state)
        wrt = tuple(module.WRT)
        for n in names:
            if n not in wrt:
                raise SymgradError(f"{owner}: the state {n!r} is not a wrt input of "
                                        f"{core.model_name(module)} (wrt: {list(wrt)}): its Jacobian is "
                                        f"not computed")
        if time is not None and (time not in module.INPUTS or time in names):
            raise SymgradError(f"{owner}: time={time!r} is not an input of {core.model_name(module)} "
                                    f"apart from the state; its inputs are {list(module.INPUTS)}")
        self.time = time
        self.params = core.bind(owner, module, names + ((time,) if time else ()), params)
        self.layout = core.Layout(owner, names, lambda: core.infer_shapes(owner, module, names, self.params))
        # a lone scalar-Symbol state takes the shape of y (solve_ivp's 1-D vector)
        self._shape_from_y = len(names) == 1 and names[0] not in getattr(module, "SHAPES", {})
        self._columns = None

    def pack(self, **state) -> np.ndarray:
        """The state inputs as one 1-D float64 vector (``y0``); the first call fixes their shapes."""
        return self.layout.pack(state)

    def unpack(self, y) -> dict:
        return {k: a.copy() for k, a in self.layout.split(self._vector(y)).items()}

    def _vector(self, y) -> np.ndarray:
        if self.layout.shapes is None and self._shape_from_y:
            self.layout.set_shapes({self.layout.names[0]: np.shape(y)}, "the shape of y at the first call")
        return self.layout.vector(y, "y")

    def _inputs(self, t, y) -> dict:
        inputs = {**self.layout.split(self._vector(y)), **self.params}
        if self.time is not None:
            inputs[self.time] = float(t)
        return inputs

    def _check(self, size: int) -> None:
        if size != self.layout.n:
            raise SymgradError(f"{self.owner}: the right-hand side has {size} entries, the state "
                                    f"{list(self.layout.names)} has {self.layout.n}")

    def fun(self, t, y) -> np.ndarray:
        """``dy/dt`` at ``(t, y)``, 1-D float64."""
        f = np.asarray(self.module.forward(**self._inputs(t, y)), dtype=np.float64).reshape(-1)
        self._check(f.size)
        return f

    def jac(self, t, y):
        """``d(dy/dt)/dy`` at ``(t, y)``: ``scipy.sparse`` CSR from ``sparse_jacobian``, else dense."""
        inputs = self._inputs(t, y)
        if hasattr(self.module, "sparse_jacobian"):
            value, J = self.module.sparse_jacobian(**inputs)
            self._check(np.size(value))
            return J if tuple(self.module.WRT) == self.layout.names else J[:, self._state_columns(inputs)]
        value, blocks = core.need(self.owner, self.module, "jacobian")(**inputs)
        m = np.size(value)
        self._check(m)
        return np.hstack([np.reshape(blocks[k], (m, self.layout.sizes[k])) for k in self.layout.names])

    def _state_columns(self, inputs) -> np.ndarray:
        """Columns of the state in a Jacobian over all wrt inputs (contract 4e's layout)."""
        if self._columns is None:
            starts, at = {}, 0
            for k in self.module.WRT:
                starts[k], at = at, at + int(np.size(inputs[k]))
            self._columns = np.concatenate([np.arange(starts[k], starts[k] + self.layout.sizes[k])
                                            for k in self.layout.names])
        return self._columns
