"""Time per iteration and peak memory of metasp.fit as T grows, with no copy of X.

    python benchmarks/scripts/scale.py                      # T = 1e4, 1e5 (m=10, d=50, s=5)
    python benchmarks/scripts/scale.py --T 10000 100000 1000000 --n-jobs 1 2   # X is 4 GB at T=1e6

Each T runs in a fresh process, so its peak resident memory (ru_maxrss) is its own. The data
are generated in chunks straight into one (T*m, d) float64 array, so generating them never
needs more than X plus a chunk; metasp.Tasks views that array without copying. Per T it
prints the time of one iteration (median over repeats of a fit with tol=0, minus a fit of one
iteration, divided by the extra iterations) and the peak memory above the interpreter and the
data, in units of one T x d float64 buffer. Check `free -g` first: T=1e6 needs about 6 GB.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import warnings

import numpy as np
from _measure import timed

M, D, S, SIGMA, SEED = 10, 50, 5, 0.1, 0
CHUNK_TASKS = 5_000


def make_problem(T):
    """An HPS problem as in metasp.datasets.make_hps, written chunk by chunk into X."""
    rng = np.random.default_rng(SEED)
    B = np.linalg.qr(rng.standard_normal((D, S)))[0].T
    X = np.empty((T * M, D))
    y = np.empty(T * M)
    for start in range(0, T, CHUNK_TASKS):
        stop = min(T, start + CHUNK_TASKS)
        theta = rng.standard_normal((stop - start, S)) @ B
        X_chunk = X[start * M:stop * M].reshape(stop - start, M, D)
        rng.standard_normal(out=X_chunk)  # in place: no chunk-sized temporary
        y[start * M:stop * M] = (np.einsum("tmd,td->tm", X_chunk, theta)
                                 + SIGMA * rng.standard_normal((stop - start, M))).ravel()
    return X, y, B


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def current_rss_bytes():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def measure_one(T, n_jobs, n_iter, repeats):
    """Runs in the child process; returns a dict of measurements."""
    import metasp

    X, y, B = make_problem(T)
    offsets = np.arange(0, T * M + 1, M, dtype=np.int64)
    tasks = metasp.Tasks(X, y, offsets)
    assert np.shares_memory(tasks.X, X), "Tasks copied X"
    before_fit = current_rss_bytes()
    peak_before_fit = peak_rss_bytes()
    warnings.simplefilter("ignore", metasp.ConvergenceWarning)

    def fit_time(max_iter):
        result, wall, cpu = timed(lambda: metasp.fit(
            tasks, None, S, max_iter=max_iter, tol=0, n_jobs=n_jobs, random_state=SEED,
            accel=None, polish=None))  # IHT iterations
        return wall, cpu, result

    # Interleaved, medians: the machine may be busy. CPU time (all threads) is reported too:
    # on a shared machine it is less affected by waiting for a core than wall time.
    one, full = [], []
    for _ in range(repeats):
        one.append(fit_time(1)[:2])
        *elapsed, result = fit_time(1 + n_iter)
        full.append(elapsed)
    wall, cpu = ((statistics.median(f) - statistics.median(o)) / n_iter
                 for f, o in zip(zip(*full), zip(*one)))
    return {
        "T": T, "n_jobs": n_jobs, "seconds_per_iteration": wall, "cpu_seconds_per_iteration": cpu,
        "X_bytes": X.nbytes, "Txd_bytes": T * D * 8,
        "rss_before_fit": before_fit, "peak_rss_before_fit": peak_before_fit,
        "peak_rss": peak_rss_bytes(),
        "sin_angle": float(metasp.metrics.sin_angle(result.B, B)),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--n-jobs", type=int, nargs="+", default=[1])
    parser.add_argument("--n-iter", type=int, default=5, help="timed iterations after the first")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the measurements to this file")
    parser.add_argument("--child", nargs=4, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_one(*args.child)))
        return

    rows = []
    print(f"# m={M}, d={D}, s={S}, sigma={SIGMA}; each T in a fresh process; "
          f"{args.n_iter} timed iterations, median of {args.repeats}")
    print("T | n_jobs | X [GB] | s / iteration (wall) | CPU s / iteration | peak RSS [GB] | "
          "fit's extra peak [T x d buffers] | sin angle")
    print("---|---|---|---|---|---|---|---")
    for T in args.T:
        for n_jobs in args.n_jobs:
            repeats = args.repeats if T < 1_000_000 else 1
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(T), str(n_jobs), str(args.n_iter),
                 str(repeats)], check=True, capture_output=True, text=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            rows.append(row)
            # Memory the fit added above what the process held once the data existed.
            extra = row["peak_rss"] - max(row["rss_before_fit"], 0)
            print(f"{T} | {n_jobs} | {row['X_bytes'] / 1e9:.2f} | "
                  f"{row['seconds_per_iteration']:.4g} | {row['cpu_seconds_per_iteration']:.4g} | "
                  f"{row['peak_rss'] / 1e9:.2f} | "
                  f"{extra / row['Txd_bytes']:.1f} | {row['sin_angle']:.2e}", flush=True)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(rows, file, indent=1)


if __name__ == "__main__":
    main()
