"""Shared helpers for the ``run_seed*.py`` example scripts (not a model file).

Each script loads the models of its model file (``seedNNN_*.py``), turns each into its generated
module -- compiled in-process with :func:`symgrad.compile` (default), or imported from the committed
``codegen_out/<name>_numpy.py`` with ``--from-codegen`` -- and uses only that module's
``forward`` / ``value_and_grad`` to reproduce the seed's numbers.  A :class:`Report` prints every
seed number next to symgrad's and turns any disagreement into a non-zero exit status.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

import symgrad

EXAMPLES = Path(__file__).resolve().parent
ROOT = EXAMPLES.parent
CODEGEN_OUT = ROOT / "codegen_out"


def argparser(description: str, small: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--from-codegen", action="store_true",
                   help="import the committed codegen_out/<name>_numpy.py files instead of compiling in-process")
    if small:
        p.add_argument("--small", action="store_true", help="small problem sizes (for the tests)")
    return p


def load_modules(model_file: str, from_codegen: bool = False) -> dict:
    """name -> generated module, for every Model in ``examples/<model_file>``."""
    models = symgrad.load_models(EXAMPLES / model_file)
    mods = {}
    for m in models:
        if from_codegen:
            path = CODEGEN_OUT / f"{m.name}_numpy.py"
            if not path.is_file():
                raise SystemExit(f"{path} is missing: run `symgrad compile examples/{model_file}`")
            spec = importlib.util.spec_from_file_location(f"{m.name}_numpy", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
        else:
            mod = symgrad.compile(m, "numpy")
        mods[m.name] = mod
    return mods


def max_rel_err(ours, ref) -> float:
    """max |ours - ref| / max |ref| (absolute when ref is all zeros)."""
    ours = np.asarray(ours, dtype=float)
    ref = np.asarray(ref, dtype=float)
    if ours.shape != ref.shape:
        return float("inf")
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    diff = float(np.max(np.abs(ours - ref))) if ref.size else 0.0
    return diff / scale if scale > 0 else diff


def _fmt(v) -> str:
    a = np.asarray(v)
    if a.ndim == 0 or a.size == 1:
        return repr(float(a.reshape(())))
    return f"array{a.shape}"


class Report:
    """Collects 'seed value vs symgrad value' comparisons and pass/fail checks."""

    def __init__(self, title: str, quiet: bool = False):
        self.title = title
        self.quiet = quiet
        self.failures: list[str] = []
        self.values: dict = {}
        self.t0 = time.perf_counter()
        self._print(f"== {title}")

    def _print(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def compare(self, label: str, seed, ours, rtol: float = 1e-12, atol: float = 0.0) -> bool:
        """Seed (or reference) value next to symgrad's; fails beyond ``atol + rtol*max|seed|``."""
        self.values[label] = ours
        seed_a, ours_a = np.asarray(seed, dtype=float), np.asarray(ours, dtype=float)
        if seed_a.shape != ours_a.shape:
            ok, err = False, float("inf")
        else:
            err = max_rel_err(ours_a, seed_a)
            scale = float(np.max(np.abs(seed_a))) if seed_a.size else 0.0
            diff = float(np.max(np.abs(ours_a - seed_a))) if seed_a.size else 0.0
            ok = bool(diff <= atol + rtol * scale)
        status = "ok" if ok else "MISMATCH"
        self._print(f"  {label:<48} seed/ref {_fmt(seed):>24}   symgrad {_fmt(ours):>24}   "
                    f"rel.err {err:9.2e}  {status}")
        if not ok:
            self.failures.append(f"{label}: seed/ref {seed_a.shape} vs symgrad {ours_a.shape}, "
                                 f"rel.err {err:.3e} (rtol {rtol:g}, atol {atol:g})")
        return ok

    def check(self, label: str, condition: bool, detail: str = "") -> bool:
        """A behavioural check (the loss decreases, ...)."""
        self.values[label] = bool(condition)
        self._print(f"  {label:<48} {detail}  {'ok' if condition else 'FAILED'}")
        if not condition:
            self.failures.append(f"{label}: {detail}")
        return bool(condition)

    def note(self, text: str) -> None:
        self._print(f"  {text}")

    @property
    def ok(self) -> bool:
        return not self.failures

    def finish(self) -> int:
        dt = time.perf_counter() - self.t0
        if self.ok:
            self._print(f"== {self.title}: all {len(self.values)} checks agree ({dt:.2f} s)")
            return 0
        print(f"== {self.title}: {len(self.failures)} FAILED:", file=sys.stderr)
        for f in self.failures:
            print(f"   {f}", file=sys.stderr)
        return 1
