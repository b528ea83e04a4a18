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


# -- strong zeros: singular partials at the points {-2, -1, 0, 1/2, 1, 2} -----------------------
# Functions whose partial derivative is infinite or NaN at a finite point (sqrt, log, cube root,
# 1/x**2, asin, acosh, atanh, division) composed with factors and selections that send an exact 0
# cotangent there (y*sqrt(x) at y = 0, Max(x, cosh(2*tanh(sqrt(x)))) at 0): the tape's policy is
# that such a contribution is 0, never 0 * inf = NaN, and the module must agree point by point.
_SINGULAR = [
    lambda a, b, r: a * b, lambda a, b, r: a + b, lambda a, b, r: a - b, lambda a, b, r: a / b,
    lambda a, b, r: sp.Max(a, b), lambda a, b, r: sp.Min(a, b), lambda a, b, r: sp.atan2(a, b),
    lambda a, b, r: sp.Piecewise((a, b > 0), (b, True)),
    lambda a, b, r: sp.sqrt(a), lambda a, b, r: sp.log(a), lambda a, b, r: a ** sp.Rational(1, 3),
    lambda a, b, r: a ** -2, lambda a, b, r: sp.asin(a), lambda a, b, r: sp.acosh(a),
    lambda a, b, r: sp.atanh(a), lambda a, b, r: sp.cosh(2 * sp.tanh(a)), lambda a, b, r: sp.Abs(a),
    lambda a, b, r: sp.exp(sp.tanh(a)), lambda a, b, r: a ** 2,
]
_SINGULAR_BINARY = range(8)
_POINTS = (-2.0, -1.0, 0.0, 0.5, 1.0, 2.0)


def singular_expr(r: random.Random, depth: int):
    if depth == 0 or r.random() < 0.25:
        return r.choice([x, y, z, x * y, 2 * y, -x, sp.Rational(1, 2)])
    rule = r.randrange(len(_SINGULAR))
    b = singular_expr(r, depth - 1) if rule in _SINGULAR_BINARY else None
    return _SINGULAR[rule](singular_expr(r, depth - 1), b, r)


def _disagree(got, want):
    """Where ``got`` and ``want`` differ: NaN-ness, infinities, else 1e-7 relative."""
    got, want = np.broadcast_to(np.asarray(got, float), np.shape(want)), np.asarray(want, float)
    finite = np.isfinite(got) & np.isfinite(want)
    with np.errstate(invalid="ignore"):
        close = np.where(finite, np.abs(got - want) <= 1e-7 * np.maximum(1.0, np.abs(want)), got == want)
    return ~(close | (np.isnan(got) & np.isnan(want)))


@pytest.mark.parametrize("seed", range(60))
def test_zero_cotangent_meets_singular_partial_as_in_the_tape(seed):
    r = random.Random(1000 + seed)
    expr = singular_expr(r, 3)
    if not expr.free_symbols or expr.has(sp.zoo, sp.nan, sp.oo, -sp.oo, sp.I):
        pytest.skip("constant or non-real expression")
    model = symgrad.Model(expr, name=f"singular{seed}")
    module = symgrad.compile(model)
    grid = np.array(np.meshgrid(*[_POINTS] * 3, indexing="ij")).reshape(3, -1)  # every point of {..}^3
    inputs = {s.name: grid["xyz".index(s.name)].copy() for s in model.inputs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_value, t_grads = tape.value_and_grad(model, **inputs)
        value, grads = module.value_and_grad(**inputs)
        for i in range(0, grid.shape[1], 7):  # the Python-float fast path gives the arrays' answers
            f_value, f_grads = module.value_and_grad(**{k: float(v[i]) for k, v in inputs.items()})
            assert not _disagree(f_value, value[i]), (expr, i)
            assert not any(_disagree(f_grads[k], grads[k][i]) for k in grads), (expr, i, f_grads)
    # only finite values: the sign of an infinity at a pole follows the sign of a zero, which the
    # symbolic rewrites do not keep ((-x)/(-x - 1) at x = -1 is +inf on the tape, x/(x + 1) -inf)
    defined = np.isfinite(t_value)  # and a NaN or infinite value's gradient is not the policy's business
    assert not (_disagree(value, t_value) & defined).any(), expr
    for k, t_g in t_grads.items():
        bad = _disagree(grads[k], t_g) & defined
        assert not bad.any(), (expr, k, {n: v[bad][:3] for n, v in inputs.items()}, grads[k][bad][:3], t_g[bad][:3])
