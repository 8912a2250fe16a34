"""Where one iteration's time goes, and which limit each part runs into.

    OMP_NUM_THREADS=1 python benchmarks/scripts/iteration_parts.py [--shape T m d s ...]
        [--dtype float64 float32] [--n-jobs 1 2] [--repeat 7]

The solver runs the paper's iteration (gradient pass, adaptive step, truncated SVD, rank-s
update; ``accel=None, polish=None, tol=0``) for 11 iterations; its history records the
wall-clock time of each iteration and of its truncated SVD (``history["seconds"]``,
``history["svd_seconds"]``). Iterations 2 to 11 (the first has no warm start) give, per
iteration:

- the truncated SVD, with its subspace-iteration steps (``history["svd_steps"]``);
- the rest: the fused pass over X (gradient, loss and the two sums of the exact line search),
  the step and the rank-s update, which pass over the T x d iterate.

``kernels.gradient(subspace=V)`` times the fused pass alone on a mid-fit iterate; that call
also checks its inputs and allocates its (T, d) output, which the solver does not.

Each part is set against two limits measured in the same run with NumPy's BLAS: the read rate
of ``X @ ones`` (a BLAS matrix-vector product, the fastest read of X found in NumPy) and the
multiply-add rate of a BLAS matrix product (``a @ b`` for two 1000 x 1000 float64 matrices).
A part near the first is bound by memory; near the second, by arithmetic. Run it with
OMP_NUM_THREADS=1: those are one thread's limits (with two BLAS threads next to metasp's
spinning OpenMP threads, the two thread pools fight over the two cores). Wall-clock time,
medians over ``--repeat`` interleaved runs (and over the 10 iterations of each run): run it on
an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import statistics

import _measure  # noqa: F401  (first: puts benchmarks/, with common.py, on the path)
import common
import numpy as np
from _measure import blas_multiply_add_rate, wall_time

from metasp import kernels

SHAPES = [(2000, 20, 100, 5), (20000, 20, 100, 5)]


def parts(T, m, d, s, dtype, n_jobs, repeat, fma_rate):
    tasks, _ = common.problem(T, m, d, s, dtype)
    Theta, V, basis, _ = common.mid_fit_state(T, m, d, s, dtype)
    ones = np.ones(d, dtype=tasks.X.dtype)
    b = basis.shape[1]

    read, alone, iteration, svd, steps = [], [], [], [], []
    for _ in range(repeat):
        read.append(wall_time(lambda: tasks.X @ ones))
        alone.append(wall_time(lambda: kernels.gradient(tasks, Theta, subspace=V, n_jobs=n_jobs)))
        history = common.paper_iterations(tasks, s, 11, n_jobs).history
        iteration.extend(history["seconds"][1:])
        svd.extend(history["svd_seconds"][1:])
        steps.extend(history["svd_steps"][1:])
    read, alone, iteration, svd, svd_steps = (statistics.median(values) for values in
                                              (read, alone, iteration, svd, steps))
    rest = iteration - svd

    pass_adds = T * (3 * m * d + 2 * d * s)  # X_t theta_t, X_t^T r_t, X_t p_t; p_t = V V^T g_t
    rows = [  # part, seconds, multiply-adds, reads X?
        ("iteration", iteration, None, False),
        (f"truncated SVD ({svd_steps:.1f} steps)", svd,
         svd_steps * 2 * T * d * b + T * b * s, False),  # A^T (A Q) per step, then (A Q) R
        ("rest: pass over X, step, update", rest, pass_adds + T * d * (1 + s), True),
        ("pass alone (kernels.gradient)", alone, pass_adds, True),
    ]
    label = f"{T} | {m} | {d} | {s} | {dtype} | {n_jobs}"
    print(f"{label} | read: X @ 1 | {read * 1e3:.3g} | | {tasks.X.nbytes / read / 1e9:.1f} | 1 "
          f"| | |")
    for name, seconds, adds, reads_x in rows:
        bandwidth = (f"{tasks.X.nbytes / seconds / 1e9:.1f} | {read / seconds:.2f}"
                     if reads_x else " | ")
        arithmetic = (f"{adds / 1e6:.3g} | {adds / seconds / 1e9:.1f} | "
                      f"{adds / seconds / fma_rate:.2f}" if adds else " | | ")
        print(f"{label} | {name} | {seconds * 1e3:.3g} | {seconds / iteration:.2f} | "
              f"{bandwidth} | {arithmetic}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", nargs=4, type=int, action="append",
                        metavar=("T", "m", "d", "s"))
    parser.add_argument("--dtype", nargs="+", default=["float64"], choices=["float64", "float32"])
    parser.add_argument("--n-jobs", nargs="+", type=int, default=[1])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    fma_rate = blas_multiply_add_rate(args.repeat)
    print(f"# BLAS on OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} threads: "
          f"matrix product {fma_rate / 1e9:.1f} G multiply-adds/s; wall time, medians of "
          f"{args.repeat} runs")
    print("T | m | d | s | X | threads | part | time [ms] | share of the iteration "
          "| X read [GB/s] | vs X @ 1 | multiply-adds [M] | G multiply-adds/s | vs BLAS product")
    print("|".join(["---"] * 14))
    for shape in args.shape or SHAPES:
        for dtype in args.dtype:
            for n_jobs in args.n_jobs:
                parts(*shape, dtype, n_jobs, args.repeat, fma_rate)


if __name__ == "__main__":
    main()
