"""Repeated and interleaved calls (CasADi's checks evaluate twice): a module keeps work arrays
between calls (one set per thread, resized when a shape or dtype changes), so a reuse bug shows only
when calls follow each other.  The same module, called with float32 then float64 inputs, three sets of
shapes, ``forward``, ``value_and_grad`` and ``hvp`` interleaved in shuffled orders, and from several
threads at once, must give bit-for-bit the results of a call made with fresh work arrays
(``release_scratch()`` first), and no later call may change what an earlier one returned.  The
fresh results themselves are held to the tape (value, gradients, and ``hvp`` against differences of
the tape's gradient), so a work array reused while still live within one call fails too.

Targets: NumPy on a handful of the seed examples' models, Numba on one (its compiles are slow).
Bugs planted by hand that it catches: the buffer planner taking returned values as dead (a live
buffer reused), work arrays that hold returned values (NumPy's planner, Numba's loops), and work
arrays shared by all threads instead of one set per thread.
"""
from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad import tape
from symgrad.verify import rel_err, sample_inputs

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MODELS = {m.name: m for f in ("seed001_autodiff.py", "seed002_mlp.py", "seed003_backprop.py", "seed004_softmax.py")
          for m in symgrad.load_models(EXAMPLES / f)}
CASES = [("numpy", name) for name in ("seed001_nll_deep", "seed002_mlp_mse", "seed003_sigmoid_ratio",
                                      "seed004_mlp_ce")]
CASES += [("numba", "seed002_mlp_mse")]
THREADS, ROUNDS = 4, 3


def _input_sets(model):
    """Three sets of inputs, each with a direction for hvp: the first and the last of the same
    shapes (a call overwrites the work arrays of the other's), the middle one of other shapes."""
    rng = np.random.default_rng(0)
    scalars = [str(s) for s in model.inputs if not isinstance(s, sp.MatrixSymbol)]
    other = {str(d): 6 + i for i, d in enumerate(model.dims)} | {k: (2, 5) for k in scalars if not model.dims}
    sets = []
    for sizes in (None, other, None):
        x = sample_inputs(model, rng, sizes=sizes)
        sets.append((x, {str(w): rng.standard_normal(np.shape(x[str(w)])) for w in model.wrt}))
    return sets


def _calls(model, module):
    """[(label, function of no arguments returning a flat list of arrays)]: every function, input
    set and dtype."""
    wrt = [str(w) for w in model.wrt]
    calls = []
    for i, (x, v) in enumerate(_input_sets(model)):
        for dt in (np.float32, np.float64):
            xd = {k: a.astype(dt) for k, a in x.items()}
            vd = {k: a.astype(dt) for k, a in v.items()}
            calls += [
                (f"forward set {i} {dt.__name__}", lambda xd=xd: [module.forward(**xd)]),
                (f"value_and_grad set {i} {dt.__name__}",
                 lambda xd=xd: (lambda r: [r[0], *(r[1][k] for k in wrt)])(module.value_and_grad(**xd))),
                (f"hvp set {i} {dt.__name__}",
                 lambda xd=xd, vd=vd: (lambda r: [r[0], *(r[1][k] for k in wrt), *(r[2][k] for k in wrt)])(
                     module.hvp(vd, **xd))),
            ]
    return calls


def _check_against_tape(model, calls, fresh):
    """The fresh float64 results against the tape: value and gradients to 1e-9, hvp to 1e-5
    (central differences of the tape's exact gradient)."""
    wrt = [str(w) for w in model.wrt]
    sets = _input_sets(model)
    for i, (x, v) in enumerate(sets):
        value, grads = tape.value_and_grad(model, **x)
        want = [value] + [grads[k] for k in wrt]
        hv = tape.hvp(model, v, **x)[2]
        got = {label: r for (label, _), r in zip(calls, fresh) if f"set {i} float64" in label}
        floor = 1e-8 * max(1.0, *(float(np.max(np.abs(a))) for a in want))
        for label, expected in ((f"forward set {i} float64", want[:1]), (f"value_and_grad set {i} float64", want),
                                (f"hvp set {i} float64", want)):
            for k, (a, b) in enumerate(zip(got[label], expected)):
                assert rel_err(a, b, floor=floor) <= 1e-9, (label, k, rel_err(a, b, floor=floor))
        hfloor = 1e-8 * max(1.0, *(float(np.max(np.abs(h))) for h in hv.values()))
        for k, name in enumerate(wrt):
            err = rel_err(got[f"hvp set {i} float64"][1 + len(wrt) + k], hv[name], floor=hfloor)
            assert err <= 1e-5, (f"hvp set {i}", name, err)


def _same(got, want) -> bool:
    return len(got) == len(want) and all(
        np.asarray(a).dtype == np.asarray(b).dtype and np.array_equal(a, b, equal_nan=True) for a, b in zip(got, want))


def _run_everything(module, calls, fresh):
    """Every call, shuffled, ROUNDS times in this thread and then in THREADS threads at once; returns
    the labels of calls whose results differ from the fresh ones, now or after the later calls."""
    bad, kept, lock = [], [], threading.Lock()

    def run(seed):
        rng = np.random.default_rng(seed)
        for _ in range(ROUNDS):
            for j in rng.permutation(len(calls)):
                got = calls[j][1]()
                with lock:
                    kept.append((j, got, [np.array(a, copy=True) for a in got]))
                    if not _same(got, fresh[j]):
                        bad.append(f"{calls[j][0]} (thread {seed})")

    run(0)
    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(1, THREADS + 1)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns within calls, not only between them
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    bad += [f"{calls[j][0]}: changed by a later call" for j, got, copy in kept if not _same(got, copy)]
    return bad


def _fresh(module, calls):
    out = []
    for _, call in calls:
        module.release_scratch()
        out.append([np.array(a, copy=True) for a in call()])
    return out


def _module(target, name):
    if target == "numba":
        pytest.importorskip("numba")
    return symgrad.compile(MODELS[name], target, emit="grad,hvp")


@pytest.mark.parametrize("target, name", CASES)
def test_repeated_interleaved_and_threaded_calls_give_identical_results(target, name):
    model = MODELS[name]
    module = _module(target, name)
    calls = _calls(model, module)
    with np.errstate(all="ignore"):
        fresh = _fresh(module, calls)
        _check_against_tape(model, calls, fresh)
        bad = _run_everything(module, calls, fresh)
    assert not bad, bad[:8]
