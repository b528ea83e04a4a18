"""Run-time helpers of the NumPy-layout modules (targets numpy, cupy, numba), as real functions.

``symgrad.emit.module`` copies each one a module calls into it with ``inspect.getsource``, writing
the module's own array-module alias for ``np`` (``cp`` in a CuPy module), so the generated text is
this file's text.  Here they are linted and unit-tested (``tests/test_runtime_helpers.py``).  They
read the generated module's constants (``MODEL``, ``INPUTS``, ``SHAPES``, ``DIMS``) and its
``_F64``/``_F32``/``_SCRATCH``: the module defines them; the values below stand in for tests.
"""
from __future__ import annotations

import threading

import numpy as np

# the generated module's own constants (placeholders: each module defines its own)
MODEL = "model"
INPUTS: tuple = ()
SHAPES: dict = {}
DIMS: tuple = ()
_F64, _F32 = np.dtype(np.float64), np.dtype(np.float32)
_SCRATCH = threading.local()


def _promote(*inputs):
    """(dt, *inputs) with every input in one float type dt: float32 arrays stay float32; Python
    numbers, bools and integer arrays bind like float64 (Python numbers as NumPy scalars, so that
    division by zero or a negative base gives inf/nan as for arrays, never an exception or a
    complex number).  A complex or non-numeric input is a TypeError naming it."""
    dt = inputs[0].dtype if type(inputs[0]) is np.ndarray else None
    if dt is _F64 or dt is _F32:
        for x in inputs:  # a loop, not all(...): a generator costs a call per input
            if type(x) is not np.ndarray or x.dtype is not dt:
                break
        else:
            return (dt,) + inputs  # float arrays of one type (the common case): nothing to convert
    arrays = []
    for name, x in zip(INPUTS, inputs):
        if type(x) in (float, int, bool):
            arrays.append(None)
            continue
        try:
            a = x if isinstance(x, np.ndarray) else np.asarray(x)
        except Exception:  # noqa: BLE001 - whatever the array module refuses
            a = None
        if a is None or a.dtype.kind not in "biuf":
            what = type(x).__name__ + (f" of dtype {a.dtype}" if a is not None else "")
            raise TypeError(f"{MODEL}: input {name!r} must be real numbers, got {what}")
        arrays.append(a)
    kinds = [a.dtype if a.dtype.kind == "f" else np.float64 for a in arrays if a is not None]
    dt = np.result_type(*kinds) if kinds else np.result_type(np.float64)
    return (dt,) + tuple(dt.type(x) if a is None else a if a.dtype == dt else a.astype(dt)
                         for x, a in zip(inputs, arrays))


def _dims(arrays):
    """Read the dimensions of SHAPES from the arrays' shapes and check that they agree."""
    dims = {}
    for name, spec in SHAPES.items():
        x = arrays[name]
        shape = x.shape if type(x) is np.ndarray else np.shape(x)  # np.shape has a Python layer
        if shape == spec and 0 not in shape:
            continue  # a static shape, as given
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
    """Check that each scalar input used inside a matrix expression is one number (an array of one
    entry and at most two axes broadcasts like it): a larger array would be broadcast against the
    matrices' own axes."""
    for name, x in values.items():
        if x.shape and (x.size != 1 or len(x.shape) > 2):  # (promoted: an array or a NumPy scalar)
            raise ValueError(f"{MODEL}: input {name!r} is a scalar Symbol used inside a matrix expression, "
                             f"so it must be one number (a 0-d array, or shape (1,) or (1, 1)), got shape {x.shape}")


def _args(inputs):
    """The inputs in INPUTS order (used because some input names are not Python identifiers)."""
    missing = [n for n in INPUTS if n not in inputs]
    extra = [n for n in inputs if n not in INPUTS]
    if missing or extra:
        raise TypeError(f"{MODEL}: missing inputs {missing}, unexpected inputs {extra}")
    return tuple(inputs[n] for n in INPUTS)


def _buf(t):
    """t as an out= array when it is one (values of scalar inputs may be plain numbers)."""
    return t if isinstance(t, np.ndarray) else None


