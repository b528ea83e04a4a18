"""Side-by-side benchmark harness: one subprocess per method, interleaved rounds, medians, one table.

Why subprocesses: OpenBLAS's and PyTorch's (OpenMP) worker threads busy-wait after a parallel region;
two such thread pools in one process slow each other down 3-10x.  Here every method lives in its own
worker process, the parent asks the workers in turn for one round of timings (rounds interleaved
across methods, the order rotated every round, with a short pause between methods so that the
previous worker's spinning threads go to sleep), and the statistics are taken over all rounds.

A workload module (``benchmarks/bench_*.py``) defines

    METHODS = [(key, label), ...]           # one worker process each
    def setup(method, case) -> fn           # in the worker: import the library, build the inputs;
                                            # fn() -> (value, {name: gradient}) is what is timed

``setup`` raises ``ImportError`` when the method's library is missing (reported "n/a (not
installed)") or :class:`NotApplicable` (reported "n/a (<reason>)").  The value and gradients of
the first call are reduced to a few float64 numbers and compared with the hand-written NumPy
baseline's ("check" column), so a fast-but-wrong method is visible in the table.

Worker protocol: JSON lines on the worker's stdin / a private copy of its stdout (the real stdout is
redirected to stderr, so library chatter cannot corrupt it).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import platform
import re
import select
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OPENBLAS_TUNING_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS",
               "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
BASELINE = "numpy_hand"
SYMGRAD = "symgrad"


class NotApplicable(Exception):
    """The method cannot express this workload (reported as n/a with the reason)."""


# ----------------------------------------------------------------------------------------------
# settings shared by every script
# ----------------------------------------------------------------------------------------------
@dataclass
class Settings:
    smoke: bool = False
    unset_openblas_env: bool = False
    rounds: int = 7             # interleaved rounds per case
    budget_s: float = 0.4       # time a worker spends timing calls in one round
    max_calls: int = 400        # calls per round at most
    warmup: int = 2             # untimed calls after setup
    settle_s: float = 0.15      # pause between methods (idle threads of the last worker go to sleep)
    setup_timeout_s: float = 600.0
    compile_rounds: int = 3     # fresh processes per compile-time measurement
    compile_timeout_s: float = 60.0

    @classmethod
    def from_args(cls, args) -> "Settings":
        s = cls(smoke=args.smoke, unset_openblas_env=args.unset_openblas_env)
        if args.smoke:
            s.rounds, s.budget_s, s.max_calls, s.warmup, s.settle_s = 2, 0.01, 20, 1, 0.0
            s.compile_rounds, s.compile_timeout_s, s.setup_timeout_s = 1, 20.0, 120.0
        if getattr(args, "rounds", None):
            s.rounds = args.rounds
        return s


def add_common_args(p):
    p.add_argument("--smoke", action="store_true", help="tiny sizes, few rounds (CI)")
    p.add_argument("--unset-openblas-env", action="store_true",
                   help="unset OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE in every benchmark subprocess")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds per case")
    return p


def child_env(settings: Settings) -> dict:
    env = dict(os.environ)
    if settings.unset_openblas_env:
        for v in OPENBLAS_TUNING_VARS:
            env.pop(v, None)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def blas_summary() -> str:
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}"
    except Exception:                                     # noqa: BLE001 - only a header line
        return "unknown"


def cpu_summary() -> str:
    """The CPU's model name and family/model numbers, and its L3 size (Linux), or ''.  Machines of
    one class differ: the same benchmark ran 3-4x slower on a Zen 1 than on a newer EPYC."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    fields = dict(re.findall(r"^(model name|cpu family|model|cache size)\s*:\s*(.*)$", info, re.M))
    l3 = Path("/sys/devices/system/cpu/cpu0/cache/index3/size")
    l3 = f", L3 {l3.read_text().strip()}" if l3.exists() else ""
    return (f" ({fields.get('model name', '?')}, family {fields.get('cpu family', '?')} model "
            f"{fields.get('model', '?')}{l3})") if fields else ""


