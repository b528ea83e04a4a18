"""Derivatives beyond the gradient: vjp, jvp, jacobian, hvp, hessian.

Oracles, all independent of the compiler: the tape's exact VJP with any cotangent, its Jacobian
(one VJP per unit cotangent) for jvp and jacobian; central differences of the tape's exact
gradient (Richardson, float64) for hvp and hessian, and hand-derived second derivatives.
"""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from sympy import MatrixSymbol, OneMatrix

import symgrad
from symgrad import SymgradError, tape
from symgrad.emit import load_source
from symgrad.model import load_models
from symgrad.verify import check, rel_err, sample_inputs

from _cupy_shim import fake_cupy

ROOT = Path(__file__).resolve().parent.parent
ALL = "vjp,jvp,jacobian,hvp,hessian"
x, y, z = sp.symbols("x y z", real=True)
N, d, C = sp.symbols("N d C")


def module_for(model, target="numpy", emit=ALL, monkeypatch=None):
    if target == "cupy":
        monkeypatch.setitem(sys.modules, "cupy", fake_cupy())
    return load_source(symgrad.generate(model, target, emit), f"{model.name}_{target}")


def assert_all_match_tape(model, mod, inputs, rng):
    """Every function of ``mod`` at ``inputs`` against the tape (and differences of its gradient)."""
    with np.errstate(all="ignore"):
        value = tape.forward(model, **inputs)
        u = rng.standard_normal(np.shape(value))
        t = {str(w): rng.standard_normal(np.shape(inputs[str(w)])) for w in model.wrt}
        v, g = mod.vjp(u, **inputs)
        assert rel_err(v, value) < 1e-12
        for k, want in tape.vjp(model, u, **inputs)[1].items():
            assert rel_err(g[k], want) < 1e-10, ("vjp", k)
        _, J = tape.jacobian(model, **inputs)
        got_v, got_J = mod.jacobian(**inputs)
        for k in J:
            assert got_J[k].shape == np.shape(value) + np.shape(inputs[k]) and rel_err(got_J[k], J[k]) < 1e-10
        _, tangent = mod.jvp(t, **inputs)
        assert rel_err(tangent, tape.jvp(model, t, **inputs)[1]) < 1e-10
        _, grads, hv = mod.hvp(t, **inputs)
        _, t_grads, t_hv = tape.hvp(model, t, **inputs)
        for k in t_hv:
            assert rel_err(grads[k], t_grads[k]) < 1e-10
            assert rel_err(hv[k], t_hv[k]) < 1e-6, ("hvp", k, hv[k], t_hv[k])
        _, _, H = mod.hessian(**inputs)
        for a in t:
            Ht = sum(np.tensordot(H[a, b], t[b], axes=np.ndim(t[b])) for b in t)
            assert rel_err(Ht, t_hv[a]) < 1e-6, ("hessian", a)


SEED_MODELS = [(path.name, m) for path in sorted((ROOT / "examples").glob("seed*.py")) for m in load_models(path)]


@pytest.mark.parametrize("target", ["numpy", "cupy"])
@pytest.mark.parametrize("model", [m for _, m in SEED_MODELS], ids=[m.name for _, m in SEED_MODELS])
def test_seed_models(model, target, monkeypatch):
    rng = np.random.default_rng(1)
    assert_all_match_tape(model, module_for(model, target, monkeypatch=monkeypatch), sample_inputs(model, rng), rng)


