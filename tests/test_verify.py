"""symgrad.verify and symgrad.testing: inputs in the model's domain, a checker that passes good
modules and fails wrong ones, and the pytest file written for a generated module."""
import re
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
from symgrad.emit import load_source
from symgrad.testing import assert_matches_tape, check_model_file, write_pytest
from symgrad.verify import check, inferred_domain, input_shapes, rel_err, resolve_inputs, sample_inputs

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


def test_matrices_that_det_or_inverse_take_are_drawn_invertible_after_rounding():
    n = sp.Symbol("n")
    S, T = MatrixSymbol("S", n, n), MatrixSymbol("T", n, n)
    model = Model(sp.log(sp.det(S)) + sp.Trace(T.T.inv()), wrt=[S, T], name="linalg")
    for seed in range(5):
        inputs = sample_inputs(model, np.random.default_rng(seed))
        for name in ("S", "T"):
            v = inputs[name]
            assert not np.allclose(v, v.T)  # a transposed gradient must still show
            for rounding in (np.round, np.floor, np.ceil, np.trunc):
                assert np.linalg.det(rounding(v)) > 0.5, (seed, name, rounding.__name__)


def test_a_singular_matrix_is_outside_the_domain_not_a_crash():
    n = sp.Symbol("n")
    S = MatrixSymbol("S", n, n)
    model = Model(sp.log(sp.det(S)), wrt=[S], name="logdet")
    with pytest.raises(SymgradError, match="not finite"):   # the tape's LinAlgError: outside the domain
        check(model, inputs={"S": np.ones((3, 3))})


def test_a_module_raising_linalgerror_inside_the_domain_fails():
    n = sp.Symbol("n")
    S = MatrixSymbol("S", n, n)
    model = Model(sp.log(sp.det(S)), wrt=[S], name="logdet")
    module = symgrad.compile(model)

    def singular(**inputs):
        raise np.linalg.LinAlgError("Singular matrix")

    report = check(model, _fake(module, singular), calls=False)
    assert not report.ok and any("value_and_grad raised LinAlgError" in p for p in report.problems)


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
    assert report.problems[0] == "float64 inputs gave non-float64 grad of x (float32), grad of y (float32)"
    assert all("gave non-float64 grad of x (float32), grad of y (float32)" in p for p in report.problems)
    assert any(p.startswith("Python ints and integer arrays: gave non-float64") for p in report.problems)


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


# -- models that are correct but hard to check: they must pass ------------------------------------
def tanh_chain(depth=32):
    """h = tanh(w_k*h + b_k), 32 deep: the first layers' gradients vanish (to about 1e-15)."""
    ws, bs = sp.symbols(f"w0:{depth}"), sp.symbols(f"b0:{depth}")
    h = x
    for w_k, b_k in zip(ws, bs):
        h = sp.tanh(w_k * h + b_k)
    return Model(h, wrt=[*ws, *bs], name="tanh_chain")


@pytest.fixture(scope="module")
def chain():
    model = tanh_chain()
    return model, symgrad.generate(model)


def test_a_deep_tanh_chain_passes(chain):
    model, source = chain
    report = check(model, load_source(source, "chain"))
    assert report.ok, report.problems
    assert report.max_rel_err_fd <= 1e-5 and report.max_rel_err_tape <= 1e-6


@pytest.mark.parametrize("expr, domain", [
    (sp.log(x - 5), None),                                   # derived: x > 5
    (sp.sqrt(1 - x) * y, None),                              # derived: x < 1
    (sp.acos(2 * x - 1) + sp.atanh(y / 3), None),            # derived: 0 < x < 1, -3 < y < 3
    (sp.log(1 - x) + sp.acosh(y + 2), None),                 # derived: x < 1, y > -1
    (sp.acos(x * y), {x: (-0.9, 0.9), "y": (-1, 1)}),        # not affine in one input: domain given
    (sp.log(x ** 2 - 25) + y, {x: (5, None)}),               # no built-in value range works
])
def test_models_defined_on_part_of_the_line_pass(expr, domain):
    model = Model(expr, name="dom", domain=domain)
    report = check(model)
    assert report.ok, report.problems
    inputs = sample_inputs(model, np.random.default_rng(1))
    for name, (lo, hi) in (model.domain or {}).items():
        assert (inputs[name] > lo).all() and (inputs[name] < hi).all()