def header(settings: Settings) -> str:
    env = child_env(settings)
    threads = ", ".join(f"{v}={env.get(v, '(unset)')}" for v in THREAD_VARS)
    tuning = ", ".join(f"{v}={env[v]}" if v in env else f"{v}=(unset)" for v in OPENBLAS_TUNING_VARS)
    mode = "unset by --unset-openblas-env" if settings.unset_openblas_env else "as inherited"
    libs = ", ".join(f"{d} {version(d)}" for d in ("symgrad", "numpy", "sympy", "autograd", "jax", "jaxlib", "torch"))
    return "\n".join([
        f"- machine: {platform.machine()}{cpu_summary()}, {os.cpu_count()} cores, {platform.system()} "
        f"{platform.release()}; "
        f"Python {platform.python_version()}",
        f"- libraries: {libs}; NumPy BLAS: {blas_summary()}",
        f"- threads (defaults, identical for every method): {threads}",
        f"- OpenBLAS tuning env ({mode}): {tuning}",
        f"- mode: {'smoke (tiny sizes)' if settings.smoke else 'full'}; rounds={settings.rounds}, "
        f"~{settings.budget_s}s of calls per method per round, warm-up={settings.warmup} calls, "
        f"each method in its own subprocess, rounds interleaved (order rotated each round)",
    ])


# ----------------------------------------------------------------------------------------------
# worker side
# ----------------------------------------------------------------------------------------------
def _to_numpy(a):
    if hasattr(a, "detach"):                              # torch
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def fingerprint(result) -> dict:
    """A few float64 numbers that identify (value, grads): sum and sum|.| of the value, and
    sum|g| and ||g|| of every gradient."""
    value, grads = result
    v = _to_numpy(value)
    fp = {"value.sum": float(v.sum()), "value.abs": float(np.abs(v).sum())}
    for name in sorted(grads):
        g = _to_numpy(grads[name])
        fp[f"{name}.abs"] = float(np.abs(g).sum())
        fp[f"{name}.norm"] = float(np.sqrt((g * g).sum()))
    return fp


def _worker_main(module_name: str, method: str):
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)                                         # library prints go to stderr
    sys.stdout = sys.stderr
    mod = importlib.import_module(module_name)
    fn = None

    def reply(obj):
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg["cmd"]
        if cmd == "quit":
            break
        if cmd == "setup":
            fn = None
            t0 = time.perf_counter()
            try:
                out = mod.setup(method, msg["case"])
                fn, info = out if isinstance(out, tuple) else (out, "")
                fp = fingerprint(fn())
                for _ in range(max(0, msg["warmup"] - 1)):
                    fn()
                reply({"ok": True, "fp": fp, "info": info, "setup_s": time.perf_counter() - t0})
            except ImportError as e:
                reply({"ok": False, "kind": "na", "reason": f"not installed: {e.name or e}"})
            except NotApplicable as e:
                reply({"ok": False, "kind": "na", "reason": str(e)})
            except Exception as e:                        # noqa: BLE001 - reported in the table
                traceback.print_exc()
                reply({"ok": False, "kind": "error", "reason": f"{type(e).__name__}: {e}"[:160]})
        elif cmd == "run":
            times = []
            start = time.perf_counter()
            while len(times) < msg["min"] or (len(times) < msg["max"]
                                               and time.perf_counter() - start < msg["budget"]):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            reply({"times": times})


class Worker:
    def __init__(self, module_name: str, method: str, settings: Settings):
        self.method = method
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.harness", "--worker", module_name, method],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, cwd=ROOT,
            env=child_env(settings))
        self._buf = b""
        self.dead = None

    def send(self, obj):
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()

    def recv(self, timeout: float):
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"worker {self.method} timed out")
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"worker {self.method} died: {self.stderr_tail()}")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def stderr_tail(self, n=400):
        self.stderr.seek(0)
        return self.stderr.read()[-n:].strip().replace("\n", " | ")

    def close(self):
        try:
            if self.proc.poll() is None:
                self.send({"cmd": "quit"})
                self.proc.wait(timeout=10)
        except Exception:                                 # noqa: BLE001
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


