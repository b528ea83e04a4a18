"""Run every benchmark side by side and print the tables (markdown).

    python -m benchmarks.run [--smoke] [--only NAME[,NAME]] [--unset-openblas-env] [--rounds R] [--out FILE]

NAME: mlp (seed 002), fxy (seed 003), logsig (seed 001's -log(sigmoid(w x^2))), softmax (seed 004),
second (HVPs and Hessians), sparse (sparse Hessian of the extended Rosenbrock vs CasADi), compile (chain depths + 32x32 net), overhead (per-call cost on Python floats and small arrays), dask (the
--target dask module over row blocks: threads, LocalClusters of 1 and 2 workers), bridges (Objective.fun_and_jac,
solve_ivp with OdeSystem's Jacobian, a to_torch training step), small (per-call time on small problems: GMM,
seed 002 / 003 at small sizes, a whole L-BFGS-B minimize).
``--smoke`` uses tiny sizes and few rounds (what CI runs).  Progress goes to stderr, tables to stdout.
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import sys
import time

from benchmarks import harness

SCRIPTS = {"mlp": "benchmarks.bench_mlp", "fxy": "benchmarks.bench_fxy", "logsig": "benchmarks.bench_logsig",
           "softmax": "benchmarks.bench_softmax", "second": "benchmarks.bench_second",
           "compile": "benchmarks.bench_compile", "overhead": "benchmarks.bench_overhead",
           "dask": "benchmarks.bench_dask", "bridges": "benchmarks.bench_bridges", "sparse": "benchmarks.bench_sparse",
           "small": "benchmarks.bench_small"}


def main(argv=None):
    p = harness.add_common_args(argparse.ArgumentParser(description=__doc__,
                                                        formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("--only", default=None, help="comma-separated subset of: " + ", ".join(SCRIPTS))
    p.add_argument("--out", default=None, help="also write the tables to this file")
    args = p.parse_args(argv)
    names = args.only.split(",") if args.only else list(SCRIPTS)
    bad = [n for n in names if n not in SCRIPTS]
    if bad:
        p.error(f"unknown benchmark(s) {bad}; choose from {list(SCRIPTS)}")
    settings = harness.Settings.from_args(args)
    t0 = time.time()
    parts = [f"## symgrad benchmarks, {datetime.datetime.now():%Y-%m-%d %H:%M}", "", harness.header(settings)]
    print("\n".join(parts), flush=True)
    for name in names:
        table = importlib.import_module(SCRIPTS[name]).tables(
            settings, log=lambda m: print(m, file=sys.stderr, flush=True))
        print("\n" + table, flush=True)
        parts += ["", table]
    tail = f"\n_Total benchmark wall time: {time.time() - t0:.0f} s._"
    print(tail)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write("\n".join(parts) + "\n" + tail + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
