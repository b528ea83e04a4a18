"""Train seed 001's logistic regression on more rows than the workers may hold, with Dask.

    python examples/run_dask_out_of_core.py                 # 10^7 rows x 16 features (1.3 GB on disk)
    python examples/run_dask_out_of_core.py --rows 200000   # a quick run

1. The data set is written to disk block by block (``.npy`` files of ``--block`` rows, one task
   each, with Dask's progress bar): no process ever holds more than a block of it.
2. ``symgrad.compile(model, target="dask")`` turns the model -- ``seed001_logreg_nll``, a sum over
   the rows of Phi (N x k) and y (N x 1) -- into a module whose ``value_and_grad`` takes the data as
   ``dask.array``s and the weights as NumPy.
3. Gradient descent on a ``dask.distributed`` LocalCluster of worker processes whose memory limit
   (``--worker-memory``) is smaller than the data: every step maps the NumPy kernel over the
   blocks where they are read and adds up the blocks' values and gradients.

It checks that the loss falls at every step, that the weights approach the ones the data were drawn
from, and that no worker's memory came near its limit; exit status 1 otherwise.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).resolve().parent
sys.path.insert(0, str(EXAMPLES))


def write_block(path, start, rows, k, seed, w_true):
    """Rows [start, start + rows) of the data set, drawn from their own seed, saved to two files."""
    rng = np.random.default_rng([seed, start])
    phi = rng.standard_normal((rows, k))
    y = (rng.random((rows, 1)) < 1 / (1 + np.exp(-phi @ w_true))).astype(np.float64)
    np.save(f"{path}/phi_{start:012d}.npy", phi)
    np.save(f"{path}/y_{start:012d}.npy", y)
    return rows


def on_disk(path, starts, sizes, k):
    """The data set as dask arrays that read each block from its file when a task needs it."""
    import dask
    import dask.array as da

    def column(name, width):
        load = dask.delayed(np.load, pure=True)
        return da.concatenate([da.from_delayed(load(f"{path}/{name}_{s:012d}.npy"), (n, width), np.float64)
                               for s, n in zip(starts, sizes)])
    return column("phi", k), column("y", 1)


def worker_memory(client):
    import psutil
    return client.run(lambda: psutil.Process().memory_info().rss)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--features", type=int, default=16)
    p.add_argument("--block", type=int, default=250_000, help="rows per block (file, task)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--worker-memory", default="400MiB", help="each worker's memory limit")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--lr", type=float, default=5.0)
    p.add_argument("--dir", help="where to write the data set (default: a temporary folder)")
    args = p.parse_args(argv)

    import dask
    from dask.distributed import Client, LocalCluster, progress
    from dask.utils import parse_bytes

    import symgrad
    from seed001_autodiff import logreg_nll

    k, rows = args.features, args.rows
    w_true = np.linspace(-1.0, 1.0, k)[:, None]
    module = symgrad.compile(logreg_nll, target="dask")
    limit = parse_bytes(args.worker_memory)
    data_bytes = rows * (k + 1) * 8
    print(f"data: {rows:,} rows x {k} features = {data_bytes / 2**20:,.0f} MiB on disk; "
          f"{args.workers} workers of {limit / 2**20:,.0f} MiB each")
    with tempfile.TemporaryDirectory(dir=args.dir) as path, \
            LocalCluster(n_workers=args.workers, threads_per_worker=1, memory_limit=limit,
                         dashboard_address=None, silence_logs=40) as cluster, Client(cluster) as client:
        starts = list(range(0, rows, args.block))
        sizes = [min(args.block, rows - s) for s in starts]
        t = time.perf_counter()
        writes = client.compute([dask.delayed(write_block)(path, s, n, k, 1, w_true) for s, n in zip(starts, sizes)])
        progress(writes)  # Dask's progress bar
        assert sum(client.gather(writes)) == rows
        print(f"\nwrote {len(starts)} blocks in {time.perf_counter() - t:.1f} s")
        phi, y = on_disk(path, starts, sizes, k)

        w = np.zeros((k, 1))
        losses, peak = [], 0
        for step in range(args.steps):
            t = time.perf_counter()
            loss, grads = module.value_and_grad(Phi=phi, y=y, w=w)
            seconds = time.perf_counter() - t
            peak = max(peak, *worker_memory(client).values())
            losses.append(float(loss) / rows)
            w = w - args.lr * grads["w"] / rows
            print(f"step {step}: mean NLL {losses[-1]:.6f}  |w - w_true| {np.linalg.norm(w - w_true):.4f}  "
                  f"{rows / seconds / 1e6:.2f} M rows/s  peak worker memory {peak / 2**20:.0f} MiB")
    ok = True
    if any(b >= a for a, b in zip(losses, losses[1:])):
        print("FAILED: the loss did not fall at every step")
        ok = False
    if rows >= 10**5 and args.steps >= 10 and np.linalg.norm(w - w_true) > 0.2 * np.linalg.norm(w_true):
        print("FAILED: the weights are not near the ones the data were drawn from")
        ok = False
    if peak > 0.9 * limit:
        print(f"FAILED: a worker reached {peak / 2**20:.0f} MiB of its {limit / 2**20:.0f} MiB")
        ok = False
    print(("ok" if ok else "FAILED") + f": {rows:,} rows ({data_bytes / 2**20:,.0f} MiB) trained on workers "
          f"holding at most {peak / 2**20:.0f} MiB each")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
