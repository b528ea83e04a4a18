"""`symgrad compile`: outputs, summaries, --check, and every exit status the README documents.

Most runs call ``symgrad.cli.main`` in-process inside ``tmp_path``; one runs the console script."""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import symgrad
from symgrad import cli, jobs

TWO_MODELS = """
import sympy as sp
import symgrad
x, y = sp.symbols("x y")
ratio = symgrad.Model((x + 1 / (1 + sp.exp(-y))) / (1 + (x + y) ** 2), wrt=[x, y], name="ratio")
square = symgrad.Model(x ** 2 * y, wrt=[x], name="square")
"""

LAYER = """
import sympy as sp
import symgrad
N, d = sp.symbols("N d")
X, W, b = sp.MatrixSymbol("X", N, d), sp.MatrixSymbol("W", d, 2), sp.MatrixSymbol("b", 1, 2)
model = symgrad.Model((X * W + sp.OneMatrix(N, 1) * b).applyfunc(sp.tanh), wrt=[W, b])
"""

WRONG_SOURCE = '''
INPUTS = ("x", "y"); WRT = ("x",); TARGET = "numpy"
def forward(x, y): return x ** 2 * y
def value_and_grad(x, y): return forward(x, y), {"x": 2.02 * x * y}
'''

# det, inverse and solve of a matrix of symbolic size: the check's integer-input trial rounds the
# drawn matrix, which must neither be singular nor make the check fail a correct module
LINALG = """
import sympy as sp
import symgrad
n = sp.Symbol("n")
S, B = sp.MatrixSymbol("S", n, n), sp.MatrixSymbol("B", n, 2)
logdet = symgrad.Model(sp.log(sp.det(S)), wrt=[S], name="logdet")
inverse = symgrad.Model(sp.Trace(S.inv()), wrt=[S], name="inverse")
solve = symgrad.Model(sp.Trace(B.T * S.inv() * B), wrt=[S, B], name="solve")
"""

WRONG_LOGDET = '''
import numpy as np
INPUTS = ("S",); WRT = ("S",); TARGET = "numpy"
def forward(S): return np.linalg.slogdet(np.asarray(S, float))[1]
def value_and_grad(S): return forward(S), {"S": np.linalg.inv(np.asarray(S, float))}  # not transposed
'''


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "two.py").write_text(TWO_MODELS)
    (tmp_path / "layer.py").write_text(LAYER)
    return tmp_path


