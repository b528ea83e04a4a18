"""The module cache of :func:`symgrad.compile`: generated modules as files, imported as modules.

``symgrad.compile(model)`` writes the generated source to ``cache_dir()/<name>_<target>_<key>.py``
(atomically) and imports it as ``symgrad._generated.<name>_<target>_<key>``: a real module, so
``inspect.getsource`` works, tracebacks show the generated lines, and its functions pickle (a
process started with ``spawn`` imports the same name from the same folder).  The key hashes
everything the source depends on -- the model (expression, ``wrt``, name), the target, the
derivative functions, the symgrad version and symgrad's own code -- so a file found under its key
is the source ``generate`` would write, and another process, or a later run, imports it without
compiling again (Python's bytecode cache sits beside it).

``cache_dir()`` is ``$SYMGRAD_CACHE_DIR``, else ``$XDG_CACHE_HOME/symgrad``, else
``~/.cache/symgrad``; ``clear()`` removes the files it wrote.  ``SYMGRAD_CACHE=0`` turns reuse
off: every ``compile`` generates again (and rewrites the file).  That is for changes the key
cannot see -- a compiler patched at run time, as mutation tests do (the test suite runs so).
Where the folder cannot be written, ``compile`` falls back to an in-memory module whose source
is registered with ``linecache``.  The source is compiled from its text on every import (no
bytecode cache: a rewritten file is never run from a stale one).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import linecache
import os
import re
import shutil
import sys
from pathlib import Path

PACKAGE = "symgrad._generated"
_CODE_HASH: str | None = None


def cache_dir() -> Path:
    """Where compiled modules are kept (see the module docstring)."""
    env = os.environ.get("SYMGRAD_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "symgrad"


def clear() -> int:
    """Remove the cached modules (and their bytecode); returns how many modules were removed."""
    folder = cache_dir()
    removed = 0
    for path in folder.glob("*.py"):
        path.unlink(missing_ok=True)
        removed += 1
    shutil.rmtree(folder / "__pycache__", ignore_errors=True)
    return removed


def _code_hash() -> str:
    """A hash of symgrad's own source files: a change to the compiler is a new key."""
    global _CODE_HASH
    if _CODE_HASH is None:
        h = hashlib.sha256()
        root = Path(__file__).resolve().parent
        for path in sorted(root.rglob("*.py")):
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
        _CODE_HASH = h.hexdigest()
    return _CODE_HASH


def stem(model, target: str, emit) -> str:
    """``<name>_<target>_<key>``: a Python identifier, and the cache file's name."""
    import sympy

    from . import __version__
    key = hashlib.sha256("|".join([model.source_hash(), target, ",".join(emit), __version__,
                                   sympy.__version__, _code_hash()]).encode()).hexdigest()[:16]
    name = re.sub(r"\W", "_", str(model.name or "model"), flags=re.ASCII)[:40]
    return f"m_{name}_{target}_{key}"


def _package():
    """``symgrad._generated``, a package whose folder is the cache directory (for imports)."""
    pkg = sys.modules.get(PACKAGE)
    if pkg is None:
        pkg = importlib.import_module(PACKAGE)
    pkg.__path__[:] = [str(cache_dir())]
    return pkg


def load(model, target: str, emit, generate):
    """The module of ``model``: from the cache, or ``generate()``-d, written there and imported.
    Each call returns a fresh module object (registered under its importable name)."""
    from .pipeline import write_atomic
    from .program import derivatives
    emit = derivatives(emit if emit is not None else model.derivatives)
    name = stem(model, target, emit)
    path = cache_dir() / f"{name}.py"
    reuse = os.environ.get("SYMGRAD_CACHE", "1").strip().lower() not in ("0", "off", "false", "no")
    source = path.read_text(encoding="utf-8") if reuse and path.is_file() else None
    if source is None:
        source = generate()
        try:
            write_atomic(path, source)
        except OSError:
            from .emit import load_source
            return load_source(source, f"{model.name or 'model'}_{target}")
    _package()
    full = f"{PACKAGE}.{name}"
    spec = importlib.util.spec_from_file_location(full, path)
    module = importlib.util.module_from_spec(spec)
    linecache.cache.pop(str(path), None)  # tracebacks read the file as it is now
    sys.modules[full] = module
    try:
        exec(compile(source, str(path), "exec"), module.__dict__)  # noqa: S102 - our own output
    except BaseException:
        sys.modules.pop(full, None)
        raise
    return module
