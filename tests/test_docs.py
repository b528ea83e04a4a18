"""The documentation is true: generated tables match the code, code blocks run, paths exist."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from symgrad import doc_tables

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def test_construct_tables_match_the_code():
    committed = (ROOT / "docs" / "constructs.md").read_text(encoding="utf-8")
    assert committed == doc_tables.page(), "docs/constructs.md is stale: python -m symgrad.doc_tables > docs/constructs.md"


def run_blocks(text, cwd):
    """Run a page's blocks in order: ``# file: NAME`` blocks are written, other python blocks
    run in one namespace, bash blocks line by line (the installed symgrad on PATH)."""
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    namespace, ran = {"__name__": "__docs__"}, 0
    old = os.getcwd()
    os.chdir(cwd)
    sys.path.insert(0, str(cwd))
    try:
        for lang, body in BLOCK.findall(text):
            first = body.splitlines()[0] if body else ""
            if first.startswith("# file: "):
                (cwd / first.removeprefix("# file: ").strip()).write_text(body)
            elif lang == "python":
                exec(compile(body, f"<docs block {ran}>", "exec"), namespace)  # noqa: S102 - our docs
            elif lang == "bash":
                for line in body.splitlines():
                    if line.strip() and not line.lstrip().startswith("#"):
                        done = subprocess.run(line, shell=True, cwd=cwd, env=env, capture_output=True, text=True)
                        assert done.returncode == 0, (line, done.stdout[-2000:], done.stderr[-2000:])
            ran += 1
    finally:
        os.chdir(old)
        sys.path.remove(str(cwd))
    return ran


def test_the_tutorial_runs(tmp_path):
    assert run_blocks((ROOT / "docs" / "tutorial.md").read_text(), tmp_path) == 6
    assert (tmp_path / "codegen_out" / "mlp_numpy.py").is_file()


def test_the_bridges_page_runs(tmp_path):
    for lib in ("scipy", "torch", "jax"):
        pytest.importorskip(lib)
    import jax
    old = jax.config.jax_enable_x64                   # the page turns float64 on: a global setting
    try:
        assert run_blocks((ROOT / "docs" / "bridges.md").read_text(), tmp_path) == 4
    finally:
        jax.config.update("jax_enable_x64", old)


def test_the_readme_model_file_block_runs(tmp_path):
    text = (ROOT / "README.md").read_text()
    blocks = [body for lang, body in BLOCK.findall(text) if lang == "python"]
    assert blocks
    namespace = {}
    for body in blocks:
        exec(compile(body, "<README>", "exec"), namespace)  # noqa: S102 - our README
    assert namespace["model"].name == "mlp"
    (tmp_path / "model.py").write_text(blocks[0])
    done = subprocess.run([sys.executable, "-m", "symgrad", "compile", "model.py", "--check"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 0 and "ok mlp [numpy]" in done.stdout, done.stdout + done.stderr
    # the lines the README quotes from that module are in it
    module = (tmp_path / "codegen_out" / "mlp_numpy.py").read_text()
    quoted = re.findall(r"`((?:t\d+|grad_\w+) = [^`]+)`", text[text.index("## A model file"):text.index("## More")])
    assert len(quoted) >= 3 and all(q in module for q in quoted), [q for q in quoted if q not in module]


PRODUCED = {"codegen_out/mlp_numpy.py"}  # written by the commands a page shows


@pytest.mark.parametrize("page", ["README.md", "docs/index.md", "docs/tutorial.md", "examples/README.md",
                                  "benchmarks/README.md", "docs/bridges.md"])
def test_paths_the_docs_name_exist(page):
    text = (ROOT / page).read_text()
    here = (ROOT / page).parent
    named = set(re.findall(r"`((?:symgrad|examples|benchmarks|tests|docs|codegen_out)/[\w./-]+)`", text))
    named |= {m for m in re.findall(r"\]\(([^)#]+)\)", text) if not m.startswith("http")}
    missing = [p for p in named - PRODUCED if not ((ROOT / p).exists() or (here / p).exists())
               and "<" not in p and "*" not in p and not p.endswith("/")]
    assert not missing, missing


# SymPy classes the README names by how a model spells them
_SPELLED = {"Add": "`+", "MatAdd": "`+", "Mul": "`*", "Pow": "powers", "Number": "numbers", "NumberSymbol": "`pi`",
            "BooleanTrue": "`True`", "BooleanFalse": "`False`", "ImaginaryUnit": "`I`", "MatrixElement": "`M[i, j]`",
            "MatrixSlice": "`M[a:b:s", "MinMaxBase": "`Max", "Relational": "<=", "Transpose": "`.T`",
            "ElementwiseApplyFunction": "`.applyfunc(f)`"}


def test_the_readme_names_every_construct_of_the_table():
    """Every SymPy class of docs/constructs.md's table (the lowering's) is in the README's "What is
    supported", by its name or by how a model writes it: the README's list cannot fall behind."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("## What is supported")
    section = readme[start:readme.index("\n## ", start + 5)]
    classes = re.findall(r"^\| `(\w+)` \| ", doc_tables.sympy_table(), re.M)
    assert len(classes) > 50
    missing = [c for c in classes if not (re.search(rf"\b{c}\b", section) or _SPELLED.get(c, "\0") in section)]
    assert not missing, f"README 'What is supported' does not name: {missing}"
