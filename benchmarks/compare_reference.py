"""Time metasp.fit (C++) against metasp.reference.fit (NumPy) in one run.

    python benchmarks/compare_reference.py            # default shapes
    python benchmarks/compare_reference.py --quick    # small shapes, a smoke test

Prints, per shape, the median time of one iteration and of a whole fit to the default
tolerance, for the reference and for the C++ solver with 1 and 2 threads, and their ratios.
Run it on an otherwise idle machine; ratios measured in the same run are what to compare.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings

import numpy as np

import metasp


def median_time(run, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def per_iteration(fit, X, y, s, n_iter, repeats, **options):
    return median_time(lambda: fit(X, y, s, tol=0, max_iter=n_iter, **options), repeats) / n_iter


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, one repeat")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    shapes = [(200, 15, 50, 3)] if args.quick else [(200, 15, 50, 3), (2000, 20, 100, 5),
                                                    (20000, 20, 100, 5)]
    repeats = 1 if args.quick else args.repeats
    print(f"# {platform.processor() or platform.machine()}, numpy {np.__version__}, "
          f"metasp {metasp.__version__}, {metasp._core.max_threads()} threads available")
    print(f"# median of {repeats} runs; data: make_hps(T, m, d, s, sigma=0.1)")
    header = ("T", "m", "d", "s", "what", "reference [s]", "C++ 1 thr [s]", "C++ 2 thr [s]",
              "ref / C++1", "C++1 / C++2")
    print(" | ".join(header))
    warnings.simplefilter("ignore", metasp.ConvergenceWarning)
    for T, m, d, s in shapes:
        X, y, _, _ = metasp.datasets.make_hps(T, m, d, s, sigma=0.1, random_state=0)
        tasks = metasp.Tasks.from_array(X, y)
        rows = []
        ref_iter = per_iteration(metasp.reference.fit, tasks, None, s, 3, max(1, repeats // 2))
        cpp_iter = [per_iteration(metasp.fit, tasks, None, s, 20, repeats, n_jobs=n,
                                  random_state=0) for n in (1, 2)]
        rows.append(("one iteration", ref_iter, *cpp_iter))
        if T <= 2000:
            ref_fit = median_time(lambda: metasp.reference.fit(tasks, None, s), 1)
            cpp_fit = [median_time(lambda n=n: metasp.fit(tasks, None, s, n_jobs=n,
                                                          random_state=0), repeats)
                       for n in (1, 2)]
            rows.append(("whole fit", ref_fit, *cpp_fit))
        for what, ref, one, two in rows:
            print(f"{T} | {m} | {d} | {s} | {what} | {ref:.3g} | {one:.3g} | {two:.3g} | "
                  f"{ref / one:.1f}x | {one / two:.2f}x")


if __name__ == "__main__":
    main()
