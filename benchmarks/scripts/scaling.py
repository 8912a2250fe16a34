"""Thread scaling of metasp.fit: per-iteration and whole-fit times at several thread counts.

    python benchmarks/scripts/scaling.py                      # T=200000, threads 1 2 4 8 16
    python benchmarks/scripts/scaling.py --T 20000 --threads 1 2
    python benchmarks/scripts/scaling.py --profile --T 5000 10000 20000 40000 --threads 1 2

For each thread count it times the default fit (random heads) and the fixed-heads fit
(conjugate-direction IHT, then the polish), each once after a warm-up fit, and reports the
median iteration of the fixed-heads solver by its own clock (``history["seconds"]``), its
truncated SVD's share (``history["svd_seconds"]``) and the time outside the iterations (the
polish, the head prior, diagnostics, setup). Speed-ups are against the first thread count.

``--profile`` instead makes the parallel structure visible where only a few cores are at
hand: for each T it splits the fixed-heads fit into iterations, their SVD, and the rest, at
the first and the last thread count, and prints the serial fraction each part implies by
Amdahl's law, ``f = (p t_p / t_1 - 1) / (p - 1)``. A part whose serial fraction grows with T
has serial work that grows with T. For the default fit (random heads) it prints the share of
one-thread time spent outside the compiled passes over the tasks (NumPy and Python on one
thread), the speed-up on 16 threads that share allows, ``1 / (f + (1 - f) / 16)``, and the
speed-up measured at the last thread count. BLAS is pinned to one thread (threadpoolctl when
installed, else OMP_NUM_THREADS must be set by the caller); metasp's threads are ``n_jobs``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
import warnings

import numpy as np
from _measure import kernel_clock

import metasp


def blas_one_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def timed_fit(tasks, s, heads, n_jobs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metasp.ConvergenceWarning)
        start = time.perf_counter()
        result = metasp.fit(tasks, None, s, heads=heads, n_jobs=n_jobs, random_state=0)
        return result, time.perf_counter() - start


def fixed_parts(result, total):
    """(median iteration, median SVD of an iteration, seconds outside the iterations)."""
    phase = np.asarray(result.history["phase"])
    seconds = np.asarray(result.history["seconds"], dtype=float)
    svd = np.asarray(result.history["svd_seconds"], dtype=float)
    iht = phase == "iht"
    return float(np.median(seconds[iht])), float(np.median(svd[iht])), total - seconds.sum()


def measure(tasks, s, n_jobs):
    timed_fit(tasks, s, "fixed", n_jobs)  # warm-up: pages, thread pool
    fixed, fixed_total = timed_fit(tasks, s, "fixed", n_jobs)
    _, default_total = timed_fit(tasks, s, "auto", n_jobs)
    iteration, svd, outside = fixed_parts(fixed, fixed_total)
    return {"iteration": iteration, "svd": svd, "outside": outside, "fixed_fit": fixed_total,
            "default_fit": default_total, "n_iter": fixed.n_iter}


def scaling(args):
    for T in args.T:
        X, y, _, _ = metasp.datasets.make_hps(T, args.m, args.d, args.s, sigma=args.sigma,
                                              random_state=0)
        tasks = metasp.Tasks.from_array(X, y)
        del X, y
        print(f"T={T}, m={args.m}, d={args.d}, s={args.s}, sigma={args.sigma}")
        print(f"{'threads':>7} {'iteration ms':>13} {'svd ms':>8} {'fixed fit s':>12} "
              f"{'default fit s':>14} {'x iteration':>12} {'x fixed fit':>12} {'x default':>10}")
        base = None
        for n_jobs in args.threads:
            row = measure(tasks, args.s, n_jobs)
            base = base or row
            print(f"{n_jobs:>7} {row['iteration'] * 1e3:>13.2f} {row['svd'] * 1e3:>8.2f} "
                  f"{row['fixed_fit']:>12.3f} {row['default_fit']:>14.3f} "
                  f"{base['iteration'] / row['iteration']:>12.2f} "
                  f"{base['fixed_fit'] / row['fixed_fit']:>12.2f} "
                  f"{base['default_fit'] / row['default_fit']:>10.2f}")


def serial_fraction(t1, tp, p):
    return (p * tp / t1 - 1) / (p - 1)


def default_fit_split(tasks, s, n_jobs):
    """(seconds of a default fit, seconds of it inside the compiled passes over the tasks)."""
    timed_fit(tasks, s, "auto", n_jobs)  # warm-up
    calls = {}
    with kernel_clock(calls):
        _, total = timed_fit(tasks, s, "auto", n_jobs)
    return total, sum(seconds for _, seconds in calls.values())


def print_default_fit_profile(args, rows):
    """``rows``: (T, one-thread fit s, of it inside the compiled passes, fit s on the last
    thread count) per T."""
    hi = args.threads[-1]
    print(f"\ndefault fit (random heads): time outside the compiled passes over the tasks, "
          f"one thread; m={args.m}, d={args.d}, s={args.s}")
    print(f"{'T':>8} {'fit s':>8} {'outside s':>10} {'share':>6} {'bound x16':>10} "
          f"{'fit s, ' + str(hi) + ' thr':>14} {'x' + str(hi):>6}")
    for T, total, inside, parallel_total in rows:
        share = (total - inside) / total
        print(f"{T:>8} {total:>8.3f} {total - inside:>10.3f} {share:>6.3f} "
              f"{1 / (share + (1 - share) / 16):>10.1f} {parallel_total:>14.3f} "
              f"{total / parallel_total:>6.2f}")


def profile(args):
    lo, hi = args.threads[0], args.threads[-1]
    if lo != 1 or hi <= 1:
        raise SystemExit("--profile needs --threads starting at 1 and ending above 1")
    print(f"serial fraction (Amdahl) between 1 and {hi} threads, fixed-heads fit; "
          f"m={args.m}, d={args.d}, s={args.s}")
    print(f"{'T':>8} {'iteration ms':>13} {'f iteration':>12} {'svd ms':>8} {'f svd':>7} "
          f"{'outside s':>10} {'f outside':>10}")
    default_rows = []
    for T in args.T:
        X, y, _, _ = metasp.datasets.make_hps(T, args.m, args.d, args.s, sigma=args.sigma,
                                              random_state=0)
        tasks = metasp.Tasks.from_array(X, y)
        del X, y
        default_rows.append((T, *default_fit_split(tasks, args.s, 1),
                             default_fit_split(tasks, args.s, hi)[0]))
        one, many = measure(tasks, args.s, 1), measure(tasks, args.s, hi)
        print(f"{T:>8} {one['iteration'] * 1e3:>13.2f} "
              f"{serial_fraction(one['iteration'], many['iteration'], hi):>12.2f} "
              f"{one['svd'] * 1e3:>8.2f} {serial_fraction(one['svd'], many['svd'], hi):>7.2f} "
              f"{one['outside']:>10.3f} "
              f"{serial_fraction(one['outside'], many['outside'], hi):>10.2f}")
    print_default_fit_profile(args, default_rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, nargs="+", default=[200_000])
    parser.add_argument("--m", type=int, default=20)
    parser.add_argument("--d", type=int, default=100)
    parser.add_argument("--s", type=int, default=5)
    parser.add_argument("--sigma", type=float, default=0.1)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--profile", action="store_true", help="serial fractions against T")
    args = parser.parse_args()
    if max(args.threads) > (os.cpu_count() or 1):
        print(f"note: {os.cpu_count()} CPUs here; thread counts above it oversubscribe")
    with blas_one_thread():
        (profile if args.profile else scaling)(args)


if __name__ == "__main__":
    main()