def _scratch(key, shape, dtype):
    """A work array for temporaries that are never returned, kept between calls (one set per
    thread): a fresh array costs a page fault per 4 KiB, more than the arithmetic on it."""
    if not shape:
        return None
    arrays = _SCRATCH.__dict__
    a = arrays.get(key)
    if a is None or a.shape != shape or a.dtype != dtype:
        a = arrays[key] = np.empty(shape, dtype)
    return a


def release_scratch():
    """Free the work arrays this module keeps for the calling thread."""
    _SCRATCH.__dict__.clear()


def _turns(a, b):
    """Whether _matmul computes a @ b as (b.T @ a.T).T, a fresh column-ordered array: in float64,
    for a tall a (rows >= 8 x its columns, more than one) times a b with fewer columns than rows.
    OpenBLAS runs that orientation up to 1.9x faster, and only when it writes a fresh array."""
    return a.shape[1] > 1 and a.dtype == np.float64 and a.shape[0] >= 8 * a.shape[1] and b.shape[1] < b.shape[0]


def _matmul(a, b, out=None):
    """a @ b (into out when given), turned around where _turns says so.  A product over one
    column is the outer product a * b (the same single multiplications)."""
    if _turns(a, b):
        return (b.T @ a.T).T
    if a.shape[1] == 1:
        return np.multiply(a, b, out=out)
    return a @ b if out is None else np.matmul(a, b, out=out)


def _matmul_work(a, b, key):
    """_matmul(a, b) into the work array key, allocated only when the product is not turned
    around (a turned product is a fresh array)."""
    if _turns(a, b):
        return _matmul(a, b)
    return _matmul(a, b, out=_scratch(key, (a.shape[0], b.shape[1]), a.dtype))  # a and b: the inputs' float type


def _colsums(a):
    """a.sum(axis=0, keepdims=True) for a tall array of a few columns, each column's sum one long
    (pairwise) loop: NumPy's own runs one short inner loop per row, 10x slower at 1000 x 2."""
    out = np.empty((1, a.shape[1]), a.dtype)
    for j in range(a.shape[1]):
        out[0, j] = np.add.reduce(a[:, j])
    return out


def _scatter(shape, dtype, *parts):
    """Zeros of shape with each (index, g) of parts added in at index: a sum of one-entry and
    slice gradients (onehot, unslice) as one array."""
    out = np.zeros(shape, dtype)
    for index, g in parts:
        out[index] += g
    return out


def _seed(x, dt, what, *shapes):
    """A cotangent, tangent or direction as an array of the inputs' float type dt and exactly the
    shape it is for (the broadcast of shapes); a TypeError for non-real values, a ValueError for
    another shape."""
    ndim = max(len(s) for s in shapes)
    # NumPy's broadcast: an axis of length 0 beside ones stays empty (max would make it 1)
    shape = tuple(0 if 0 in dims else max(dims) for dims in zip(*[(1,) * (ndim - len(s)) + tuple(s) for s in shapes]))
    try:
        a = np.asarray(x)
    except Exception:  # noqa: BLE001 - whatever the array module refuses
        a = None
    if a is None or a.dtype.kind not in "biuf":
        raise TypeError(f"{MODEL}: {what} must be real numbers, got {type(x).__name__}")
    if a.shape != tuple(shape):
        raise ValueError(f"{MODEL}: {what} has shape {a.shape}, expected {tuple(shape)}")
    return a.astype(dt, copy=False)


def _seeds(given, dt, what, shapes):
    """The arrays of the dict given, one for each name of WRT (shapes: name -> shape), as _seed
    makes them, in WRT order."""
    keys = list(given) if isinstance(given, dict) else None
    if keys is None or set(keys) != set(shapes):
        raise TypeError(f"{MODEL}: {what} must be a dict with the keys {list(shapes)}, got "
                        + (f"the keys {keys}" if keys is not None else type(given).__name__))
    return tuple(_seed(given[n], dt, f"{what}[{n!r}]", s) for n, s in shapes.items())
