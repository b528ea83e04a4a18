"""The reproducers of the classes of silent wrong answers found by attacking symgrad, one test each.

Expected numbers are derived by hand (in the comments) or come from the runtime tape and float64
central differences: never from the compiler under test.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import sympy as sp
from sympy import MatrixSymbol, OneMatrix, Trace

import symgrad
from symgrad import SymgradError, tape
from symgrad.emit import load_source
from symgrad.rewrites import Rewrite, Rewriter, graph

from _cupy_shim import fake_cupy
from _oracles import fd_grad, rel_err

x, y, s, tau = sp.symbols("x y s tau")
N, C = sp.symbols("N C")
A = MatrixSymbol("A", 2, 2)
A_VAL = np.array([[1.0, 2.0], [3.0, 4.0]])


def grad_of(model, **inputs):
    return symgrad.compile(model).value_and_grad(**inputs)


def assert_matches_tape_and_fd(model, inputs):
    value, grads = grad_of(model, **inputs)
    t_value, t_grads = tape.value_and_grad(model, **inputs)
    assert np.shape(value) == np.shape(t_value) and rel_err(value, t_value) < 1e-12
    for name, g in grads.items():
        assert np.shape(g) == np.shape(inputs[name])
        assert rel_err(g, t_grads[name]) < 1e-12, (name, g, t_grads[name])
        fd = fd_grad(lambda **kw: tape.forward(model, **kw), inputs, name)
        assert rel_err(g, fd) < 1e-6, (name, g, fd)


# -- 1. names never become code -------------------------------------------------------------------
EVIL_NAMES = ['m"""+str(open("P","w"))+"""', 'q\r    open("P","w")\r    #', "a\\", 'z\u2028open("P","w")',
              "b\x0bc\x0cd\x85e", '"', '\\\\"""', "t??/", "'''", "x\n y", "\u200bopen"]


@pytest.mark.parametrize("target", ["numpy", "cupy"])
@pytest.mark.parametrize("name", EVIL_NAMES, ids=range(len(EVIL_NAMES)))
def test_names_never_become_code(name, target):
    q = sp.Symbol(name)
    model = symgrad.Model(x ** 2 + q * x, wrt=[x, q], name=name)
    source = symgrad.generate(model, target)
    tree = ast.parse(source)
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "open"]
    # no line break of any kind inside a comment or a name: every physical line is a line
    assert len(source.splitlines()) == len(source.rstrip("\n").split("\n"))
    for line in source.split("\n"):
        if "#" in line or "//" in line:
            assert line.isprintable()
    module = load_source(source, "evil") if target == "numpy" else None
    if module is not None:
        assert module.MODEL == name and module.INPUTS == (str(x), name)
        value, grads = module.value_and_grad(**{str(x): 2.0, name: 3.0})
        assert value == 10.0 and grads == {"x": 7.0, name: 2.0}   # 2x + q, x