def test_domain_is_derived_from_affine_arguments_and_elementwise_functions():
    assert inferred_domain(Model(sp.log(x - 5) + sp.sqrt(1 - y) + sp.asin(s / 2), name="a")) == {
        "x": (5.0, np.inf), "y": (-np.inf, 1.0), "s": (-2.0, 2.0)}
    assert inferred_domain(Model(sp.log(x - 1) + sp.log(3 - x), name="b")) == {"x": (1.0, 3.0)}
    assert inferred_domain(Model(sp.log(x ** 2 + y), name="c")) == {}        # not affine in one input
    Xm = MatrixSymbol("X", N, d)
    model = Model((OneMatrix(1, N) * Xm.applyfunc(lambda t: sp.log(t - 5)) * OneMatrix(d, 1))[0, 0], name="m")
    assert inferred_domain(model) == {"X": (5.0, np.inf)}
    assert (sample_inputs(model, np.random.default_rng(0))["X"] > 5).all()
    assert check(model).ok


def test_domain_keyword_is_validated():
    assert Model(sp.log(x - 5), domain={x: (5, sp.oo)}).domain == {"x": (5.0, np.inf)}
    assert Model(sp.log(x) * y, domain={"y": (None, 0)}).domain == {"y": (-np.inf, 0.0)}
    with pytest.raises(SymgradError, match="not an input"):
        Model(sp.log(x), domain={y: (0, 1)})
    with pytest.raises(SymgradError, match="a dimension"):
        Model(Trace(X * W), domain={N: (0, 1)})
    with pytest.raises(SymgradError, match="empty"):
        Model(sp.log(x), domain={x: (1, 0)})
    with pytest.raises(SymgradError, match="pair"):
        Model(sp.log(x), domain={x: 3})
    with pytest.raises(SymgradError, match="dict"):
        Model(sp.log(x), domain=[(x, 0, 1)])


def test_given_inputs_are_used_and_missing_ones_drawn():
    model = Model(sp.log(x ** 2 - 25) * y, wrt=[x, y], name="given")
    with pytest.raises(SymgradError, match="no inputs"):
        check(model)
    report = check(model, inputs={"x": np.array([6.0, -7.0, 8.5])})
    assert report.ok and report.trials == 1, report.problems
    inputs = resolve_inputs(model, {"x": [6.0, -7.0]}, np.random.default_rng(0))
    assert inputs["x"].tolist() == [6.0, -7.0] and inputs["y"].shape == (2,)
    with pytest.raises(SymgradError, match="'z', which is not an input"):
        check(model, inputs={"x": 6.0, "z": 1.0})
    with pytest.raises(SymgradError, match="dtype complex"):
        check(model, inputs={"x": np.array([6 + 1j])})


# -- check fails on wrong modules: bugs planted in generated source ----------------------------------
def _plant(source, name, line):
    """``source`` with ``line`` (``g`` is what value_and_grad returns as the gradient of ``name``;
    ``_args`` the arguments as the caller passed them) run just before value_and_grad returns."""
    lines = source.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("def value_and_grad("))
    end = next((i for i in range(start + 1, len(lines)) if lines[i] and not lines[i].startswith((" ", "\t"))),
               len(lines))
    ret = max(i for i in range(start, end) if lines[i].strip().startswith("return "))
    ident = re.search(rf"'{name}': (\w+)", lines[ret]).group(1)
    body = start + (2 if lines[start + 1].strip().startswith('"""') and lines[start + 1].count('"""') == 2 else 1)
    planted = re.sub(r"\bg\b", ident, line)
    lines[ret:ret] = [f"    {ln}" for ln in planted.split("\n")]
    lines[body:body] = ["    _args = dict(locals())"]
    return "\n".join(lines) + "\n"


PLANTED_HELPERS = """
_KEPT = {}


def _keep(g):
    \"\"\"g copied into an array the module keeps and hands out again on every call.\"\"\"
    g = np.asarray(g)
    buf = _KEPT.setdefault((g.shape, g.dtype), np.empty(g.shape, g.dtype))
    buf[...] = g
    return buf
"""

