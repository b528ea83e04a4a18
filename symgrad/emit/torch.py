"""The PyTorch target: the NumPy module's layout and API on ``torch.Tensor`` (CPU or CUDA).

Generated modules take tensors (or Python numbers, or anything ``torch.as_tensor`` reads) and
return tensors on the inputs' device, in their float type (float32 stays float32; integers, bools
and Python numbers become float64, as for NumPy).  Bodies are printed by :class:`TorchBody`, the
NumPy printer with what torch spells differently: factories take ``device=_dev`` besides
``dtype=_dt`` (``_promote`` returns both), copies are ``torch.clone``, shapes are ``x.shape``,
and ``out=`` goes only to functions whose torch form takes it -- so a dead tensor's memory is
reused as in NumPy modules.  The ops torch's functions take tensors only for (``maximum``,
``minimum``, ``arctan2``, ``logaddexp``) go through small helpers that make a Python number a
tensor of the other argument's type.  No autograd: every function runs under
``torch.no_grad()`` work, gradients are symgrad's own.

Ops torch has no form for here (scipy.special functions, a user's ``symgrad.Function``,
NumPy-only index helpers) are refused at compile time by name (``Target.missing``); so are the
derivative functions whose drivers are written for NumPy (``jacobian``, ``hessian``...).
"""
from __future__ import annotations

import re

from ..ops import OPS
from .printer import Body
from .targets import TARGETS, Target

_HELPER_PROMOTE = '''
def _promote(*inputs):
    """(dt, dev, *inputs) with every input a tensor of one float type dt on one device dev:
    float32 tensors stay float32; Python numbers, bools, integer tensors and other array-likes
    bind like float64.  The device is the first tensor's (the CPU without one).  A complex or
    non-numeric input is a TypeError naming it."""
    first = inputs[0] if type(inputs[0]) is torch.Tensor else None
    if first is not None and first.dtype in (torch.float64, torch.float32) and all(
            type(x) is torch.Tensor and x.dtype is first.dtype and x.device == first.device for x in inputs):
        return (first.dtype, first.device) + inputs  # tensors of one type (the common case)
    tensors = []
    for name, x in zip(INPUTS, inputs):
        try:
            t = x if isinstance(x, torch.Tensor) else torch.as_tensor(
                x, dtype=torch.float64 if type(x) in (float, int, bool) else None)
        except Exception:  # noqa: BLE001 - whatever torch refuses
            t = None
        if t is None or t.is_complex():
            what = type(x).__name__ + (f" of dtype {t.dtype}" if t is not None else "")
            raise TypeError(f"{MODEL}: input {name!r} must be real numbers, got {what}")
        tensors.append(t)
    floats = [t.dtype for t, x in zip(tensors, inputs) if t.is_floating_point() and type(x) not in (float, int, bool)]
    dt = torch.float64 if not floats or any(f not in (torch.float32, torch.float64) for f in floats) else (
        torch.float32 if all(f is torch.float32 for f in floats) else torch.float64)
    dev = next((t.device for t, x in zip(tensors, inputs) if isinstance(x, torch.Tensor)), torch.device("cpu"))
    return (dt, dev) + tuple(t.to(device=dev, dtype=dt) for t in tensors)
'''

_HELPER_DIMS = '''
def _dims(arrays):
    """Read the dimensions of SHAPES from the tensors' shapes and check that they agree."""
    dims = {}
    for name, spec in SHAPES.items():
        shape = tuple(arrays[name].shape)
        ok = len(shape) == len(spec)
        for want, got in zip(spec, shape):
            ok = ok and dims.setdefault(want, got) == got if isinstance(want, str) else ok and want == got
        if not ok:
            raise ValueError(f"{MODEL}: input {name!r} has shape {shape}, expected {spec} "
                             f"(dimensions so far: {dims})")
        if 0 in shape:
            raise ValueError(f"{MODEL}: input {name!r} is empty (shape {shape}); every dimension "
                             "must be at least 1")
    return tuple(dims[d] for d in DIMS)
'''

_HELPER_SCALARS = '''
def _scalars(**values):
    """Check that each scalar input used inside a matrix expression is one number (a tensor of one
    entry and at most two axes broadcasts like it): a larger one would be broadcast against the
    matrices' own axes."""
    for name, x in values.items():
        if x.dim() and (x.numel() != 1 or x.dim() > 2):
            raise ValueError(f"{MODEL}: input {name!r} is a scalar Symbol used inside a matrix expression, "
                             f"so it must be one number (a 0-d tensor, or shape (1,) or (1, 1)), got shape "
                             f"{tuple(x.shape)}")
'''

