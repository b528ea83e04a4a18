"""The ``symgrad`` command line (the README's CLI section).

``symgrad compile MODEL.py [-o OUT.py | -o - | --out-dir DIR] [--target numpy|cupy|numba|dask|torch] [--model NAME]
[--emit LIST] [--check] [--check-inputs FILE.npz] [--write-test] [-v]``

* Compiles every model of the file (or the one ``--model`` names) and writes one module per model,
  by default to ``codegen_out/<name>_<target>.py`` under the current directory (``--out-dir DIR``:
  ``DIR/<name>_<target>.py``); ``-o`` names the file exactly and is accepted only when one model is
  compiled; ``-o -`` writes the module's source to stdout (and the other lines to stderr).  Prints
  one line per written module.  ``--emit`` adds derivative functions (vjp, jvp, jacobian, hvp,
  hessian, sparse_jacobian, sparse_hessian).  ``-v`` prints, on stderr, each phase's seconds and
  sizes: load (models), lower and rewrite (IR nodes), differentiate (IR nodes), emit (lines),
  check (trials); for sparse derivatives their patterns' sizes and colors at the sizes ``--check``
  draws; and each rewrite that fired (:mod:`symgrad.rewrites`: stage, phase and name, the node it
  rewrote as the model wrote it, what replaced it); ``SYMGRAD_REWRITES_OFF=name,name`` switches
  rewrites off.
* ``--check`` runs :func:`symgrad.verify.check` on each written module and prints its largest
  relative errors, then one line per failing property; ``--check-inputs FILE.npz`` (implies
  ``--check``) checks at the inputs saved in that file (``numpy.savez(FILE, x=..., X=...)``, one
  array per input name; inputs a model has but the file lacks are drawn at random; a name that is
  an input of no compiled model is a user error).  ``--write-test`` writes ``test_<module>.py``
  next to each module.
* Exit status: 0 success, 1 a check failed, 2 a user error (missing file, error in the model file,
  no Model, unsupported construct, bad option).  A user error prints one line
  ``symgrad: error: <file>: <model>: <what>`` on stderr, no traceback, and writes nothing: every
  module is generated before any is written, and each is written to a temporary file in its
  folder, then renamed into place.

:func:`main` returns the exit status instead of exiting, so tests call it in-process.
"""
from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np

from ._version import __version__
from .emit import TARGETS, load_source
from .errors import SymgradError
from .jobs import compile_file
from .verify import sample_inputs


class UserError(Exception):
    """Ends the command with exit status 2 and this message."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is a one-line UserError rather than usage text and exit(2)."""

    def error(self, message):
        raise UserError(f"{message} (see '{self.prog} --help')")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="symgrad", description="Compile SymPy models into NumPy/CuPy modules with symbolic gradients.")
    parser.add_argument("--version", action="version", version=f"symgrad {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    comp = commands.add_parser("compile", help="compile the models of a model file",
                               description="Write one generated module per model of MODEL.py.")
    comp.add_argument("model_file", metavar="MODEL.py", help="Python file binding symgrad.Model objects")
    comp.add_argument("-o", "--output", metavar="OUT.py",
                      help="output file (only when one model is compiled; '-' for stdout); "
                           "default codegen_out/<name>_<target>.py")
    comp.add_argument("--out-dir", metavar="DIR", help="write <name>_<target>.py files here instead of codegen_out/")
    comp.add_argument("-v", "--verbose", action="store_true",
                      help="print each phase's time and size on stderr (load, lower, differentiate, emit, check), "
                           "and each rewrite that fired: the node it rewrote and what replaced it")
    comp.add_argument("--target", choices=sorted(TARGETS), default="numpy", help="array library of the module")
    comp.add_argument("--model", metavar="NAME", help="compile only this model (its name or variable)")
    comp.add_argument("--check", action="store_true",
                      help="verify against the runtime tape and finite differences; exit 1 on mismatch")
    comp.add_argument("--check-inputs", metavar="FILE.npz",
                      help="check at these inputs (numpy.savez(FILE, x=..., ...): one array per input name; "
                           "missing inputs are drawn at random); implies --check")
    comp.add_argument("--emit", metavar="LIST",
                      help="derivative functions beside forward and value_and_grad: a comma separated "
                           "subset of grad,vjp,jvp,jacobian,hvp,hessian,sparse_jacobian,sparse_hessian (default: the model's own "
                           "derivatives=, else grad)")
    comp.add_argument("--write-test", action="store_true",
                      help="also write a pytest file test_<module>.py next to each module")
    return parser


