"""Helpers for users' pytest suites: check generated modules against symgrad's runtime tape.

* ``assert_matches_tape(model_or_module_path, model=None, *, name=None, target="numpy", **check_kw)``
  -- pass a :class:`~symgrad.Model` (compiled in memory for ``target``), or the path of a generated
  module together with ``model=`` (a Model, or the model file it was generated from; ``name``
  picks the model in a file with several, else the module's file name ``<name>_<target>.py`` does).
  Runs :func:`symgrad.verify.check` and raises ``AssertionError`` listing every problem.
  ``check_kw`` goes to ``check``: e.g. ``inputs=`` (a dict of arrays, a list of them or the path
  of an ``.npz`` file) to check at given inputs, ``trials=``, ``rtol=``, ``fd_rtol=``.
* ``check_model_file(path, *, target="numpy", **check_kw)`` -- compiles and checks every model in a
  model file; returns the reports, raises ``AssertionError`` naming each model that fails.
* ``import_module_file(path)`` -- imports a generated module from its file.
* ``write_pytest(model_path, module_path, test_path, model_name=None)`` writes (and
  ``pytest_source`` returns) a ready pytest file that imports the generated module by path and
  checks it against the tape.  Paths in it are relative to the test file, so the folder can move.
"""
from __future__ import annotations

import importlib.util
import types
import os
import re
from pathlib import Path

from .cache import compile_model as _compile
from .emit.text import docstring
from .model import Model, SymgradError, load_models
from .verify import CheckReport, check

__all__ = ["assert_matches_tape", "check_model_file", "import_module_file", "pytest_source", "write_pytest"]


def import_module_file(path) -> "types.ModuleType":
    """Import the Python file at ``path`` as a fresh module (not registered in ``sys.modules``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such generated module")
    spec = importlib.util.spec_from_file_location(f"_symgrad_generated_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _model_for(module_path, module, model, name):
    if isinstance(model, Model):
        return model
    if model is None:
        raise TypeError(f"{module_path}: pass model= (the Model or the model file it was generated from)")
    models = load_models(model, only=name)
    if len(models) == 1:
        return models[0]
    target = str(getattr(module, "TARGET", ""))
    stem = Path(module_path).stem
    by_stem = [m for m in models if f"{m.name}_{target}" == stem]
    if len(by_stem) == 1:
        return by_stem[0]
    raise SymgradError(f"{model}: has models {', '.join(m.name for m in models)}; pass name= to pick "
                       f"the one {module_path} was generated from")


def _raise_unless_ok(reports):
    failed = [r for r in reports if not r.ok]
    if failed:
        lines = []
        for r in failed:
            lines.append(r.summary())
            lines.extend(f"    - {p}" for p in r.problems)
        raise AssertionError("generated module does not match the tape:\n" + "\n".join(lines))


def assert_matches_tape(model_or_module_path, model=None, *, name: str | None = None, target: str = "numpy",
                        **check_kw) -> CheckReport:
    """Check a Model (compiled in memory) or a generated module file; return the CheckReport."""
    if isinstance(model_or_module_path, Model):
        model = model_or_module_path
        module = _compile(model, target)
    else:
        module = import_module_file(model_or_module_path)
        model = _model_for(model_or_module_path, module, model, name)
    report = check(model, module, **check_kw)
    _raise_unless_ok([report])
    return report


def check_model_file(path, *, target: str = "numpy", **check_kw) -> list[CheckReport]:
    """Compile and check every model in the model file at ``path``; return the CheckReports."""
    reports = [check(m, _compile(m, target), **check_kw) for m in load_models(path)]
    _raise_unless_ok(reports)
    return reports


def _rel(path, start) -> str:
    try:
        return Path(os.path.relpath(Path(path).resolve(), Path(start).resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return Path(path).resolve().as_posix()


def pytest_source(model_path, module_path, test_path, model_name=None) -> str:
    """The text of the pytest file that :func:`write_pytest` writes."""
    here = Path(test_path).parent
    module_rel, model_rel = _rel(module_path, here), _rel(model_path, here)
    test_name = re.sub(r"\W", "_", Path(module_path).stem)
    doc = docstring(f"Checks {Path(module_path).name} against symgrad's runtime tape and finite differences.",
                    "", f"Written by symgrad; regenerate with `symgrad compile {Path(model_path).name} --write-test`.")
    return f'''"""{doc}
"""
from pathlib import Path

import symgrad.testing

HERE = Path(__file__).resolve().parent
MODEL_FILE = HERE / {model_rel!r}
MODULE_FILE = HERE / {module_rel!r}
MODEL_NAME = {model_name!r}


def test_{test_name}_matches_tape():
    symgrad.testing.assert_matches_tape(MODULE_FILE, model=MODEL_FILE, name=MODEL_NAME)
'''


def write_pytest(model_path, module_path, test_path, model_name=None) -> Path:
    """Write the pytest file for a generated module; return its path."""
    test_path = Path(test_path)
    test_path.write_text(pytest_source(model_path, module_path, test_path, model_name), encoding="utf-8")
    return test_path
