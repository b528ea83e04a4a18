"""The Dask target: models that are sums over data rows, computed block by block on Dask arrays.

Oracles: the runtime tape on the whole data (independent of the compiler), the NumPy module to
1e-12 relative (the contract: "exactly as the NumPy module would"), and closed forms.  The
block kernels run on a real ``dask.distributed`` LocalCluster of worker processes in
``test_on_a_local_cluster``; the other tests use Dask's synchronous scheduler (same graph, one
process, fast).  Refusals: every non-separable construct gets one line naming the part of the
model that couples the rows.
"""
import subprocess
import sys

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad import tape
from symgrad.emit import load_source

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

N, d, k = sp.symbols("N d k", integer=True, positive=True)
X = sp.MatrixSymbol("X", N, d)
y = sp.MatrixSymbol("y", N, 1)
Y = sp.MatrixSymbol("Y", N, k)
w = sp.MatrixSymbol("w", d, 1)
W = sp.MatrixSymbol("W", d, k)
b = sp.MatrixSymbol("b", 1, k)
mu = sp.MatrixSymbol("mu", d, 1)
S = sp.MatrixSymbol("S", d, d)
lam = sp.Symbol("lam")
one = sp.OneMatrix(N, 1)
r = X * w - y
sig = lambda t: 1 / (1 + sp.exp(-t))  # noqa: E731
Z = X * W + one * b
R = X - one * mu.T

SEPARABLE = {
    # a mean over the rows (1/N: the rows of all blocks) plus a term free of data (counted once)
    "ridge": symgrad.Model((r.T * r)[0, 0] / N + lam * (w.T * w)[0, 0], wrt=[w], name="ridge"),
    "logreg_nll": symgrad.Model(-(y.T * (X * w).applyfunc(lambda t: sp.log(sig(t))))[0, 0]
                                - ((one - y).T * (X * w).applyfunc(lambda t: sp.log(1 - sig(t))))[0, 0],
                                wrt=[w], name="logreg_nll"),
    "softmax_ce": symgrad.Model(
        (sp.OneMatrix(1, N) * (Z.applyfunc(sp.exp) * sp.OneMatrix(k, 1)).applyfunc(sp.log))[0, 0] / N
        - sp.Trace(Y.T * Z) / N, wrt=[W, b], name="softmax_ce"),
    # the Gaussian negative log-likelihood: N/2 log det S + 1/2 tr(R S^-1 R^T), R = X - 1 mu^T
    "gauss_nll": symgrad.Model(N / 2 * sp.log(sp.Determinant(S)) + sp.Trace(R * S.I * R.T) / 2,
                               wrt=[mu, S], name="gauss_nll"),
    # a quadratic form of a sum over the rows (X^T X) with the parameters: still linear in the sums
    "quad": symgrad.Model((w.T * X.T * X * w)[0, 0] - 3 * (w.T * X.T * y)[0, 0], wrt=[w], name="quad"),
    # one value per row: the blocks' values are joined, the gradient of their sum is summed
    "rows_out": symgrad.Model((X * W + one * b).applyfunc(sp.tanh), wrt=[W, b], name="rows_out"),
    "cols_out": symgrad.Model((X * w).T.applyfunc(sp.sin), wrt=[w], name="cols_out"),
}

COUPLED = {  # model -> the words of the refusal (the part that couples the rows, and why)
    symgrad.Model(sp.log((one.T * (X * w).applyfunc(sp.exp))[0, 0]), wrt=[w], name="logsum"):
        r"log\(\(ones\(1, N\)\*exp\(X\*w\)\)\[0, 0\]\) is a nonlinear function of a sum over the rows",
    symgrad.Model(sp.Trace((X - one * one.T * X / N).T * (X - one * one.T * X / N) * w * w.T), wrt=[w],
                  name="centred"): "spreads a sum over the rows back over the rows",
    symgrad.Model(sp.Trace(X * X.T * y * y.T) + (w.T * w)[0, 0], wrt=[w], name="gram"):
        "N x N product of the rows",
    symgrad.Model(sp.Trace((X[0:2, :] * w).T * (X[0:2, :] * w)), wrt=[w], name="first_rows"): "slices the rows",
    symgrad.Model(sp.Trace(sp.Inverse(X.T * X + sp.Identity(d)) * w * w.T), wrt=[w], name="inv_gram"):
        "of a sum over the rows|solves a system built from the rows",
    symgrad.Model((X * w).T * (X * w) * (w.T * X.T * y), wrt=[w], name="product_of_sums"):
        "nonlinear function of a sum over the rows|multiplies the rows by a sum over the rows",
    symgrad.Model((X * w).T * y + (w.T * w)[0, 0] * (X * w).T * (X * w), wrt=[w], name="scaled_sum"):
        None,  # separable (a parameter times a sum): must NOT be refused
}


