"""The gradient pass against a NumPy sum over X (a pure stream of the same bytes), same run.

    OMP_NUM_THREADS=1 python benchmarks/bandwidth.py

For each shape, interleaved and median of 9: X.sum(), the gradient pass alone
(metasp.kernels.gradient) and the fused pass with the step sums (subspace=V, what the solver
runs), with one thread, on the CPU clock of the process (a busy machine inflates wall time
by waiting for a core). "fraction" is time(X.sum()) / time(pass): the share of NumPy's
streaming bandwidth the pass reaches. The kernel call includes allocating its (T, d) output,
which the solver reuses across iterations.
"""

import statistics
import time

import numpy as np

import metasp
from metasp import kernels

SHAPES = [(2000, 20, 100, 5), (20000, 5, 50, 5), (100000, 10, 50, 5)]


def cpu_time(run):
    start = time.process_time()
    run()
    return time.process_time() - start


def main():
    print("T | m | d | s | X.sum() [ms] | gradient [ms] | fraction | gradient + step sums [ms] "
          "| fraction")
    print("---|---|---|---|---|---|---|---|---")
    for T, m, d, s in SHAPES:
        X, y, _, _ = metasp.datasets.make_hps(T, m, d, s, sigma=0.1, random_state=0)
        tasks = metasp.Tasks.from_array(X, y)
        rng = np.random.default_rng(0)
        Theta = 0.1 * rng.standard_normal((T, d))
        V = np.asfortranarray(np.linalg.qr(rng.standard_normal((d, s)))[0])
        times = [(cpu_time(lambda: tasks.X.sum()),
                  cpu_time(lambda: kernels.gradient(tasks, Theta, n_jobs=1)),
                  cpu_time(lambda: kernels.gradient(tasks, Theta, subspace=V, n_jobs=1)))
                 for _ in range(9)]
        total, plain, fused = (statistics.median(column) for column in zip(*times))
        print(f"{T} | {m} | {d} | {s} | {total * 1e3:.2f} | {plain * 1e3:.2f} | "
              f"{total / plain:.2f} | {fused * 1e3:.2f} | {total / fused:.2f}", flush=True)


if __name__ == "__main__":
    main()