# ----------------------------------------------------------------------------------------------
# parent side: run cases, statistics, tables
# ----------------------------------------------------------------------------------------------
@dataclass
class Row:
    case: str
    method: str
    label: str
    times: list = field(default_factory=list)
    status: str = "ok"              # ok | na | error
    reason: str = ""
    fp: dict | None = None
    info: str = ""
    tol: float = 1e-6

    @property
    def median(self):
        return float(np.median(self.times)) if self.times else None


def run_cases(module_name: str, methods, cases, settings: Settings, log=print):
    """cases: list of (case_label, case_dict, tol).  Returns a list of Row, grouped by case."""
    workers = [Worker(module_name, key, settings) for key, _ in methods]
    labels = dict(methods)
    rows = []
    try:
        for case_label, case, tol in cases:
            log(f"  [{module_name.split('.')[-1]}] {case_label}: setting up {len(workers)} workers ...")
            for w in workers:                           # all workers set up concurrently (untimed)
                if w.dead:
                    continue
                w.send({"cmd": "setup", "case": case, "warmup": settings.warmup})
            live, case_rows = [], {}
            for w in workers:
                row = Row(case_label, w.method, labels[w.method], tol=tol)
                case_rows[w.method] = row
                if w.dead:
                    row.status, row.reason = "error", w.dead
                    continue
                try:
                    r = w.recv(settings.setup_timeout_s)
                except (TimeoutError, RuntimeError) as e:
                    w.dead = str(e)[:160]
                    row.status, row.reason = "error", w.dead
                    continue
                if r["ok"]:
                    row.fp, row.info = r["fp"], r.get("info", "")
                    live.append(w)
                else:
                    row.status, row.reason = r["kind"], r["reason"]
            for rnd in range(settings.rounds):
                k = rnd % max(1, len(live))
                for w in live[k:] + live[:k]:
                    if w.dead:
                        continue
                    time.sleep(settings.settle_s)
                    w.send({"cmd": "run", "budget": settings.budget_s, "min": 1, "max": settings.max_calls})
                    try:
                        case_rows[w.method].times += w.recv(settings.setup_timeout_s)["times"]
                    except (TimeoutError, RuntimeError) as e:
                        w.dead = str(e)[:160]
                        case_rows[w.method].status, case_rows[w.method].reason = "error", w.dead
            rows += [case_rows[key] for key, _ in methods]
    finally:
        for w in workers:
            w.close()
    return rows


def fmt_time(t):
    if t is None:
        return "–"
    if t >= 1:
        return f"{t:.3g} s"
    if t >= 1e-3:
        return f"{t * 1e3:.3g} ms"
    return f"{t * 1e6:.3g} µs"


def fmt_ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}x"


def rel_diff(fp, ref):
    worst = 0.0
    for k, b in ref.items():
        if k not in fp:
            return float("inf")
        a = fp[k]
        scale = max(abs(b), 1e-30)
        worst = max(worst, abs(a - b) / scale)
    return worst


def status_text(row: Row):
    if row.status == "na":
        return f"n/a ({row.reason})"
    return f"error ({row.reason})"