def _spd(rng, n):
    a = rng.standard_normal((n, n))
    return a @ a.T + n * np.eye(n)


def inputs_for(model, rng, rows=37, cols=3, classes=4):
    sizes = {N: rows, d: cols, k: classes}
    out = {}
    for s in model.inputs:
        if isinstance(s, sp.MatrixSymbol):
            shape = tuple(int(sp.sympify(n).subs(sizes)) for n in s.shape)
            out[str(s)] = _spd(rng, shape[0]) if str(s) == "S" else rng.standard_normal(shape)
        else:
            out[str(s)] = 0.7
    if "y" in out and model.name == "logreg_nll":
        out["y"] = (out["y"] > 0).astype(np.float64)
    if "Y" in out:
        out["Y"] = np.eye(classes)[rng.integers(0, classes, rows)]
    return out


def chunked(module, inputs, rows_per_block):
    return {n: da.from_array(v, chunks=(rows_per_block,) + v.shape[1:]) if n in module.DATA else v
            for n, v in inputs.items()}


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


@pytest.fixture(scope="module")
def modules():
    return {name: (symgrad.compile(m, target="dask"), symgrad.compile(m)) for name, m in SEPARABLE.items()}


@pytest.fixture(autouse=True, scope="module")
def synchronous():
    with dask.config.set(scheduler="synchronous"):
        yield


@pytest.mark.parametrize("name", SEPARABLE)
@pytest.mark.parametrize("rows_per_block", [1, 5, 37])
def test_blocks_add_up_to_the_tape_and_the_numpy_module(modules, name, rows_per_block):
    model, (dk, npm) = SEPARABLE[name], modules[name]
    inputs = inputs_for(model, np.random.default_rng(1))
    t_value, t_grads = tape.value_and_grad(model, **inputs)
    value, grads = dk.value_and_grad(**chunked(dk, inputs, rows_per_block))
    n_value, n_grads = npm.value_and_grad(**inputs)
    assert rel(value, t_value) < 1e-10 and rel(value, n_value) < 1e-12
    assert rel(dk.forward(**chunked(dk, inputs, rows_per_block)), n_value) < 1e-12
    assert set(grads) == set(t_grads)
    for g in grads:
        assert rel(grads[g], t_grads[g]) < 1e-10, g
        assert rel(grads[g], n_grads[g]) < 1e-12, g
        assert isinstance(grads[g], np.ndarray) and grads[g].flags.writeable


def test_closed_forms(modules):
    """Ridge: grad = 2/N X^T (Xw - y) + 2 lam w; Gaussian NLL: d/dmu = S^-1 sum_i (x_i - mu)."""
    rng = np.random.default_rng(2)
    inp = inputs_for(SEPARABLE["ridge"], rng, rows=50)
    Xv, yv, wv = inp["X"], inp["y"], inp["w"]
    _, g = modules["ridge"][0].value_and_grad(**chunked(modules["ridge"][0], inp, 7))
    want = 2 / 50 * Xv.T @ (Xv @ wv - yv) + 2 * 0.7 * wv
    assert rel(g["w"], want) < 1e-12
    inp = inputs_for(SEPARABLE["gauss_nll"], rng, rows=50)
    dk = modules["gauss_nll"][0]
    value, g = dk.value_and_grad(**chunked(dk, inp, 9))
    Xv, muv, Sv = inp["X"], inp["mu"], inp["S"]
    Rv = Xv - muv.T
    want_value = 25 * np.linalg.slogdet(Sv)[1] + 0.5 * np.trace(Rv @ np.linalg.solve(Sv, Rv.T))
    assert rel(value, want_value) < 1e-12
    assert rel(g["mu"], -np.linalg.solve(Sv, Rv.sum(axis=0))[:, None]) < 1e-10


