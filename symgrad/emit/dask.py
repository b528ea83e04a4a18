"""The Dask target: the NumPy kernel mapped over blocks of data rows, the blocks' results added up.

A model whose value is a sum over its data rows (:mod:`symgrad.rows` decides, and refuses the
others naming the part that couples the rows) has a gradient that is the sum of its blocks'
gradients.  The generated module holds, as the NumPy target would print them,

* ``_block_forward(block, /, **inputs)`` and ``_block_value_and_grad(block, /, **inputs)`` -- the
  value (and the gradients of its sum) of one block of rows, where ``block = (rows_total, share)``:
  the number of rows of all blocks (where the model reads its rows dimension as a number, ``1/N``)
  and 1 for the first block, 0 for the others (terms free of data count once);

and the public ``forward`` / ``value_and_grad``, which take ``dask.array`` inputs for the data
(chunked along the rows; NumPy arrays for the data are cut into ``NUMPY_BLOCKS`` blocks) and NumPy
arrays for the parameters, build one task per block -- the parameters are one task of their own,
so each worker receives them once -- reduce the blocks' results in a tree of ``FAN_IN``-way sums
(or joins, for a value with one entry per row), and compute it on whatever scheduler is active (a
``dask.distributed`` client included), returning NumPy results as the NumPy module would.

The module's functions travel to the workers by value (cloudpickle, which Dask uses), so workers
need not import the generated file; its kernels keep no work arrays between calls.
"""
from __future__ import annotations

import dataclasses

from ..errors import SymgradError
from ..rows import split_rows
from .module import ModuleFunction
from .targets import TARGETS, Target

_HELPER_SPLIT = '''
def _split(inputs):
    """(params, blocks, rows): the parameters; the data inputs of each block of rows, cut at the
    same rows (delayed arrays), None when the model has no data; the number of rows of all blocks.
    Every shape and type is checked before any work."""
    missing = [n for n in INPUTS if n not in inputs]
    extra = [n for n in inputs if n not in INPUTS]
    if missing or extra:
        raise TypeError(f"{MODEL}: missing inputs {missing}, unexpected inputs {extra}")
    params, data = {}, {}
    for name in INPUTS:
        x = inputs[name]
        if name not in DATA:
            if isinstance(x, da.Array):
                raise TypeError(f"{MODEL}: input {name!r} is a parameter, not data (DATA = {DATA}): pass "
                                "it as a NumPy array (every block gets all of it)")
            if type(x) not in (float, int, bool) and {m}.asarray(x).dtype.kind not in "biuf":
                raise TypeError(f"{MODEL}: input {name!r} must be real numbers, got {type(x).__name__}")
            params[name] = x
            continue
        if not isinstance(x, da.Array):
            if {m}.ndim(x) == 0 and COMBINE == "rows":  # one number for every row: it broadcasts
                params[name] = x
                continue
            x = {m}.asarray(x)
            if x.ndim:
                x = da.from_array(x, chunks=(-(-len(x) // NUMPY_BLOCKS),) + x.shape[1:])
        if x.ndim == 0:
            raise ValueError(f"{MODEL}: input {name!r} is data: it needs its rows along a first axis, "
                             "got a single number")
        if x.dtype.kind not in "biuf":
            raise TypeError(f"{MODEL}: input {name!r} must be real numbers, got dtype {x.dtype}")
        if x.shape[0] != x.shape[0]:  # NaN: dask does not know the chunk sizes
            raise ValueError(f"{MODEL}: input {name!r} has unknown chunk sizes: call "
                             "compute_chunk_sizes() on it first")
        data[name] = x
    if not data:
        return params, None, 0
    counts = {name: x.shape[0] for name, x in data.items()}
    if len(set(counts.values())) > 1:
        raise ValueError(f"{MODEL}: the data inputs have different numbers of rows: {counts}")
    if SHAPES:
        _dims({name: data.get(name, inputs[name]) for name in SHAPES})
        rows = next(iter(counts.values()))
        for name, p in params.items():  # scalar Symbols: parameters, whole in every block
            shape = {m}.shape(p)
            if name not in SHAPES and len(shape) == 2 and shape[0] == rows > 1:
                raise ValueError(f"{MODEL}: parameter {name!r} has shape {shape}: it would span the "
                                 f"{rows} rows of the data; a parameter is whole in every block")
    else:  # scalar Symbols broadcast: the data must agree, the parameters must not span the rows
        ndim = {name: x.ndim for name, x in data.items()}
        if len(set(ndim.values())) > 1:
            raise ValueError(f"{MODEL}: the data inputs have different numbers of axes: {ndim}")
        rows_ndim = next(iter(ndim.values()))
        for name, p in params.items():
            shape = {m}.shape(p)
            if len(shape) > rows_ndim or (len(shape) == rows_ndim and shape[0] != 1):
                raise ValueError(f"{MODEL}: parameter {name!r} has shape {shape}: it would span the "
                                 f"rows of the data ({rows_ndim} axes, rows first); a parameter "
                                 "broadcasts over the rows")
    first = next(iter(data.values()))
    chunks = first.chunks[0]
    parts = {name: x.rechunk({0: chunks, **{a: -1 for a in range(1, x.ndim)}}).to_delayed().ravel()
             for name, x in data.items()}
    blocks = [{name: parts[name][b] for name in data} for b, n in enumerate(chunks) if n]  # none empty
    return params, blocks, first.shape[0]
'''

