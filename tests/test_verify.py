"""symgrad.verify and symgrad.testing: inputs in the model's domain, a checker that passes good
modules and fails wrong ones, and the pytest file written for a generated module."""
import subprocess
import sys
import types

import numpy as np
import pytest
import sympy as sp
from sympy import Abs, Max, MatrixSymbol, OneMatrix, Trace

import symgrad
import symgrad.tape
from symgrad import Model, SymgradError
from symgrad.testing import assert_matches_tape, check_model_file, write_pytest
from symgrad.verify import check, input_shapes, rel_err, sample_inputs

x, y, s = sp.symbols("x y s")
N, d = sp.symbols("N d", integer=True, positive=True)
X, W, b = MatrixSymbol("X", N, d), MatrixSymbol("W", d, 2), MatrixSymbol("b", 1, 2)


def sigmoid(t):
    return 1 / (1 + sp.exp(-t))


CORPUS = {
    "sigmoid_ratio": lambda: Model((x + sigmoid(y)) / (sigmoid(x) + (x + y) ** 2), wrt=[x, y], name="ratio"),
    "log_sqrt": lambda: Model(sp.log(x) * sp.sqrt(y) + s * x, wrt=[x, s], name="log_sqrt"),
    "relu_layer": lambda: Model((X * W + OneMatrix(N, 1) * b).applyfunc(lambda t: Max(t, 0)),
                                wrt=[W, b], name="relu_layer"),
    "scaled_trace": lambda: Model(s * Trace(W.T * X.T * X * W), wrt=[W, s, X], name="scaled_trace"),
}


@pytest.fixture(scope="module")
def compiled():
    return {key: (make(), symgrad.compile(make())) for key, make in CORPUS.items()}


# -- sample_inputs -----------------------------------------------------------------------------------
def test_shapes_give_dimensions_small_distinct_sizes():
    shapes = input_shapes(CORPUS["scaled_trace"]())
    assert shapes == {"W": (4, 2), "s": (), "X": (3, 4)}      # N=3, d=4 (2 is taken by W)
    assert input_shapes(CORPUS["sigmoid_ratio"]()) == {"x": (4,), "y": (4,)}
    assert input_shapes(CORPUS["sigmoid_ratio"](), sizes={"x": ()}) == {"x": (), "y": (4,)}
    assert input_shapes(CORPUS["relu_layer"](), sizes={"N": 7})["X"] == (7, 3)


def test_sample_inputs_stay_in_log_sqrt_domain_and_dtype():
    model = Model(sp.log(x) + sp.sqrt(y) + sp.log(1 - s), name="dom")
    for seed in range(5):
        inputs = sample_inputs(model, np.random.default_rng(seed), dtype=np.float32)
        assert all(v.dtype == np.float32 for v in inputs.values())
        assert (inputs["x"] > 0).all() and (inputs["y"] > 0).all() and (inputs["s"] < 1).all()


def test_sample_inputs_avoid_kinks_and_respect_assumptions():
    p, q = sp.Symbol("p", positive=True), sp.Symbol("q", negative=True)
    model = Model(Abs(x) + Max(y, 0) + sp.Heaviside(s) + p * q, name="kinks")
    inputs = sample_inputs(model, np.random.default_rng(0))
    assert min(np.abs(v).min() for v in inputs.values()) >= 0.1
    assert (inputs["p"] > 0).all() and (inputs["q"] < 0).all()


def test_sample_inputs_report_an_empty_domain():
    with pytest.raises(SymgradError, match="no inputs"):
        sample_inputs(Model(sp.log(-x ** 2 - 1), name="never"), np.random.default_rng(0))


def test_rel_err():
    assert rel_err([1.0, 2.0], [1.0, 2.0]) == 0
    assert rel_err([1.0, 2.02], [1.0, 2.0]) == pytest.approx(0.02 / 2.02)
    assert rel_err(np.ones(3), np.ones((3, 1))) == np.inf
    assert rel_err([np.nan], [1.0]) == np.inf
    assert rel_err([1e-17], [0.0]) < 1e-8               # zero gradients compare absolutely


# -- check passes on generated modules ---------------------------------------------------------------
@pytest.mark.parametrize("key", sorted(CORPUS))
def test_check_passes_generated_modules(compiled, key):
    model, module = compiled[key]
    report = check(model, module)
    assert report.ok, report.problems
    assert report.float32_ok
    assert report.max_rel_err_tape <= 1e-6 and report.max_rel_err_fd <= 1e-5 and report.value_err <= 1e-6
    assert report.summary().startswith("ok ")


# -- check fails on wrong modules --------------------------------------------------------------------
def _fake(module, value_and_grad, **overrides):
    fields = dict(forward=module.forward, value_and_grad=value_and_grad,
                  INPUTS=module.INPUTS, WRT=module.WRT, TARGET=module.TARGET)
    return types.SimpleNamespace(**(fields | overrides))


