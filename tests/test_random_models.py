"""Random scalar models from a small grammar: generated code == runtime tape, shapes included.

The grammar mixes every kind of rule the folds and rewrites touch (signs, constants, sigmoid and
softplus forms, Max, Abs, Piecewise, powers), so a wrong rewrite shows up as an O(1) mismatch.
SymPy itself adds constructs (re, im, arg, ITE) that the compiler must take too.
"""
from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad import tape

x, y, z = sp.symbols("x y z")


def random_expr(r: random.Random, depth: int):
    if depth == 0 or r.random() < 0.2:
        return r.choice([x, y, z, x * y, z - x, sp.Integer(r.randint(1, 3)), sp.Rational(1, 2), -x, 2 * y])
    rule = r.randrange(len(_RULES))
    a = random_expr(r, depth - 1)
    b = random_expr(r, depth - 1) if rule in _BINARY else None  # built only when used: SymPy is slow
    return _RULES[rule](a, b, r)


_RULES = [
    lambda a, b, r: a + b, lambda a, b, r: a - b, lambda a, b, r: a * b,
    lambda a, b, r: a / (2 + sp.tanh(b)), lambda a, b, r: sp.Max(a, b),
    lambda a, b, r: sp.Piecewise((a, b > 0), (-a, True)),
    lambda a, b, r: sp.exp(sp.tanh(a)), lambda a, b, r: sp.log(1 + a ** 2), lambda a, b, r: sp.sin(a),
    lambda a, b, r: 1 / (1 + sp.exp(-a)), lambda a, b, r: sp.Abs(a), lambda a, b, r: a ** r.choice([2, 3]),
    lambda a, b, r: sp.log(1 + sp.exp(a)), lambda a, b, r: sp.log(1 - 1 / (1 + sp.exp(-a))),
]
_BINARY = range(6)


@pytest.mark.parametrize("seed", range(80))
def test_random_model_matches_tape(seed):
    r = random.Random(seed)
    expr = random_expr(r, 3)
    if not expr.free_symbols:
        pytest.skip("constant expression")
    model = symgrad.Model(expr, name=f"random{seed}")
    module = symgrad.compile(model)
    rng = np.random.default_rng(seed)
    inputs = {s.name: rng.uniform(0.3, 1.5, (3, 4)) * rng.choice([-1, 1], (3, 4)) for s in model.inputs}
    if "y" in inputs:
        inputs["y"] = inputs["y"][0]  # a row: gradients must be summed over the broadcast axis
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_value, t_grads = tape.value_and_grad(model, **inputs)
        value, grads = module.value_and_grad(**inputs)
        fwd = module.forward(**inputs)
    if not np.all(np.isfinite(t_value)):
        pytest.skip("outside the model's domain")

    def err(got, want):  # the compiler's stable forms may beat the tape's naive ones slightly
        got, want = np.asarray(got, float), np.asarray(want, float)
        assert got.shape == want.shape, (got.shape, want.shape)
        return np.max(np.abs(got - want)) / max(1.0, np.max(np.abs(want)))

    assert model.wrt and set(grads) == {str(w) for w in model.wrt} == set(t_grads), (expr, sorted(grads))
    assert err(value, t_value) < 1e-7, expr
    assert err(fwd, t_value) < 1e-7, (expr, "forward")
    for name, t_g in t_grads.items():
        g = grads[name]
        assert np.shape(g) == np.shape(inputs[name]) == np.shape(t_g), (expr, name, np.shape(g))
        assert np.asarray(g).dtype == np.float64, (expr, name, np.asarray(g).dtype)
        assert err(g, t_g) < 1e-7, (expr, name)