_HELPER_COMPUTE = '''
def _forward(inputs):
    return _compute(_block_forward, inputs)


def _value_and_grad(inputs):
    return _compute(_block_value_and_grad, inputs)


def _compute(kernel, inputs):
    """kernel mapped over the blocks of rows of inputs and reduced, computed by the active Dask
    scheduler; NumPy results."""
    params, blocks, rows = _split(inputs)
    if blocks is None:  # no data: one block, here
        return kernel((0, {m}.float64(1)), **params)
    if COMBINE == "once":  # the value does not depend on the data
        blocks = blocks[:1]
    shared = dask.delayed((kernel, params))  # one task: each worker fetches kernel and parameters once
    # share: a NumPy number (its comparison is then a NumPy bool, as arrays' are)
    tasks = [dask.delayed(_block)(shared, (rows, {m}.float64(b == 0)), block) for b, block in enumerate(blocks)]
    while len(tasks) > 1:
        tasks = [dask.delayed(_combine)(*tasks[i:i + FAN_IN]) for i in range(0, len(tasks), FAN_IN)]
    (result,) = dask.compute(tasks[0])
    return result


def _block(shared, block, data):
    """The kernel on one block of rows (runs where the block is)."""
    kernel, params = shared
    return kernel(block, **params, **data)


def _combine(*parts):
    """The results of consecutive blocks as one: values added (or joined along the rows, COMBINE),
    gradients added."""
    if not isinstance(parts[0], tuple):
        return _join(parts)
    grads = {name: _sum([p[1][name] for p in parts]) for name in parts[0][1]}
    return _join([p[0] for p in parts]), grads


def _join(values):
    if COMBINE == "sum":
        return _sum(values)
    return {m}.concatenate(values, axis=0 if COMBINE == "rows" else 1)


def _sum(values):
    """values added up, an array where the first is one (a 0-d array stays a 0-d array)."""
    total = sum(values[1:]) + values[0]
    return {m}.asarray(total) if isinstance(values[0], {m}.ndarray) else total

'''

_PREAMBLE = """if __name__ in sys.modules:  # workers need not import this file: its functions travel by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])"""

_COMBINE_TEXT = {"sum": "the sum of the blocks' values", "rows": "the blocks' values one below the other",
                 "cols": "the blocks' values side by side", "once": "the value of one block (no data in it)"}


class Layout:
    """The Dask module's layout (see the module docstring): hooks of :func:`emit.module.assemble`."""

    scratch = False  # no work arrays kept: the functions travel to workers by value
    derivatives = ("grad",)  # the functions it has (of program.DERIVATIVES)
    helpers = (_HELPER_SPLIT, _HELPER_COMPUTE)

    @staticmethod
    def prepare(program, emit):
        """The lowered program with the block value as its value (see symgrad.rows), before it is
        differentiated; ``emit``: the functions asked for."""
        if set(emit) - set(Layout.derivatives):
            extra = ", ".join(d for d in emit if d not in Layout.derivatives)
            raise SymgradError(f"the dask target has forward and value_and_grad only (asked for {extra})")
        plan = split_rows(program)
        src = dict(program.src)
        if program.out.id in src:
            src.setdefault(plan.out.id, src[program.out.id])
        return dataclasses.replace(program, out=plan.out, src=src, rows_plan=plan)

    @staticmethod
    def functions(program, namer, wrt_local, wrt_text) -> list:
        plan, out, name = program.rows_plan, program.out, program.name
        block = namer.fresh("block")
        seeds = {plan.total.id: namer.fresh("rows_total"), plan.share.id: namer.fresh("share")}
        grad_names = {g.id: "grad_" + w for g, w in zip(program.grads, wrt_local)}
        what = "block = (rows of all blocks, 1 for the first block else 0)"
        return [
            ModuleFunction("_block_forward", "bfwd", [out], {}, f"Value of {name} on one block of rows; {what}.",
                      block, seeds, unpack=True),
            ModuleFunction("_block_value_and_grad", "bvag", [out] + program.grads, grad_names,
                      f"Value of {name} on one block of rows and the gradients of its sum with respect "
                      f"to {wrt_text}; {what}.", block, seeds, program.cotangents,
                      ((len(program.wrt), program.wrt),), unpack=True),
            ModuleFunction("forward", "", [], {}, f"Value of {name}: {_COMBINE_TEXT[plan.combine]}, "
                      "computed by the active Dask scheduler."),
            ModuleFunction("value_and_grad", "", [], {},
                      f"Value of {name} and the gradients of its sum with respect to {wrt_text}: the "
                      "sums of the blocks' gradients, computed by the active Dask scheduler."),
        ]

    @staticmethod
    def constants(program) -> list[str]:
        plan = program.rows_plan
        return [f"ROWS = {plan.rows!r}  # the rows dimension (None: the first axis of the data)",
                f"DATA = {tuple(plan.data)!r}  # inputs cut into blocks of rows: dask (or NumPy) arrays",
                f"COMBINE = {plan.combine!r}  # how the blocks' values combine: sum, rows, cols or once",
                "NUMPY_BLOCKS = 4  # data given as a NumPy array is cut into this many blocks",
                "FAN_IN = 8  # blocks' results are added up in a tree of this many at a time"]

    @staticmethod
    def header_lines(program) -> list[str]:
        plan = program.rows_plan
        data = ", ".join(plan.data) or "none"
        return [f"Data (dask.array, chunked along the rows{f' {plan.rows}' if plan.rows else ''}): {data};",
                "parameters (NumPy): the other inputs.  Results are NumPy, as the NumPy module's."]


TARGETS["dask"] = Target("dask", "numpy", "np", layout=Layout(), needs=("dask",), preamble=_PREAMBLE,
                         imports=("import sys", "import cloudpickle", "import dask", "import dask.array as da"))
