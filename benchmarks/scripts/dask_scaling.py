"""metasp.dask.fit on a LocalCluster against metasp.fit with as many threads, on the same data:
per-evaluation and whole-fit time, and the bytes the workers send per evaluation (Dask's own
counter, ``Worker.transfer_outgoing_bytes_total``).

    python benchmarks/scripts/dask_scaling.py                       # T = 2e5 on 2 workers x 1
    python benchmarks/scripts/dask_scaling.py --workers 8 --threads 2 --T 2000000
    python benchmarks/scripts/dask_scaling.py --heads fixed         # CGIHT and the polish
    python benchmarks/scripts/dask_scaling.py --T 20000 --profile   # where md.fit waits

Each partition of the input is generated on a worker from its own seed (whole tasks, then rows
shuffled within the partition); the in-memory fit gets the same rows from the same generator.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import metasp
from metasp import kernels


def partition(index, first, count, m, d, s, sigma, seed):
    """Rows of tasks first .. first + count - 1 as a long pandas frame."""
    import pandas as pd

    B = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, s)))[0].T
    rng = np.random.default_rng([seed, index])
    X = rng.standard_normal((count * m, d))
    W = rng.standard_normal((count, s))
    y = np.einsum("tmd,td->tm", X.reshape(count, m, d), W @ B).ravel()
    y += sigma * rng.standard_normal(y.size)
    frame = pd.DataFrame(X, columns=[f"f{j}" for j in range(d)])
    frame["y"] = y
    frame["task"] = np.repeat(np.arange(first, first + count), m)
    return frame


def median_time(function, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def sent_bytes(client) -> int:
    return sum(client.run(lambda dask_worker: dask_worker.transfer_outgoing_bytes_total).values())


def print_kernel_times(records, repeats):
    """Seconds each worker spent in the shard kernels per evaluation (Dask's task stream), and
    any transfer of data before a kernel: what the cluster adds to the kernels themselves."""
    busy, moved = {}, 0.0
    for record in records:
        for part in record["startstops"]:
            if part["action"] == "compute":
                busy[record["worker"]] = busy.get(record["worker"], 0.0) + part["stop"] - part["start"]
            elif part["action"] == "transfer":
                moved += part["stop"] - part["start"]
    for worker, seconds in sorted(busy.items()):
        print(f"worker {worker}: {seconds / repeats:.4f} s of shard kernels per evaluation")
    print(f"transfers before kernels: {moved:.3f} s in {repeats} evaluations")


def reduction_clock() -> dict:
    """{name: [seconds, calls]} of every reduction md.fit waits for from now on (the wait
    includes the kernels it depends on and the scheduler's round trip)."""
    from metasp.dask._fit import Cluster

    waits, each = {}, Cluster.each

    def timed(self, name, *args, **kwargs):
        start = time.perf_counter()
        try:
            return each(self, name, *args, **kwargs)
        finally:
            entry = waits.setdefault(name, [0.0, 0])
            entry[0] += time.perf_counter() - start
            entry[1] += 1

    Cluster.each = timed
    return waits


def print_waits(waits, total):
    print(f"| reduction | seconds | calls | ms per call |  (of md.fit's {total:.2f} s)")
    print("|---|---|---|---|")
    for name, (seconds, calls) in sorted(waits.items(), key=lambda item: -item[1][0]):
        print(f"| {name} | {seconds:.3f} | {calls} | {1e3 * seconds / calls:.1f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, default=200_000)
    parser.add_argument("--m", type=int, default=20)
    parser.add_argument("--d", type=int, default=100)
    parser.add_argument("--s", type=int, default=5)
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="threads per worker")
    parser.add_argument("--partitions", type=int, default=None,
                        help="input partitions (default: 2 per worker thread)")
    parser.add_argument("--repeats", type=int, default=5, help="evaluations timed (median)")
    parser.add_argument("--heads", choices=("random", "fixed"), default="random",
                        help="the fit to time: the default (random heads) or heads='fixed' "
                             "(CGIHT and the polish; no per-evaluation timing)")
    parser.add_argument("--profile", action="store_true",
                        help="print the driver's wait per kind of reduction during md.fit")
    parser.add_argument("--skip-local", action="store_true",
                        help="do not run metasp.fit in this process (data beyond its memory)")
    args = parser.parse_args()

    import dask
    import dask.dataframe as dd
    import pandas as pd
    from distributed import Client, LocalCluster, get_task_stream

    import metasp.dask as md

    threads = args.workers * args.threads
    parts = args.partitions or 2 * threads
    counts = np.diff(np.linspace(0, args.T, parts + 1).astype(int))
    firsts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    shape = (args.m, args.d, args.s, args.sigma, 0)
    print(f"heads={args.heads} T={args.T} m={args.m} d={args.d} s={args.s} sigma={args.sigma}; "
          f"{args.workers} workers x {args.threads} threads, {parts} input partitions")

    with LocalCluster(n_workers=args.workers, threads_per_worker=args.threads, processes=True,
                      dashboard_address=None, memory_limit=0) as cluster, Client(cluster) as client:
        meta = partition(0, 0, 1, *shape).iloc[:0]
        delayed = [dask.delayed(partition)(i, int(f), int(c), *shape)
                   for i, (f, c) in enumerate(zip(firsts, counts))]
        frame = dd.from_delayed(delayed, meta=meta)
        start = time.perf_counter()
        tasks = md.Tasks.from_frame(frame, "task", "y")
        build = time.perf_counter() - start
        print(f"md.Tasks.from_frame (generate, check, shuffle, persist): {build:.1f} s")
        holders = client.who_has(tasks.shards)
        for worker in sorted(client.nthreads()):
            mine = [i for i, f in enumerate(tasks.shards) if worker in holders[f.key]]
            print(f"worker {worker}: shards {mine}, "
                  f"{sum(tasks.summaries[i].n_samples for i in mine):,} rows")

        U = np.random.default_rng(0).standard_normal((args.d, args.s)) * 0.3
        evaluation = per_evaluation_bytes = np.nan
        if args.heads == "random":
            md.marginal_pass(tasks, U, 0.5, n_jobs=args.threads)  # warm up
            before = sent_bytes(client)
            with get_task_stream(client) as stream:
                evaluation = median_time(
                    lambda: md.marginal_pass(tasks, U, 0.5, n_jobs=args.threads), args.repeats)
            per_evaluation_bytes = (sent_bytes(client) - before) / args.repeats
            print_kernel_times(stream.data, args.repeats)
        sent = U.nbytes * len(tasks.shards)  # (U, noise) to every shard, in the task message

        before = sent_bytes(client)
        waits = reduction_clock() if args.profile else None
        start = time.perf_counter()
        result = md.fit(tasks, args.s, heads=args.heads, random_state=0, n_jobs=args.threads)
        dask_total = time.perf_counter() - start
        fit_bytes = sent_bytes(client) - before
        print(f"md.fit: {result.n_iter} iterations, {dask_total:.2f} s, status {result.status}")
        if waits is not None:
            print_waits(waits, dask_total)
        local = None if args.skip_local else tasks.to_local()

    rows = [("md.fit", evaluation, dask_total, result.n_iter, per_evaluation_bytes,
             fit_bytes / max(result.n_iter, 1))]
    if local is not None:
        del tasks
        local_evaluation = np.nan
        if args.heads == "random":
            kernels.marginal_pass(local, U, 0.5, n_jobs=threads)
            local_evaluation = median_time(
                lambda: kernels.marginal_pass(local, U, 0.5, n_jobs=threads), args.repeats)
        start = time.perf_counter()
        theirs = metasp.fit(local, None, args.s, heads=args.heads, random_state=0,
                            n_jobs=threads)
        local_total = time.perf_counter() - start
        rows.append((f"metasp.fit(n_jobs={threads})", local_evaluation, local_total,
                     theirs.n_iter, 0, 0))
        gap = np.abs(result.B.T @ result.B - theirs.B.T @ theirs.B).max()
        print(f"projector difference md.fit vs metasp.fit: {gap:.2e}")

    print(f"| fit | evaluation [s] (median of {args.repeats}) | whole fit [s] | iterations | per iteration [s] "
          "| bytes from workers per evaluation | per iteration (whole fit) |")
    print("|---|---|---|---|---|---|---|")
    for name, ev, total, n, per_eval, per_iter in rows:
        print(f"| {name} | {ev:.4f} | {total:.2f} | {n} | {total / max(n, 1):.4f} | "
              f"{per_eval:,.0f} | {per_iter:,.0f} |")
    if local is not None:
        print(f"ratio md / metasp: evaluation {rows[0][1] / rows[1][1]:.2f}x, per iteration "
              f"{(rows[0][2] / max(rows[0][3], 1)) / (rows[1][2] / max(rows[1][3], 1)):.2f}x, "
              f"whole fit {rows[0][2] / rows[1][2]:.2f}x")
    print(f"driver to shards per evaluation: (U, noise), {sent:,} bytes of arrays in the task "
          f"messages of {len(counts)} shards")
    print(f"pandas {pd.__version__}, dask {dask.__version__}")


if __name__ == "__main__":
    main()
