"""The pipeline, in one place: load -> lower -> differentiate -> emit (-> write, check).

::

    model file --load_models--> Model --lower_model--> Program --differentiate--> Program
        --emit(target)--> source --write_atomic--> module file (--check: verify.check)

Lowering is the only stage that reads SymPy; the rewrites (:mod:`symgrad.rewrites`) run as the
graph is built (``ir.Graph.op``, given a ``Rewriter``), differentiation and the emitters see only the :class:`~symgrad.program.Program`.
:func:`symgrad.jobs.compile_file` (everything ``symgrad compile`` does: this, then write and
check) builds on it; the CLI only parses and prints.
"""
from __future__ import annotations

import os
import secrets
import sys
import time
from pathlib import Path

from .emit import emit as _emit, target_named
from .errors import SymgradError
from .kinds import KINDS, derivatives
from .lower import lower_model
from .model import deep_recursion
from .program import Program, render
from .rewrites import Rewriter

__all__ = ["build", "differentiate", "fired_lines", "generate", "write_atomic"]


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


def build(model, emit=None, timings: dict | None = None, target: str = "numpy", rewriter=None) -> Program:
    """The differentiated Program of ``model`` (``emit``: its derivative functions; by default
    the model's own ``derivatives``) for ``target``: a target with a layout of its own (dask)
    rewrites the lowered program first, and its value is what is differentiated.  ``timings``,
    when given, gets each phase's seconds and the graph's size after it (``{"lower": (s, nodes),
    "differentiate": (s, nodes)}``; the rewrites run inside both, as the graph is built).
    ``rewriter``: a :class:`~symgrad.rewrites.Rewriter` (default: every rewrite, less those
    ``$SYMGRAD_REWRITES_OFF`` names); ``program.lowered_rewrites`` counts its firings in lowering."""
    clock = Clock(timings)
    emit = derivatives(emit if emit is not None else model.derivatives)
    for d in emit:
        if KINDS[d].targets is not None and target not in KINDS[d].targets:
            raise SymgradError(f"{d} cannot be compiled for target {target} (it can for "
                               f"{', '.join(KINDS[d].targets)})")
    layout = target_named(target).layout
    rewriter = rewriter if rewriter is not None else Rewriter()
    with deep_recursion():
        program = lower_model(model, rewriter)
        if layout is not None:
            program = layout.prepare(program, emit)
        clock.lap("lower", len(program.graph._table))
        program.lowered_rewrites = len(rewriter.fired)
        differentiate(program, emit)
        clock.lap("differentiate", len(program.graph._table))
    return program


def generate(model, target: str = "numpy", emit=None, timings: dict | None = None, *,
             rewrites_off=None, trace: list | None = None) -> str:
    """Source text of the generated module of ``model`` for ``target`` (deterministic);
    ``timings`` as for :func:`build`, plus ``"emit": (s, lines)``.  ``rewrites_off``: names of
    rewrites switched off (with those of ``$SYMGRAD_REWRITES_OFF``).  ``trace``: a list that gets
    one line per rewrite that fired (:func:`fired_lines`); with none given and
    ``$SYMGRAD_TRACE_REWRITES`` set, the lines are printed on stderr."""
    spec = target_named(target)  # before any work: an unknown target is the caller's error
    kinds = spec.layout.derivatives if spec.layout is not None else spec.derivatives
    if emit is None and kinds is not None:  # the model's own default set, as far as the target has it
        emit = [d for d in model.derivatives if d in kinds]
    try:
        rewriter = Rewriter(rewrites_off)
        program = build(model, emit, timings, target, rewriter)
        clock = Clock(timings)
        source = _emit(program, target)
        clock.lap("emit", source.count("\n"))
    except SymgradError as exc:
        raise SymgradError(f"model {model.name or 'model'}: {exc}") from None
    lines = fired_lines(program, rewriter.fired)
    if trace is not None:
        trace.extend(lines)
    elif os.environ.get(TRACE_ENV, "").strip() not in ("", "0"):
        print("\n".join(lines), file=sys.stderr)
    return source


TRACE_ENV = "SYMGRAD_TRACE_REWRITES"


def fired_lines(program: Program, fired) -> list[str]:
    """One line per rewrite that fired while ``program`` was built: the stage, the phase and name,
    the node it rewrote (its arguments as the model wrote them, where the model did) and what
    replaced it: ``m: lower stabilize.log1p: log(1 + x**2) -> log1p(x**2)``."""
    def text(n):  # as the model wrote it, else a node id
        return render(program.src, n.id, 60) or f"%{n.id}"

    def call(op, args, attr):
        return f"{op}({', '.join(map(text, args))})" + ("" if attr is None else f" [{attr!r}]")

    lines = []
    for k, f in enumerate(fired):
        stage = "lower" if k < program.lowered_rewrites else "differentiate"
        new = call(f.result.op, f.result.args, f.result.attr) if f.result.args else text(f.result)
        lines.append(f"{program.name}: {stage} {f.rewrite.phase}.{f.rewrite.name}: "
                     f"{call(f.op, f.args, f.attr)} -> {new}")
    return lines


class Clock:
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
    # a name of this call's own: threads (and processes) writing one path at once never share it
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