def files(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*") if "__pycache__" not in p.parts)


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def user_error(capsys, root, *argv, match):
    """Run argv, expect exit 2 with one clean message on stderr and no file written."""
    before = files(root)
    code, out, err = run(capsys, *argv)
    assert code == 2, (out, err)
    assert err.startswith("symgrad") and match in err, err
    assert files(root) == before
    return err


# -- success -----------------------------------------------------------------------------------------
def test_compile_writes_one_module_per_model_with_a_summary(work, capsys):
    code, out, err = run(capsys, "compile", "two.py")
    assert code == 0 and err == ""
    assert files(work / "codegen_out") == ["ratio_numpy.py", "square_numpy.py"]
    lines = out.splitlines()
    assert lines[0].startswith("wrote codegen_out/ratio_numpy.py: model ratio, inputs (x, y), wrt (x, y), ")
    assert lines[1].startswith("wrote codegen_out/square_numpy.py: model square, inputs (x, y), wrt (x), ")
    assert all(line.endswith(" lines") for line in lines)
    spec = importlib.util.spec_from_file_location("square_numpy", work / "codegen_out" / "square_numpy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.INPUTS == ("x", "y") and module.WRT == ("x",) and module.TARGET == "numpy"


def test_output_option_and_model_selection(work, capsys):
    assert run(capsys, "compile", "two.py", "--model", "square", "-o", "sub/sq.py")[0] == 0
    assert run(capsys, "compile", "layer.py", "-o", "layer_mod.py")[0] == 0
    assert files(work) == ["layer.py", "layer_mod.py", "sub", "sub/sq.py", "two.py"]
    assert run(capsys, "compile", "two.py", "--model", "ratio")[0] == 0
    assert files(work / "codegen_out") == ["ratio_numpy.py"]


def test_compiling_twice_gives_identical_bytes(work, capsys):
    run(capsys, "compile", "layer.py")
    first = (work / "codegen_out" / "layer_numpy.py").read_bytes()
    run(capsys, "compile", "layer.py", "-o", "again.py")
    assert (work / "again.py").read_bytes() == first


def test_check_passes_and_write_test(work, capsys):
    code, out, _ = run(capsys, "compile", "layer.py", "--check", "--write-test")
    assert code == 0
    assert "ok layer [numpy]: largest relative errors: value" in out and "vs finite differences" in out
    assert "wrote codegen_out/test_layer_numpy.py" in out
    assert "assert_matches_tape" in (work / "codegen_out" / "test_layer_numpy.py").read_text()


def test_check_reports_the_dot_product_test(work, capsys):
    code, out, _ = run(capsys, "compile", "layer.py", "--emit", "vjp,jvp,hvp", "--check")
    assert code == 0
    assert re.search(r"; dot products jvp/vjp \d\.\de[-+]\d+, hvp \d\.\de[-+]\d+", out), out


def test_check_failure_exits_1(work, capsys, monkeypatch):
    monkeypatch.setattr(jobs, "generate", lambda model, target, **kw: WRONG_SOURCE)
    code, out, _ = run(capsys, "compile", "two.py", "--model", "square", "--check")
    assert code == 1
    assert "FAILED square [numpy]" in out and "grad of x" in out
    assert (work / "codegen_out" / "square_numpy.py").exists()     # kept for inspection


def test_check_of_det_inverse_and_solve_models_passes(work, capsys):
    (work / "linalg.py").write_text(LINALG)
    code, out, _ = run(capsys, "compile", "linalg.py", "--check")
    assert code == 0, out
    assert all(f"ok {m} [numpy]" in out for m in ("logdet", "inverse", "solve")) and "could not run" not in out


def test_check_of_det_still_fails_a_wrong_gradient(work, capsys, monkeypatch):
    (work / "linalg.py").write_text(LINALG)
    monkeypatch.setattr(jobs, "generate", lambda model, target, **kw: WRONG_LOGDET)
    code, out, _ = run(capsys, "compile", "linalg.py", "--model", "logdet", "--check")
    assert code == 1 and "FAILED logdet [numpy]" in out and "grad of S: relative error vs tape" in out


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"symgrad {symgrad.__version__}"


# -- user errors: exit 2, one message, nothing written -------------------------------------------------
def test_missing_file(work, capsys):
    user_error(capsys, work, "compile", "nope.py", match="symgrad: error: nope.py: no such model file")


def test_python_error_in_model_file_names_the_line(work, capsys):
    (work / "broken.py").write_text("import sympy as sp\n\nx = sp.Symbol('x')\ny = x + undefined_name\n")
    err = user_error(capsys, work, "compile", "broken.py", match="broken.py, line 4: NameError")
    assert len(err.strip().splitlines()) == 1


def test_no_model_in_file(work, capsys):
    (work / "empty.py").write_text("import sympy as sp\nx = sp.Symbol('x')\n")
    user_error(capsys, work, "compile", "empty.py", match="no symgrad.Model")


def test_unsupported_construct_names_file_model_and_construct(work, capsys):
    (work / "besselk.py").write_text(TWO_MODELS + "bad = symgrad.Model(sp.besselk(0, x) * y, name='bad')\n")
    err = user_error(capsys, work, "compile", "besselk.py", match="symgrad: error: besselk.py: bad: ")
    assert "besselk" in err
    # the good models of the same file are not written either
    assert not (work / "codegen_out").exists()


def test_failed_compile_keeps_the_old_output_and_leaves_no_temp_file(work, capsys):
    (work / "besselk.py").write_text(TWO_MODELS.replace("x ** 2 * y", "sp.besselk(0, x) * y"))
    (work / "out.py").write_text("old")
    user_error(capsys, work, "compile", "besselk.py", "--model", "square", "-o", "out.py", match="square")
    assert (work / "out.py").read_text() == "old"


def test_internal_compiler_error_is_still_a_clean_message(work, capsys, monkeypatch):
    def boom(model, target, **kw):
        raise KeyError("Foo")

    monkeypatch.setattr(jobs, "generate", boom)
    user_error(capsys, work, "compile", "layer.py", match="layer.py: layer: cannot compile for target numpy")


def test_output_option_with_several_models(work, capsys):
    user_error(capsys, work, "compile", "two.py", "-o", "out.py", match="-o names one file but there are 2 models")


def test_model_name_that_is_not_a_file_name(work, capsys):
    (work / "slash.py").write_text(TWO_MODELS.replace('name="square"', 'name="../square"'))
    user_error(capsys, work, "compile", "slash.py", match="not a file name")
    assert run(capsys, "compile", "slash.py", "--model", "../square", "-o", "sq.py")[0] == 0


def test_unknown_model_name(work, capsys):
    user_error(capsys, work, "compile", "two.py", "--model", "cube", match="no model named 'cube'")


def test_unwritable_output_is_a_user_error(work, capsys):
    (work / "adir.py").mkdir()
    user_error(capsys, work, "compile", "layer.py", "-o", "adir.py", match="cannot write adir.py")


@pytest.mark.parametrize("argv", [["compile", "two.py", "--target", "jax"], ["compile", "two.py", "--bogus"],
                                  ["compile"], [], ["run", "two.py"]])
def test_bad_options(work, capsys, argv):
    user_error(capsys, work, *argv, match="error:")


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed")
def test_check_with_cupy_target_without_cupy(work, capsys):
    user_error(capsys, work, "compile", "layer.py", "--target", "cupy", "--check", match="needs CuPy installed")


def test_cupy_target_writes_a_cupy_module_without_cupy_installed(work, capsys):
    """Generating CuPy source needs no CuPy (nor a GPU): only running it does."""
    code, out, err = run(capsys, "compile", "layer.py", "--target", "cupy")
    assert (code, err) == (0, ""), err
    assert out.startswith("wrote codegen_out/layer_cupy.py: model layer, ")
    assert files(work / "codegen_out") == ["layer_cupy.py"]
    source = (work / "codegen_out" / "layer_cupy.py").read_text()
    assert "import cupy" in source and "import numpy" not in source and "TARGET = 'cupy'" in source
    compile(source, "layer_cupy.py", "exec")                      # valid Python


# -- --check-inputs ------------------------------------------------------------------------------------
NEEDS_INPUTS = """
import sympy as sp
import symgrad
x, y = sp.symbols("x y")
model = symgrad.Model(sp.log(x ** 2 - 25) * y, wrt=[x, y], name="far")
"""


def test_check_inputs_supply_the_domain(work, capsys):
    (work / "far.py").write_text(NEEDS_INPUTS)
    code, out, _ = run(capsys, "compile", "far.py", "--check")
    assert code == 1 and "FAILED far [numpy]: the check could not run" in out and "--check-inputs" in out
    np.savez(work / "at.npz", x=np.array([6.0, -7.5, 9.0]))
    code, out, _ = run(capsys, "compile", "far.py", "--check-inputs", "at.npz")    # implies --check
    assert code == 0 and "ok far [numpy]: largest relative errors" in out and "(1 trials" in out


def test_check_inputs_can_fail_a_wrong_module(work, capsys, monkeypatch):
    monkeypatch.setattr(jobs, "generate", lambda model, target, **kw: WRONG_SOURCE)
    np.savez(work / "at.npz", x=np.array([1.0, 2.0]), y=np.array([3.0, -1.0]))
    code, out, _ = run(capsys, "compile", "two.py", "--model", "square", "--check-inputs", "at.npz")
    assert code == 1 and "FAILED square [numpy]" in out and "grad of x: relative error vs tape" in out


@pytest.mark.parametrize("content, match", [
    (None, "missing.npz: no such inputs file"),
    (b"not an npz file", "cannot read it as an .npz file"),
    ({"z": np.ones(2)}, "'z', which is no input of ratio, square"),
    ({"x": np.ones(2) + 1j}, "ratio: check input x has dtype complex128"),
    ({"x": np.ones(3), "y": np.ones(2)}, "do not broadcast together"),
])
def test_bad_check_inputs_are_user_errors(work, capsys, content, match):
    name = "missing.npz" if content is None else "bad.npz"
    if isinstance(content, bytes):
        (work / name).write_bytes(content)
    elif content is not None:
        np.savez(work / name, **content)
    user_error(capsys, work, "compile", "two.py", "--check-inputs", name, match=match)


def test_check_inputs_shapes_must_fit_the_model(work, capsys):
    np.savez(work / "bad.npz", X=np.ones((4, 3)), W=np.ones((2, 2)))
    user_error(capsys, work, "compile", "layer.py", "--check-inputs", "bad.npz",
               match="bad.npz: layer: check input X has shape (4, 3), which disagrees with (N, d)")


# -- the real console script ---------------------------------------------------------------------------
def test_console_script_and_python_m(work):
    script = Path(sys.executable).with_name("symgrad")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "symgrad"]
    ok = subprocess.run(cmd + ["compile", "layer.py", "--check"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "wrote codegen_out/layer_numpy.py" in ok.stdout and "ok layer [numpy]" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "symgrad", "compile", "missing.py"], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == "symgrad: error: missing.py: no such model file\n"


# -- -o -, --out-dir, -v, helpers beside the model file ------------------------------------------
def test_output_to_stdout(work, capsys):
    code, out, err = run(capsys, "compile", "two.py", "--model", "square", "-o", "-", "--check")
    assert code == 0 and out.startswith('"""Generated by symgrad') and "def value_and_grad" in out
    namespace = {}
    exec(compile(out, "square.py", "exec"), namespace)  # noqa: S102 - the module just printed
    assert namespace["value_and_grad"](x=3.0, y=2.0)[1]["x"] == 12.0
    assert "ok square [numpy]" in err and "wrote" not in out + err
    assert files(work) == ["layer.py", "two.py"]                         # nothing written
    user_error(capsys, work, "compile", "two.py", "--model", "square", "-o", "-", "--write-test",
               match="--write-test needs a module file")


def test_out_dir(work, capsys):
    code, out, _ = run(capsys, "compile", "two.py", "--out-dir", "gen")
    assert code == 0 and "wrote gen/ratio_numpy.py" in out.replace(os.sep, "/")
    assert (work / "gen" / "square_numpy.py").is_file() and not (work / "codegen_out").exists()
    user_error(capsys, work, "compile", "two.py", "--model", "square", "--out-dir", "g", "-o", "x.py",
               match="-o and --out-dir both name where to write")


def test_verbose_prints_phase_timings_and_sizes(work, capsys):
    code, out, err = run(capsys, "compile", "layer.py", "-v", "--check", "--emit", "hvp")
    assert code == 0 and out.startswith("wrote")
    line = next(ln for ln in err.splitlines() if ln.startswith("layer: load"))
    for phase, unit in (("load", "models"), ("lower", "IR nodes"), ("differentiate", "IR nodes"), ("emit", "lines")):
        assert re.search(rf"{phase} \d+\.\d{{3}} s \(\d+ {unit}\)", line), (phase, line)
    nodes = [int(n) for n in re.findall(r"(\d+) IR nodes", line)]
    assert nodes[1] > nodes[0]                       # differentiating adds nodes
    assert re.search(r"layer: check \d+\.\d{3} s", err)


def test_a_model_file_imports_a_helper_beside_it(tmp_path, capsys, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    (models / "mylayers.py").write_text("import sympy as sp\ndef softplus(t):\n    return sp.log(1 + sp.exp(t))\n")
    (models / "net.py").write_text("import sympy as sp, symgrad\nfrom mylayers import softplus\n"
                                   "x = sp.Symbol('x')\nmodel = symgrad.Model(softplus(x), wrt=[x], name='net')\n")
    monkeypatch.chdir(tmp_path)                          # not the model file's folder
    code, out, _ = run(capsys, "compile", "models/net.py")
    assert code == 0 and (tmp_path / "codegen_out" / "net_numpy.py").is_file()
    assert str(models) not in sys.path                   # and it is taken off again