def test_evil_name_through_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.py").write_text(textwrap.dedent('''
        import sympy as sp, symgrad
        x = sp.Symbol("x")
        q = sp.Symbol("q\\r    open('P','w')\\r    #")
        model = symgrad.Model(x**2 + q, name='m"""+str(open("P","w"))+"""')
    '''))
    out = subprocess.run([sys.executable, "-m", "symgrad", "compile", "evil.py", "-o", "m.py", "--check"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "P").exists()


# -- 2. Python ints and bools give float results ---------------------------------------------------
def test_python_ints_give_float_gradients():
    model = symgrad.load_models("examples/seed003_backprop.py", only="seed003_sigmoid_ratio")[0]
    value, grads = grad_of(model, x=2, y=-4)
    t_value, t_grads = tape.value_and_grad(model, x=2.0, y=-4.0)
    assert np.asarray(value).dtype == np.float64 and rel_err(value, t_value) < 1e-15
    for k in ("x", "y"):
        assert np.asarray(grads[k]).dtype == np.float64 and rel_err(grads[k], t_grads[k]) < 1e-15
        assert grads[k] != 0
    v, g = grad_of(symgrad.Model(x ** 2 * y, wrt=[x, y]), x=2 ** 40, y=True)   # 2**80: no overflow
    assert v == 2.0 ** 80 and g["x"] == 2.0 ** 41 and g["y"] == 2.0 ** 80
    v, g = grad_of(symgrad.Model(x ** 2 * y, wrt=[x]), x=np.array([1, 2]), y=np.array([True, False]))
    assert v.dtype == np.float64 and list(g["x"]) == [2.0, 0.0]


# -- 3./4. scalar Symbols meeting matrices ---------------------------------------------------------
@pytest.mark.parametrize("s_value", [3.0, np.array(3.0), 3])
def test_scalar_inside_and_outside_a_matrix_is_counted_once(s_value):
    # d/ds (s + tr(s A)) = 1 + tr A = 6;  d/ds s tr(s A) = 2 s tr A = 30
    assert grad_of(symgrad.Model(s + Trace(s * A), wrt=[s]), s=s_value, A=A_VAL)[1]["s"] == 6
    assert grad_of(symgrad.Model(s * Trace(s * A), wrt=[s]), s=s_value, A=A_VAL)[1]["s"] == 30


def test_scalar_parameter_of_a_matrix_valued_model_is_summed():
    X, b = MatrixSymbol("X", N, 2), MatrixSymbol("b", 1, 2)
    model = symgrad.Model(X + s * OneMatrix(N, 1) * b, wrt=[s, b])
    value, grads = grad_of(model, s=3.0, X=np.ones((6, 2)), b=np.array([[1.0, 3.0]]))
    assert value.shape == (6, 2)
    assert grads["s"] == 24            # sum over 6 rows of (1 + 3)
    assert grads["b"].tolist() == [[18.0, 18.0]]   # 6 rows * s


def test_scalar_times_matrix_inside_applyfunc():
    B, M = MatrixSymbol("B", 2, 2), MatrixSymbol("M", 2, 2)
    model = symgrad.Model(B.T * (s * M).applyfunc(sp.exp), wrt=[s, M])
    for s_value in (0.5, np.array(0.5)):
        assert_matches_tape_and_fd(model, {"s": s_value, "B": A_VAL, "M": A_VAL / 4})


def test_softmax_with_temperature():
    theta, Y = MatrixSymbol("theta", N, C), MatrixSymbol("Y", N, C)
    Z = theta / tau
    lse = (Z.applyfunc(sp.exp) * OneMatrix(C, 1)).applyfunc(sp.log)
    model = symgrad.Model(Trace(OneMatrix(1, N) * lse) - Trace(Y.T * Z), wrt=[theta, tau])
    rng = np.random.default_rng(0)
    assert_matches_tape_and_fd(model, {"theta": rng.standard_normal((5, 3)), "tau": np.array(1.7),
                                       "Y": np.eye(3)[[0, 1, 2, 1, 0]]})


# -- 5. value shapes -------------------------------------------------------------------------------
def test_broadcast_of_a_transpose_has_the_full_shape_and_is_fresh():
    c = MatrixSymbol("c", 3, 1)
    c_val = np.array([[1.0], [2.0], [3.0]])
    for model in (symgrad.Model(OneMatrix(2, 1) * c.T), symgrad.Model(c.T), symgrad.Model(c)):
        value = symgrad.compile(model).forward(c=c_val)
        assert value.shape == tape.forward(model, c=c_val).shape
        assert not np.shares_memory(value, c_val) and value.flags.writeable
    assert symgrad.compile(symgrad.Model(OneMatrix(2, 1) * c.T)).forward(c=c_val).tolist() == [[1, 2, 3]] * 2


# -- 6. rewriting terminates -----------------------------------------------------------------------
def test_models_whose_rewrites_used_to_cycle_compile():
    code = textwrap.dedent("""
        import sys, numpy as np, sympy as sp, symgrad
        sys.setrecursionlimit(100000)
        a, A = sp.MatrixSymbol("a", 1, 1), sp.MatrixSymbol("A", 2, 2)
        M1, M2 = sp.MatrixSymbol("M1", 2, 2), sp.MatrixSymbol("M2", 2, 2)
        for m in (symgrad.Model(a[0, 0]**2 * A), symgrad.Model(sp.Trace(M1)**2 * M2)):
            shapes = {str(k): tuple(map(int, k.shape)) for k in m.inputs}
            inputs = {k: np.arange(1.0, 1.0 + np.prod(v)).reshape(v) for k, v in shapes.items()}
            v, g = symgrad.compile(m).value_and_grad(**inputs)
            tv, tg = symgrad.tape.value_and_grad(m, **inputs)
            assert np.allclose(v, tv) and all(np.allclose(g[k], tg[k]) for k in g)
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout == "ok\n", (out.returncode, out.stderr[-2000:])


def test_a_rewrite_that_undoes_itself_terminates():
    """A rewrite that swaps a product's arguments forever: the graph interns instead of looping."""
    swap = Rewrite("swap", "canonicalize", ("mul",), lambda G, op, a, b, attr=None: G.mul(b, a))  # always "rewrites"
    G = graph(Rewriter(rules=[swap]))
    p, q = G.input("p", None), G.input("q", None)
    node = G.mul(p, q)
    assert node.op == "mul" and {a.id for a in node.args} == {p.id, q.id}
    assert G.mul(p, q) is node      # deterministic and interned


# -- 7. Python floats in selections ----------------------------------------------------------------
def test_python_floats_in_selections():
    v, g = grad_of(symgrad.Model(sp.Max(x, y)), x=1.0, y=2.0)
    assert v == 2.0 and g == {"x": 0.0, "y": 1.0}
    v, g = grad_of(symgrad.Model(sp.Min(x, y) + sp.Heaviside(x) + sp.Piecewise((x, x > 0), (y, True))), x=1.0, y=2.0)
    assert v == 3.0 and g == {"x": 2.0, "y": 0.0}
    with np.errstate(all="ignore"):   # NumPy semantics, no exception
        v, g = grad_of(symgrad.Model(1 / x + sp.sqrt(y)), x=0.0, y=-1.0)
    assert np.isinf(v) or np.isnan(v)


# -- 8. guards guard the gradient ------------------------------------------------------------------
def test_piecewise_guard_guards_the_gradient():
    model = symgrad.Model(sp.Piecewise((x * sp.log(x), x > 0), (0, True)), wrt=[x])
    with np.errstate(all="ignore"):
        v, g = grad_of(model, x=np.array([-1.0, 0.0, 1.0]))
    assert v.tolist() == [0.0, 0.0, 0.0] and g["x"].tolist() == [0.0, 0.0, 1.0]   # d x log x = log x + 1


def test_power_derivative_in_the_exponent_at_zero_base():
    with np.errstate(all="ignore"):
        v, g = grad_of(symgrad.Model(x ** y), x=np.array(0.0), y=np.array(2.0))
    assert v == 0 and g == {"x": 0.0, "y": 0.0}     # y x**(y-1) = 0; x**y log x -> 0


# -- 9. the caller owns every returned array -------------------------------------------------------
def test_returned_arrays_never_alias():
    W, X = MatrixSymbol("W", 2, 2), MatrixSymbol("X", 2, 2)
    X_val = np.ones((2, 2))
    _, g = grad_of(symgrad.Model(Trace(W * X), wrt=[W]), W=A_VAL, X=X_val)
    assert not np.shares_memory(g["W"], X_val) and g["W"].flags.writeable
    xs = np.linspace(0.1, 1.0, 4)
    v, g = grad_of(symgrad.Model(sp.exp(x)), x=xs)
    assert not np.shares_memory(g["x"], v) and not np.shares_memory(g["x"], xs) and g["x"].flags.writeable
    v, g = grad_of(symgrad.Model(x, wrt=[x]), x=xs)
    assert not np.shares_memory(v, xs) and not np.shares_memory(g["x"], v)


@pytest.mark.parametrize("path", sorted(__import__("pathlib").Path("examples").glob("seed*.py")), ids=lambda p: p.stem)
def test_example_modules_return_owned_writable_arrays(path):
    from symgrad.verify import sample_inputs
    for model in symgrad.load_models(path):
        inputs = sample_inputs(model, np.random.default_rng(0))
        value, grads = grad_of(model, **inputs)
        out = [np.asarray(value)] + [np.asarray(g) for g in grads.values()]
        for i, a in enumerate(out):
            if a.ndim:
                assert a.flags.writeable, (model.name, i)
            assert not any(np.shares_memory(a, v) for v in inputs.values()), (model.name, i)
            assert not any(np.shares_memory(a, b) for b in out[i + 1:]), (model.name, i)


# -- 10. compile time is linear in the DAG ---------------------------------------------------------
def test_shared_subexpressions_compile_in_linear_time():
    """40 steps of the logistic map are a tree of ~2**40 nodes but a small DAG (SymPy flattens each
    step's product, so its argument lists total O(steps**2)): any walk of the tree (str, srepr,
    free_symbols) would never finish."""
    code = textwrap.dedent("""
        import sympy as sp, symgrad, numpy as np
        x, r, y = sp.symbols("x r y")
        e = x
        for _ in range(40):
            e = r * e * (1 - e)
        f = x
        for _ in range(40):
            f = sp.sin(f) * y + sp.cos(f)
        # the logistic map's derivative, by its recurrence in 50 digits: SymPy's flattened product
        # is ill-conditioned to differentiate (SymPy 1.12's form: generated and tape both ~5e-6 off)
        import mpmath as mp
        mp.mp.dps = 50
        v, dv = mp.mpf("0.3"), mp.mpf(1)
        for _ in range(40):
            v, dv = 3.2 * v * (1 - v), 3.2 * (1 - 2 * v) * dv
        for m, tol in ((symgrad.Model(e, wrt=[x]), 1e-4), (symgrad.Model(f, wrt=[x]), 1e-9)):
            inputs = {k: v for k, v in {"x": 0.3, "r": 3.2, "y": 0.5}.items() if k in map(str, m.inputs)}
            value, grads = symgrad.compile(m).value_and_grad(**inputs)
            t_value, t_grads = symgrad.tape.value_and_grad(m, **inputs)
            assert abs(value - t_value) < 1e-12 and abs(grads["x"] - t_grads["x"]) < tol * abs(t_grads["x"])
            if m.expr is e:
                assert abs(grads["x"] - float(dv)) < 1e-4 * abs(float(dv))
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout == "ok\n", out.stderr[-2000:]


# -- 11. bad input is a clear error ----------------------------------------------------------------
def test_dimension_bound_by_no_input():
    with pytest.raises(SymgradError, match="dimension N .*not a dimension of any MatrixSymbol input"):
        symgrad.Model(OneMatrix(N, 1) * MatrixSymbol("b", 1, 2))
    # found by the fuzzer: SymPy writes a sum of entries out as a Sum over 0..N-1, with no OneMatrix
    # left; N became a scalar input, and the tape and compiler failed at call time
    d = sp.Symbol("d")
    b = MatrixSymbol("b", 1, d)
    expr = (OneMatrix(1, N) * (OneMatrix(N, 1) * b + MatrixSymbol("Q", 3, 2)[0, 0] * OneMatrix(N, d))
            * OneMatrix(d, 1))[0, 0]
    assert isinstance(expr, sp.Sum) and N in expr.free_symbols
    with pytest.raises(SymgradError, match="dimension N .*bound of a Sum"):
        symgrad.Model(expr)


def test_empty_batch_names_the_input():
    X = MatrixSymbol("X", N, 2)
    module = symgrad.compile(symgrad.Model(Trace(X.T * X) / N))
    with pytest.raises(ValueError, match="input 'X' is empty"):
        module.forward(X=np.ones((0, 2)))


@pytest.mark.parametrize("bad", [1j, np.array([1 + 2j]), None, "a", object(), np.array(["a"]), [None]])
@pytest.mark.parametrize("target", ["numpy", "cupy"])
def test_non_real_inputs_are_a_type_error_naming_the_input(bad, target, monkeypatch):
    model = symgrad.Model(x ** 2 + y, wrt=[x], name="m")
    if target == "cupy":
        monkeypatch.setitem(sys.modules, "cupy", fake_cupy())
    module = load_source(symgrad.generate(model, target), "m_" + target)
    with pytest.raises(TypeError, match="m: input 'x' must be real numbers"):
        module.value_and_grad(x=bad, y=1.0)
    with pytest.raises(TypeError, match="m: input 'x' must be real numbers"):
        module.forward(x=bad, y=1.0)


def test_cupy_kernel_output_under_a_broadcast_transpose_has_the_full_shape(monkeypatch):
    """Found by the fuzzer: d/dB of sum(A - B) + sum(B U) is -1 + (row sums of U).T broadcast over
    N rows; the fused kernel saw the row through its broadcast and returned one row."""
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy())
    A, B, U = MatrixSymbol("A", N, C), MatrixSymbol("B", N, C), MatrixSymbol("U", C, N)
    model = symgrad.Model((OneMatrix(1, N) * (A - B) * OneMatrix(C, 1))[0, 0]
                          + (OneMatrix(1, N) * (B * U) * OneMatrix(N, 1))[0, 0], wrt=[B])
    inputs = {"A": np.ones((3, 2)), "B": np.full((3, 2), 2.0), "U": np.arange(6.0).reshape(2, 3)}
    grad = load_source(symgrad.generate(model, "cupy"), "m").value_and_grad(**inputs)[1]["B"]
    assert grad.tolist() == [[-1 + 3.0, -1 + 12.0]] * 3     # U's row sums: 0+1+2, 3+4+5


def test_select_between_a_condition_and_false_stays_boolean():
    """Found by the fuzzer: SymPy simplifies nested Piecewise conditions into ITE(c, b > 0, False);
    that select is logic, not a float 0/1 that a later select would take as its condition."""
    z = sp.Symbol("z", real=True)
    inner = sp.Abs(sp.Piecewise((z, sp.Eq(z, 1)), (0, True)))
    model = symgrad.Model(sp.acos(sp.sin(sp.Piecewise((sp.log(inner), inner > 0), (inner, True))) / 2), wrt=[z])
    zs = np.array([1.0, 0.5, -1.0])
    with np.errstate(all="ignore"):
        value, grads = grad_of(model, z=zs)
    assert np.allclose(value, np.pi / 2) and grads["z"].tolist() == [-0.5, 0.0, 0.0]  # -1/2 cos(0)/sqrt(1)


def test_elementwise_value_of_broadcasts_only_has_its_full_shape():
    """Found by the fuzzer: d/dA of sum(A + A W) is 1 + (row sums of W).T on every row; with both
    operands printed through their broadcasts the sum came out one row high."""
    A, W = MatrixSymbol("A", N, C), MatrixSymbol("W", C, C)
    _, grads = grad_of(symgrad.Model(A + A * W, wrt=[A]), A=np.ones((3, 2)), W=np.array([[1.0, 2.0], [3.0, 4.0]]))
    assert grads["A"].tolist() == [[4.0, 8.0]] * 3


@pytest.mark.parametrize("target", ["numpy", "cupy"])
def test_equal_constant_gradients_are_separate_arrays(target, monkeypatch):
    """Found by the fuzzer: d/dA and d/dB of A + B + s are one broadcast 1; the module returned
    one array for both."""
    if target == "cupy":
        monkeypatch.setitem(sys.modules, "cupy", fake_cupy())
    A, B = MatrixSymbol("A", N, C), MatrixSymbol("B", N, C)
    module = load_source(symgrad.generate(symgrad.Model(A + B + s * OneMatrix(N, C), wrt=[A, B, s]), target), "m")
    _, grads = module.value_and_grad(A=np.ones((2, 3)), B=np.ones((2, 3)), s=2.0)
    assert not np.shares_memory(grads["A"], grads["B"]) and grads["A"].tolist() == [[1.0] * 3] * 2
    assert grads["s"] == 6


@pytest.mark.parametrize("target", ["numpy", "cupy"])
@pytest.mark.parametrize("case", ["two guards", "guard of a guard"])
def test_a_value_shared_by_guards_with_different_conditions(case, target, monkeypatch):
    """Found by the fuzzer: contributions masked by different conditions were summed mask-free,
    and the shared value's NaN partial (sqrt at x < 0) multiplied the sum where no branch is
    taken.  The tape gives 0 there; so must the module."""
    if target == "cupy":
        monkeypatch.setitem(sys.modules, "cupy", fake_cupy())
    if case == "two guards":
        f = sp.Piecewise((sp.sqrt(x), x > 0), (0, True)) + sp.Piecewise((sp.sqrt(x), x > 1), (0, True))
        points = np.array([-0.9, 0.25, 4.0])
        expected = [0.0, 1.0, 0.5]                      # 1/(2 sqrt x) once, then twice
    else:
        v0 = sp.Piecewise((x * sp.log(x), x > 0), (0, True))
        f = sp.Piecewise((sp.sqrt(v0), v0 > 0), (-v0, True))
        points = np.array([-1.3, 0.5, np.e])
        expected = [0.0, -(np.log(0.5) + 1), (np.log(np.e) + 1) / (2 * np.sqrt(np.e))]
    model = symgrad.Model(f, wrt=[x])
    module = load_source(symgrad.generate(model, target), "m")
    with np.errstate(all="ignore"):
        _, grads = module.value_and_grad(x=points)
        _, t_grads = tape.value_and_grad(model, x=points)
    assert np.allclose(grads["x"], expected, rtol=1e-12, atol=0), grads["x"]
    assert np.allclose(t_grads["x"], expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("target", ["numpy", "cupy"])
def test_abs_at_its_kink_is_a_strong_zero(target, monkeypatch):
    """Found by the fuzzer: Abs'(0) = 0 met atan2's NaN partials at (0, 0) and gave 0 * NaN;
    the tape's strong zero gives 0.  Abs's 0 at the kink is now masked like a selection's."""
    if target == "cupy":
        monkeypatch.setitem(sys.modules, "cupy", fake_cupy())
    model = symgrad.Model(sp.Abs(sp.atan2(x, x)) + sp.Abs(x) * y, wrt=[x, y])
    module = load_source(symgrad.generate(model, target), "m")
    xs = np.array([0.0, 1.0, -2.0])
    with np.errstate(all="ignore"):
        _, grads = module.value_and_grad(x=xs, y=3.0)
        _, t_grads = tape.value_and_grad(model, x=xs, y=3.0)
    assert grads["x"].tolist() == t_grads["x"].tolist() == [0.0, 3.0, -3.0]   # d|x|/dx * y, 0 at 0
    assert grads["y"] == t_grads["y"] == 3.0


@pytest.mark.parametrize("target", ["numpy", "cupy"])
def test_atan2_at_the_origin_has_derivative_zero(target, monkeypatch):
    """Found by the fuzzer: atan2's partials at (0, 0) are 0/0; times a 0 from further up (the
    derivative of sqrt(1 + t**2) at t = 0) the module gave NaN where the tape's strong zero gave 0.
    The origin is a non-differentiable point: derivative 0, masked, in the compiler and the tape."""
    if target == "cupy":
        monkeypatch.setitem(sys.modules, "cupy", fake_cupy())
    model = symgrad.Model(sp.atan2(x, y) + sp.sqrt(1 + sp.atan2(x, x) ** 2), wrt=[x, y])
    module = load_source(symgrad.generate(model, target), "m")
    xs, ys = np.array([0.0, 1.0]), np.array([0.0, 2.0])
    with np.errstate(all="ignore"):
        _, grads = module.value_and_grad(x=xs, y=ys)
        _, t_grads = tape.value_and_grad(model, x=xs, y=ys)
    for got in (grads, t_grads):
        assert np.allclose(got["x"], [0.0, 0.4], rtol=1e-14, atol=0) and np.allclose(got["y"], [0.0, -0.2], rtol=1e-14, atol=0)


@pytest.mark.parametrize("target", ["numpy", "cupy"])
def test_a_broadcast_that_its_consumer_does_keeps_its_source_alive(target, monkeypatch):
    """Found by the Dask target's fuzzer: (a.T a)[0, 0] * OneMatrix(1, 3) with a scalar Symbol t as a
    (1, 1) array -- the broadcast is printed as its source's name, but the buffer planner did not
    count it as a view, so 2*t was written into the buffer still holding (a.T a)[0, 0] (silently
    wrong value, forward and gradient)."""
    t = sp.Symbol("t")
    Q, q = sp.MatrixSymbol("Q", 3, 2), sp.MatrixSymbol("q", 2, 1)
    a = t * Q * q
    model = symgrad.Model(2 * a.T + (a.T * a)[0, 0] * sp.OneMatrix(1, 3), wrt=[Q, t])
    rng = np.random.default_rng(0)
    inputs = {"Q": rng.standard_normal((3, 2)), "q": rng.standard_normal((2, 1)), "t": np.array([[1.3]])}
    want_value, want = symgrad.tape.value_and_grad(model, **inputs)
    if target == "cupy":
        monkeypatch.setitem(sys.modules, "cupy", fake_cupy())
    mod = load_source(symgrad.generate(model, target), f"bcast_alias_{target}")
    value, grads = mod.value_and_grad(**inputs)
    np.testing.assert_allclose(mod.forward(**inputs), want_value, rtol=1e-12)
    np.testing.assert_allclose(value, want_value, rtol=1e-12)
    for k in want:
        np.testing.assert_allclose(grads[k], want[k], rtol=1e-12)


def test_a_mask_crossing_into_another_cupy_kernel_transposed_stays_a_bool_parameter():
    """A strong-zero mask (``g == 0``) computed in one fused kernel and read transposed by the next
    was declared ``T`` there: CuPy (and the shim) refuse a bool array for a float parameter ("Type
    is mismatched"), so this model's hvp failed on the cupy target (found by the long fuzz profile).
    The hvp must equal the tape's Hessian times the direction."""
    import sys
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from test_fuzz import shim_cupy
    from symgrad.emit import load_source
    from symgrad import tape
    N, d = sp.symbols("N d")
    A, U = sp.MatrixSymbol("A", N, d), sp.MatrixSymbol("U", d, N)
    W, b = sp.MatrixSymbol("W", d, d), sp.MatrixSymbol("b", 1, d)
    total = lambda M, r, c: (sp.OneMatrix(1, r) * M * sp.OneMatrix(c, 1))[0, 0]  # noqa: E731
    scalar = (sp.log(total(A.applyfunc(sp.exp), N, d)) + total(sp.MatPow(W, 2).applyfunc(sp.tanh), d, d)
              + total(b.applyfunc(lambda e: sp.sqrt(1 + e**2)), 1, d) + total(A.T, d, N))
    value = (b * U).applyfunc(sp.sin) + scalar * sp.OneMatrix(1, N)
    model = symgrad.Model(value, wrt=[b], name="mask_t")
    rng = np.random.default_rng(0)
    inputs = {k: rng.standard_normal(shape) for k, shape in
              {"A": (2, 2), "U": (2, 2), "W": (2, 2), "b": (1, 2)}.items()}
    direction = rng.standard_normal((1, 2))
    want = tape.dense_hessian(model, **inputs)[1] @ direction.ravel()
    source = symgrad.generate(model, "cupy", emit="hvp")
    with shim_cupy():
        import cupy
        mod = load_source(source, "mask_t_cupy")
        got = mod.hvp({"b": cupy.asarray(direction)}, **{k: cupy.asarray(v) for k, v in inputs.items()})[2]["b"]
    np.testing.assert_allclose(np.asarray(got).ravel(), want, rtol=1e-5, atol=1e-6)
