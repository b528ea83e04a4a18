"""The seed worked examples, reproduced with symgrad's generated modules (examples/).

* every ``examples/run_seedNNN.py`` script runs (small sizes) and all its comparisons pass;
* the numbers the seeds print are checked here once more, against constants copied from the seeds;
* seed 002's gradients are checked against an independent NumPy backprop written in this file;
* the bridge examples (``run_scipy_glm``, ``run_stiff_ode``, ``run_torch_layer``, ``run_sparse_rosenbrock``,
  ``run_sparse_ode``) run at small sizes;
* golden files: for every model in ``examples/seed*.py``, ``symgrad.generate(model, "numpy")`` must
  equal the committed ``codegen_out/<name>_numpy.py`` byte for byte.
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import symgrad

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
CODEGEN_OUT = ROOT / "codegen_out"
MODEL_FILES = sorted(EXAMPLES.glob("seed*.py"))


def _script(name: str):
    """Import examples/<name>.py as a module (examples/ on sys.path, as when run as a script)."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module(name)


def _assert_ok(rep):
    assert rep.ok, "\n".join(rep.failures)


# ---- seed 003: the numbers of "Notes on backpropagation" ------------------------------------------
def test_seed003_numbers():
    rep = _script("run_seed003").run(quiet=True)
    _assert_ok(rep)
    v = rep.values
    assert float(v["df/dx at (2, -4)"]) == pytest.approx(0.5348320870757595, rel=1e-12)
    assert float(v["df/dy at (2, -4)"]) == pytest.approx(0.342460382923052, rel=1e-12)
    assert float(v["df/dw0"]) == -6.0 and float(v["df/dw1"]) == -18.0
    assert float(v["GD minimum x after 50 steps"]) == pytest.approx(-199.9971455046146, rel=1e-12)
    assert float(v["GD minimum y after 50 steps"]) == pytest.approx(-3.9999429100922916, rel=1e-12)


# ---- seed 000: linear layer + MSE trained by GD, vs the hand-written lin_grad ------------------------
def test_seed000_linear_mse_training():
    rep = _script("run_seed000").run(quiet=True)
    _assert_ok(rep)
    v = rep.values
    assert v["loss decreases at every step"] and v["weights approach W_true"]


# ---- seed 001: chain-rule examples and the sigmoid-network NLL ---------------------------------------
def test_seed001_autodiff_examples():
    rep = _script("run_seed001").run(quiet=True)
    _assert_ok(rep)
    v = rep.values
    assert float(v["  dL/dx (dc/da = 10a) = -160"]) == -160.0
    assert v["circle: right transform < network < wrong one"]


# ---- seed 002: the 784-50-1 ReLU MLP --------------------------------------------------------------------
def test_seed002_mlp_small():
    rep = _script("run_seed002").run(small=True, quiet=True)
    _assert_ok(rep)
    assert rep.values["loss falls at every step"]


def test_seed002_gradients_vs_independent_backprop():
    """An independent backprop (written here, not the script's) against the generated module."""
    models = {m.name: m for m in symgrad.load_models(EXAMPLES / "seed002_mlp.py")}
    mod = symgrad.compile(models["seed002_mlp_mse_xgrad"])
    rng = np.random.default_rng(123)
    n, m, nh = 300, 784, 50
    x = np.where(rng.random((n, m)) < 0.2, rng.random((n, m)), 0.0)
    y = rng.integers(0, 10, (n, 1)).astype(float)
    p = {"w1": rng.standard_normal((m, nh)), "b1": rng.standard_normal((1, nh)),
         "w2": rng.standard_normal((nh, 1)), "b2": rng.standard_normal((1, 1))}
    # forward
    a1 = x @ p["w1"] + p["b1"]
    h = np.maximum(a1, 0)
    out = h @ p["w2"] + p["b2"]
    loss = np.mean((out - y) ** 2)
    # backward
    g_out = 2 * (out - y) / n
    g_h = g_out @ p["w2"].T
    g_a1 = g_h * (a1 > 0)
    want = {"w2": h.T @ g_out, "b2": g_out.sum(0, keepdims=True), "w1": x.T @ g_a1,
            "b1": g_a1.sum(0, keepdims=True), "x": g_a1 @ p["w1"].T}
    value, grads = mod.value_and_grad(x=x, y=y, **p)
    assert float(value) == pytest.approx(loss, rel=1e-12)
    assert set(grads) == set(want)
    for k, g in want.items():
        assert grads[k].shape == g.shape, k
        np.testing.assert_allclose(grads[k], g, rtol=1e-9, atol=1e-9 * np.abs(g).max(), err_msg=k)
    np.testing.assert_allclose(mod.forward(x=x, y=y, **p), value, rtol=1e-15)


# ---- seed 004: softmax CE network, the make_blobs line fit, the Legendre-P3 fit ----------------------
def test_seed004_numbers():
    rep = _script("run_seed004").run(small=True, quiet=True)
    _assert_ok(rep)
    v = rep.values
    assert float(v["line fit: starting error at b = m = 0"]) == pytest.approx(2.059703523518794, rel=1e-13)
    assert float(v["line fit: b after 1000 iterations"]) == pytest.approx(-3.2643663545390273, rel=1e-10)
    assert float(v["line fit: m after 1000 iterations"]) == pytest.approx(-1.3386872077957057, rel=1e-10)
    assert float(v["line fit: error after 1000 iterations"]) == pytest.approx(0.11444715957515363, rel=1e-10)
    assert float(v["Legendre fit: b"]) == pytest.approx(-2.208526849746704, rel=2e-6)
    assert float(v["Legendre fit: d"]) == pytest.approx(0.2554861009120941, rel=2e-6)
    assert float(v["Legendre fit: final loss (step 2000)"]) == pytest.approx(8.943641662597656, rel=1e-6)