def test_parameters_count_once_however_many_blocks(modules):
    """The data-free term lam*|w|^2 is in the first block only: with the data scaled to zero the
    value is exactly that term, for 1 block and for 37."""
    dk = modules["ridge"][0]
    inp = inputs_for(SEPARABLE["ridge"], np.random.default_rng(3))
    inp["X"][:], inp["y"][:] = 0.0, 0.0
    for rows_per_block in (1, 37):
        value, g = dk.value_and_grad(**chunked(dk, inp, rows_per_block))
        assert value == pytest.approx(0.7 * (inp["w"].T @ inp["w"]).item(), rel=1e-14)
        assert rel(g["w"], 2 * 0.7 * inp["w"]) < 1e-14


def test_scalar_symbol_models():
    """Scalar Symbols: the data (not differentiated) are cut along their first axis, parameters
    broadcast over the rows."""
    x, t, a, c = sp.symbols("x t a c")
    model = symgrad.Model((a * sp.tanh(c * x) - t) ** 2, wrt=[a, c], name="scalar_fit")
    dk = symgrad.compile(model, target="dask")
    assert set(dk.DATA) == {"x", "t"} and dk.COMBINE == "rows"
    rng = np.random.default_rng(4)
    inp = {"x": rng.standard_normal((23, 2)), "t": rng.standard_normal((23, 2)), "a": 0.3,
           "c": np.array([[1.5, -0.5]])}
    t_value, t_grads = tape.value_and_grad(model, **inp)
    value, grads = dk.value_and_grad(**chunked(dk, inp, 4))
    assert rel(value, t_value) < 1e-12 and np.shape(grads["a"]) == () and np.shape(grads["c"]) == (1, 2)
    for g in grads:
        assert rel(grads[g], t_grads[g]) < 1e-12
    with pytest.raises(ValueError, match="'c' has shape \\(23, 1\\): it would span the rows"):
        dk.value_and_grad(**{**inp, "c": np.ones((23, 1))})


def test_float32_stays_float32(modules):
    dk = modules["rows_out"][0]
    inp = {n: v.astype(np.float32) for n, v in inputs_for(SEPARABLE["rows_out"], np.random.default_rng(5)).items()}
    value, grads = dk.value_and_grad(**chunked(dk, inp, 10))
    assert value.dtype == np.float32 and all(g.dtype == np.float32 for g in grads.values())
    assert value.shape == (37, 4)


@pytest.mark.parametrize("model,words", list(COUPLED.items()), ids=[m.name for m in COUPLED])
def test_models_that_couple_rows_are_refused_naming_the_part(model, words):
    if words is None:
        dk = symgrad.compile(model, target="dask")
        inp = inputs_for(model, np.random.default_rng(6))
        assert rel(dk.value_and_grad(**chunked(dk, inp, 6))[1]["w"],
                   tape.value_and_grad(model, **inp)[1]["w"]) < 1e-10
        return
    with pytest.raises(symgrad.SymgradError, match=f"the rows do not split into blocks: .*({words})"):
        symgrad.generate(model, target="dask")


def test_layouts_that_do_not_split_are_refused():
    P = sp.MatrixSymbol("P", d, N)
    with pytest.raises(symgrad.SymgradError, match=r"input P \(dxN\) has the rows dimension N as its second axis"):
        symgrad.generate(symgrad.Model(sp.Trace(P * X * w * w.T), wrt=[w]), target="dask")
    # a parameter with the rows: nothing splits, the model runs as one block, dask data is refused
    V = sp.MatrixSymbol("V", N, 1)
    dk = symgrad.compile(symgrad.Model((V.T * X * w)[0, 0], wrt=[V, w], name="per_row"), target="dask")
    assert dk.DATA == () and dk.COMBINE == "once"
    with pytest.raises(TypeError, match=r"'X' is a parameter, not data \(DATA = \(\)\)"):
        dk.value_and_grad(V=np.ones((4, 1)), X=da.ones((4, 3)), w=np.ones((3, 1)))


