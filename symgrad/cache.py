"""The module cache of :func:`symgrad.compile` (:func:`compile_model`): generated modules as files,
imported as modules.

``symgrad.compile(model)`` writes the generated source to ``cache_dir()/<name>_<target>_<key>.py``
(atomically) and imports it as ``symgrad._generated.<name>_<target>_<key>``: a real module, so
``inspect.getsource`` works, tracebacks show the generated lines, and its functions pickle (a
process started with ``spawn`` imports the same name from the same folder).  The key hashes
everything the source depends on -- the model (expression, ``wrt``, name, and each
``symgrad.Function``'s module paths, through its derivative Functions: ``Model.source_hash``), its
derivative functions (``emit``, by default the model's ``derivatives``), the target, the rewrites
switched off (``rewrites_off=``, ``$SYMGRAD_REWRITES_OFF``), the symgrad and SymPy versions and
symgrad's own code -- so a file found under its key is the source
``generate`` would write, and another process, or a later run, imports it without compiling again.
(The key is not a hash of the generated source: that would mean generating it on every call.)

A file ends with a line that holds the sha256 of the source above it; a file without that line,
or whose source does not match it (a write cut short, a disk error, anything else), is discarded
and written again.  The source is compiled from its text on every ``compile`` (no bytecode cache:
a rewritten file is never run from a stale one).

``cache_dir()`` is ``$SYMGRAD_CACHE_DIR``, else ``$XDG_CACHE_HOME/symgrad``, else
``~/.cache/symgrad``.  Where that folder cannot be written, modules go to this user's own folder
in the temp folder (``<tempdir>/symgrad-cache-<uid>``, used only while no one else can write it),
with a warning, once per folder and process; where neither can be written, to an in-memory module
(its source registered with ``linecache``; its functions cannot be pickled), again with a warning.
``clear()`` removes the files it wrote in both folders.  ``SYMGRAD_CACHE=0`` turns reuse off:
every ``compile`` generates again (and rewrites the file).  That is for changes the key cannot
see -- a compiler patched at run time, as mutation tests do (the test suite runs so).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import linecache
import os
import re
import shutil
import stat
import sys
import tempfile
import warnings
from pathlib import Path

import sympy

from ._version import __version__
from .emit import load_source, target_named
from .pipeline import generate, write_atomic
from .program import derivatives
from .rewrites import Rewriter

PACKAGE = "symgrad._generated"
_CODE_HASH: str | None = None
_SEAL = "\n# symgrad module cache: sha256 "   # the last line: the hash of the source above it
_WARNED: set = set()                          # the folders already warned about


def cache_dir() -> Path:
    """Where compiled modules are kept (see the module docstring)."""
    env = os.environ.get("SYMGRAD_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "symgrad"


def _fallback_dir() -> Path:
    """Where modules go when ``cache_dir()`` cannot be written: this user's folder in the temp folder."""
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return Path(tempfile.gettempdir()) / f"symgrad-cache-{user}"


def _private(folder: Path) -> bool:
    """``folder`` is a folder of this user's that no one else can write: the temp folder is
    shared, and a module another user put there must never be imported."""
    try:
        st = folder.lstat()
    except OSError:
        return False
    mine = not hasattr(os, "getuid") or st.st_uid == os.getuid()
    return stat.S_ISDIR(st.st_mode) and mine and not st.st_mode & 0o022


def search_path() -> list[str]:
    """The folders ``symgrad._generated`` imports from: the cache folder, and the fallback
    where it is private."""
    fallback = _fallback_dir()
    return [str(cache_dir())] + ([str(fallback)] if _private(fallback) else [])


def clear() -> int:
    """Remove the cached modules (and their bytecode); returns how many modules were removed."""
    removed = 0
    for folder in map(Path, search_path()):
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


