"""The gradient pass against NumPy reads of X (pure streams of the same bytes), same run.

    OMP_NUM_THREADS=1 python benchmarks/scripts/bandwidth.py

For each shape, interleaved and median of 9: X.sum(), X @ 1 (BLAS matrix-vector product with a
vector of ones: the fastest single read of X we found in NumPy; X.sum() is slower because its
pairwise summation is bound by arithmetic, not memory), the gradient pass alone
(metasp.kernels.gradient) and the fused pass with the step sums (subspace=V, what the solver
runs), with one thread, on the CPU clock of the process (a busy machine inflates wall time
by waiting for a core). "fraction" is time(X.sum()) / time(pass): the share of NumPy's
summing bandwidth the pass reaches. The kernel call includes allocating
its (T, d) output, which the solver reuses across iterations.
"""

import statistics

import numpy as np
from _measure import cpu_time

import metasp
from metasp import kernels

SHAPES = [(2000, 20, 100, 5), (20000, 5, 50, 5), (100000, 10, 50, 5)]


def main():
    print("T | m | d | s | X.sum() [ms] | X @ 1 [ms] | gradient [ms] | fraction "
          "| gradient + step sums [ms] | fraction")
    print("---|---|---|---|---|---|---|---|---|---")
    for T, m, d, s in SHAPES:
        X, y, _, _ = metasp.datasets.make_hps(T, m, d, s, sigma=0.1, random_state=0)
        tasks = metasp.Tasks.from_array(X, y)
        rng = np.random.default_rng(0)
        Theta = 0.1 * rng.standard_normal((T, d))
        V = np.asfortranarray(np.linalg.qr(rng.standard_normal((d, s)))[0])
        ones = np.ones(d)
        times = [(cpu_time(lambda: tasks.X.sum()),
                  cpu_time(lambda: tasks.X @ ones),
                  cpu_time(lambda: kernels.gradient(tasks, Theta, n_jobs=1)),
                  cpu_time(lambda: kernels.gradient(tasks, Theta, subspace=V, n_jobs=1)))
                 for _ in range(9)]
        total, gemv, plain, fused = (statistics.median(column) for column in zip(*times))
        print(f"{T} | {m} | {d} | {s} | {total * 1e3:.2f} | {gemv * 1e3:.2f} | "
              f"{plain * 1e3:.2f} | {total / plain:.2f} | {fused * 1e3:.2f} | "
              f"{total / fused:.2f}", flush=True)


if __name__ == "__main__":
    main()
