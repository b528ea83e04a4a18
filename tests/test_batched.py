"""Batched sweeps (symgrad/emit/batched.py): ``hessian`` and ``jacobian`` take every direction in one
sweep with a leading batch axis.

* random models of tests/test_fuzz.py (scalar and matrix): ``jacobian`` == the tape's exact Jacobian
  and ``hessian`` == central differences of the tape's gradient (``tape.dense_hessian``);
* seed 001's logistic NLL and seed 002's MLP (matrix parameters, ReLU, bias broadcasts): the batched
  sweep is there, and equals the tape; a vector-valued model's Jacobian by rows (batched vjp) and by
  columns (batched jvp); chunks of directions (a tiny ``BATCH_MAX_BYTES``) give the same matrices;
* an op without a batched form (kron) leaves the function ``None``, named, and the loop still works;
* a stack that several nodes read is never written over by the in-place reuse of dead stacks.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import sympy as sp
from hypothesis import assume, given

import symgrad
from symgrad import tape

from test_fuzz import FUZZ_DERIV, compile_numpy, has_exact_tie, matrix_cases, quiet, reference, scalar_cases


def _flat_jacobian(J, value, inputs, names):
    return np.hstack([np.reshape(J[k], (np.size(value), np.size(inputs[k]))) for k in names])


def _flat_hessian(H, inputs, names):
    return np.block([[np.reshape(H[a, b], (np.size(inputs[a]), np.size(inputs[b]))) for b in names] for a in names])


def check_against_tape(model, mod, inputs, hessian=True, drawn=False):
    """``drawn``: a Hypothesis case (a Hessian the differences cannot check is skipped, else it fails)."""
    names = [str(w) for w in model.wrt]
    with quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value, J = mod.jacobian(**inputs)
        Jt = tape.dense_jacobian(model, **inputs)[1]
    scale = max(1.0, np.abs(Jt).max(initial=0))
    assert np.abs(_flat_jacobian(J, value, inputs, names) - Jt).max(initial=0) <= 1e-9 * scale, "jacobian != tape"
    if not hessian:
        return
    with quiet():
        _, grads, H = mod.hessian(**inputs)
        x64 = {k: np.asarray(v, dtype=np.float64) for k, v in inputs.items()}
        Ht = tape.dense_hessian(model, **x64)[1]
        t_grads = tape.value_and_grad(model, **inputs)[1]
    for k in names:
        np.testing.assert_allclose(grads[k], t_grads[k], rtol=1e-9, atol=1e-12)
    hscale = max(1.0, np.abs(Ht).max(initial=0))
    usable = bool(np.isfinite(Ht).all() and hscale < 1e6)
    if drawn:
        assume(usable)
    assert usable
    assert np.abs(_flat_hessian(H, inputs, names) - Ht).max(initial=0) <= 1e-4 * hscale, "hessian != tape"


def check_case(case):
    t_value, _ = reference(case)
    assume(np.size(t_value) <= 64)
    mod = compile_numpy(case, "jacobian,hessian")
    n = sum(np.size(case.inputs[str(k)]) for k in case.model.wrt)
    exact = not (any(type(a) is int for a in case.inputs.values()) or has_exact_tie(case) or n > 24)
    check_against_tape(case.model, mod, case.inputs, hessian=exact, drawn=True)


@FUZZ_DERIV
@given(scalar_cases())
def test_scalar_models_batched(case):
    check_case(case)


@FUZZ_DERIV
@given(matrix_cases())
def test_matrix_models_batched(case):
    check_case(case)


def _seed(name, model):
    from benchmarks import harness
    return harness.symgrad_model(name, model)


def _mlp_inputs(rng, n=12, m=5, h=3):
    return {"x": rng.standard_normal((n, m)), "w1": rng.standard_normal((m, h)) / 2,
            "b1": 0.1 * rng.standard_normal((1, h)), "w2": rng.standard_normal((h, 1)),
            "b2": 0.1 * rng.standard_normal((1, 1)), "y": rng.standard_normal((n, 1))}


@pytest.mark.parametrize("small", [False, True])
def test_seed_models_take_one_batched_sweep(small):
    """The logistic NLL and the MLP have batched sweeps; with BATCH_MAX_BYTES = 1 each direction
    is its own chunk, and the matrices are the same."""
    rng = np.random.default_rng(1)
    cases = [(_seed("seed001_autodiff.py", "seed001_logreg_nll"),
              {"Phi": rng.standard_normal((30, 4)), "y": (rng.uniform(size=(30, 1)) < 0.5) * 1.0,
               "w": 0.3 * rng.standard_normal((4, 1))}),
             (_seed("seed002_mlp.py", "seed002_mlp_mse"), _mlp_inputs(rng))]
    for model, inputs in cases:
        mod = symgrad.compile(model, emit="jacobian,hessian")
        assert mod._hvp_batched is not None and mod._vjp_batched is not None and mod._jvp_batched is not None
        if small:
            mod.BATCH_MAX_BYTES = 1
        try:
            check_against_tape(model, mod, inputs)
        finally:
            mod.BATCH_MAX_BYTES = 2 ** 27


def test_a_vector_valued_jacobian_by_rows_and_by_columns():
    """The MLP's residuals E (n x 1): n <= 19 parameters takes rows (batched vjp), n > 19 columns
    (batched jvp); both equal the tape's Jacobian."""
    N, d, h = sp.symbols("N d h")
    X, Y = sp.MatrixSymbol("x", N, d), sp.MatrixSymbol("y", N, 1)
    W1, b1 = sp.MatrixSymbol("w1", d, h), sp.MatrixSymbol("b1", 1, h)
    W2, b2 = sp.MatrixSymbol("w2", h, 1), sp.MatrixSymbol("b2", 1, 1)
    H = (X * W1 + sp.OneMatrix(N, 1) * b1).applyfunc(sp.tanh)
    model = symgrad.Model(H * W2 + sp.OneMatrix(N, 1) * b2 - Y, wrt=[W1, b1, W2, b2], name="residuals")
    mod = symgrad.compile(model, emit="jacobian")
    rng = np.random.default_rng(2)
    for n in (8, 40):  # 8 rows < 22 parameters: vjp; 40 rows: jvp
        check_against_tape(model, mod, _mlp_inputs(rng, n=n, m=5, h=3), hessian=False)