def stem(model, target: str, emit, rewrites_off=()) -> str:
    """``<name>_<target>_<key>``: a Python identifier, and the cache file's name (``rewrites_off``:
    the names of the rewrites switched off, sorted)."""
    key = hashlib.sha256("|".join([model.source_hash(), target, ",".join(emit), __version__,
                                   sympy.__version__, _code_hash(), *rewrites_off]).encode()).hexdigest()[:16]
    name = re.sub(r"\W", "_", str(model.name or "model"), flags=re.ASCII)[:40]
    return f"m_{name}_{target}_{key}"


def _package():
    """``symgrad._generated``, a package whose folder is the cache directory (for imports)."""
    pkg = sys.modules.get(PACKAGE)
    if pkg is None:
        pkg = importlib.import_module(PACKAGE)
    pkg.__path__[:] = search_path()
    return pkg


def _read(path: Path) -> str | None:
    """The source in the cache file ``path``; None where there is none or it is not whole (its
    last line is not the hash of the rest: a cut-short write, a disk error, another program)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    body, seal, digest = data.rpartition(_SEAL.encode())
    if not seal or digest != hashlib.sha256(body).hexdigest().encode() + b"\n":
        return None
    return body.decode("utf-8")


def _write(path: Path, source: str, private: bool) -> None:
    """Write ``source`` and its sealing line to ``path``; ``private``: only into a folder of
    this user's that no one else can write (an OSError otherwise)."""
    if private:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _private(path.parent):
            raise OSError("it is not a folder of this user's that only this user can write")
    write_atomic(path, f"{source}{_SEAL}{hashlib.sha256(source.encode()).hexdigest()}\n")


def _warn(folder: Path, exc: OSError, instead: str) -> None:
    """Say once per folder and process that ``folder`` cannot be written, and where modules go."""
    if str(folder) in _WARNED:
        return
    _WARNED.add(str(folder))
    why = exc.strerror or str(exc)
    warnings.warn(f"symgrad: cannot write the module cache {folder} ({why}); {instead} "
                  "(set SYMGRAD_CACHE_DIR to a writable folder)", RuntimeWarning, stacklevel=4)


def compile_model(model, target: str = "numpy", emit=None, *, rewrites_off=None):
    """``symgrad.compile``: the generated module of ``model``, imported -- written to the module
    cache (``$SYMGRAD_CACHE_DIR``, reused across processes) and imported from there, so that
    ``inspect``, tracebacks and pickling see a real module.  ``emit`` names its derivative
    functions (``("grad", "vjp", "jvp", "jacobian", "hvp", "hessian")``, any subset; default: the
    model's ``derivatives``); ``rewrites_off`` switches rewrites off (:mod:`symgrad.rewrites`)."""
    target_named(target)
    off = Rewriter(rewrites_off).off  # with $SYMGRAD_REWRITES_OFF's; an unknown name is an error here
    return load(model, target, emit, lambda: generate(model, target, emit, rewrites_off=off), sorted(off))


def load(model, target: str, emit, generate, rewrites_off=()):
    """The module of ``model``: from the cache, or ``generate()``-d, written there and imported.
    Each call returns a fresh module object (registered under its importable name)."""
    emit = derivatives(emit if emit is not None else model.derivatives)
    name = stem(model, target, emit, rewrites_off)
    reuse = os.environ.get("SYMGRAD_CACHE", "1").strip().lower() not in ("0", "off", "false", "no")
    folders = [cache_dir(), _fallback_dir()]
    for folder in folders if reuse else ():
        path = folder / f"{name}.py"
        found = _read(path) if folder == folders[0] or _private(folder) else None
        if found is not None:
            return _import(name, path, found)
    source = generate()
    for folder, instead in zip(folders, (f"compiled modules go to {folders[1]}",
                                         "compiled modules stay in memory, and their functions cannot be pickled")):
        path = folder / f"{name}.py"
        try:
            _write(path, source, private=folder != folders[0])
        except OSError as exc:
            _warn(folder, exc, instead)
            continue
        return _import(name, path, source)
    return load_source(source, f"{model.name or 'model'}_{target}")


def _import(name: str, path: Path, source: str):
    """``source`` (the text of ``path``) executed as the module ``symgrad._generated.<name>``."""
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