def test_check_fails_when_a_gradient_is_off_by_one_percent(compiled):
    model, module = compiled["relu_layer"]

    def off(**inputs):
        value, grads = module.value_and_grad(**inputs)
        return value, {**grads, "W": grads["W"] * 1.01}

    report = check(model, _fake(module, off))
    assert not report.ok and report.summary().startswith("FAILED")
    assert report.max_rel_err_tape > 1e-3 and report.max_rel_err_fd > 1e-3
    assert any("grad of W" in p and "tape" in p for p in report.problems)
    assert any("grad of W" in p and "finite differences" in p for p in report.problems)


def test_finite_differences_catch_a_gradient_the_tape_agrees_with(compiled, monkeypatch):
    model, module = compiled["sigmoid_ratio"]
    tape_vg = symgrad.tape.value_and_grad

    def wrong(*args, **kw):
        value, grads = tape_vg(*args, **kw)
        return value, {**grads, "y": grads["y"] * 1.01}

    monkeypatch.setattr(symgrad.tape, "value_and_grad", wrong)
    report = check(model, _fake(module, lambda **kw: wrong(model, **kw)))
    assert report.max_rel_err_tape == 0 and report.max_rel_err_fd > 1e-3 and not report.ok


def test_check_fails_on_an_unreduced_scalar_gradient(compiled):
    model, module = compiled["log_sqrt"]

    def unreduced(**inputs):
        value, grads = module.value_and_grad(**inputs)
        return value, {**grads, "s": np.broadcast_to(inputs["x"], np.shape(value)).copy()}

    report = check(model, _fake(module, unreduced))
    assert any("grad of s has shape" in p for p in report.problems)


def test_check_fails_when_the_dtype_changes(compiled):
    model, module = compiled["sigmoid_ratio"]

    def upcast(**inputs):
        value, grads = module.value_and_grad(**inputs)
        return np.asarray(value, np.float64), grads

    report = check(model, _fake(module, upcast))
    assert not report.float32_ok and not report.ok

    def downcast(**inputs):
        value, grads = module.value_and_grad(**inputs)
        return value, {k: g.astype(np.float32) for k, g in grads.items()}

    report = check(model, _fake(module, downcast), float32=False)
    assert report.float32_ok and report.max_rel_err_tape < 1e-6
    assert report.problems == ["float64 inputs gave non-float64 grad of x (float32), grad of y (float32)"]


def test_check_fails_on_wrong_value_crash_mutation_and_constants(compiled):
    model, module = compiled["sigmoid_ratio"]
    assert not check(model, _fake(module, module.value_and_grad, forward=lambda **kw: 1.01 * module.forward(**kw))).ok

    def crash(**inputs):
        raise ValueError("operands could not be broadcast")

    assert any("raised ValueError" in p for p in check(model, _fake(module, crash)).problems)

    def mutate(**inputs):
        inputs["x"] += 1.0
        return module.value_and_grad(**inputs)

    assert any("modified its inputs" in p for p in check(model, _fake(module, mutate)).problems)
    assert any("WRT" in p for p in check(model, _fake(module, module.value_and_grad, WRT=("y", "x"))).problems)


# -- symgrad.testing ---------------------------------------------------------------------------------
MODEL_SRC = """
import sympy as sp
import symgrad
x, y = sp.symbols("x y")
ratio = symgrad.Model((x + sp.exp(y)) / (1 + (x + y) ** 2), wrt=[x, y], name="ratio")
square = symgrad.Model(x ** 2 * y, wrt=[x], name="square")
"""

WRONG_MODULE = '''
import numpy as np
INPUTS = ("x", "y"); WRT = ("x",); TARGET = "numpy"
def forward(x, y): return x ** 2 * y
def value_and_grad(x, y): return forward(x, y), {"x": 2.02 * x * y}
'''


def test_assert_matches_tape_and_check_model_file(tmp_path, compiled):
    model_file = tmp_path / "models.py"
    model_file.write_text(MODEL_SRC)
    assert [r.model for r in check_model_file(model_file)] == ["ratio", "square"]
    assert assert_matches_tape(compiled["scaled_trace"][0]).ok
    (tmp_path / "square_numpy.py").write_text(WRONG_MODULE)
    with pytest.raises(AssertionError, match="square .*grad of x"):
        assert_matches_tape(tmp_path / "square_numpy.py", model=model_file)   # model picked by file name


def test_write_pytest_output_runs_under_pytest(tmp_path):
    model_file = tmp_path / "models.py"
    model_file.write_text(MODEL_SRC)
    out = tmp_path / "out"
    out.mkdir()
    (out / "ratio_numpy.py").write_text(symgrad.generate(symgrad.load_models(model_file, "ratio")[0]))
    (out / "bad_square.py").write_text(WRONG_MODULE)
    write_pytest(model_file, out / "ratio_numpy.py", out / "test_ratio_numpy.py", "ratio")
    write_pytest(model_file, out / "bad_square.py", out / "test_bad_square.py", "square")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert "1 failed, 1 passed" in proc.stdout, proc.stdout + proc.stderr
    assert "test_bad_square.py" in proc.stdout and "grad of x" in proc.stdout