def runtime_table(rows, title: str, baseline: str = BASELINE, baseline_name: str = "hand NumPy",
                  check_ref: str | None = None) -> str:
    """One markdown table: ratios vs the ``baseline`` method's median and vs symgrad's; the check
    column compares fingerprints with the ``check_ref`` method's (default: the baseline's; a
    baseline that computes something else is then not checked)."""
    check_ref = check_ref or baseline
    out = [f"### {title}", "",
           f"| case | method | median | IQR (p25–p75) | min | vs {baseline_name} | vs symgrad | check |",
           "|---|---|---:|---:|---:|---:|---:|---|"]
    by_case = {}
    for r in rows:
        by_case.setdefault(r.case, []).append(r)
    notes = []
    for case, crow in by_case.items():
        ref = next((r for r in crow if r.method == baseline and r.times), None)
        chk = next((r for r in crow if r.method == check_ref and r.times), None)
        sym = next((r for r in crow if r.method == SYMGRAD and r.times), None)
        for r in crow:
            if not r.times:
                out.append(f"| {case} | {r.label} | {status_text(r)} | – | – | – | – | – |")
                continue
            q1, q3 = np.percentile(r.times, [25, 75])
            if chk is None or chk.fp is None or (r is ref and r is not chk):
                check = "–"
            elif r is chk:
                check = "(reference)"
            else:
                d = rel_diff(r.fp, chk.fp)
                check = f"ok ({d:.0e})" if d <= r.tol else f"MISMATCH (rel {d:.1e})"
            out.append(f"| {case} | {r.label} | {fmt_time(r.median)} | {fmt_time(q1)}–{fmt_time(q3)} | "
                       f"{fmt_time(min(r.times))} | {fmt_ratio(r.median, ref.median if ref else None)} | "
                       f"{fmt_ratio(r.median, sym.median if sym else None)} | {check} |")
            if r.info and r.info not in notes:
                notes.append(r.info)
    out.append("")
    counts = [len(r.times) for r in rows if r.times]
    out.append(f"Ratios: median time / median time of the reference (>1 = slower than it); "
               f"{min(counts, default=0)}-{max(counts, default=0)} timed calls per method and case.")
    if notes:
        out.append("Notes: " + "; ".join(notes) + ".")
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------
# one-shot measurements in fresh processes (compile times)
# ----------------------------------------------------------------------------------------------
def oneshot(module_name: str, func: str, args: dict, settings: Settings, timeout: float):
    """Run ``module.func(**args)`` in a fresh process; it returns a JSON-able dict.  Returns that dict,
    or {"error": "timeout"} / {"error": "<ExceptionName>: ..."}."""
    with tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.harness", "--oneshot", module_name, func, json.dumps(args)],
            stdout=subprocess.PIPE, stderr=err, cwd=ROOT, env=child_env(settings))
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return {"error": f"timeout (>{timeout:g} s)"}
        lines = [ln for ln in out.decode().splitlines() if ln.strip()]
        if proc.returncode != 0 or not lines:
            err.seek(0)
            tail = err.read()[-300:].strip().splitlines()
            return {"error": f"crashed (exit {proc.returncode}): {tail[-1] if tail else ''}"}
        return json.loads(lines[-1])


def _oneshot_main(module_name: str, func: str, args_json: str):
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    mod = importlib.import_module(module_name)
    try:
        res = getattr(mod, func)(**json.loads(args_json))
    except ImportError as e:
        res = {"error": f"n/a (not installed: {e.name or e})"}
    except NotApplicable as e:
        res = {"error": f"n/a ({e})"}
    except RecursionError:
        res = {"error": "RecursionError"}
    except Exception as e:                                # noqa: BLE001
        res = {"error": f"{type(e).__name__}: {e}"[:160]}
    proto.write(json.dumps(res) + "\n")
    proto.flush()


# ----------------------------------------------------------------------------------------------
# helpers for the workload scripts
# ----------------------------------------------------------------------------------------------
def symgrad_model(example_file: str, name: str):
    """The Model ``name`` of ``examples/<example_file>``."""
    import symgrad
    return symgrad.load_models(ROOT / "examples" / example_file, only=name)[0]


def tol_for(dtype: str) -> float:
    """Relative tolerance of the check column (different summation orders are fine)."""
    return 1e-3 if dtype == "float32" else 1e-8


def script_main(tables, description: str, argv=None):
    """``python -m benchmarks.bench_x [--smoke] ...``: print the header and this script's tables."""
    import argparse
    args = add_common_args(argparse.ArgumentParser(description=description)).parse_args(argv)
    settings = Settings.from_args(args)
    print(header(settings))
    print()
    print(tables(settings, log=lambda m: print(m, file=sys.stderr, flush=True)))


if __name__ == "__main__":
    # run as a script, this file is ``__main__``: use the importable module's exception class, the one
    # the workload modules raise
    NotApplicable = importlib.import_module("benchmarks.harness").NotApplicable  # noqa: F811
    if sys.argv[1] == "--worker":
        _worker_main(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "--oneshot":
        _oneshot_main(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit("usage: python -m benchmarks.harness --worker MODULE METHOD | --oneshot MODULE FUNC ARGS")
