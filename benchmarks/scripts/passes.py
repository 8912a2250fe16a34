"""The cost of a fit in passes over X, the measure that does not move with the machine.

    OMP_NUM_THREADS=1 python benchmarks/scripts/passes.py              # T=20000, m=20, d=100, s=5
    OMP_NUM_THREADS=1 python benchmarks/scripts/passes.py --T 2000     # quicker

One pass is one BLAS read of X (``X.reshape(-1, d) @ ones(d)``, one thread), timed in the same
run. An iteration cannot cost less than one pass, however fast the machine: the ratio against
the NumPy reference moves with the machine's memory speed (the reference is bound by it too,
but less), the count of passes much less. For sigma = 0.1 and noiseless data it reports the
default fit (random heads), the fixed-heads fit (conjugate-direction IHT, then the polish), one
iteration of each of its phases by the solver's own clock (``history["seconds"]``), and one
iteration of plain normalized IHT (``accel=None, polish=None``). Medians of ``--repeats`` runs.
Then the default fit's profile: the calls and passes of each compiled kernel it ran, and the
rest (the least-squares polish of noiseless fits, L-BFGS's own work, post-processing). Last,
the random-heads evaluation (``kernels.marginal_pass``) per task with X in cache (``--T`` / 50
tasks, read 50 times) against X from memory: equal times mean the pass is bound by its
arithmetic, not by reading X.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from _measure import blas_read_seconds, kernel_clock, median_time, pin_threads

import metasp


def quiet_fit(tasks, s, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metasp.ConvergenceWarning)
        return metasp.fit(tasks, None, s, n_jobs=1, random_state=0, **options)


def phase_median(result, phase):
    seconds = np.asarray(result.history["seconds"], dtype=float)
    chosen = seconds[np.asarray(result.history["phase"]) == phase]
    return float(np.median(chosen)) if chosen.size else float("nan")


def default_fit_profile(tasks, s):
    """{row name: seconds} of one default fit: each profiled kernel, then the rest."""
    calls = {}
    with kernel_clock(calls):
        start = time.perf_counter()
        quiet_fit(tasks, s)
        total = time.perf_counter() - start
    rows = {f"  {name} ({count} calls)": seconds for name, (count, seconds) in calls.items()}
    rows["  the rest (polish, L-BFGS, post-processing)"] = total - sum(
        seconds for _, seconds in calls.values())
    return rows


def measure(T, m, d, s, sigma, repeats):
    X, y, _, _ = metasp.datasets.make_hps(T, m, d, s, sigma=sigma, random_state=0)
    tasks = metasp.Tasks.from_array(X, y)
    one_pass = blas_read_seconds(X)
    default = quiet_fit(tasks, s)
    fixed = quiet_fit(tasks, s, heads="fixed")
    niht = quiet_fit(tasks, s, accel=None, polish=None, max_iter=12, tol=0)
    rows = {
        f"default fit ({default.n_iter} iterations)":
            median_time(lambda: quiet_fit(tasks, s), repeats),
        f"fixed-heads fit ({int((fixed.history['phase'] == 'iht').sum())} IHT iterations + "
        f"{int((fixed.history['phase'] == 'polish').sum())} polish sweeps)":
            median_time(lambda: quiet_fit(tasks, s, heads="fixed"), repeats),
        "one conjugate-direction IHT iteration (fixed heads)": phase_median(fixed, "iht"),
        "one polish sweep (fixed heads)": phase_median(fixed, "polish"),
        "one plain NIHT iteration": phase_median(niht, "iht"),
        "profile of one default fit:": None,
    }
    rows.update(default_fit_profile(tasks, s))
    return one_pass, rows


def per_task_microseconds(T, m, d, s):
    """{what: microseconds per task} of marginal_pass and of a BLAS read of X, with X in cache
    (T / 50 tasks, each call repeated 50 times) and from memory (T tasks)."""
    rows = {}
    for where, n_tasks, calls in (("in cache", max(T // 50, 1), 50), ("from memory", T, 1)):
        X, y, _, _ = metasp.datasets.make_hps(n_tasks, m, d, s, sigma=0.1, random_state=0)
        tasks = metasp.Tasks.from_array(X, y)
        U = np.random.default_rng(0).standard_normal((d, s)) / np.sqrt(d)
        ones = np.ones(d)

        def repeated(run):
            def many():
                for _ in range(calls):
                    run()
            return median_time(many, 5, warmup=1) / calls / n_tasks * 1e6

        rows[f"marginal_pass, X {where}"] = repeated(
            lambda: metasp.kernels.marginal_pass(tasks, U, 0.3, n_jobs=1))
        rows[f"BLAS read of X, X {where}"] = repeated(lambda: tasks.X @ ones)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, default=20000)
    parser.add_argument("--m", type=int, default=20)
    parser.add_argument("--d", type=int, default=100)
    parser.add_argument("--s", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.1, 0.0])
    args = parser.parse_args()
    with pin_threads(1):
        for sigma in args.sigmas:
            one_pass, rows = measure(args.T, args.m, args.d, args.s, sigma, args.repeats)
            print(f"\nT={args.T}, m={args.m}, d={args.d}, s={args.s}, sigma={sigma}: one pass "
                  f"over X = {one_pass * 1e3:.2f} ms")
            for name, seconds in rows.items():
                if seconds is None:
                    print(f"  {name}")
                    continue
                print(f"  {name:<60} {seconds * 1e3:>9.1f} ms {seconds / one_pass:>7.1f} passes")
        print(f"\nper task, T={args.T}, m={args.m}, d={args.d}, s={args.s}:")
        for name, microseconds in per_task_microseconds(args.T, args.m, args.d, args.s).items():
            print(f"  {name:<60} {microseconds:>9.2f} us")


if __name__ == "__main__":
    main()