def _describe(model, dest, source) -> str:
    inputs = ", ".join(str(s) for s in model.inputs)
    wrt = ", ".join(str(s) for s in model.wrt)
    return (f"wrote {dest}: model {model.name}, inputs ({inputs}), wrt ({wrt}), "
            f"{len(source.splitlines())} lines")


_UNITS = {"load": "models", "lower": "IR nodes", "differentiate": "IR nodes", "emit": "lines"}


def _timings(job) -> str:
    parts = [f"{phase} {s:.3f} s ({size} {_UNITS[phase]})" for phase, (s, size) in job.timings.items()
             if phase in _UNITS]
    return f"{job.model.name}: " + ", ".join(parts)


def _sparsity(job) -> str:
    """The sparse derivatives' patterns and colors at the sizes ``--check`` draws (they depend on
    the dimensions, known only at call time)."""
    try:
        module = load_source(job.source, job.model.name)
        inputs = sample_inputs(job.model, np.random.default_rng(0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            info = module.sparsity_info(**inputs)
    except Exception as exc:  # noqa: BLE001 - a report, not a check
        return f"{job.model.name}: sparsity: not computed ({type(exc).__name__}: {exc})"
    shapes = ", ".join(f"{k} {np.shape(v)}" for k, v in inputs.items())
    parts = []
    for what, i in info.items():
        how = {"columns": ", one jvp each", "rows": ", one vjp each"}.get(i.get("by"), ", one hvp each")
        parts.append(f"{what} {i['shape'][0]} x {i['shape'][1]}, {i['nnz']} stored, {i['colors']} colors{how}")
    dense = next(iter(info.values()))["dense_rule"] if info else ()
    note = (f"; taken as dense dependence (no rule of their own): {', '.join(dense)}" if dense
            else "; every op by its own rule")
    return f"{job.model.name}: sparsity at {shapes}: " + "; ".join(parts) + note


def _compile(args) -> int:
    try:
        jobs = compile_file(args.model_file, target=args.target, output=args.output, only=args.model,
                            check=args.check, check_inputs=args.check_inputs, write_test=args.write_test,
                            emit=args.emit, out_dir=args.out_dir, trace=args.verbose)
    except SymgradError as exc:
        raise UserError(str(exc)) from None
    to_stdout = args.output == "-"
    if to_stdout:
        sys.stdout.write(jobs[0].source)
        sys.stdout.flush()
    info = sys.stderr if to_stdout else sys.stdout
    for job in jobs:
        if args.verbose:
            print(_timings(job), file=sys.stderr)
            if "def sparsity_info(" in job.source:
                print(_sparsity(job), file=sys.stderr)
            for line in job.rewrites:
                print(f"  rewrite {line}", file=sys.stderr)
        if job.path is not None:
            print(_describe(job.model, job.path, job.source), file=info)
        if job.test_path is not None:
            print(f"wrote {job.test_path}: pytest check of {job.path.name} against the tape")
    for job in jobs:
        if args.verbose and "check" in job.timings:
            print(f"{job.model.name}: check {job.timings['check'][0]:.3f} s", file=sys.stderr)
        if job.check_error is not None:
            print(f"FAILED {job.model.name} [{args.target}]: the check could not run: {job.check_error}", file=info)
        elif job.report is not None:
            print(job.report.summary(), file=info)
            for problem in job.report.problems[1:]:
                print(f"    - {problem}", file=info)
    return 0 if all(job.ok for job in jobs) else 1


def main(argv=None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    try:
        try:
            args = _parser().parse_args(argv)
        except SystemExit as exc:  # --help / --version have printed their text
            return exc.code if isinstance(exc.code, int) else 0
        return _compile(args)
    except UserError as exc:
        sys.stdout.flush()
        print(f"symgrad: error: {exc}", file=sys.stderr)
        return 2