# bug -> (model, wrt name, planted line, what the problems must say)
BUGS = {
    "scaled by 1.001": ("sigmoid_ratio", "y", "g = g * 1.001",
                        ("grad of y: relative error vs tape", "grad of y: relative error vs finite differences")),
    "one entry changed": ("relu_layer", "W", "g = np.array(g, copy=True); g.flat[-1] += 1e-3 * np.max(np.abs(g))",
                          ("grad of W: relative error vs tape",
                           "grad of W, entry by entry: relative error vs finite differences")),
    "sign swapped": ("scaled_trace", "s", "g = -g",
                     ("grad of s: relative error vs tape", "grad of s: relative error vs finite differences")),
    "sum not reduced": ("log_sqrt", "s", "g = g + 0 * x", ("grad of s has shape",)),
    "view of an input": ("product", "x", "g = _args['y']", ("returned a view of input y as its grad of x",)),
    "read-only": ("sigmoid_ratio", "x", "g = np.broadcast_to(g, np.shape(g))",
                  ("returned a read-only array as its grad of x",)),
    "work array": ("relu_layer", "b", "g = _keep(g)",
                   ("value_and_grad's grad of b shares memory with what a later call returned",)),
    "input mutated": ("sigmoid_ratio", "x", "if isinstance(_args['x'], np.ndarray): _args['x'][...] += 1.0",
                      ("value_and_grad modified its inputs in place: x",)),
}
PLANT_MODELS = dict(CORPUS, product=lambda: Model(x * y, wrt=[x], name="product"))


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_check_fails_on_a_bug_planted_in_generated_source(bug):
    key, name, line, wants = BUGS[bug]
    model = PLANT_MODELS[key]()
    source = symgrad.generate(model)
    assert check(model, load_source(source, "good")).ok
    report = check(model, load_source(_plant(source, name, line) + PLANTED_HELPERS, "planted"))
    assert not report.ok and report.summary().startswith("FAILED")
    for want in wants:
        assert any(want in p for p in report.problems), (want, report.problems)


# -- the dot-product test: <v, J u> (jvp) == <J^T v, u> (vjp), <w, H v> == <v, H w> (hvp) -----------
DOT_MODELS = {
    "tanh_layer": lambda: Model((X * W).applyfunc(sp.tanh), wrt=[W, X], name="tanh_layer"),
    "scaled_trace": CORPUS["scaled_trace"],
}


@pytest.mark.parametrize("emit", ["jvp", "vjp,jvp,hvp"])
@pytest.mark.parametrize("key", sorted(DOT_MODELS))
def test_dot_product_test_passes_generated_modules(key, emit):
    model = DOT_MODELS[key]()
    report = check(model, symgrad.compile(model, emit=emit), calls=False)
    assert report.ok, report.problems
    want = {"jvp/vjp", "hvp"} if "hvp" in emit else {"jvp/vjp"}
    assert set(report.dot_products) == want and max(report.dot_products.values()) < 1e-13
    assert "; dot products jvp/vjp " in report.summary()


@pytest.mark.parametrize("emit", ["jvp", "vjp,jvp,hvp"])
def test_dot_product_test_catches_a_wrong_jvp_rule_in_the_op_table(emit, monkeypatch):
    """A sign flip in matmul's tangent rule (the second factor's share)."""
    import dataclasses
    from symgrad import ops

    def flipped(G, t, out, a, b):
        ta, tb = ops.full(G, t[0], a), ops.full(G, t[1], b)
        return ops._add_tangents(G, ta and G.matmul(ta, b), tb and G.neg(G.matmul(a, tb)))

    monkeypatch.setitem(ops.OPS, "matmul", dataclasses.replace(ops.OPS["matmul"], jvp=flipped))
    model = DOT_MODELS["tanh_layer"]()
    report = check(model, symgrad.compile(model, emit=emit), calls=False)
    assert report.dot_products["jvp/vjp"] > 1e-3
    assert any(p.startswith("dot-product test: <v, jvp(u)>: relative error vs <") for p in report.problems)
    if "hvp" in emit:  # the same rule, run over the gradient's graph, breaks the Hessian's symmetry
        assert any(p.startswith("dot-product test: <w, hvp(v)>: relative error vs <v, hvp(w)>")
                   for p in report.problems)


def test_check_fails_when_two_gradients_are_one_array(compiled):
    model, module = compiled["sigmoid_ratio"]

    def shared(**inputs):
        value, grads = module.value_and_grad(**inputs)
        return value, {"x": grads["x"], "y": grads["x"]}
    report = check(model, _fake(module, shared))
    assert any(p.startswith("value_and_grad returned arrays that share memory: its grad of x and its grad of y")
               for p in report.problems), report.problems