X, W, b = MatrixSymbol("X", N, d), MatrixSymbol("W", d, C), MatrixSymbol("b", 1, C)
s = sp.Symbol("s")
HARD = {
    # a matrix-valued value: J has 4 axes
    "matrix_value": symgrad.Model((X * W + OneMatrix(N, 1) * b).applyfunc(sp.tanh), wrt=[W, b], name="mv"),
    # scalar Symbols inside and outside matrices, a broadcast scalar parameter
    "scalar_in_matrix": symgrad.Model(s * sp.Trace(s * W.T * W) + s ** 3, wrt=[s, W], name="sm"),
    "softmax_temperature": symgrad.Model(
        (OneMatrix(1, N) * ((X * W / s).applyfunc(sp.exp) * OneMatrix(C, 1)).applyfunc(sp.log))[0, 0]
        - sp.Trace(MatrixSymbol("Y", N, C).T * (X * W / s)), wrt=[W, s], name="st"),
    # broadcast scalars of different shapes, selections, guards and powers
    "broadcast": symgrad.Model(x ** 2 * y + sp.exp(x * y) * z, wrt=[x, y], name="bc"),
    "guards": symgrad.Model(sp.Piecewise((x ** 3 * sp.log(x), x > 0), (x ** 2, True)) + sp.Max(x, y) ** 2,
                            wrt=[x, y], name="gd"),
    "power": symgrad.Model((1 + x ** 2) ** sp.tanh(y), wrt=[x, y], name="pw"),
    # bilinear ops whose rules are made of each other; special functions whose derivatives are too
    "kronecker": symgrad.Model(sp.KroneckerProduct(MatrixSymbol("A", 2, 2), MatrixSymbol("B", 2, 3)).applyfunc(sp.sin),
                               name="kr"),
    "special": symgrad.Model(sp.expint(2, x) * sp.LambertW(y) + sp.beta(x, y), wrt=[x, y], name="sf"),
}
HARD_INPUTS = {
    "matrix_value": lambda r: {"X": r.standard_normal((4, 3)), "W": r.standard_normal((3, 2)),
                               "b": r.standard_normal((1, 2))},
    "scalar_in_matrix": lambda r: {"s": 0.7, "W": r.standard_normal((3, 2))},
    "softmax_temperature": lambda r: {"X": r.standard_normal((4, 3)), "W": r.standard_normal((3, 2)), "s": 1.7,
                                      "Y": np.eye(2)[[0, 1, 1, 0]]},
    "broadcast": lambda r: {"x": r.standard_normal((2, 1)), "y": r.standard_normal(3), "z": 0.5},
    "guards": lambda r: {"x": np.array([-1.5, -0.3, 0.4, 2.0]), "y": np.array([1.0, -1.0, 1.0, 0.1])},
    "power": lambda r: {"x": r.standard_normal(3), "y": r.standard_normal(3)},
    "kronecker": lambda r: {"A": r.standard_normal((2, 2)), "B": r.standard_normal((2, 3))},
    "special": lambda r: {"x": r.uniform(0.5, 2, 3), "y": r.uniform(0.5, 2, 3)},
}


@pytest.mark.parametrize("target", ["numpy", "cupy"])
@pytest.mark.parametrize("case", sorted(HARD))
def test_hard_models(case, target, monkeypatch):
    rng = np.random.default_rng(2)
    model = HARD[case]
    assert_all_match_tape(model, module_for(model, target, monkeypatch=monkeypatch), HARD_INPUTS[case](rng), rng)


def test_hand_derived_second_derivatives():
    """f = x**2 y + sin(x y): f_xx = 2y - y**2 sin(xy), f_xy = 2x + cos(xy) - xy sin(xy), f_yy = -x**2 sin(xy)."""
    mod = symgrad.compile(symgrad.Model(x ** 2 * y + sp.sin(x * y), wrt=[x, y]), emit="hessian")
    a, c = 0.7, -1.3
    _, _, H = mod.hessian(x=a, y=c)
    s_, c_ = np.sin(a * c), np.cos(a * c)
    assert np.allclose([H["x", "x"], H["x", "y"], H["y", "x"], H["y", "y"]],
                       [2 * c - c ** 2 * s_, 2 * a + c_ - a * c * s_, 2 * a + c_ - a * c * s_, -a ** 2 * s_],
                       rtol=1e-13, atol=0)


def test_second_derivatives_of_piecewise_linear_ops_are_zero_and_guards_guard():
    """The kink policy at second order: Abs, Max, ReLU-like selections have H = 0 at and away from
    their kinks; a guarded branch that is not taken contributes exactly 0 (no NaN)."""
    model = symgrad.Model(sp.Abs(x) + sp.Max(x, 0) + sp.Min(x, 2 * y) + sp.sign(x) * y
                          + sp.Piecewise((x * sp.log(x), x > 0), (0, True)), wrt=[x, y])
    mod = symgrad.compile(model, emit="hvp")
    xs = np.array([-1.0, 0.0, 0.5, 3.0])
    with np.errstate(all="ignore"):
        _, _, hv = mod.hvp({"x": np.ones(4), "y": np.zeros(4)}, x=xs, y=np.ones(4))
    # d2/dx2 of x log x = 1/x where x > 0, else 0; everything else is piecewise linear
    assert hv["x"].tolist() == [0.0, 0.0, 2.0, 1 / 3.0] and hv["y"].tolist() == [0.0] * 4


