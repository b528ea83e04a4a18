"""Independent references for tests: central finite differences in float64 and the runtime tape.

Nothing here calls the symbolic compiler; the tests compare its output with these.
"""
from __future__ import annotations

import numpy as np

from symgrad import tape


def rel_err(got, want) -> float:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape}"
    scale = max(float(np.max(np.abs(want), initial=0.0)), 1e-300)
    return float(np.max(np.abs(got - want), initial=0.0)) / scale


def fd_grad(fun, inputs: dict, name: str, eps: float = 1e-6) -> np.ndarray:
    """Central differences of sum(fun(**inputs)) with respect to inputs[name], entry by entry."""
    x0 = np.asarray(inputs[name], dtype=np.float64)
    grad = np.zeros_like(x0)
    for idx in np.ndindex(x0.shape or ()):
        h = eps * max(1.0, abs(float(x0[idx])))
        plus, minus = x0.copy(), x0.copy()
        plus[idx] += h
        minus[idx] -= h
        fp = np.sum(fun(**{**inputs, name: plus}))
        fm = np.sum(fun(**{**inputs, name: minus}))
        grad[idx] = (fp - fm) / (2 * h)
    return grad


def assert_matches_oracles(model, module, inputs, *, tape_rtol=1e-9, fd_rtol=1e-6):
    """Generated value/gradients == tape (to rounding) == finite differences (to truncation)."""
    value, grads = module.value_and_grad(**inputs)
    t_value, t_grads = tape.value_and_grad(model, **inputs)
    assert rel_err(value, t_value) <= tape_rtol, ("value", value, t_value)
    assert rel_err(module.forward(**inputs), t_value) <= tape_rtol
    assert set(grads) == {str(w) for w in model.wrt}
    for name, g in grads.items():
        assert np.shape(g) == np.shape(inputs[name]), (name, np.shape(g), np.shape(inputs[name]))
        assert rel_err(g, t_grads[name]) <= tape_rtol, (name, "vs tape", rel_err(g, t_grads[name]))
        fd = fd_grad(lambda **kw: tape.forward(model, **kw), inputs, name)
        assert rel_err(g, fd) <= fd_rtol, (name, "vs finite differences", rel_err(g, fd))
    return value, grads
