"""Generated modules run under ``python -W error``: no warning escapes.

The NumPy module of every model of the bundled examples (and the Numba module of seed 002's MLP) is
written to a folder, and a fresh interpreter started with ``-W error`` (every warning an
exception) imports each one by its path -- without symgrad, as a user's program would -- and calls
``forward`` and ``value_and_grad`` at inputs drawn inside the model's domain, in float64 and in
float32.  A RuntimeWarning from NumPy (an overflow, an invalid operation, a division by zero), a
DeprecationWarning of an API the module uses, or a Numba performance warning fails the test.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import symgrad
from symgrad.verify import sample_inputs

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MODELS = [m for f in sorted(EXAMPLES.glob("seed*.py")) for m in symgrad.load_models(f)]
NUMBA = ("seed002_mlp_mse",)

RUNNER = r'''
import importlib.util, sys
from pathlib import Path
import numpy as np

done = 0
for path in sorted(Path(sys.argv[1]).glob("*.py")):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with np.load(path.with_suffix(".npz")) as data:
        inputs = {k: data[k] for k in data.files}
    for dtype in (np.float64, np.float32):
        x = {k: v.astype(dtype) for k, v in inputs.items()}
        module.forward(**x)
        module.value_and_grad(**x)
        done += 1
print("calls", done)
'''


def _write(folder, model, target):
    name = f"{model.name}_{target}"
    (folder / f"{name}.py").write_text(symgrad.generate(model, target), encoding="utf-8")
    np.savez(folder / f"{name}.npz", **sample_inputs(model, np.random.default_rng(0)))


def test_generated_modules_raise_no_warning_under_W_error(tmp_path):
    count = 0
    for model in MODELS:
        _write(tmp_path, model, "numpy")
        count += 1
        if model.name in NUMBA and _has("numba"):
            _write(tmp_path, model, "numba")
            count += 1
    run = subprocess.run([sys.executable, "-W", "error", "-c", RUNNER, str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == ["calls", str(2 * count)]


def _has(module) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def test_the_runner_fails_on_a_warning(tmp_path):
    """The harness itself: a module whose forward divides by zero fails the run."""
    (tmp_path / "bad.py").write_text("import numpy as np\n"
                                     "def forward(x): return np.asarray(x) / 0.0\n"
                                     "def value_and_grad(x): return forward(x), {}\n")
    np.savez(tmp_path / "bad.npz", x=np.ones(2))
    run = subprocess.run([sys.executable, "-W", "error", "-c", RUNNER, str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "RuntimeWarning: divide by zero" in run.stderr