def test_vjp_with_ones_is_value_and_grad_and_jacobian_layout():
    model = HARD["matrix_value"]
    mod = symgrad.compile(model, emit="jacobian")
    inputs = HARD_INPUTS["matrix_value"](np.random.default_rng(3))
    value, grads = mod.value_and_grad(**inputs)
    v2, g2 = mod.vjp(np.ones((4, 2)), **inputs)
    assert np.array_equal(value, v2) and all(np.allclose(grads[k], g2[k], rtol=1e-14) for k in grads)
    _, J = mod.jacobian(**inputs)
    assert J["W"].shape == (4, 2, 3, 2) and J["b"].shape == (4, 2, 1, 2)
    # d tanh(XW + b)[i, j] / d b[0, j'] = (1 - value[i, j]**2) [j == j']
    assert np.allclose(J["b"][:, :, 0, :], (1 - value ** 2)[:, :, None] * np.eye(2)[None], rtol=1e-13)


def test_jacobian_by_columns_when_the_value_is_larger():
    """A value of more entries than the inputs: the Jacobian is built from jvp columns."""
    mod = symgrad.compile(symgrad.Model(sp.exp(x) * y, wrt=[x]), emit="jacobian")
    ys = np.arange(1.0, 7.0).reshape(2, 3)
    value, J = mod.jacobian(x=0.5, y=ys)
    assert value.shape == (2, 3) and J["x"].shape == (2, 3) and np.allclose(J["x"], np.exp(0.5) * ys)


def test_every_returned_array_is_owned():
    model = symgrad.Model(x, wrt=[x])  # the identity: every derivative is (a view of) an argument
    mod = symgrad.compile(model, emit=ALL)
    xs, t = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    for out, args in [(mod.vjp(t, x=xs), [xs, t]), (mod.jvp({"x": t}, x=xs), [xs, t]),
                      (mod.hvp({"x": t}, x=xs), [xs, t]), (mod.jacobian(x=xs), [xs]), (mod.hessian(x=xs), [xs])]:
        arrays = [out[0]] + [a for part in out[1:] for a in (part.values() if isinstance(part, dict) else [part])]
        for i, a in enumerate(arrays):
            assert a.flags.writeable
            assert not any(np.shares_memory(a, other) for other in args + arrays[:i])


def test_bad_seeds_are_clear_errors():
    mod = symgrad.compile(HARD["matrix_value"], emit=ALL)
    inputs = HARD_INPUTS["matrix_value"](np.random.default_rng(4))
    with pytest.raises(ValueError, match=r"cotangent has shape \(2, 4\), expected \(4, 2\)"):
        mod.vjp(np.ones((2, 4)), **inputs)
    with pytest.raises(TypeError, match="cotangent must be real numbers"):
        mod.vjp("ones", **inputs)
    with pytest.raises(TypeError, match=r"tangents must be a dict with the keys \['W', 'b'\]"):
        mod.jvp({"W": np.ones((3, 2))}, **inputs)
    with pytest.raises(ValueError, match=r"vectors\['b'\] has shape \(2,\), expected \(1, 2\)"):
        mod.hvp({"W": np.ones((3, 2)), "b": np.ones(2)}, **inputs)


def test_a_huge_dense_hessian_is_refused_with_its_size():
    mod = symgrad.compile(symgrad.Model(sp.Trace(W.T * W), wrt=[W]), emit="hessian")
    mod.HESSIAN_MAX_BYTES = 1000
    with pytest.raises(ValueError, match=r"12 x 12 entries .* use hvp"):
        mod.hessian(W=np.ones((4, 3)))
    mod.HESSIAN_MAX_BYTES = 2 ** 30
    _, _, H = mod.hessian(W=np.ones((4, 3)))
    assert np.array_equal(H["W", "W"].reshape(12, 12), 2 * np.eye(12))


def test_float32_stays_float32():
    mod = symgrad.compile(symgrad.Model(sp.sin(x) * y, wrt=[x, y]), emit=ALL)
    f = np.float32
    xs, ys = np.ones(3, f), np.full(3, 2, f)
    assert mod.vjp(np.ones(3, f), x=xs, y=ys)[1]["x"].dtype == f
    assert mod.jvp({"x": xs, "y": ys}, x=xs, y=ys)[1].dtype == f
    assert mod.hvp({"x": xs, "y": ys}, x=xs, y=ys)[2]["y"].dtype == f
    assert mod.hessian(x=xs, y=ys)[2]["x", "y"].dtype == f


