"""The pipeline, in one place: load -> lower -> differentiate -> emit (-> write, check).

::

    model file --load_models--> Model --lower_model--> Program --differentiate--> Program
        --emit(target)--> source --write_atomic--> module file (--check: verify.check)

Lowering is the only stage that reads SymPy; the rewrites run as the graph is built
(``ir.Graph.op``), differentiation and the emitters see only the :class:`~symgrad.program.Program`.
:func:`compile_file` is everything ``symgrad compile`` does; the CLI only parses and prints.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .emit import emit as _emit, target_named
from .errors import SymgradError
from .kinds import KINDS, derivatives
from .program import Program

__all__ = ["Compiled", "build", "compile_file", "differentiate", "generate", "write_atomic"]


_LIBRARY_NAMES = {"cupy": "CuPy", "numba": "Numba", "dask": "Dask"}  # as their projects write them


def differentiate(program: Program, emit=("grad",)) -> Program:
    """Add the derivative nodes of the functions ``emit`` asks for (see
    :func:`~symgrad.kinds.derivatives`), in place; returns ``program``.

    Each kind builds its own nodes (``kinds.Kind.build``): ``value_and_grad`` and ``vjp`` are
    reverse sweeps (``diff.py``) seeded with ones and with a cotangent input; ``jvp`` is the forward
    sweep (``forward.py``) of the value along tangent inputs, ``hvp`` the forward sweep of the
    gradient nodes along the same inputs."""
    program.derivatives = have = derivatives(emit)
    for name in have:
        build = KINDS[name].build
        if build is not None:
            program.derived[name] = build(program)
    return program


def build(model, emit=None, timings: dict | None = None, target: str = "numpy") -> Program:
    """The differentiated Program of ``model`` (``emit``: its derivative functions; by default
    the model's own ``derivatives``) for ``target``: a target with a layout of its own (dask)
    rewrites the lowered program first, and its value is what is differentiated.  ``timings``,
    when given, gets each phase's seconds and the graph's size after it (``{"lower": (s, nodes),
    "differentiate": (s, nodes)}``; the rewrites run inside both, as the graph is built)."""
    from .lower import lower_model
    from .model import deep_recursion
    clock = _Clock(timings)
    emit = derivatives(emit if emit is not None else model.derivatives)
    for d in emit:
        if KINDS[d].targets is not None and target not in KINDS[d].targets:
            raise SymgradError(f"{d} cannot be compiled for target {target} (it can for "
                               f"{', '.join(KINDS[d].targets)})")
    layout = target_named(target).layout
    with deep_recursion():
        program = lower_model(model)
        if layout is not None:
            program = layout.prepare(program, emit)
        clock.lap("lower", len(program.graph._table))
        differentiate(program, emit)
        clock.lap("differentiate", len(program.graph._table))
    return program


def generate(model, target: str = "numpy", emit=None, timings: dict | None = None) -> str:
    """Source text of the generated module of ``model`` for ``target`` (deterministic);
    ``timings`` as for :func:`build`, plus ``"emit": (s, lines)``."""
    spec = target_named(target)  # before any work: an unknown target is the caller's error
    kinds = spec.layout.derivatives if spec.layout is not None else spec.derivatives
    if emit is None and kinds is not None:  # the model's own default set, as far as the target has it
        emit = [d for d in model.derivatives if d in kinds]
    try:
        program = build(model, emit, timings, target)
        clock = _Clock(timings)
        source = _emit(program, target)
        clock.lap("emit", source.count("\n"))
        return source
    except SymgradError as exc:
        raise SymgradError(f"model {model.name or 'model'}: {exc}") from None


class _Clock:
    """Records ``{phase: (seconds since the last lap, size)}`` into ``timings`` (None: nothing)."""

    def __init__(self, timings):
        self.timings, self.t = timings, time.perf_counter()

    def lap(self, phase, size):
        now = time.perf_counter()
        if self.timings is not None:
            self.timings[phase] = (now - self.t, size)
        self.t = now


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass
class Compiled:
    """One module written by :func:`compile_file`."""
    model: object
    path: Path | None                 # None: written to stdout by the caller (-o -)
    source: str
    timings: dict = field(default_factory=dict)  # phase -> (seconds, size), see build()
    test_path: Path | None = None
    report: object | None = None      # the CheckReport, when checked
    check_error: str | None = None    # why the check could not run

    @property
    def ok(self) -> bool:
        return self.check_error is None and (self.report is None or self.report.ok)


def compile_file(model_file, *, target="numpy", output=None, only=None, check=False, check_inputs=None,
                 write_test=False, emit=None, out_dir=None) -> list[Compiled]:
    """Compile every model of ``model_file`` (or the one named ``only``) and write its module.

    Every module is generated before any is written, and each is written atomically, so a user
    error (a :class:`SymgradError` whose message names the file, the model and the construct)
    leaves no file behind.  ``output`` names the file (one model only; ``"-"``: no file, the
    caller prints ``source``); the default is ``<out_dir>/<name>_<target>.py``, ``out_dir``
    defaulting to ``codegen_out``.  ``check`` (or ``check_inputs``, an ``.npz`` file) then runs
    :func:`symgrad.verify.check` on each module.  Each job's ``timings`` has the seconds and
    sizes of its phases (``load`` is the model file's, on the first job).
    """
    from .model import load_models
    if emit is not None:
        try:
            emit = derivatives(emit)
        except SymgradError as exc:
            raise SymgradError(f"--emit: {exc}") from None
    if output == "-" and write_test:
        raise SymgradError(f"{model_file}: --write-test needs a module file; -o - writes to stdout")
    if output is not None and out_dir is not None:
        raise SymgradError(f"{model_file}: -o and --out-dir both name where to write; give one")
    clock = _Clock({})
    models = load_models(model_file, only=only)
    clock.lap("load", len(models))
    if output is not None and len(models) != 1:
        names = ", ".join(m.name for m in models)
        raise SymgradError(f"{model_file}: -o names one file but there are {len(models)} models "
                           f"({names}); pick one with --model NAME or drop -o")
    check = check or check_inputs is not None
    if check:  # the module runs here: the libraries its target needs at run time must be installed
        import importlib.util
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
        try:
            source = generate(model, target, emit=emit, timings=timings)
        except SymgradError as exc:  # the compiler may already say "model <name>: "
            what = str(exc).removeprefix(f"model {model.name}: ")
            raise SymgradError(f"{model_file}: {model.name}: {what}") from None
        except Exception as exc:  # noqa: BLE001 - never a traceback; say it is ours
            raise SymgradError(f"{model_file}: {model.name}: cannot compile for target {target} "
                               f"(internal error {type(exc).__name__}: {exc})") from None
        dest = (None if output == "-" else Path(output) if output
                else Path(out_dir or "codegen_out") / f"{model.name}_{target}.py")
        jobs.append(Compiled(model, dest, source, timings))
    inputs_for = _check_inputs(models, check_inputs) if check_inputs is not None else {}
    for job in jobs:
        if job.path is None:
            continue
        try:
            write_atomic(job.path, job.source)
            if write_test:
                from .testing import pytest_source
                job.test_path = job.path.with_name(f"test_{job.path.stem}.py")
                write_atomic(job.test_path, pytest_source(model_file, job.path, job.test_path, job.model.name))
        except OSError as exc:
            raise SymgradError(f"{model_file}: {job.model.name}: cannot write {job.path}: "
                               f"{exc.strerror or exc}") from None
    if check:
        from .testing import import_module_file
        from .verify import check as verify
        from .emit import load_source
        for job in jobs:
            clock = _Clock(job.timings)
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
    from .verify import load_inputs, validate_inputs
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
