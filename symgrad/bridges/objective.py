"""``symgrad.Objective``: a generated module's value as a function of one flat vector (contract 4f).

    obj = symgrad.Objective(module, X=X, y=y)          # every non-wrt input bound by name
    x0 = obj.pack(w=np.zeros((k, 1)))                  # the wrt inputs -> one float64 vector
    res = scipy.optimize.minimize(obj.fun_and_jac, x0, jac=True, method="trust-exact", hess=obj.hess)
    obj.unpack(res.x)["w"]

The value minimised is ``sum(value)`` (the value itself when it is a scalar): the quantity whose
gradient, HVP and Hessian the module computes (contract 4a), so a model of per-sample losses over
arrays is its total loss.  ``fun`` computes the gradient too and both are kept for the last ``x``
(keyed on its bytes): SciPy asks for ``fun`` and then ``jac`` at the same point, and that is one
``value_and_grad`` call.  The fixed inputs are held as given (not copied): after changing one in
place, make a new Objective, or the value kept for the last ``x`` is the old data's.  Nothing
here imports SciPy: ``hess`` returns the module's own ``scipy.sparse`` matrix when the module has
``sparse_hessian``.
"""
from __future__ import annotations

import numpy as np

from . import core


class Objective:
    """``fun``, ``jac``, ``fun_and_jac``, ``hessp`` and ``hess`` of a flat vector ``x`` holding the
    module's ``WRT`` inputs (in that order, each raveled in C order); ``fixed`` binds the others."""

    def __init__(self, module, /, **fixed):
        self.module = module
        self.owner = f"Objective({core.model_name(module)})"
        wrt = tuple(module.WRT)
        self.fixed = core.bind(self.owner, module, wrt, fixed)
        self.layout = core.Layout(self.owner, wrt,
                                  lambda: core.infer_shapes(self.owner, module, wrt, self.fixed))
        self._key = None
        self._value = self._grad = None

    @property
    def n(self) -> int:
        """The length of ``x``."""
        return self.layout.ensure().n

    def pack(self, **wrt) -> np.ndarray:
        """The wrt inputs as one 1-D float64 vector; the first call fixes their shapes."""
        return self.layout.pack(wrt)

    def unpack(self, x) -> dict:
        """``{name: array}`` of the wrt inputs held by ``x`` (new arrays)."""
        return {k: a.copy() for k, a in self.layout.split(self.layout.vector(x)).items()}

    def _inputs(self, v: np.ndarray) -> dict:
        return {**self.layout.split(v), **self.fixed}

    def _evaluate(self, x):
        v = self.layout.vector(x)
        key = v.tobytes()
        if key != self._key:
            value, grads = self.module.value_and_grad(**self._inputs(v))
            self._value = float(value) if np.ndim(value) == 0 else float(np.sum(value))
            self._grad = self.layout.flatten(grads)
            self._key = key
        return self._value, self._grad

    def fun(self, x) -> float:
        """``sum(value)`` at ``x``."""
        return self._evaluate(x)[0]

    def jac(self, x) -> np.ndarray:
        """The gradient of ``sum(value)`` at ``x``, 1-D."""
        return self._evaluate(x)[1].copy()

    def fun_and_jac(self, x):
        """``(fun(x), jac(x))`` from one ``value_and_grad`` call: ``minimize(..., jac=True)``."""
        value, grad = self._evaluate(x)
        return value, grad.copy()

    def hessp(self, x, p) -> np.ndarray:
        """The Hessian of ``sum(value)`` at ``x`` times ``p``, from the module's ``hvp``."""
        hvp = core.need(self.owner, self.module, "hvp")
        v, d = self.layout.vector(x), self.layout.vector(p, "p")
        return self.layout.flatten(hvp(self.layout.split(d), **self._inputs(v))[2])

    def hess(self, x):
        """The Hessian of ``sum(value)`` at ``x``: the module's ``sparse_hessian`` (a ``scipy.sparse``
        CSR matrix) when it has one, else a dense 2-D array assembled from ``hessian``'s blocks."""
        inputs = self._inputs(self.layout.vector(x))
        if hasattr(self.module, "sparse_hessian"):
            return self.module.sparse_hessian(**inputs)[2]
        blocks = core.need(self.owner, self.module, "hessian")(**inputs)[2]
        names, sizes = self.layout.names, self.layout.sizes
        return np.block([[np.reshape(blocks[a, b], (sizes[a], sizes[b])) for b in names] for a in names])
