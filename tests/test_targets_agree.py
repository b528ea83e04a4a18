"""Targets against each other: NumPy, Numba, the CuPy target through the NumPy shim of
tests/_cupy_shim.py, Dask and PyTorch (each where installed), on the same models at the same
inputs, derivatives included.

The models: random scalar models of tests/test_random_models.py's grammar (the first seeds whose
model has two inputs or more and ten operations or more) and one of the seed examples' matrix
models (seed 001's one-hidden-layer sigmoid network NLL; Dask cuts its data X, y into blocks of
rows).  The NumPy module is held to the tape (value and gradients); every other target to the
NumPy module: ``value_and_grad`` and ``forward`` on all five, ``vjp``, ``jvp`` and ``hvp``
(random cotangent, tangents, direction) on Numba, the CuPy shim and PyTorch (tensors in; Dask has
no other derivatives).  Few models: a Numba module takes a few seconds to compile.  Bugs planted by hand that it catches: a factor
1.000001 in Numba's sigmoid loop template, in the CuPy sigmoid's C template, and Dask's sum of the
blocks leaving out the first block.
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad import tape
from symgrad.emit import load_source
from symgrad.verify import rel_err, sample_inputs

from _cupy_shim import FakeElementwiseKernel, fake_cupy
from test_random_models import random_expr

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RTOL = 1e-9   # Numba's own exp/log are within a few ulp of NumPy's; sums may run in another order
ROWS, BLOCK = 12, 5


def _random_models(count=2):
    models, seed = {}, 0
    while len(models) < count:
        expr = random_expr(random.Random(seed), 3)
        if len(expr.free_symbols) >= 2 and sp.count_ops(expr) >= 10:
            models[f"random{seed}"] = symgrad.Model(expr, name=f"random{seed}")
        seed += 1
    return models


def _example(file, name):
    return next(m for m in symgrad.load_models(EXAMPLES / file) if m.name == name)


MODELS = {**_random_models(), "seed001_nll": _example("seed001_autodiff.py", "seed001_nll")}


def _inputs(model):
    rng = np.random.default_rng(1)
    if model.dims:
        sizes = {"N": ROWS}  # the data rows: Dask cuts them into blocks of BLOCK
    else:  # broadcast scalars: the gradients are summed down to each input's shape
        sizes = dict(zip(sorted(str(s) for s in model.inputs), [(3, 4), (4,), (3, 1)]))
    return sample_inputs(model, rng, sizes=sizes)


@pytest.fixture
def cupy_shim(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy())
    FakeElementwiseKernel.registry = []


def _modules(model):
    """{target: module}: NumPy, Numba (when installed), the CuPy shim, Dask (when installed)."""
    emit = "vjp,jvp,hvp"
    mods = {"numpy": symgrad.compile(model, emit=emit),
            "cupy-shim": load_source(symgrad.generate(model, "cupy", emit), f"{model.name}_cupy")}
    try:
        import numba  # noqa: F401
        mods["numba"] = symgrad.compile(model, "numba", emit=emit)
    except ImportError:
        pass
    try:
        import dask.array  # noqa: F401
        mods["dask"] = load_source(symgrad.generate(model, "dask"), f"{model.name}_dask")
    except ImportError:
        pass
    try:
        import torch  # noqa: F401
        mods["torch"] = symgrad.compile(model, "torch", emit=emit)
    except ImportError:
        pass
    return mods


def _results(model, mod, x, seeds):
    """{label: array}: every function the module has, at ``x``."""
    u, t = seeds
    wrt = [str(w) for w in model.wrt]
    if mod.TARGET == "torch":  # tensors in, NumPy arrays of the results out
        import torch
        tensor = lambda v: v if isinstance(v, (bool, int, float)) else torch.from_numpy(np.array(v))  # noqa: E731
        x, u, t = {k: tensor(v) for k, v in x.items()}, tensor(u), {k: tensor(v) for k, v in t.items()}
        return {label: a.numpy() for label, a in _calls(mod, wrt, x, u, t).items()}
    if mod.TARGET == "dask":
        import dask
        import dask.array as da
        x = {k: da.from_array(v, chunks=(BLOCK,) + v.shape[1:]) if k in mod.DATA else v for k, v in x.items()}
        with dask.config.set(scheduler="synchronous"):
            value, grads = mod.value_and_grad(**x)
            assert mod.DATA or not model.dims, "no data cut into blocks: Dask's combining goes untested"
            return {"forward": mod.forward(**x), "value": value} | {f"grad {k}": grads[k] for k in wrt}
    return _calls(mod, wrt, x, u, t)


def _calls(mod, wrt, x, u, t):
    """{label: result} of every function of a module with vjp, jvp and hvp."""
    value, grads = mod.value_and_grad(**x)
    out = {"forward": mod.forward(**x), "value": value} | {f"grad {k}": grads[k] for k in wrt}
    _, g = mod.vjp(u, **x)
    _, tangent = mod.jvp(t, **x)
    _, hg, hv = mod.hvp(t, **x)
    return out | {f"vjp {k}": g[k] for k in wrt} | {"jvp": tangent} | {f"hvp grad {k}": hg[k] for k in wrt} \
        | {f"hvp {k}": hv[k] for k in wrt}


@pytest.mark.parametrize("key", sorted(MODELS))
def test_targets_agree_with_each_other_and_numpy_with_the_tape(key, cupy_shim):
    model = MODELS[key]
    x = _inputs(model)
    mods = _modules(model)
    rng = np.random.default_rng(2)
    with np.errstate(all="ignore"):
        want_value, want_grads = tape.value_and_grad(model, **x)
        seeds = (rng.standard_normal(np.shape(want_value)),
                 {k: rng.standard_normal(np.shape(x[k])) for k in want_grads})
        results = {target: _results(model, mod, x, seeds) for target, mod in mods.items()}
    numpy = results.pop("numpy")
    floor = 1e-8 * max([1.0] + [float(np.max(np.abs(a))) for a in (want_value, *want_grads.values())])
    assert rel_err(numpy["value"], want_value, floor) <= RTOL
    assert all(rel_err(numpy[f"grad {k}"], g, floor) <= RTOL for k, g in want_grads.items())
    bad = []
    for target, got in results.items():
        for label, a in got.items():
            ref = numpy[label]
            scale = 1e-8 * max(1.0, float(np.max(np.abs(ref))))
            if np.shape(a) != np.shape(ref) or np.asarray(a).dtype != np.float64 or rel_err(a, ref, scale) > RTOL:
                bad.append(f"{target} {label}: error {rel_err(a, ref, scale):.1e} (shape {np.shape(a)}, dtype "
                           f"{np.asarray(a).dtype}; numpy's {np.shape(ref)})")
    assert not bad, bad
