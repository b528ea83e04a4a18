"""Import cycles inside a package, counting imports made inside functions too (a copy, kept in the
repository, of the project's cycle finder): ``cycles(package_dir)`` lists each group of modules that
import each other (a strongly connected component of the import graph with more than one module)."""
from __future__ import annotations

import re
from pathlib import Path


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(path: Path, root: Path) -> set:
    """The modules of the package that ``path`` imports: ``from . import x``, ``from .a import b``
    (``b`` a module or a name in ``a``), ``import package.a``; anywhere in the file."""
    name = root.name
    mod = module_name(path, root)
    pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = set()
    pattern = (r"^[ \t]*from[ \t]+(\.*)([\w\.]*)[ \t]+import[ \t]+(\([^)]*\)|[\w \t,]+)"
               r"|^[ \t]*import[ \t]+(" + name + r"[\w\.]*)")
    for m in re.finditer(pattern, path.read_text(encoding="utf-8"), re.M):
        dots, target, names, plain = m.groups()
        if plain:
            out.add(plain)
            continue
        if dots:
            base = pkg.split(".")
            base = base[: len(base) - (len(dots) - 1)]
            full = ".".join(base + ([target] if target else []))
        else:
            full = target
        if not full.startswith(name):
            continue
        for item in re.split(r"[,\n]", (names or "").strip("() \t\n")):
            n = item.split(" as ")[0].strip()
            if not n or n.startswith("#"):
                continue
            sub = root.parent.joinpath(*(full + "." + n).split("."))
            out.add(full + "." + n if sub.with_suffix(".py").exists() or sub.is_dir() else full)
    return out


def import_graph(root: Path) -> dict:
    files = {module_name(p, root): p for p in root.rglob("*.py") if "_generated" not in p.parts}
    return {m: {t for t in package_imports(p, root) if t in files and t != m} for m, p in files.items()}


def cycles(root: Path) -> list[list[str]]:
    """Tarjan's strongly connected components of the import graph, those of two modules or more."""
    graph = import_graph(Path(root))
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [c for c in out if len(c) > 1]
