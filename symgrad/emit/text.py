"""The one way names and SymPy text reach generated source: every piece passes through here.

Identifiers come from :class:`symgrad.emit.printer.Namer` (``\\W`` becomes ``_``) and string
literals from ``repr``; everything else a user can name -- the model, its symbols, the SymPy text
of a sub-expression -- lands in docstrings and comments, where a line break would end the comment
and a quote the docstring.  :func:`visible` makes such text one inert line: every character that
is not printable (``\\n``, ``\\r``, ``\\x0b``, ``\\x0c``, ``\\x85``, U+2028/U+2029, other
controls, format and separator characters) and the backslash itself are written as Python
escapes, so the text reads unambiguously and never breaks a line.  :func:`docstring` adds what a
docstring needs on top; :func:`c_comment` is stricter still (CUDA C inside a Python string).
"""
from __future__ import annotations

__all__ = ["visible", "docstring", "c_comment", "literal"]


def _escape(ch: str) -> str:
    if ch == "\\":
        return "\\\\"
    if ch.isprintable() or ch == " ":
        return ch
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def visible(text: str) -> str:
    """``text`` as one line of printable characters, backslashes and others escaped."""
    return "".join(map(_escape, str(text)))


def docstring(*lines: str) -> str:
    """The body of a triple-quoted docstring that reads back as ``lines``, one per line: each
    made :func:`visible` (a line break inside one stays an escape), then backslashes doubled and
    double quotes escaped."""
    return "\n".join(map(visible, lines)).replace("\\", "\\\\").replace('"', '\\"')


def c_comment(text: str) -> str:
    """Text safe after ``//`` in CUDA C that itself sits in a Python string literal: printable
    ASCII without backslashes (a trailing one would splice the next line into the comment; any
    would be read as an escape by Python) or double quotes, and no ``??`` (trigraphs)."""
    out = "".join(ch for ch in str(text) if " " <= ch <= "~" and ch not in '\\"')
    while "??" in out:
        out = out.replace("??", "?")
    return out
