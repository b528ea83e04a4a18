"""The CuPy target: the NumPy module's layout, with elementwise work fused into CUDA kernels.

The generated module has exactly the NumPy module's API; only function bodies differ.
:class:`CupyBody` prints each maximal cluster of elementwise nodes (every ``OPS[op].elementwise``
op: arithmetic, functions, ``where``, comparisons, logic; broadcasts that the consumer does by
itself are seen through) into one ``cp.ElementwiseKernel`` defined at module level, written with
the C table of :mod:`symgrad.emit.cuda`.  A kernel reads each of its inputs once and writes only
the values needed outside it -- forward values the backward pass reuses, masks (as ``bool``, one
byte), cotangents -- so the seed-003 ``value_and_grad`` is one kernel: read x, y; write f, df/dx,
df/dy.  Everything else is printed as by the NumPy target: matmuls stay on cuBLAS through ``@``
(transposed operands are views), reductions are CuPy's ``.sum``/``cp.sum`` (tuned CUB reductions;
a ReductionKernel fusing an elementwise producer is left for later), ``item``, ``trace``...

Which nodes form a kernel, and the order of kernels and other nodes, is decided by the
target-neutral pass :class:`symgrad.emit.fusion.Fusion` (node kinds, clusters, shape sources of
dynamic values, schedule: see :mod:`symgrad.emit.fusion`); :class:`CupyBody` only asks it for its
units and prints them -- a cluster as a kernel written with the CUDA C table, any other node as
:class:`~symgrad.emit.printer.Body` prints it.  Scalars built from dimensions and constants only
stay Python numbers (``1.0 / N``).

Types: every kernel binds ``T`` from its arrays.  The shared prologue (``_promote``) moves array
inputs to the device in one floating type (float32 stays float32); ``_device`` then makes the
scalar Symbols' Python numbers 0-d arrays of that type.  Values built only from dimensions and
constants are Python numbers, cast to ``T`` by CuPy when passed; literals are ``(T)0.5``.
Kernel names are deterministic: ``_fwd_k0`` (Python) / ``symgrad_<model>_fwd_k0`` (CUDA, for
profilers).
"""
from __future__ import annotations

import re

from ..ops import is_bool
from .cuda import RESERVED, c_expr, c_pow
from .fusion import HOST, INPUT, Cluster, Fusion
from .fused import FusedBody
from .printing import literal
from .text import c_comment
from .targets import TARGETS, Target

_HELPER_KERNEL_NAME = '''def _kernel_name(kernel):
    """CUDA name of a kernel of this module (shown by profilers)."""
    return "symgrad_" + "".join(c if c.isascii() and c.isalnum() else "_" for c in MODEL) + "_" + kernel
'''

_HELPER_DEVICE = '''def _device(dt, *inputs):
    """Inputs that are Python numbers as 0-d device arrays: a kernel binds its type T from arrays."""
    return tuple(cp.asarray(x, dtype=dt) for x in inputs)
'''

_HELPER_SUM_TO = '''def _sum_to(g, x, value, copy=False):
    """Gradient of the input x from the cotangent g: broadcast g like the value, sum to x's shape."""
    shape, g = x.shape, cp.asarray(g, dtype=x.dtype)
    shapes = [g.shape, getattr(value, "shape", ()), shape]
    ndim = max(len(s) for s in shapes)
    full = tuple(max(dims) if 0 not in dims else 0
                 for dims in zip(*[(1,) * (ndim - len(s)) + tuple(s) for s in shapes]))
    if g.shape == shape == full:
        return g.copy() if copy else g
    lead = ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and full[lead + i] != 1)
    g = cp.broadcast_to(g, full)
    return g.sum(axis=axes).reshape(shape) if axes else g.copy()
'''


