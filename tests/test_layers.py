"""Layers that don't import upward: no import cycles in the package, and no import hidden inside a
function to dodge one (the few there are, are listed here with the reason each is lazy)."""
from __future__ import annotations

import ast
from pathlib import Path

import symgrad

from _import_cycles import cycles

PACKAGE = Path(symgrad.__file__).parent

# (module, what it imports) -> why the import waits for the call
LAZY = {
    ("symgrad.pytest_plugin", ".verify"): "pytest loads the plugin in every run: the checker and the compiler only when a model is checked",
    ("symgrad.pytest_plugin", ".model"): "as above: SymPy only when a model file is collected",
    ("symgrad.pytest_plugin", ".cache"): "as above",
    ("symgrad.tape", ".functions"): "the tape reads symgrad.Function specs only for models that have one",
}


def test_no_import_cycles():
    assert cycles(PACKAGE) == [], "modules that import each other (see tests/_import_cycles.py)"


def test_the_cycle_finder_finds_a_planted_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import f\n")
    (pkg / "b.py").write_text("def f():\n    from . import a  # inside a function: still an import\n")
    (pkg / "c.py").write_text("from pkg import a\n")
    assert cycles(pkg) == [["pkg.a", "pkg.b"]]


def _imports_in_functions():
    for path in sorted(PACKAGE.rglob("*.py")):
        if "_generated" in path.parts:
            continue
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom) and node.level > 0:
                        yield module, "." * node.level + (node.module or "")


def test_imports_of_the_package_inside_functions_are_the_listed_lazy_ones():
    found = set(_imports_in_functions())
    assert found == set(LAZY), ("an import of the package inside a function: move it to the top (no cycle "
                                f"needs it) or list it in LAZY with the reason: {sorted(found ^ set(LAZY))}")


def test_compiling_needs_only_numpy_and_sympy():
    """symgrad depends on NumPy and SymPy only (README's first command installs nothing else):
    importing the CLI and generating a module, with SciPy, PyTorch, JAX, Numba and Dask unimportable."""
    import subprocess
    import sys
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'scipy', 'torch', 'jax', 'numba', 'dask'}:\n"
        "            raise ImportError(f'blocked: {name}')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import sympy as sp, symgrad, symgrad.cli\n"
        "x = sp.Symbol('x')\n"
        "src = symgrad.generate(symgrad.Model(sp.exp(x) * x, wrt=[x], name='m'))\n"
        "print('def value_and_grad' in src)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr
