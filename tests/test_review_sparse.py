"""A hostile user's review of the sparse derivatives (contract 4e): the oracle is the tape's exact
Jacobian and its Hessian by differences of its exact gradient (``symgrad.tape``)."""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad import tape

pytest.importorskip("scipy")

a, b, x = sp.symbols("a b x")


@pytest.mark.parametrize("expr, wrt", [
    (sp.Piecewise((a, x > 0), (2 * a, True)), [a]),                       # J (1, 1) for a value of 4 entries
    (sp.Piecewise((a ** 2 * b, x > 0), (sp.exp(a), True)), [a, b]),       # ValueError in the driver
], ids=["linear", "nonlinear"])
def test_piecewise_on_a_data_array_with_scalar_branches(expr, wrt):
    """A condition on a data array, branches of scalar parameters only: the value has the
    condition's shape (4,), so J must be (4, n) with the rows of the tape's Jacobian."""
    model = symgrad.Model(expr, wrt=wrt, name="where_" + "".join(map(str, wrt)))
    mod = symgrad.compile(model, emit="sparse_jacobian,sparse_hessian")
    inputs = {"a": 0.5, "b": 0.1, "x": np.array([-1.0, 2.0, -3.0, 4.0])}
    inputs = {k: v for k, v in inputs.items() if k in mod.INPUTS}
    value, J = mod.sparse_jacobian(**inputs)
    want = tape.dense_jacobian(model, **inputs)[1]
    assert J.shape == want.shape == (4, len(wrt))
    np.testing.assert_allclose(J.toarray(), want, rtol=1e-12, atol=1e-12)
    _, _, H = mod.sparse_hessian(**inputs)
    np.testing.assert_allclose(H.toarray(), tape.dense_hessian(model, **inputs)[1], rtol=1e-6, atol=1e-8)