def test_bad_calls_get_clear_errors(modules):
    dk = modules["ridge"][0]
    inp = inputs_for(SEPARABLE["ridge"], np.random.default_rng(7))
    with pytest.raises(TypeError, match="'w' is a parameter, not data .*: pass it as a NumPy array"):
        dk.value_and_grad(**{**chunked(dk, inp, 5), "w": da.from_array(inp["w"])})
    with pytest.raises(ValueError, match="different numbers of rows"):
        dk.value_and_grad(**{**chunked(dk, inp, 5), "y": da.zeros((36, 1))})
    with pytest.raises(ValueError, match="input 'X' has shape \\(37, 2\\), expected \\('N', 'd'\\)"):
        dk.value_and_grad(**{**chunked(dk, inp, 5), "X": da.zeros((37, 2))})
    with pytest.raises(TypeError, match="'X' must be real numbers"):
        dk.value_and_grad(**{**inp, "X": inp["X"].astype(complex)})
    unknown = da.from_array(inp["X"], chunks=5)
    unknown = unknown[unknown[:, 0] > -100]  # a boolean mask: dask no longer knows the rows
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        dk.value_and_grad(**{**chunked(dk, inp, 5), "X": unknown})
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'lam'"):
        dk.forward(**{n: v for n, v in inp.items() if n != "lam"})


def test_chunks_across_columns_and_numpy_data(modules):
    """Data chunked along the columns too, or given as NumPy, gives the same result."""
    dk, npm = modules["softmax_ce"]
    inp = inputs_for(SEPARABLE["softmax_ce"], np.random.default_rng(8))
    want = npm.value_and_grad(**inp)
    for given in ({**inp, "X": da.from_array(inp["X"], chunks=(6, 1)), "Y": da.from_array(inp["Y"], chunks=(11, 2))},
                  inp):
        value, grads = dk.value_and_grad(**given)
        assert rel(value, want[0]) < 1e-12 and all(rel(grads[g], want[1][g]) < 1e-12 for g in grads)


def test_generated_module_is_deterministic_and_imports_only_its_libraries():
    src = symgrad.generate(SEPARABLE["gauss_nll"], target="dask")
    assert src == symgrad.generate(SEPARABLE["gauss_nll"], target="dask")
    imports = {line.split()[1] for line in src.splitlines() if line.startswith(("import ", "from "))}
    assert imports == {"numpy", "sys", "cloudpickle", "dask", "dask.array"}
    assert "Data (dask.array, chunked along the rows N): X;" in src


def test_cli(tmp_path):
    model = tmp_path / "m.py"
    model.write_text("import sympy as sp\nimport symgrad\nN, d = sp.symbols('N d', integer=True)\n"
                     "X = sp.MatrixSymbol('X', N, d)\nw = sp.MatrixSymbol('w', d, 1)\n"
                     "ok = symgrad.Model(((X*w).applyfunc(sp.tanh).T * sp.OneMatrix(N, 1))[0, 0] / N, wrt=[w])\n"
                     "bad = symgrad.Model(sp.log(((X*w).T * sp.OneMatrix(N, 1))[0, 0] ** 2), wrt=[w])\n")
    run = lambda *a: subprocess.run([sys.executable, "-m", "symgrad", "compile", str(model), *a],  # noqa: E731
                                    capture_output=True, text=True, cwd=tmp_path)
    done = run("--target", "dask", "--model", "ok", "--check")
    assert done.returncode == 0, done.stderr + done.stdout
    assert "ok m_ok [dask]" in done.stdout and (tmp_path / "codegen_out" / "m_ok_dask.py").exists()
    refused = run("--target", "dask", "--model", "bad")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.count("\n") == 1 and "m.py: m_bad: the rows do not split into blocks" in refused.stderr
    assert not (tmp_path / "codegen_out" / "m_bad_dask.py").exists()
    asked = run("--target", "dask", "--model", "ok", "--emit", "hvp")
    assert asked.returncode == 2 and "dask target has forward and value_and_grad only" in asked.stderr


