"""The ``symgrad`` command line (CONTRACT section 3).

``symgrad compile MODEL.py [-o OUT.py] [--target numpy|cupy] [--model NAME] [--check]
[--check-inputs FILE.npz] [--write-test]``

* Compiles every model of the file (or the one ``--model`` names) and writes one module per model,
  by default to ``codegen_out/<name>_<target>.py`` under the current directory; ``-o`` names the file
  exactly and is accepted only when one model is compiled.  Prints one line per written module.
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
import importlib.util
import os
import sys
from pathlib import Path

from . import __version__, generate
from .model import SymgradError, load_models

TARGETS = ("numpy", "cupy")


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
                      help="output file (only when one model is compiled); "
                           "default codegen_out/<name>_<target>.py")
    comp.add_argument("--target", choices=TARGETS, default="numpy", help="array library of the module")
    comp.add_argument("--model", metavar="NAME", help="compile only this model (its name or variable)")
    comp.add_argument("--check", action="store_true",
                      help="verify against the runtime tape and finite differences; exit 1 on mismatch")
    comp.add_argument("--check-inputs", metavar="FILE.npz",
                      help="check at these inputs (numpy.savez(FILE, x=..., ...): one array per input name; "
                           "missing inputs are drawn at random); implies --check")
    comp.add_argument("--write-test", action="store_true",
                      help="also write a pytest file test_<module>.py next to each module")
    return parser


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


def _generate_all(models, args) -> list:
    """[(model, destination, source)] for every model; raises UserError before anything is written."""
    if args.output is not None and len(models) != 1:
        names = ", ".join(m.name for m in models)
        raise UserError(f"{args.model_file}: -o names one file but there are {len(models)} models "
                        f"({names}); pick one with --model NAME or drop -o")
    if args.check_inputs is not None:
        args.check = True
    if args.check and args.target == "cupy" and importlib.util.find_spec("cupy") is None:
        raise UserError(f"{args.model_file}: --check --target cupy needs CuPy installed "
                        "(pip install 'symgrad[cupy]'); compile without --check to just write the module")
    jobs = []
    for model in models:
        if args.output is None and (Path(model.name).name != model.name or model.name in ("", ".", "..")):
            raise UserError(f"{args.model_file}: {model.name}: the model name is not a file name; "
                            "name the output with -o")
        try:
            source = generate(model, args.target)
        except SymgradError as exc:  # the compiler may already say "model <name>: "
            what = str(exc).removeprefix(f"model {model.name}: ")
            raise UserError(f"{args.model_file}: {model.name}: {what}") from None
        except Exception as exc:  # noqa: BLE001 - never a traceback; say it is ours
            raise UserError(f"{args.model_file}: {model.name}: cannot compile for target {args.target} "
                            f"(internal error {type(exc).__name__}: {exc})") from None
        dest = Path(args.output) if args.output else Path("codegen_out") / f"{model.name}_{args.target}.py"
        jobs.append((model, dest, source))
    if args.check_inputs is not None:
        args.inputs_for = _check_inputs(models, args)
    return jobs


def _check_inputs(models, args) -> dict:
    """{model name: the --check-inputs arrays that are its inputs}; a UserError for a file that cannot
    be read, a name that is no model's input, or arrays that do not fit a model."""
    from .verify import load_inputs, validate_inputs
    path = args.check_inputs
    try:
        arrays = load_inputs(path)
    except SymgradError as exc:
        raise UserError(str(exc)) from None
    names = {str(s) for m in models for s in m.inputs}
    unknown = sorted(set(arrays) - names)
    if unknown:
        raise UserError(f"{path}: names {', '.join(map(repr, unknown))}, which "
                        f"{'is' if len(unknown) == 1 else 'are'} no input of "
                        f"{', '.join(m.name for m in models)} (inputs: {', '.join(sorted(names))})")
    out = {}
    for model in models:
        mine = {k: v for k, v in arrays.items() if k in {str(s) for s in model.inputs}}
        try:
            validate_inputs(model, mine)
        except SymgradError as exc:
            what = str(exc).removeprefix(f"model {model.name}: ")
            raise UserError(f"{path}: {model.name}: {what}") from None
        out[model.name] = mine or None
    return out


def _describe(model, dest, source) -> str:
    inputs = ", ".join(str(s) for s in model.inputs)
    wrt = ", ".join(str(s) for s in model.wrt)
    return (f"wrote {dest}: model {model.name}, inputs ({inputs}), wrt ({wrt}), "
            f"{len(source.splitlines())} lines")


def _check(model, dest, args) -> bool:
    from .testing import import_module_file
    from .verify import check
    try:
        inputs = getattr(args, "inputs_for", {}).get(model.name)
        report = check(model, import_module_file(dest), inputs=inputs)
    except Exception as exc:  # noqa: BLE001 - a check that cannot run is a failed check
        print(f"FAILED {model.name} [{args.target}]: the check could not run: {type(exc).__name__}: {exc}")
        return False
    print(report.summary())
    for problem in report.problems[1:]:
        print(f"    - {problem}")
    return report.ok


def _compile(args) -> int:
    try:
        models = load_models(args.model_file, only=args.model)
    except SymgradError as exc:
        raise UserError(str(exc)) from None
    jobs = _generate_all(models, args)
    for model, dest, source in jobs:
        try:
            write_atomic(dest, source)
            if args.write_test:
                from .testing import pytest_source
                test = dest.with_name(f"test_{dest.stem}.py")
                write_atomic(test, pytest_source(args.model_file, dest, test, model.name))
        except OSError as exc:
            raise UserError(f"{args.model_file}: {model.name}: cannot write {dest}: {exc.strerror or exc}") from None
        print(_describe(model, dest, source))
        if args.write_test:
            print(f"wrote {test}: pytest check of {dest.name} against the tape")
    ok = True
    if args.check:
        for model, dest, _ in jobs:
            ok = _check(model, dest, args) and ok
    return 0 if ok else 1


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
