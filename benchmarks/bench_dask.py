"""The Dask target: seed 001's logistic-regression NLL (value and gradient) over N rows of data.

    python -m benchmarks.bench_dask [--smoke] [--unset-openblas-env] [--rounds R]

Data that fits in memory (N x 16 float64), so that the same computation runs on the NumPy module
(the reference) and through Dask: the threaded scheduler on dask arrays in this process, and a
``dask.distributed`` LocalCluster of 1 and of 2 single-threaded worker processes with the data
persisted on the workers (what a cluster does with data it has read: the timing is the gradient,
not the transfer).  Blocks of 250,000 rows.  The table's notes give each method's rows per second
and the largest worker's resident memory.  On a machine with 2 cores, 2 workers can at best halve
the time; the Dask overhead per call is a few ms of scheduling plus one task per block.
"""
from __future__ import annotations

import numpy as np

from benchmarks import harness

METHODS = [
    ("numpy_module", "symgrad NumPy module (in memory)"),
    ("numpy_hand", "hand NumPy"),
    ("dask_threads", "symgrad dask module, threaded scheduler"),
    ("dask_1", "symgrad dask module, LocalCluster 1 worker"),
    ("dask_2", "symgrad dask module, LocalCluster 2 workers"),
]
K = 16
BLOCK = 250_000


def cases(settings):
    sizes = (20_000,) if settings.smoke else (2 * 10 ** 6,)
    return [(f"N={n:.0e} x {K} float64".replace("e+0", "e"), {"n": n}, 1e-9) for n in sizes]


def make_data(n):
    rng = np.random.default_rng(0)
    phi = rng.standard_normal((n, K))
    y = (rng.random((n, 1)) < 0.5).astype(np.float64)
    return {"Phi": phi, "y": y, "w": rng.standard_normal((K, 1)) * 0.1}


def hand(Phi, y, w):
    """-sum log sigmoid(s * Phi w), s = 2 y - 1, and its gradient."""
    s = 2 * y - 1
    z = s * (Phi @ w)
    value = np.logaddexp(0, -z).sum()
    g = Phi.T @ (-s / (1 + np.exp(z)))
    return value, {"w": g}


def _rss_note(label, rss, n, fn):
    import time
    t = time.perf_counter()
    fn()
    rate = n / (time.perf_counter() - t)
    return f"{label}: ~{rate / 1e6:.1f} M rows/s, largest worker {max(rss()) / 2**20:.0f} MiB"


def setup(method, case):
    n = case["n"]
    d = make_data(n)
    if method == "numpy_hand":
        return lambda: hand(**d)
    import symgrad
    model = harness.symgrad_model("seed001_autodiff.py", "seed001_logreg_nll")
    if method == "numpy_module":
        mod = symgrad.compile(model, emit=("grad",))
        return lambda: mod.value_and_grad(**d)
    import dask
    import dask.array as da
    mod = symgrad.compile(model, target="dask")
    if method == "dask_threads":
        import os
        import psutil
        data = {"Phi": da.from_array(d["Phi"], chunks=(BLOCK, K)), "y": da.from_array(d["y"], chunks=(BLOCK, 1))}

        def run():
            with dask.config.set(scheduler="threads"):
                return mod.value_and_grad(w=d["w"], **data)
        rss = lambda: [psutil.Process(os.getpid()).memory_info().rss]  # noqa: E731
        return run, _rss_note("threads", rss, n, run)
    from dask.distributed import Client, LocalCluster, wait
    import psutil
    workers = int(method.split("_")[1])
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=40)
    client = Client(cluster)  # the default scheduler of this worker process
    data = {"Phi": da.from_array(d["Phi"], chunks=(BLOCK, K)), "y": da.from_array(d["y"], chunks=(BLOCK, 1))}
    data = dict(zip(data, client.persist(list(data.values()))))
    wait(list(data.values()))

    def run():
        return mod.value_and_grad(w=d["w"], **data)
    rss = lambda: list(client.run(lambda: psutil.Process().memory_info().rss).values())  # noqa: E731
    return run, _rss_note(f"{workers} worker{'s' if workers > 1 else ''}", rss, n, run)


def tables(settings, log=print):
    rows = harness.run_cases("benchmarks.bench_dask", METHODS, cases(settings), settings, log)
    lines = [harness.runtime_table(rows, "Dask target: logistic-regression NLL and gradient over N rows",
                                   baseline="numpy_module", baseline_name="symgrad NumPy", check_ref="numpy_hand")]
    rates = [f"{r.label}: {int(float(r.case.split('=')[1].split()[0]) / r.median):,} rows/s"
             for r in rows if r.times]
    lines.append("Throughput (median): " + "; ".join(rates) + ".")
    return "\n".join(lines)


if __name__ == "__main__":
    harness.script_main(tables, __doc__)