def test_on_a_local_cluster(modules, tmp_path):
    """A real distributed scheduler with two worker processes: the module's functions travel by
    value (the workers never import the generated file), the parameters once per worker."""
    distributed = pytest.importorskip("distributed")
    dk, npm = modules["softmax_ce"]
    from_file = tmp_path / "softmax_dask.py"
    from_file.write_text(symgrad.generate(SEPARABLE["softmax_ce"], target="dask"))
    from symgrad.testing import import_module_file
    loaded = [dk, import_module_file(from_file),
              load_source(symgrad.generate(SEPARABLE["softmax_ce"], target="dask"), "softmax_src")]
    inp = inputs_for(SEPARABLE["softmax_ce"], np.random.default_rng(9), rows=400)
    want = npm.value_and_grad(**inp)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster) as client:
        for mod in loaded:
            with dask.config.set(scheduler=client):
                value, grads = mod.value_and_grad(**chunked(mod, inp, 50))
            assert rel(value, want[0]) < 1e-12 and all(rel(grads[g], want[1][g]) < 1e-12 for g in grads)
        assert len(client.scheduler_info()["workers"]) == 2


def test_one_task_per_block_and_the_parameters_in_one_task(modules, monkeypatch):
    """The graph: one kernel task per block, the parameters (and the kernel) in a single task that
    every block task depends on -- so each worker receives them once -- and a tree of sums."""
    dk = modules["ridge"][0]
    inp = inputs_for(SEPARABLE["ridge"], np.random.default_rng(10), rows=100)
    graphs = []
    real = dask.compute

    def spy(*args, **kwargs):
        graphs.append(dict(args[0].__dask_graph__()))
        return real(*args, **kwargs)
    monkeypatch.setattr(dask, "compute", spy)
    value, _ = dk.value_and_grad(**chunked(dk, inp, 5))  # 20 blocks
    (graph,) = graphs
    holding_w = [key for key, task in graph.items() if "w" in _literals(task)]
    assert len(holding_w) == 1
    blocks = [key for key in graph if str(key).startswith("_block-")]
    combines = [key for key in graph if str(key).startswith("_combine-")]
    assert len(blocks) == 20 and len(combines) == 3 + 1  # 20 -> 3 -> 1 with FAN_IN = 8
    assert rel(value, modules["ridge"][1].value_and_grad(**inp)[0]) < 1e-12


def _literals(task):
    """The dict keys of literal dicts inside a task (the parameters' names where they are)."""
    found = set()
    stack = [task]
    while stack:
        t = stack.pop()
        if isinstance(t, dict):
            found |= {k for k in t if isinstance(k, str)}
            stack += list(t.values())
        elif isinstance(t, (tuple, list)):
            stack += list(t)
        elif hasattr(t, "args") and hasattr(t, "func"):  # dask's Task objects
            stack += list(t.args) + list(getattr(t, "kwargs", {}).values())
        elif hasattr(t, "value") and not isinstance(t, np.ndarray):  # DataNode
            stack.append(t.value)
    return found


def test_a_data_free_term_that_is_infinite_stays_infinite(modules):
    """Found by a hostile review: the data-free term was multiplied by 0 on the other blocks,
    0 * inf = NaN; it is selected instead, as the NumPy module gives inf."""
    model = symgrad.Model((r.T * r)[0, 0] + sp.exp(lam * (w.T * w)[0, 0]), wrt=[w, lam], name="overflow")
    dk, npm = symgrad.compile(model, target="dask"), symgrad.compile(model)
    inp = inputs_for(model, np.random.default_rng(11), rows=8) | {"lam": 1e4}
    with np.errstate(all="ignore"):
        want_value, want = npm.value_and_grad(**inp)
        value, grads = dk.value_and_grad(**chunked(dk, inp, 4))
    assert np.isinf(want_value) and value == want_value
    assert np.array_equal(grads["w"], want["w"]) and grads["lam"] == want["lam"]


