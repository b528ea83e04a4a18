"""The PyTorch target: the NumPy module's layout and API on ``torch.Tensor`` (CPU or CUDA).

Generated modules take tensors (or Python numbers, or anything ``torch.as_tensor`` reads) and
return tensors on the inputs' device, in their float type (float32 stays float32; integers, bools
and Python numbers become float64, as for NumPy).  Bodies are printed by :class:`TorchBody`, the
NumPy printer with what torch spells differently: factories take ``device=_dev`` besides
``dtype=_dt`` (``_promote`` returns both), copies are ``torch.clone``, shapes are ``x.shape``,
and ``out=`` goes only to functions whose torch form takes it -- so a dead tensor's memory is
reused as in NumPy modules.  The ops torch's functions take tensors only for (``maximum``,
``minimum``, ``arctan2``, ``logaddexp``) go through small helpers that make a Python number a
tensor of the other argument's type.  No autograd: the derivatives are symgrad's own, and inputs
that require grad are detached on entry (autograd cannot record ``out=`` work).  The run-time
helpers are the functions of :mod:`symgrad.runtime.torch_helpers`.

Ops torch has no form for here (scipy.special functions, a user's ``symgrad.Function``,
NumPy-only index helpers) are refused at compile time by name (``Target.missing``); so are the
derivative functions whose drivers are written for NumPy (``jacobian``, ``hessian``...).
"""
from __future__ import annotations

import ast
import pathlib
import re

from ..ops import OPS
from .printer import Body
from .printing import VIEWS
from .targets import TARGETS, Target


def _runtime_helpers() -> dict:
    """{name: text} of the functions of :mod:`symgrad.runtime.torch_helpers`, as copied into a
    module (``{m}`` for torch's alias), read with ``ast``: compiling for torch imports no torch."""
    path = pathlib.Path(__file__).resolve().parent.parent / "runtime" / "torch_helpers.py"
    text = path.read_text(encoding="utf-8")
    return {node.name: "\n" + re.sub(r"(?<![\w.])torch\.", "{m}.", ast.get_source_segment(text, node)) + "\n"
            for node in ast.parse(text).body if isinstance(node, ast.FunctionDef)}


_HELPERS = _runtime_helpers()
# _scratch with its per-thread store, and release_scratch beside it
_HELPERS["_scratch"] = "\n_SCRATCH = threading.local()\n\n" + _HELPERS["_scratch"] + "\n" + _HELPERS.pop("release_scratch")

# op -> template where torch's differs from NumPy's ({m}: torch's alias)
_OVERRIDES = {"sigmoid": "{m}.sigmoid({0})", "softplus": "_softplus({0})", "maximum": "_maximum({0}, {1})",
              "minimum": "_minimum({0}, {1})", "arctan2": "_arctan2({0}, {1})",
              "diagonal": "{m}.diagonal({0}).clone()[:, None]"}

# op -> the function that writes it into out=, where torch's differs from NumPy's ufunc
_OUT = {"pow": "{m}.pow", "sigmoid": "{m}.sigmoid", "softplus": "_softplus", "maximum": "_maximum",
        "minimum": "_minimum", "arctan2": "_arctan2", "where": "_where"}

_NO_SPECIAL = "torch has no scipy.special here; compile this model for the numpy target"
_NO_INDEX = "its run-time helper is written for NumPy arrays; compile this model for the numpy target"
_MISSING = {**{name: _NO_SPECIAL for name, op in OPS.items() if op.special is not None},
            "polygamma": _NO_SPECIAL,
            "call": "a symgrad.Function runs NumPy code; compile this model for the numpy target",
            **{name: _NO_INDEX for name in ("slice", "unslice", "onehot", "shift", "kron_a", "kron_b")}}


class TorchBody(Body):
    """The NumPy body printer, with torch's spellings (see the module docstring)."""

    fast_path = False  # Python numbers become tensors: no plain-float path
    promoted = "_dt, _dev"
    factory = "dtype=_dt, device=_dev"
    views = VIEWS | {"item", "entry"}  # x[0, 0] is a 0-d view of x in torch, a copy in NumPy

    def _print_where(self, n, a):
        if self.scalar_branches(n):  # torch.where of two numbers would be float32
            return f"_where({a[0]}, {self.m}.tensor({a[1]}, {self.factory}), {a[2]})"
        return f"_where({a[0]}, {a[1]}, {a[2]})"  # its condition may be a Python bool (dims compared)

    def _print_maximum(self, n, a):
        return self.clamp(n, a) or self.template(n, a)

    _print_minimum = _print_maximum

    def clamp(self, n, a, out: str = "") -> str | None:
        """``maximum``/``minimum`` of a tensor and a literal as ``torch.clamp_min``/``clamp_max``
        (NaN propagates, as NumPy's; no tensor made for the number), into ``out`` when given;
        None when neither argument is a literal."""
        consts = [k for k, x in enumerate(n.args) if x.op == "const"]
        if len(consts) != 1:
            return None
        x, c = a[1 - consts[0]], a[consts[0]]
        return f"{self.m}.clamp_{'min' if n.op == 'maximum' else 'max'}({x}, {c}{', out=' + out if out else ''})"

    def may_alias(self, n) -> bool:
        return n.op != "matmul"  # torch's elementwise out= may be an input; a product's may not

    def copy(self, text: str) -> str:
        return f"{self.m}.clone({text})"

    def shape_of(self, text: str) -> str:
        return f"tuple({text}.shape)"

    def into(self, n, out: str, guard: bool = True) -> str:
        return super().into(n, out, guard=False)  # every value is a tensor: no _buf guard

    def out_call(self, n, a, out: str) -> str:
        fn = _OUT.get(n.op)
        return super().out_call(n, a, out) if fn is None else f"{fn.format(m=self.m)}({', '.join(a)}, out={out})"

    def _into_maximum(self, n, a, out):
        return self.clamp(n, a, out) or self.out_call(n, a, out)

    _into_minimum = _into_maximum

    def _into_softplus(self, n, a, out):
        return self.out_call(n, a, out)  # _softplus(x, out=), no NumPy logaddexp(0, x)


TARGETS["torch"] = Target("torch", "torch", "torch", body=TorchBody, overrides=_OVERRIDES, missing=_MISSING,
                          helpers=_HELPERS, derivatives=("grad", "vjp", "jvp", "hvp"))