# ---- second order: Newton on seed 001's logistic NLL, Hessian-free steps on seed 002's MLP -------------
def test_second_order_examples():
    rep = _script("run_second_order").run(small=True, quiet=True)
    _assert_ok(rep)
    v = rep.values
    assert v["Newton (generated hessian): ||g|| < 1e-08"]
    assert v["gradient descent (seed 001's step 0.01)"] and v["Hessian-free (8 steps, CG on hvp) beats GD"]


def test_second_order_example_from_committed_codegen():
    r = _run(EXAMPLES / "run_second_order.py", "--small", "--from-codegen")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "8 iterations" in r.stdout


# ---- the bridges (contract 4f): scipy.optimize, solve_ivp and a PyTorch training loop -----------------
def test_scipy_glm_example():
    pytest.importorskip("scipy")
    rep = _script("run_scipy_glm").run(small=True, quiet=True)
    _assert_ok(rep)
    assert {"trust-exact: w vs Newton/IRLS by hand", "trust-ncg: w vs Newton/IRLS by hand"} <= set(rep.values)


def test_stiff_ode_example():
    pytest.importorskip("scipy")
    rep = _script("run_stiff_ode").run(small=True, quiet=True)
    _assert_ok(rep)
    assert rep.values["fewer rhs calls with the symbolic Jacobian"]


def test_sparse_rosenbrock_example():
    """trust-constr with sparse_hessian reaches x = 1 (small n; the script's default is 10^5)."""
    pytest.importorskip("scipy")
    rep = _script("run_sparse_rosenbrock").run(small=True, quiet=True)
    _assert_ok(rep)
    assert rep.values["trust-constr converged"] and rep.values["2 x 2 blocks"]


def test_sparse_ode_example():
    """BDF with sparse_jacobian: the same solution as the dense jacobian and SciPy's differencing."""
    pytest.importorskip("scipy")
    rep = _script("run_sparse_ode").run(small=True, quiet=True)
    _assert_ok(rep)
    assert rep.values["fewer rhs calls than dense differencing"]


def test_torch_layer_example():
    pytest.importorskip("torch")
    rep = _script("run_torch_layer").run(small=True, quiet=True)
    _assert_ok(rep)
    assert rep.values["loss falls"] and rep.values["training accuracy >= 95%"]


# ---- the Dask target: gradient descent on data read block by block from disk, 2 worker processes --------
def test_dask_out_of_core_example():
    pytest.importorskip("distributed")
    r = _run(EXAMPLES / "run_dask_out_of_core.py", "--rows", "60000", "--block", "6000", "--features", "4")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "wrote 10 blocks" in r.stdout and "ok: 60,000 rows" in r.stdout
    steps = [line for line in r.stdout.splitlines() if line.startswith("step ")]
    assert len(steps) == 10


# ---- the scripts as programs --------------------------------------------------------------------------
def _run(*args):
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_script_runs_and_prints_seed_numbers():
    r = _run(EXAMPLES / "run_seed003.py")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0.5348320870757595" in r.stdout and "-199.9971455046146" in r.stdout


def test_script_runs_from_committed_codegen():
    """--from-codegen imports codegen_out/<name>_numpy.py instead of compiling in-process."""
    r = _run(EXAMPLES / "run_seed002.py", "--small", "--from-codegen", "--steps", "1")
    assert r.returncode == 0, r.stdout + r.stderr


# ---- golden generated files ---------------------------------------------------------------------------
def _all_models():
    out = []
    for path in MODEL_FILES:
        for m in symgrad.load_models(path):
            out.append(pytest.param(path, m, id=m.name))
    return out


def test_model_names_are_distinct():
    names = [p.values[1].name for p in _all_models()]
    assert len(names) == len(set(names)), names
    assert len(MODEL_FILES) == 5


@pytest.mark.parametrize("path,model", _all_models())
def test_golden_codegen(path, model):
    golden = CODEGEN_OUT / f"{model.name}_numpy.py"
    hint = f"run `symgrad compile examples/{path.name}` to refresh"
    assert golden.is_file(), f"{golden.relative_to(ROOT)} is missing: {hint}"
    text = symgrad.generate(model, "numpy")
    committed = golden.read_text(encoding="utf-8")
    if text != committed:
        new, old = text.splitlines(), committed.splitlines()
        i = next((i for i, (a, b) in enumerate(zip(new, old)) if a != b), min(len(new), len(old)))
        first = (f"first difference at line {i + 1}:\n  committed: {old[i] if i < len(old) else '<end>'}"
                 f"\n  generate:  {new[i] if i < len(new) else '<end>'}")
        pytest.fail(f"{golden.relative_to(ROOT)} differs from symgrad.generate({model.name!r}, 'numpy'): "
                    f"{hint}\n{first}", pytrace=False)
