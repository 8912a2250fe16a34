"""Time per iteration with 1 and 2 threads at T = 2000 and 20000 (m=20, d=100, s=5).

    python benchmarks/scripts/threads.py
    OMP_WAIT_POLICY=passive python benchmarks/scripts/threads.py   # threads sleep while waiting

Per-iteration wall time: a fit of 11 iterations minus a fit of one, over 10; 1 and 2 threads
interleaved, median of 5. On a busy machine spinning OpenMP threads wait for a core, so
compare the two wait policies there, and measure thread scaling on an idle machine.

First, before metasp starts any thread, the read rate of ``X @ ones`` over the T = 20000 X
(320 MB) with NumPy's BLAS on OMP_NUM_THREADS threads: with 2, the machine's read rate to set
the 2-thread pass over X against (later, next to metasp's spinning threads, the two thread
pools would fight over the cores).
"""

import os
import statistics
import warnings

from _measure import blas_read_seconds, wall_time

import metasp


def per_iteration(tasks, n_jobs):
    def fit(max_iter):
        return wall_time(lambda: metasp.fit(tasks, None, 5, max_iter=max_iter, tol=0,
                                            n_jobs=n_jobs, random_state=0, accel=None,
                                            polish=None))  # the IHT iteration only

    return (fit(11) - fit(1)) / 10


def read_rate(X):
    """Bytes per second of ``X @ ones`` (BLAS), median of 9 after one warm-up call."""
    return X.nbytes / blas_read_seconds(X, repeats=9)


def main():
    warnings.simplefilter("ignore", metasp.ConvergenceWarning)
    policy = os.environ.get("OMP_WAIT_POLICY", "default")
    problems = {T: metasp.datasets.make_hps(T, 20, 100, 5, sigma=0.1, random_state=0)
                for T in (2000, 20000)}
    X = problems[20000][0].reshape(-1, 100)
    print(f"X @ ones over {X.nbytes / 1e6:.0f} MB with NumPy's BLAS on OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')} threads: {read_rate(X) / 1e9:.1f} GB/s",
          flush=True)
    for T, (X, y, _, _) in problems.items():
        tasks = metasp.Tasks.from_array(X, y)
        times = {1: [], 2: []}
        for _ in range(5):
            for n_jobs in times:
                times[n_jobs].append(per_iteration(tasks, n_jobs))
        one, two = (statistics.median(times[n]) for n in (1, 2))
        print(f"wait policy {policy}, T={T}: 1 thread {one * 1e3:.2f} ms, 2 threads "
              f"{two * 1e3:.2f} ms, speed-up {one / two:.2f}x", flush=True)


if __name__ == "__main__":
    main()