_HELPER_SEED = '''
def _seed(x, dt, what, *shapes):
    """A cotangent, tangent or direction as a tensor of the inputs' float type dt and exactly the
    shape it is for (the broadcast of shapes); a TypeError for non-real values, a ValueError for
    another shape."""
    shape = tuple(torch.broadcast_shapes(*shapes))
    try:
        a = x if isinstance(x, torch.Tensor) else torch.as_tensor(x)
    except Exception:  # noqa: BLE001 - whatever torch refuses
        a = None
    if a is None or a.is_complex():
        raise TypeError(f"{MODEL}: {what} must be real numbers, got {type(x).__name__}")
    if tuple(a.shape) != shape:
        raise ValueError(f"{MODEL}: {what} has shape {tuple(a.shape)}, expected {shape}")
    return a.to(dtype=dt)
'''

_HELPER_SUM_TO = '''
def _sum_to(g, x, value):
    """Gradient of the input x from the cotangent g: broadcast g like the value, sum to x's shape."""
    if type(g) is torch.Tensor and g.dtype == x.dtype and g.shape == x.shape == value.shape:
        return g  # nothing to sum: the common case
    g = torch.as_tensor(g, dtype=x.dtype, device=x.device)
    shape = tuple(x.shape)
    full = tuple(torch.broadcast_shapes(g.shape, value.shape, x.shape))
    lead = len(full) - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and full[lead + i] != 1)
    if axes:
        return torch.broadcast_to(g, full).sum(dim=axes).reshape(shape)
    return torch.broadcast_to(g, shape).clone() if tuple(g.shape) != shape else g
'''

_HELPER_SCRATCH = '''
_SCRATCH = threading.local()


def _scratch(key, shape, dtype, device):
    """A work tensor for temporaries that are never returned, kept between calls (one set per
    thread): fresh memory costs a page fault per 4 KiB (on a GPU, an allocator call)."""
    if not shape:
        return None
    tensors = _SCRATCH.__dict__
    a = tensors.get(key)
    if a is None or a.shape != shape or a.dtype != dtype or a.device != device:
        a = tensors[key] = torch.empty(shape, dtype=dtype, device=device)
    return a


def release_scratch():
    """Free the work tensors this module keeps for the calling thread."""
    _SCRATCH.__dict__.clear()
'''

_HELPER_TENSORS = '''
def _tensors(a, b):
    """a and b as tensors: a Python number takes the other's type and device."""
    if not isinstance(a, torch.Tensor):
        a = torch.as_tensor(a, dtype=b.dtype, device=b.device)
    elif not isinstance(b, torch.Tensor):
        b = torch.as_tensor(b, dtype=a.dtype, device=a.device)
    return a, b
'''

# the torch functions that take tensors only: a helper of the same shape each
_BINARY = {"_maximum": "maximum", "_minimum": "minimum", "_arctan2": "arctan2"}
_HELPERS_BINARY = {name: f'''
def {name}(a, b, out=None):
    """torch.{fn} of tensors or Python numbers (NaN propagates, as NumPy's)."""
    return torch.{fn}(*_tensors(a, b), out=out)
''' for name, fn in _BINARY.items()}

_HELPER_SOFTPLUS = '''
def _softplus(x, out=None):
    """log(1 + exp(x)) as logaddexp(x, 0), which never overflows."""
    return torch.logaddexp(x, x.new_zeros(()), out=out)
'''

_HELPER_WHERE = '''
def _where(c, a, b, out=None):
    """where(c, a, b), written into out when given (out may be a's or b's own tensor)."""
    return torch.where(c, a, b) if out is None else torch.where(c, *_tensors(a, b), out=out)
'''

_HELPER_LOGSUMEXP = '''
def _logsumexp(z, axis):
    """log(sum(exp(z), axis)) of a matrix (kept 2-d along axis; a 0-d tensor for axis None)."""
    return torch.logsumexp(z, dim=axis, keepdim=True) if axis is not None else torch.logsumexp(z, dim=(0, 1))
'''

# written with torch's name; the module's own alias is written in (an input may be named torch)
_HELPERS = {name: re.sub(r"(?<![\w.])torch\.", "{m}.", text) for name, text in {
    "_promote": _HELPER_PROMOTE, "_dims": _HELPER_DIMS, "_scalars": _HELPER_SCALARS, "_seed": _HELPER_SEED,
    "_sum_to": _HELPER_SUM_TO, "_scratch": _HELPER_SCRATCH, "_tensors": _HELPER_TENSORS, **_HELPERS_BINARY,
    "_softplus": _HELPER_SOFTPLUS, "_where": _HELPER_WHERE, "_logsumexp": _HELPER_LOGSUMEXP}.items()}

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

    def _print_where(self, n, a):
        if self.scalar_branches(n):  # torch.where of two numbers would be float32
            return f"{self.m}.where({a[0]}, {self.m}.tensor({a[1]}, {self.factory}), {a[2]})"
        return super()._print_where(n, a)

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