def test_choosing_the_functions():
    base = symgrad.Model(x ** 2, wrt=[x], name="q")
    assert not hasattr(symgrad.compile(base), "hvp")                        # the default is unchanged
    assert symgrad.compile(base, emit=["hessian"]).DERIVATIVES == ("grad", "hvp", "hessian")  # with what it calls
    own = symgrad.Model(x ** 2, wrt=[x], name="q", derivatives="jvp")
    assert symgrad.compile(own).DERIVATIVES == ("grad", "jvp")               # the model's own set
    assert symgrad.compile(own, emit="vjp").DERIVATIVES == ("grad", "vjp")  # emit= overrides it
    with pytest.raises(SymgradError, match="unknown derivative 'hessain'"):
        symgrad.Model(x ** 2, derivatives="hessain")
    assert symgrad.generate(base, emit=ALL) == symgrad.generate(base, emit=ALL)  # same model, same bytes


def test_cli_emit(tmp_path):
    model_file = tmp_path / "m.py"
    model_file.write_text("import sympy as sp, symgrad\nx = sp.Symbol('x')\n"
                          "model = symgrad.Model(sp.exp(x) * x, wrt=[x], name='m')\n")
    run = lambda *a: subprocess.run([sys.executable, "-m", "symgrad", "compile", str(model_file), *a],
                                    capture_output=True, text=True, cwd=tmp_path)
    done = run("--emit", "jvp,hessian", "--check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "jvp" in done.stdout and "hessian" in done.stdout and done.stdout.startswith("wrote")
    text = (tmp_path / "codegen_out" / "m_numpy.py").read_text()
    assert "def jvp(tangents, /, *, x):" in text and "def hessian(*, x):" in text
    bad = run("--emit", "hvp,bogus", "-o", "never.py")
    assert bad.returncode == 2 and "unknown derivative 'bogus'" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "never.py").exists()


@pytest.mark.parametrize("names", ["cotangent tangents vectors", "lambda np v_lambda"])
def test_inputs_named_like_the_parameters(names):
    """Inputs called cotangent, tangents or vectors (the positional parameter gets another name),
    or names that are not Python identifiers (the functions take **inputs)."""
    a, b, c = sp.symbols(names, real=True)
    model = symgrad.Model(a * b + c ** 2, wrt=[a, b, c])
    mod = symgrad.compile(model, emit=ALL)
    na, nb, nc = names.split()
    ins = {na: 2.0, nb: 3.0, nc: 0.5}
    assert mod.vjp(2.0, **ins)[1] == {na: 6.0, nb: 4.0, nc: 2.0}
    assert mod.jvp({na: 1.0, nb: 0.0, nc: 0.0}, **ins)[1] == 3.0
    assert mod.hvp({na: 0.0, nb: 0.0, nc: 1.0}, **ins)[2][nc] == 2.0
    assert mod.hessian(**ins)[2][na, nb] == 1.0 and mod.jacobian(**ins)[1][nc] == 1.0


# -- --check, symgrad.testing and the pytest file check every function ---------------------------
def test_check_covers_every_function_and_catches_a_wrong_one():
    model = HARD["guards"]
    src = symgrad.generate(model, "numpy", ALL)
    report = check(model, load_source(src, "ok"))
    assert report.ok and set(report.derivatives) == {"vjp", "jvp", "jacobian", "hvp", "hessian"}, report.problems
    for fn, wrong in [("vjp", "return t"), ("jvp", "return t"), ("hvp", "return t")]:
        mod = load_source(src, "bad")
        right = getattr(mod, fn)

        def scaled(seed, /, _right=right, **kw):
            out = list(_right(seed, **kw))
            last = out[-1]
            out[-1] = {k: v * 1.001 for k, v in last.items()} if isinstance(last, dict) else last * 1.001
            return tuple(out)
        setattr(mod, fn, scaled)
        bad = check(model, mod, calls=False)
        assert not bad.ok and any(p.startswith(f"{fn}:") for p in bad.problems), (fn, bad.problems)


@pytest.mark.parametrize("rule", ["matmul", "elementwise mask"])
def test_a_planted_rule_bug_is_caught(rule, monkeypatch):
    """Mutations of the forward-mode rules: the tape-based checks of --check fail."""
    from symgrad import forward, ops
    if rule == "matmul":  # the product rule without its second term
        model = symgrad.Model(sp.Trace((X * W).T * (X * W)), wrt=[W], name="mm")
        wrong = dataclasses.replace(ops.OPS["matmul"], jvp=lambda G, t, o, a, b: t[0] and G.matmul(ops.full(G, t[0], a), b))
        monkeypatch.setitem(ops.OPS, "matmul", wrong)
    else:  # a selection's share of the tangent not masked
        model = HARD["guards"]
        monkeypatch.setattr(forward, "apply_mask", lambda G, c: c.g)
    report = check(model, symgrad.compile(model, emit="hvp,jvp"), calls=False)
    assert not report.ok and any(p.startswith(("hvp:", "jvp:")) for p in report.problems), report.problems
