"""What ``symgrad compile`` does: compile every model of a model file, write the modules, check them.

:func:`compile_file` is the CLI's whole job (the CLI only parses and prints); it builds on
:mod:`symgrad.pipeline` (generate, write) and :mod:`symgrad.verify` (check).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from .emit import load_source, target_named
from .errors import SymgradError
from .kinds import derivatives
from .model import load_models
from .pipeline import Clock, generate, write_atomic
from .testing import import_module_file, pytest_source
from .verify import check as verify, load_inputs, validate_inputs

__all__ = ["Compiled", "compile_file"]

_LIBRARY_NAMES = {"cupy": "CuPy", "numba": "Numba", "dask": "Dask"}  # as their projects write them


@dataclass
class Compiled:
    """One module written by :func:`compile_file`."""
    model: object
    path: Path | None                 # None: written to stdout by the caller (-o -)
    source: str
    timings: dict = field(default_factory=dict)  # phase -> (seconds, size), see build()
    rewrites: list = field(default_factory=list)  # the rewrites that fired (compile_file(trace=True))
    test_path: Path | None = None
    report: object | None = None      # the CheckReport, when checked
    check_error: str | None = None    # why the check could not run

    @property
    def ok(self) -> bool:
        return self.check_error is None and (self.report is None or self.report.ok)


def compile_file(model_file, *, target="numpy", output=None, only=None, check=False, check_inputs=None,
                 write_test=False, emit=None, out_dir=None, trace=False) -> list[Compiled]:
    """Compile every model of ``model_file`` (or the one named ``only``) and write its module.

    Every module is generated before any is written, and each is written atomically, so a user
    error (a :class:`SymgradError` whose message names the file, the model and the construct)
    leaves no file behind.  ``output`` names the file (one model only; ``"-"``: no file, the
    caller prints ``source``); the default is ``<out_dir>/<name>_<target>.py``, ``out_dir``
    defaulting to ``codegen_out``.  ``check`` (or ``check_inputs``, an ``.npz`` file) then runs
    :func:`symgrad.verify.check` on each module.  Each job's ``timings`` has the seconds and
    sizes of its phases (``load`` is the model file's, on the first job); with ``trace``, its
    ``rewrites`` has one line per rewrite that fired (:func:`symgrad.pipeline.fired_lines`).
    """
    if emit is not None:
        try:
            emit = derivatives(emit)
        except SymgradError as exc:
            raise SymgradError(f"--emit: {exc}") from None
    if output == "-" and write_test:
        raise SymgradError(f"{model_file}: --write-test needs a module file; -o - writes to stdout")
    if output is not None and out_dir is not None:
        raise SymgradError(f"{model_file}: -o and --out-dir both name where to write; give one")
    clock = Clock({})
    models = load_models(model_file, only=only)
    clock.lap("load", len(models))
    if output is not None and len(models) != 1:
        names = ", ".join(m.name for m in models)
        raise SymgradError(f"{model_file}: -o names one file but there are {len(models)} models "
                           f"({names}); pick one with --model NAME or drop -o")
    check = check or check_inputs is not None
    if check:  # the module runs here: the libraries its target needs at run time must be installed
        t = target_named(target)
        for lib in (t.module, *t.needs):
            if importlib.util.find_spec(lib) is None:
                raise SymgradError(f"{model_file}: --check --target {target} needs {_LIBRARY_NAMES.get(lib, lib)} "
                                   f"installed (pip install 'symgrad[{target}]'); compile without --check to just "
                                   "write the module")
    jobs = []
    for model in models:
        if output is None and (Path(model.name).name != model.name or model.name in ("", ".", "..")):
            raise SymgradError(f"{model_file}: {model.name}: the model name is not a file name; "
                               "name the output with -o")
        timings = dict(clock.timings) if not jobs else {}
        fired = [] if trace else None
        try:
            source = generate(model, target, emit=emit, timings=timings, trace=fired)
        except SymgradError as exc:  # the compiler may already say "model <name>: "
            what = str(exc).removeprefix(f"model {model.name}: ")
            raise SymgradError(f"{model_file}: {model.name}: {what}") from None
        except Exception as exc:  # noqa: BLE001 - never a traceback; say it is ours
            raise SymgradError(f"{model_file}: {model.name}: cannot compile for target {target} "
                               f"(internal error {type(exc).__name__}: {exc})") from None
        dest = (None if output == "-" else Path(output) if output
                else Path(out_dir or "codegen_out") / f"{model.name}_{target}.py")
        jobs.append(Compiled(model, dest, source, timings, fired or []))
    inputs_for = _check_inputs(models, check_inputs) if check_inputs is not None else {}
    for job in jobs:
        if job.path is None:
            continue
        try:
            write_atomic(job.path, job.source)
            if write_test:
                job.test_path = job.path.with_name(f"test_{job.path.stem}.py")
                write_atomic(job.test_path, pytest_source(model_file, job.path, job.test_path, job.model.name))
        except OSError as exc:
            raise SymgradError(f"{model_file}: {job.model.name}: cannot write {job.path}: "
                               f"{exc.strerror or exc}") from None
    if check:
        for job in jobs:
            clock = Clock(job.timings)
            try:
                module = (import_module_file(job.path) if job.path is not None
                          else load_source(job.source, f"{job.model.name}_{target}"))
                job.report = verify(job.model, module, inputs=inputs_for.get(job.model.name))
            except Exception as exc:  # noqa: BLE001 - a check that cannot run is a failed check
                job.check_error = f"{type(exc).__name__}: {exc}"
            clock.lap("check", job.report.trials if job.report is not None else 0)
    return jobs


def _check_inputs(models, path) -> dict:
    """{model name: the arrays of ``path`` that are its inputs}; a SymgradError for a file that
    cannot be read, a name that is no model's input, or arrays that do not fit a model."""
    arrays = load_inputs(path)
    names = {str(s) for m in models for s in m.inputs}
    unknown = sorted(set(arrays) - names)
    if unknown:
        raise SymgradError(f"{path}: names {', '.join(map(repr, unknown))}, which "
                           f"{'is' if len(unknown) == 1 else 'are'} no input of "
                           f"{', '.join(m.name for m in models)} (inputs: {', '.join(sorted(names))})")
    out = {}
    for model in models:
        mine = {k: v for k, v in arrays.items() if k in {str(s) for s in model.inputs}}
        try:
            validate_inputs(model, mine)
        except SymgradError as exc:
            what = str(exc).removeprefix(f"model {model.name}: ")
            raise SymgradError(f"{path}: {model.name}: {what}") from None
        out[model.name] = mine or None
    return out
