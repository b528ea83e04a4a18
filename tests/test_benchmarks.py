"""The benchmark harness runs end to end at the smoke size and prints its tables (benchmarks/)."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_smoke_benchmarks_print_tables():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--smoke"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "| case | method | median |" in out
    assert "| model | method | median |" in out                       # compile-time table
    for title in ("Seed 001", "Seed 002", "Seed 003", "Seed 004", "Second derivatives", "Compile time",
                  "Small problems"):
        assert title in out, title
    sym_rows = [ln for ln in out.splitlines() if ln.startswith("| ") and "| symgrad" in ln]
    assert len(sym_rows) >= 4, out
    ratio = re.compile(r"\| \d+\.\d\dx \|")
    # every runtime symgrad row has a time and numeric ratios vs hand NumPy and vs itself
    runtime_rows = [ln for ln in sym_rows if "(generated module)" in ln]
    assert runtime_rows
    for ln in runtime_rows:
        assert re.search(r"\| \d+(\.\d+)? (µs|ms|s) \|", ln), ln
        assert re.search(r"\| \d+\.\d\dx \| 1\.00x \|", ln), ln
        assert "MISMATCH" not in ln and "error" not in ln, ln
    # the hand-written NumPy rows exist and are numeric too; missing libraries are n/a, never errors
    assert any("hand NumPy" in ln and ratio.search(ln) for ln in out.splitlines())
    assert "MISMATCH" not in out
    # the second-derivative table: symgrad's hvp / hessian rows are the reference of their check
    second = [ln for ln in out.splitlines() if "symgrad (generated hvp / hessian / jacobian)" in ln]
    assert len(second) == 5 and all("(reference)" in ln for ln in second), second
    sparse = [ln for ln in out.splitlines() if "symgrad sparse_hessian" in ln]
    assert len(sparse) == 1 and "(reference)" in sparse[0], sparse
    assert "| error (" not in out, out
    # the small-problem table: the GMM (hand NumPy reverse pass as reference) and the whole L-BFGS-B
    # minimize agree across every method that ran
    for case in ("| GMM d=2 K=5 n=1000 |", "| L-BFGS-B Rosenbrock"):
        rows = [ln for ln in out.splitlines() if ln.startswith(case)]
        timed = [ln for ln in rows if "n/a (" not in ln]
        assert len(rows) == 6 and any("| symgrad (generated module) |" in ln for ln in timed), rows
        assert all(re.search(r"\| (ok \(|\(reference\))", ln) for ln in timed), timed