def test_empty_blocks_are_skipped(modules):
    """A boolean mask then compute_chunk_sizes() leaves blocks of 0 rows: skipped, and the
    data-free term still counts once (on the first block that has rows)."""
    dk, npm = modules["ridge"]
    inp = inputs_for(SEPARABLE["ridge"], np.random.default_rng(12), rows=12)
    keep = da.from_array(np.r_[np.zeros(4, bool), np.ones(8, bool)], chunks=4)
    X_, y_ = da.from_array(inp["X"], chunks=4)[keep], da.from_array(inp["y"], chunks=4)[keep]
    X_.compute_chunk_sizes(), y_.compute_chunk_sizes()
    assert X_.chunks[0] == (0, 4, 4)
    value, grads = dk.value_and_grad(w=inp["w"], lam=0.7, X=X_, y=y_)
    want_value, want = npm.value_and_grad(w=inp["w"], lam=0.7, X=inp["X"][4:], y=inp["y"][4:])
    assert rel(value, want_value) < 1e-12 and rel(grads["w"], want["w"]) < 1e-12


def test_names_that_are_the_modules_aliases():
    """An input named np: the module's NumPy alias moves (np_), in the driver too."""
    Xn = sp.MatrixSymbol("np", N, d)
    model = symgrad.Model((Xn * w).applyfunc(sp.tanh), wrt=[w], name="np_named")
    dk, npm = symgrad.compile(model, target="dask"), symgrad.compile(model)
    inp = {"np": np.random.default_rng(13).standard_normal((8, 3)), "w": np.ones((3, 1))}
    assert rel(dk.forward(**{**inp, "np": da.from_array(inp["np"], chunks=3)}), npm.forward(**inp)) < 1e-15
    assert rel(dk.value_and_grad(**inp)[1]["w"], npm.value_and_grad(**inp)[1]["w"]) < 1e-12


def test_two_candidate_rows_dimensions_are_refused_by_name():
    M = sp.Symbol("M", integer=True)
    Z = sp.MatrixSymbol("Z", M, d)
    model = symgrad.Model(((X * w).T * (X * w))[0, 0] + ((Z * w).T * (Z * w))[0, 0], wrt=[w])
    with pytest.raises(symgrad.SymgradError, match=r"2 candidate rows dimensions \(M, N\)"):
        symgrad.generate(model, target="dask")


def test_results_have_the_numpy_modules_types(modules):
    """A scalar parameter's gradient is a 0-d array however many blocks were added."""
    dk, npm = modules["ridge"]
    inp = inputs_for(SEPARABLE["ridge"], np.random.default_rng(14))
    model = symgrad.Model((r.T * r)[0, 0] / N + lam * (w.T * w)[0, 0], wrt=[w, lam], name="ridge_lam")
    dk, npm = symgrad.compile(model, target="dask"), symgrad.compile(model)
    _, want = npm.value_and_grad(**inp)
    for rows_per_block in (37, 5):
        _, grads = dk.value_and_grad(**chunked(dk, inp, rows_per_block))
        assert type(grads["lam"]) is type(want["lam"]) and np.shape(grads["lam"]) == ()


def test_parameters_are_checked_before_any_task(modules, monkeypatch):
    dk = modules["ridge"][0]
    inp = inputs_for(SEPARABLE["ridge"], np.random.default_rng(15))
    monkeypatch.setattr(dask, "compute", lambda *a, **k: pytest.fail("a task ran"))
    for bad in (1j, "abc", None):
        with pytest.raises(TypeError, match="'lam' must be real numbers"):
            dk.value_and_grad(**{**chunked(dk, inp, 5), "lam": bad})
    with pytest.raises(ValueError, match=r"parameter 'lam' has shape \(37, 1\): it would span the 37 rows"):
        dk.value_and_grad(**{**chunked(dk, inp, 5), "lam": np.ones((37, 1))})
