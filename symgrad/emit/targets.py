"""Targets are data: the array module, its import, and the op templates that differ from NumPy's.

A template uses ``{m}`` for the array module's alias and ``{0}``, ``{1}``... for the arguments.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import SymgradError


@dataclass(frozen=True)
class Target:
    name: str
    module: str  # the importable module
    alias: str  # the name it is bound to in generated code
    overrides: dict = field(default_factory=dict)  # op name -> template, where it differs
    body: type | None = None  # the emit.printer.Body subclass that prints function bodies, if not Body
    layout: object | None = None  # a module layout of its own (see emit.dask.Layout), if not NumPy's
    missing: dict = field(default_factory=dict)  # op name -> why the target has no implementation
    imports: tuple = ()  # further import lines of its modules (after the array module's)
    needs: tuple = ()  # further libraries its modules need at run time (named in the header)
    preamble: str = ""  # module-level lines after the constants (e.g. a target's own settings)
    helpers: dict = field(default_factory=dict)  # helper name -> its source, where it differs from NumPy's
    derivatives: tuple | None = None  # the kinds (symgrad.kinds) its modules may have; None: every one

    def check_derivatives(self, kinds) -> None:
        """A :class:`SymgradError` naming the derivative kinds the target's modules cannot have."""
        extra = [k for k in kinds if self.derivatives is not None and k not in self.derivatives]
        if extra:
            raise SymgradError(f"the {self.name} target has {', '.join(self.derivatives)} only "
                               f"(asked for {', '.join(extra)})")

    def check(self, op: str) -> None:
        """A :class:`SymgradError` saying why, for an op the target cannot run."""
        if op in self.missing:
            raise SymgradError(f"{op} cannot be compiled for target {self.name}: {self.missing[op]}")

    def template(self, op) -> str | None:
        """The op's template (the target's own where it differs); refused as by :meth:`check`."""
        self.check(op.name)
        return self.overrides.get(op.name, op.code)


TARGETS = {
    "numpy": Target("numpy", "numpy", "np"),
}