class CupyBody(FusedBody):
    """Prints a function body with each elementwise cluster as one ElementwiseKernel call: the
    clusters and their order come from the :class:`~symgrad.emit.fusion.Fusion` pass."""

    def emit(self, order, users, final):
        self.final, self.users = final, users
        self.prefix = self.kernel_prefix
        self.definitions["_kernel_name"] = _HELPER_KERNEL_NAME
        self.fusion = Fusion(order, users, final, self.forward, set(self.names))
        self._convert_inputs(order)
        self._print_units(self._emit_kernel)

    # -- printing -------------------------------------------------------------------------------
    def _convert_inputs(self, order):
        scalars = [self.names[n.id] for n in order if self.fusion.kind_of[n.id] == INPUT and n.shape is None]
        if scalars:
            self.definitions["_device"] = _HELPER_DEVICE
            lhs = ", ".join(scalars) + ("," if len(scalars) == 1 else "")
            self.lines.append(f"{lhs} = _device(_dt, {', '.join(scalars)})")

    def _print_sum_to(self, n, a):
        self.definitions["_sum_to"] = _HELPER_SUM_TO
        copy = ", copy=True" if self.fusion.kind_of[self.fusion.real(n.args[0]).id] == INPUT else ""
        return f"_sum_to({a[0]}, {a[1]}, {a[2]}{copy})"

    def _emit_kernel(self, c: Cluster) -> None:
        ids, real = {m.id for m in c.members}, self.fusion.real
        used_c = set(RESERVED)

        def c_name(want: str, fallback: str) -> str:
            name = want if re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", want) else fallback
            while name in used_c:
                name += "_"
            used_c.add(name)
            return name

        params, call_args, local = [], [], {}
        for m in c.members:
            for a in map(real, m.args):
                if a.id in ids or a.id in local or a.op == "const":
                    continue
                text = self.names[a.id]
                local[a.id] = c_name(text, f"in{len(params)}")
                params.append(f"{_ctype(a)} {local[a.id]}")
                call_args.append(text)
        if not any(self.fusion.kind_of[real(a).id] != HOST for m in c.members for a in m.args if real(a).id not in ids):
            # only Python scalars in: one goes as a 0-d array, so that the kernel can bind T
            if call_args:
                call_args[0] = f"{self.m}.asarray({call_args[0]}, dtype=_dt)"
            else:
                params.append(f"T {c_name('zero', 'zero')}")
                call_args.append(f"{self.m}.zeros((), dtype=_dt)")
        body, outputs = [], []
        for k, m in enumerate(c.members):
            local[m.id] = c_name(f"v{k}", f"v{k}")
        for m in c.members:
            args = [local[a.id] if a.op != "const" else literal(a.attr, cast="(T)") for a in map(real, m.args)]
            if m.op == "pow" and real(m.args[1]).op == "const":
                text = c_pow(args[0], real(m.args[1]).attr, args[1])
            else:
                text = c_expr(m.op, args)
            line = f"{_ctype(m)} {local[m.id]} = {text};"
            comment = _c_comment(self.describe(m.id, 48))
            body.append(line + (f"  // {comment}" if comment and len(line) < 72 else ""))
            outside = any(u.id not in ids for u in self.fusion.consumers(m))
            if outside or m.id in self.fusion.returned:
                outputs.append(m)
        names = [self.new_name(m) for m in outputs]
        out_c = [c_name(nm, f"out{i}") for i, nm in enumerate(names)]
        body += [f"{oc} = {local[m.id]};" for oc, m in zip(out_c, outputs)]
        kernel = f"_{self.prefix}_k{len([d for d in self.definitions if d.startswith('_' + self.prefix + '_k')])}"
        self.definitions[kernel] = "\n".join([
            f"{kernel} = {self.m}.ElementwiseKernel(",
            f'    "{", ".join(params)}",',
            f'    "{", ".join(f"{_ctype(m)} {oc}" for m, oc in zip(outputs, out_c))}",',
            '    """',
            *("    " + ln for ln in body),
            '    """,',
            f'    _kernel_name("{kernel[1:]}"))', ""])
        line = f"{', '.join(names)} = {kernel}({', '.join(call_args)})"
        comment = self.describe(outputs[0].id, 60)
        self.lines.append(line + (f"  # {comment}" if comment and len(line) < 60 else ""))
        for m, nm in zip(outputs, names):
            self.names[m.id] = nm


def _ctype(n) -> str:
    return "bool" if is_bool(n) else "T"


def _c_comment(text):
    return c_comment(text) if text else None


# what is not fused prints as for NumPy, with ``cp`` for ``np``; special functions without a CUDA C
# form come from cupyx.scipy.special, and where it has none the model is refused at compile time
_NO_BESSEL = ("cupyx.scipy.special has Bessel functions of order 0 and 1 only (j0, j1, i0, i1), "
              "no {0} of any order; compile this model for the numpy target")
TARGETS["cupy"] = Target("cupy", "cupy", "cp", body=CupyBody, overrides={
    "polygamma": "_cupyx_special.polygamma({attr}, {0}).astype(_dt, copy=False)",
    "expint": "_cupyx_special.expn({attr}, {0}).astype(_dt, copy=False)",
    "lambertw": "_real_lambertw(_cupyx_special.lambertw({0}), {0})",
}, missing={"besselj": _NO_BESSEL.format("jv"), "besseli": _NO_BESSEL.format("iv")})
