"""The registry of named rewrites and the :class:`Rewriter` a graph is built with.

A rewrite is a small function ``fn(G, op, *args, attr=None)`` that returns a replacement node for
``op(*args)`` or ``None``; it builds its replacement with the graph's builders, so what it builds is
rewritten in turn.  It is registered into one of the ordered phases with a decorator naming the ops
it applies to (:data:`ELEMENTWISE`: every elementwise op)::

    @stabilize("log")
    def log1p(G, op, a, attr=None):
        "log(1 + x) is log1p(x)"
        ...

The :class:`Rewriter` tries, for each node the graph is asked to build, the rewrites of its op in
phase order (canonicalize, then stabilize, then specialize; within a phase, in the order they are
registered), and the first that returns a node wins.  It records each firing (:attr:`Rewriter.fired`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, NamedTuple

from ..errors import SymgradError
from ..ops import OPS

PHASES = ("canonicalize", "stabilize", "specialize")
ELEMENTWISE = "elementwise"  # in a rewrite's ops: every elementwise op of the op table
OFF_ENV = "SYMGRAD_REWRITES_OFF"


@dataclass(frozen=True)
class Rewrite:
    """One named rewrite: ``fn`` applies to the nodes of ``ops`` in ``phase``."""
    name: str
    phase: str
    ops: tuple
    fn: Callable

    @property
    def doc(self) -> str:
        """What it does: its docstring's first paragraph, on one line."""
        return " ".join((self.fn.__doc__ or "").strip().split("\n\n")[0].split())

    def applies_to(self, op: str) -> bool:
        return op in self.ops or (ELEMENTWISE in self.ops and OPS[op].elementwise)


_REGISTRY: list[Rewrite] = []


def _phase(phase: str):
    def register(*ops: str):
        def add(fn):
            if any(r.name == fn.__name__ for r in _REGISTRY):
                raise ValueError(f"a rewrite named {fn.__name__} is registered already")
            _REGISTRY.append(Rewrite(fn.__name__, phase, ops, fn))
            return fn
        return add
    return register


canonicalize, stabilize, specialize = (_phase(p) for p in PHASES)


def registered() -> list[Rewrite]:
    """Every registered rewrite, in the order the rewriter tries them (phase, then registration)."""
    return sorted(_REGISTRY, key=lambda r: PHASES.index(r.phase))


def names() -> list[str]:
    return [r.name for r in registered()]


class Fired(NamedTuple):
    """One rewrite that fired: ``op(*args)`` (attribute ``attr``) became ``result``."""
    rewrite: Rewrite
    op: str
    args: tuple
    attr: object
    result: object


def _off_names(off) -> frozenset:
    """The names switched off: ``off`` (names, or one comma separated string) and ``$SYMGRAD_REWRITES_OFF``."""
    if isinstance(off, str):
        off = off.split(",")
    wanted = {n.strip() for n in [*(off or ()), *os.environ.get(OFF_ENV, "").split(",")] if n.strip()}
    unknown = sorted(wanted - set(names()))
    if unknown:
        raise SymgradError(f"no rewrite named {', '.join(unknown)} (switched off by rewrites_off= or "
                           f"${OFF_ENV}); the rewrites are: {', '.join(sorted(names()))}")
    return frozenset(wanted)


class Rewriter:
    """Applies the registered rewrites (less those switched off) to each node a graph builds.

    ``off``: names switched off (also read from ``$SYMGRAD_REWRITES_OFF``, comma separated); an
    unknown name is a SymgradError listing the names.  ``rules``: another list of rewrites (tests)."""

    def __init__(self, off=None, rules: list[Rewrite] | None = None):
        self.off = _off_names(off) if rules is None else frozenset(off or ())
        rules = registered() if rules is None else rules
        self.rules = [r for r in rules if r.name not in self.off]
        self._by_op: dict[str, tuple] = {}
        self.fired: list[Fired] = []

    def rules_for(self, op: str) -> tuple:
        found = self._by_op.get(op)
        if found is None:
            found = self._by_op[op] = tuple(r for r in self.rules if r.applies_to(op))
        return found

    def __call__(self, G, op: str, args: tuple, attr):
        for rule in self.rules_for(op):
            out = rule.fn(G, op, *args, attr=attr)
            if out is not None:
                self.fired.append(Fired(rule, op, args, attr, out))
                return out
        return None
