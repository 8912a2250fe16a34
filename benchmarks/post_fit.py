"""What metasp.fit does after the C++ solve: per-task statistics, head prior, diagnostics.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/post_fit.py
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/post_fit.py --baseline DIR

Times each part before and after, interleaved in one process (CPU time, medians), at
(T, m, d, s) = (2000, 20, 100, 5) by default. "Before" is the NumPy code the compiled parts
replaced, kept in metasp.reference (task_statistics, fit_head_prior), and the diagnostics with
a separate gradient pass and the truncated SVD in rank_spike. With --baseline DIR, where DIR
holds another build of metasp as a package named ``metasp_baseline`` (an unpacked wheel whose
``metasp`` folder was renamed), "before" runs that build's own functions instead, and whole
fits of both builds are timed interleaved as well.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import warnings

import numpy as np

import metasp
from metasp import _diagnostics, kernels, reference
from metasp._result import _fit_head_prior
from metasp._validation import check_fit_arguments


def cpu_time(run):
    start = time.process_time()
    run()
    return time.process_time() - start


def before_functions(baseline):
    """(statistics, prior, diagnose) of the code before the change."""
    if baseline is None:
        def statistics(tasks, B):
            return reference.task_statistics(tasks, B)[:3]

        def diagnose(result, args, tasks, gram):
            # The old path: the truncated SVD in rank_spike and a gradient pass of its own.
            saved = _diagnostics.SMALL_GRAM
            _diagnostics.SMALL_GRAM = 0
            try:
                return _diagnostics.diagnose(
                    result, args, lambda Theta: kernels.gradient(tasks, Theta, n_jobs=1).G, gram)
            finally:
                _diagnostics.SMALL_GRAM = saved

        return statistics, reference.fit_head_prior, diagnose
    old_result = importlib.import_module("metasp_baseline._result")
    old_diagnostics = importlib.import_module("metasp_baseline._diagnostics")

    def diagnose(result, args, tasks, gram):
        return old_diagnostics.diagnose(
            result, args, lambda Theta: baseline.kernels.gradient(tasks, Theta, n_jobs=1).G, gram)

    return old_result._task_sufficient_statistics, old_result._fit_head_prior, diagnose


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[2000, 20, 100, 5],
                        metavar=("T", "m", "d", "s"))
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--baseline", help="directory holding the package metasp_baseline")
    parser.add_argument("--spike-shapes", type=int, nargs="*", default=[2000, 100, 20000, 500],
                        metavar="T d", help="pairs: rank_spike on a T x d Gaussian matrix from "
                        "the Gram matrix and from the truncated SVD (default 2000 100 20000 500)")
    args = parser.parse_args()
    baseline = None
    if args.baseline:
        sys.path.insert(0, args.baseline)
        baseline = importlib.import_module("metasp_baseline")
    T, m, d, s = args.shape
    X, y, _, _ = metasp.datasets.make_hps(T, m, d, s, sigma=0.1, random_state=0)
    tasks = metasp.Tasks.from_array(X, y)
    warnings.simplefilter("error")  # a clean fit: any warning is a problem
    result = metasp.fit(tasks, None, s, heads="fixed", n_jobs=1, random_state=0)
    fit_args = check_fit_arguments(tasks, None, s, "auto", "zero", 1000, 1e-10, 1, 0, None,
                                   available_threads=1, accel="cg", refine="auto",
                                   n_starts=1, sin_tol=None)
    assert _diagnostics.checks_rank(result, fit_args), "the rank check should apply here"
    old_statistics, old_prior, old_diagnose = before_functions(baseline)
    old_tasks = tasks if baseline is None else baseline.Tasks(tasks.X, tasks.y, tasks.offsets)
    n = tasks.n_samples

    statistics = kernels.task_statistics(tasks, result.B, heads=result.W, n_jobs=1)
    old = old_statistics(old_tasks, result.B)
    parts = {
        "per-task statistics": (
            lambda: old_statistics(old_tasks, result.B),
            lambda: kernels.task_statistics(tasks, result.B, n_jobs=1)),
        "per-task statistics + gradient at W B (one pass)": (
            lambda: (old_statistics(old_tasks, result.B),
                     kernels.gradient(tasks, result.Theta, n_jobs=1)),
            lambda: kernels.task_statistics(tasks, result.B, heads=result.W, n_jobs=1)),
        "head prior (EM + SQUAREM)": (
            lambda: old_prior(old, n),
            lambda: _fit_head_prior(statistics, n, n_threads=1)),
        "diagnose (old: with its gradient pass)": (
            lambda: old_diagnose(result, fit_args, old_tasks, old[0]),
            lambda: _diagnostics.diagnose(result, fit_args, lambda Theta: statistics.G,
                                          statistics.gram)),
    }

    def whole_old():
        gram = old_statistics(old_tasks, result.B)
        old_prior(gram, n)
        old_diagnose(result, fit_args, old_tasks, gram[0])

    def whole_new():
        new = kernels.task_statistics(tasks, result.B, heads=result.W, n_jobs=1)
        _fit_head_prior(new, n, n_threads=1)
        _diagnostics.diagnose(result, fit_args, lambda Theta: new.G, new.gram)

    parts["all of the above, as fit runs it"] = (whole_old, whole_new)
    if baseline is not None:
        parts["whole metasp.fit (baseline build vs this one)"] = (
            lambda: baseline.fit(old_tasks, None, s, n_jobs=1, random_state=0),
            lambda: metasp.fit(tasks, None, s, heads="fixed", n_jobs=1, random_state=0))

    times = {name: ([], []) for name in parts}
    for _ in range(args.repeats):
        for name, (before, after) in parts.items():
            times[name][0].append(cpu_time(before))
            times[name][1].append(cpu_time(after))

    print(f"T={T}, m={m}, d={d}, s={s}, sigma=0.1; CPU time, median of {args.repeats}, "
          f"interleaved; before: {'baseline build' if baseline else 'metasp.reference twins'}")
    print("| part | before [ms] | after [ms] | before / after |")
    print("|---|---|---|---|")
    for name, (before, after) in times.items():
        b, a = 1e3 * np.median(before), 1e3 * np.median(after)
        print(f"| {name} | {b:.2f} | {a:.2f} | {b / a:.1f}x |")
    spike_shapes = list(zip(args.spike_shapes[::2], args.spike_shapes[1::2]))
    if spike_shapes:
        print("\nrank_spike of noise-like residual correlations (a right-rank fit): Gaussian "
              f"T x d, CPU time, median of {args.repeats // 4 + 1}, interleaved")
        print("| T, d | Gram matrix [ms] | truncated SVD [ms] | SVD / Gram |")
        print("|---|---|---|---|")
    for rows, cols in spike_shapes:
        G = np.random.default_rng(0).standard_normal((rows, cols))
        sizes = np.full(rows, 20)
        gram_times, svd_times = [], []
        for _ in range(args.repeats // 4 + 1):
            gram_times.append(cpu_time(lambda: _diagnostics.rank_spike(G, sizes, 5, 1)))
            _diagnostics.SMALL_GRAM, saved = 0, _diagnostics.SMALL_GRAM
            svd_times.append(cpu_time(lambda: _diagnostics.rank_spike(G, sizes, 5, 1)))
            _diagnostics.SMALL_GRAM = saved
        g, v = 1e3 * np.median(gram_times), 1e3 * np.median(svd_times)
        print(f"| {rows}, {cols} | {g:.2f} | {v:.2f} | {v / g:.1f}x |")
    new_prior = _fit_head_prior(statistics, n, n_threads=1)
    old_prior_values = old_prior(old, n)
    difference = max(np.linalg.norm(np.subtract(a, b)) / np.linalg.norm(b)
                     for a, b in zip(new_prior, old_prior_values))
    print(f"head prior, largest relative difference (norm) after vs before: {difference:.1e}")


if __name__ == "__main__":
    main()
