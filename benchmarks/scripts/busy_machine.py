"""Time per iteration with 1 and 2 threads, to compare an idle machine with a busy one.

    python benchmarks/scripts/busy_machine.py                          # idle
    (timeout 60 sh -c 'while :; do :; done' &); python benchmarks/scripts/busy_machine.py   # one core busy
    OMP_WAIT_POLICY=passive python benchmarks/scripts/busy_machine.py  # threads sleep while waiting
"""

from _measure import median_time

import metasp

N_ITER = 20


def main():
    for T, m, d, s in [(200, 15, 50, 3), (2000, 20, 100, 5)]:
        X, y, _, _ = metasp.datasets.make_hps(T, m, d, s, sigma=0.1, random_state=0)
        tasks = metasp.Tasks.from_array(X, y)
        for n_jobs in (1, 2):
            seconds = median_time(lambda: metasp.fit(
                tasks, s=s, max_iter=N_ITER, tol=0, n_jobs=n_jobs, random_state=0, accel=None,
                polish=None), repeats=5)  # the IHT iteration only
            per_iteration = seconds / N_ITER
            print(f"T={T} m={m} d={d} s={s} n_jobs={n_jobs}: {per_iteration * 1e3:.3f} ms/iteration")


if __name__ == "__main__":
    main()