def test_an_op_without_a_batched_form_loops():
    """kron's tangent is a kron of a stack: no batched form; the function is None (its comment
    names the op) and hessian/jacobian loop over single directions, still equal to the tape."""
    A, B = sp.MatrixSymbol("A", 2, 2), sp.MatrixSymbol("B", 2, 2)
    model = symgrad.Model(sp.KroneckerProduct(A, B).applyfunc(sp.sin), wrt=[A, B], name="kronsin")
    source = symgrad.generate(model, emit="jacobian,hessian")
    assert "_hvp_batched = None  # no batched sweep: op kron" in source
    mod = symgrad.compile(model, emit="jacobian,hessian")
    rng = np.random.default_rng(3)
    check_against_tape(model, mod, {"A": rng.standard_normal((2, 2)), "B": rng.standard_normal((2, 2))})


def test_a_stack_used_twice_is_never_written_over():
    """sin(z) + z**2 + z * exp(z) of z = X w: the tangent of z feeds several products; a product
    written into a stack that a later node still reads would change the Hessian."""
    N, k = sp.symbols("N k")
    X, w = sp.MatrixSymbol("X", N, k), sp.MatrixSymbol("w", k, 1)
    body = (X * w).applyfunc(lambda t: sp.sin(t) + t ** 2 + t * sp.exp(t))
    model = symgrad.Model((sp.OneMatrix(1, N) * body)[0, 0], wrt=[w], name="twice")
    mod = symgrad.compile(model, emit="jacobian,hessian")
    assert mod._hvp_batched is not None
    rng = np.random.default_rng(4)
    check_against_tape(model, mod, {"X": rng.standard_normal((9, 3)) / 2, "w": rng.standard_normal((3, 1))})