def test_check_fails_when_python_ints_give_truncated_ints(compiled):
    model, module = compiled["sigmoid_ratio"]

    def truncating(**inputs):
        value, grads = module.value_and_grad(**inputs)
        if any(type(v) is int for v in inputs.values()):
            return np.trunc(value).astype(np.int64), {k: np.trunc(g).astype(np.int64) for k, g in grads.items()}
        return value, grads

    report = check(model, _fake(module, truncating))
    assert any(p.startswith("Python ints and integer arrays: gave non-float64 value (int64)") for p in report.problems)
    assert any(p.startswith("Python ints and integer arrays: grad of") and "vs tape" in p for p in report.problems)


def test_check_fails_when_float32_math_is_wrong_or_a_broadcast_gradient_is_not_summed(compiled):
    model, module = compiled["sigmoid_ratio"]

    def sloppy32(**inputs):
        value, grads = module.value_and_grad(**inputs)
        if np.asarray(inputs["x"]).dtype == np.float32:
            grads = {**grads, "x": grads["x"] * np.float32(1.01)}
        return value, grads
    report = check(model, _fake(module, sloppy32))
    assert any(p.startswith("float32: grad of x: relative error vs tape") for p in report.problems), report.problems
    assert not any("float64" in p for p in report.problems)

    def unbroadcast(**inputs):
        value, grads = module.value_and_grad(**inputs)
        return value, {k: np.broadcast_to(g, np.shape(value)).copy() for k, g in grads.items()}
    report = check(model, _fake(module, unbroadcast))
    assert any(p.startswith("scalars broadcast: x (3, 1), y (1, 4): grad of x has shape (3, 4)")
               for p in report.problems), report.problems


def test_a_small_gradient_that_is_wrong_fails(chain):
    """w22's gradient is about 1e-5 of the whole gradient: 0.1% off in it is 1e-8 of the whole, yet it
    fails, because the tape comparison is relative to each input's own gradient down to 1e-8 of
    the whole one.  (Below that, as for w0 at about 1e-15, an error is no longer distinguishable from
    rounding elsewhere in the gradient.)"""
    model, source = chain
    module = load_source(_plant(source, "w22", "g = g * 1.001"), "chain_bug")
    report = check(model, module, trials=1, calls=False)
    vs_tape = [p for p in report.problems if "vs tape" in p]
    assert len(vs_tape) == 1 and vs_tape[0].startswith("grad of w22: relative error vs tape"), report.problems


def test_finite_differences_catch_one_wrong_entry_the_tape_agrees_with(compiled, monkeypatch):
    model, module = compiled["sigmoid_ratio"]
    tape_vg = symgrad.tape.value_and_grad

    def bump(grads):
        g = np.array(grads["y"], dtype=np.float64, copy=True)
        g.flat[0] += 1e-3 * np.max(np.abs(g))
        return {**grads, "y": g.astype(np.asarray(grads["y"]).dtype)}

    def bumped(vg):
        return lambda *args, **kw: (lambda value, grads: (value, bump(grads)))(*vg(*args, **kw))

    monkeypatch.setattr(symgrad.tape, "value_and_grad", bumped(tape_vg))
    report = check(model, _fake(module, bumped(module.value_and_grad)), calls=False)
    assert report.max_rel_err_tape <= 1e-12
    assert any(p.startswith("grad of y, entry by entry: relative error vs finite differences")
               for p in report.problems), report.problems


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


def test_scalars_only_inside_an_explicit_matrix_are_drawn_as_one_number_each():
    """Review: a model of scalars in an explicit sp.Matrix (no MatrixSymbol) was drawn like a scalar
    model, shape (4,) per input, which the module refuses (they must be one number): check raised
    a ValueError instead of checking."""
    a, b, c = sp.symbols("a b c")
    E = sp.Matrix([[a, b], [c, a]])
    model = Model(Trace(E * E) + sp.log(sp.Determinant(E * E.T)), name="explicit")
    assert input_shapes(model) == {"a": (), "b": (), "c": ()}
    report = check(model, symgrad.compile(model))
    assert report.ok, report.summary()
    v = {"a": 0.9, "b": -0.4, "c": 0.3}                  # by hand: tr(E^2) + log(det(E)^2)
    want = 2 * v["a"] ** 2 + 2 * v["b"] * v["c"] + np.log((v["a"] ** 2 - v["b"] * v["c"]) ** 2)
    assert symgrad.compile(model).forward(**v) == pytest.approx(want, rel=1e-13)
