"""Run-time helpers of the torch target's modules, as real functions.

``symgrad.emit.torch`` copies each one a module calls into it as this file's text (read with
``ast``, so that compiling for torch does not import torch), writing the module's own alias of
torch (``torch_`` where an input is named torch).  Here they are linted and unit-tested
(``tests/test_torch_target.py``).  They read the generated module's ``MODEL``, ``INPUTS``,
``SHAPES``, ``DIMS`` and ``_SCRATCH``: the module defines them; the values below stand in for tests.
"""
from __future__ import annotations

import threading

import torch

# the generated module's own constants (placeholders: each module defines its own)
MODEL = "model"
INPUTS: tuple = ()
SHAPES: dict = {}
DIMS: tuple = ()
_SCRATCH = threading.local()


def _promote(*inputs):
    """(dt, dev, *inputs) with every input a tensor of one float type dt on one device dev:
    float32 tensors stay float32; Python numbers, bools, integer tensors and other array-likes
    bind like float64.  The device is the first tensor's (the CPU without one).  A complex or
    non-numeric input is a TypeError naming it."""
    first = inputs[0] if type(inputs[0]) is torch.Tensor else None
    if first is not None and first.dtype in (torch.float64, torch.float32) and all(
            type(x) is torch.Tensor and x.dtype is first.dtype and x.device == first.device
            and not x.requires_grad for x in inputs):
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
    return (dt, dev) + tuple(t.detach().to(device=dev, dtype=dt) for t in tensors)  # no autograd tape


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


def _scalars(**values):
    """Check that each scalar input used inside a matrix expression is one number (a tensor of one
    entry and at most two axes broadcasts like it): a larger one would be broadcast against the
    matrices' own axes."""
    for name, x in values.items():
        if x.dim() and (x.numel() != 1 or x.dim() > 2):
            raise ValueError(f"{MODEL}: input {name!r} is a scalar Symbol used inside a matrix expression, "
                             f"so it must be one number (a 0-d tensor, or shape (1,) or (1, 1)), got shape "
                             f"{tuple(x.shape)}")


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
    return a.detach().to(dtype=dt)


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


def _tensors(a, b):
    """a and b as tensors: a Python number takes the other's type and device."""
    if not isinstance(a, torch.Tensor):
        a = torch.as_tensor(a, dtype=b.dtype, device=b.device)
    elif not isinstance(b, torch.Tensor):
        b = torch.as_tensor(b, dtype=a.dtype, device=a.device)
    return a, b


def _maximum(a, b, out=None):
    """torch.maximum of tensors or Python numbers (NaN propagates, as NumPy's)."""
    return torch.maximum(*_tensors(a, b), out=out)


def _minimum(a, b, out=None):
    """torch.minimum of tensors or Python numbers (NaN propagates, as NumPy's)."""
    return torch.minimum(*_tensors(a, b), out=out)


def _arctan2(a, b, out=None):
    """torch.arctan2 of tensors or Python numbers (NaN propagates, as NumPy's)."""
    return torch.arctan2(*_tensors(a, b), out=out)


def _softplus(x, out=None):
    """log(1 + exp(x)) as logaddexp(x, 0), which never overflows."""
    return torch.logaddexp(x, x.new_zeros(()), out=out)


def _where(c, a, b, out=None):
    """where(c, a, b), written into out when given (out may be a's or b's own tensor).  A Python
    bool condition (a comparison of dimensions or numbers) is made a tensor, and with out=, two
    Python number branches take out's type and device."""
    if not isinstance(c, torch.Tensor):  # on the device of the tensors it selects between
        like = next((x for x in (out, a, b) if isinstance(x, torch.Tensor)), None)
        c = torch.as_tensor(c, device=None if like is None else like.device)
    if out is None:
        return torch.where(c, a, b)
    if not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor):
        a = torch.as_tensor(a, dtype=out.dtype, device=out.device)
    return torch.where(c, *_tensors(a, b), out=out)


def _logsumexp(z, axis):
    """log(sum(exp(z), axis)) of a matrix (kept 2-d along axis; a 0-d tensor for axis None)."""
    return torch.logsumexp(z, dim=axis, keepdim=True) if axis is not None else torch.logsumexp(z, dim=(0, 1))
