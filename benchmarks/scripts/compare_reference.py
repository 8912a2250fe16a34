"""Time metasp.fit (C++) against metasp.reference.fit (NumPy) in one run.

    OMP_NUM_THREADS=1 python benchmarks/scripts/compare_reference.py          # default shapes
    python benchmarks/scripts/compare_reference.py --quick                    # small shapes, smoke test

Prints, per shape, the median time of one iteration (a fit of 1 + n iterations minus a fit of
one, over n: the first iteration, which has no warm start, and the call overhead drop out) and
of a whole fit to the default tolerance, for the reference and for the C++ solver with 1 and
2 threads, and their ratios. All measurements of a shape are interleaved, repeat by repeat, so
that a busy machine slows them alike. Two clocks: wall time, and CPU time of the process (all
threads), which on a shared machine is not inflated by waiting for a core. Run with
OMP_NUM_THREADS=1 so that NumPy's BLAS, and thus the reference, uses one thread; the C++
thread counts are set explicitly.
"""

from __future__ import annotations

import argparse
import statistics
import warnings

import _measure
import numpy as np

import metasp


def timed(run):
    """(wall, CPU) seconds of one call, as an array so that differences subtract both."""
    return np.array(_measure.timed(run)[1:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, one repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n-iter", type=int, default=10, help="timed iterations (C++)")
    args = parser.parse_args()
    shapes = [(200, 15, 50, 3)] if args.quick else [(200, 15, 50, 3), (2000, 20, 100, 5),
                                                    (20000, 20, 100, 5)]
    repeats = 1 if args.quick else args.repeats
    print(_measure.machine_line())
    print(f"# median of {repeats} interleaved runs; data: make_hps(T, m, d, s, sigma=0.1)")
    header = ("T", "m", "d", "s", "what", "clock", "reference [s]", "C++ 1 thr [s]",
              "C++ 2 thr [s]", "ref / C++1", "C++1 / C++2")
    print(" | ".join(header))
    print("|".join("---" for _ in header))
    warnings.simplefilter("ignore", metasp.ConvergenceWarning)
    for T, m, d, s in shapes:
        X, y, _, _ = metasp.datasets.make_hps(T, m, d, s, sigma=0.1, random_state=0)
        tasks = metasp.Tasks.from_array(X, y)
        # The reference iteration is slow: fewer timed iterations, same method.
        n_ref = max(1, min(args.n_iter, 3))

        # One iteration = the paper's iteration with the adaptive step (gradient pass, step,
        # truncated SVD, update): no conjugate directions, no least-squares polish.
        def run(fit, max_iter, **options):
            return lambda: fit(tasks, None, s, tol=0, max_iter=max_iter, accel=None,
                               polish=None, **options)

        ref, one, two = [], [], []
        for _ in range(repeats):
            ref.append((timed(run(metasp.reference.fit, 1 + n_ref))
                        - timed(run(metasp.reference.fit, 1))) / n_ref)
            for n_jobs, out in ((1, one), (2, two)):
                options = dict(n_jobs=n_jobs, random_state=0)
                out.append((timed(run(metasp.fit, 1 + args.n_iter, **options))
                            - timed(run(metasp.fit, 1, **options))) / args.n_iter)
        rows = [("one iteration", ref, one, two)]
        if T <= 2000:
            ref, one, two = [], [], []
            for _ in range(repeats if T <= 200 else 1):
                ref.append(timed(lambda: metasp.reference.fit(tasks, None, s)))
                one.append(timed(lambda: metasp.fit(tasks, None, s, heads="fixed", n_jobs=1,
                                                    random_state=0)))
                two.append(timed(lambda: metasp.fit(tasks, None, s, heads="fixed", n_jobs=2,
                                                    random_state=0)))
            rows.append(("whole fit", ref, one, two))
        for what, ref, one, two in rows:
            for clock, k in (("wall", 0), ("cpu", 1)):
                r, a, b = (statistics.median(x[k] for x in times) for times in (ref, one, two))
                print(f"{T} | {m} | {d} | {s} | {what} | {clock} | {r:.3g} | {a:.3g} | {b:.3g} | "
                      f"{r / a:.1f}x | {a / b:.2f}x", flush=True)


if __name__ == "__main__":
    main()
