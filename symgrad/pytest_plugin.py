"""symgrad's pytest plugin (registered through the ``pytest11`` entry point when symgrad is installed).

* ``pytest --symgrad-models=models/`` (a folder of model files, or one file; the option may be
  repeated) adds one test per model: its module, compiled for ``--symgrad-target`` (default
  ``numpy``) with the model's own derivative functions, must pass
  :func:`symgrad.verify.check` -- the tape, finite differences, the ways users call it, and every
  derivative function it has.  A model file that cannot be loaded is one failing test.
* The ``symgrad_check`` fixture, for your own tests: ``symgrad_check(model, module=None, **kw)``
  runs the same check (``kw`` as :func:`symgrad.verify.check`) and fails the test with the
  report's problems; it returns the report.

Nothing here imports SymPy until a model is checked, so the plugin costs pytest nothing otherwise.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from .errors import SymgradError


def pytest_addoption(parser):
    group = parser.getgroup("symgrad")
    group.addoption("--symgrad-models", action="append", default=[], metavar="PATH",
                    help="check every model of these model files (a folder: its *.py files) against the tape")
    group.addoption("--symgrad-target", default="numpy", metavar="TARGET",
                    help="target the models are compiled for (default numpy)")


class SymgradCheckFailed(AssertionError):
    """A module that ``symgrad.verify.check`` finds wrong."""


def _check(model, module=None, **kw):
    from .verify import check
    report = check(model, module, **kw)
    if not report.ok:
        raise SymgradCheckFailed("\n".join([report.summary()] + [f"  - {p}" for p in report.problems[1:]]))
    return report


@pytest.fixture
def symgrad_check():
    """``symgrad_check(model, module=None, **kw)``: verify.check, failing the test on a problem."""
    return _check


class ModelFile(pytest.File):
    def collect(self):
        from .model import load_models
        try:
            models = load_models(self.path)
        except SymgradError as exc:
            yield ModelItem.from_parent(self, name="load", error=str(exc))
            return
        for model in models:
            yield ModelItem.from_parent(self, name=model.name, model=model)


class ModelItem(pytest.Item):
    def __init__(self, *, model=None, error=None, **kw):
        super().__init__(**kw)
        self.model, self.error = model, error

    def runtest(self):
        if self.error is not None:
            raise SymgradCheckFailed(self.error)
        from .cache import compile_model as _compile
        target = self.config.getoption("symgrad_target")
        _check(self.model, _compile(self.model, target=target))

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, SymgradCheckFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, None, f"symgrad check of {self.name}"


def _model_files(paths):
    for p in map(Path, paths):
        if p.is_dir():
            yield from sorted(f for f in p.glob("*.py") if not f.name.startswith(("_", "test_")))
        else:
            yield p


def pytest_collection_modifyitems(session, config, items):
    for path in _model_files(config.getoption("symgrad_models")):
        if not path.is_file():
            raise pytest.UsageError(f"--symgrad-models: {path} is not a file or a folder")
        items.extend(ModelFile.from_parent(session, path=path.resolve()).collect())
