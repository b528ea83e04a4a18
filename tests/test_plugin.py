"""The pytest plugin: --symgrad-models collects model files, the symgrad_check fixture."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_pytest(cwd, *args):
    return subprocess.run([sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def test_model_files_are_checked_and_the_fixture_works(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "seed003.py").write_text((ROOT / "examples" / "seed003_backprop.py").read_text())
    (models / "broken.py").write_text("import symgrad\nraise ValueError('no data')\n")
    (models / "_helper.py").write_text("X = 1\n")                     # not a model file
    (tmp_path / "test_mine.py").write_text(
        "import sympy as sp, symgrad\n"
        "def test_own(symgrad_check):\n"
        "    x = sp.Symbol('x')\n"
        "    assert symgrad_check(symgrad.Model(sp.sin(x) * x, wrt=[x]), calls=False).ok\n"
        "def test_a_wrong_module_fails(symgrad_check):\n"
        "    import pytest, types\n"
        "    x = sp.Symbol('x')\n"
        "    m = symgrad.Model(x ** 2, wrt=[x])\n"
        "    bad = types.SimpleNamespace(INPUTS=('x',), WRT=('x',), TARGET='numpy',\n"
        "        forward=lambda x: x ** 2, value_and_grad=lambda x: (x ** 2, {'x': 2.1 * x}))\n"
        "    with pytest.raises(AssertionError, match='grad of x'):\n"
        "        symgrad_check(m, bad, calls=False)\n")
    out = run_pytest(tmp_path, "--symgrad-models", "models")
    text = out.stdout + out.stderr
    for name in ("seed003_linear_sq", "seed003_quadratic", "seed003_sigmoid_ratio"):
        assert f"PASSED models/seed003.py::{name}" in text, text
    assert "FAILED models/broken.py::load" in text and "ValueError: no data" in text, text
    assert "PASSED test_mine.py::test_own" in text and "PASSED test_mine.py::test_a_wrong_module_fails" in text, text
    assert out.returncode == 1 and "_helper" not in text
    missing = run_pytest(tmp_path, "--symgrad-models", "nowhere")
    assert missing.returncode == 4 and "nowhere is not a file or a folder" in missing.stdout + missing.stderr
