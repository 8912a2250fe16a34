"""float32 against float64 X: speed of the memory-bound passes, and what the rounding costs.

    OMP_NUM_THREADS=1 python benchmarks/scripts/scripts/float32.py [--repeat 5] [--quick]
        [--shape T m d s ...] [--no-accuracy]

Speed, one thread, CPU time of the process (a busy machine inflates wall time by waiting for
a core), float64 and float32 interleaved in one run, medians of ``--repeat``:

- per iteration: ``metasp.fit(accel=None, polish=None, tol=0)`` run for 2 and for 12
  iterations; the difference / 10 leaves out the fixed costs (first SVD, result, diagnostics);
- the fused gradient pass (``metasp.kernels.gradient`` with ``subspace=V``: gradient, loss and
  the two step sums, what the solver runs each iteration; the call allocates its (T, d) output);
- ``X.sum()`` over the same array, for the bandwidth NumPy gets from the same bytes;
- the fused pass per element of X, from memory (the whole X) and from cache (the first tasks,
  about 8 MB of float64 X, passed over repeatedly): equal in-cache times for both dtypes and
  a float32 time from memory close to them mean the pass is bound by arithmetic, not bytes.

The float32 tasks hold ``X.astype(np.float32)`` of the float64 ones (``Tasks(...,
dtype=np.float32)``); y stays float64.

Accuracy: whole default fits (``metasp.fit(X, y, s)``) of ``make_hps`` data with sigma = 0.1
and sigma = 0, on the float64 data and on the same data with X rounded to float32: sin angle
to the true subspace for each, and ||Theta_32 - Theta_64||_F / ||Theta_64||_F; and the CPU time
of each fit (one run each: a rough figure).
"""

import argparse
import statistics
import warnings

import _measure  # first: puts benchmarks/ (common.py) on the path
import numpy as np
from _measure import cpu_time
from common import paper_iterations

import metasp
from metasp import kernels

SPEED_SHAPES = [(20000, 20, 100, 5), (100000, 10, 50, 5)]
ACCURACY_SHAPES = [(20000, 20, 100, 5), (2000, 20, 100, 5), (200, 15, 50, 3)]
SHORT, LONG = 2, 12  # iterations of the two fits whose difference is timed


def speed(T, m, d, s, repeat):
    X, y, _, _ = metasp.datasets.make_hps(T, m, d, s, sigma=0.1, random_state=0)
    double = metasp.Tasks.from_array(X, y)
    single = metasp.Tasks(double.X, double.y, double.offsets, dtype=np.float32)
    mid = paper_iterations(double, s, 5)  # a mid-fit iterate and subspace for the pass
    Theta, V = mid.Theta, np.asfortranarray(mid.B.T)
    runs = {"iteration": lambda tasks: (cpu_time(lambda: paper_iterations(tasks, s, LONG))
                                        - cpu_time(lambda: paper_iterations(tasks, s, SHORT)))
            / (LONG - SHORT),
            "gradient pass": lambda tasks: cpu_time(
                lambda: kernels.gradient(tasks, Theta, subspace=V, n_jobs=1)),
            "X.sum()": lambda tasks: cpu_time(lambda: tasks.X.sum())}
    times = {(name, dtype): [] for name in runs for dtype in ("float64", "float32")}
    for _ in range(repeat):
        for name, run in runs.items():
            for dtype, tasks in (("float64", double), ("float32", single)):
                times[name, dtype].append(run(tasks))
    return {key: statistics.median(values) for key, values in times.items()}


def per_element(T, m, d, s, repeat):
    """Fused-pass CPU time per element of X, ns: {(where, dtype): time}."""
    X, y, _, _ = metasp.datasets.make_hps(T, m, d, s, sigma=0.1, random_state=0)
    rng = np.random.default_rng(0)
    Theta = 0.1 * rng.standard_normal((T, d))
    V = np.asfortranarray(np.linalg.qr(rng.standard_normal((d, s)))[0])
    cached = max(1, int(8e6 / (8 * m * d)))  # tasks in about 8 MB of float64 X (in L3)
    cases = {}
    for dtype in ("float64", "float32"):
        tasks = metasp.Tasks.from_array(X, y, dtype=dtype)
        cases["memory", dtype] = (tasks, Theta, 1)
        cases["cache", dtype] = (tasks.subset(np.arange(cached)), Theta[:cached],
                                 max(1, T // cached))
    times = {key: [] for key in cases}
    for _ in range(repeat):
        for key, (tasks, theta, n) in cases.items():
            def run(tasks=tasks, theta=theta, n=n):
                for _ in range(n):
                    kernels.gradient(tasks, theta, subspace=V, n_jobs=1)
            times[key].append(cpu_time(run) / (n * tasks.X.size) * 1e9)
    return {key: statistics.median(values) for key, values in times.items()}


def accuracy(T, m, d, s, sigma):
    X, y, B, _ = metasp.datasets.make_hps(T, m, d, s, sigma=sigma, random_state=1)
    out, seconds = {}, {}
    for dtype in (np.float64, np.float32):
        tasks = metasp.Tasks.from_array(X, y, dtype=dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", metasp.ConvergenceWarning)
            result, _, seconds[np.dtype(dtype).name] = _measure.timed(
                lambda: metasp.fit(tasks, None, s, heads="fixed", random_state=0, n_jobs=1))
        out[np.dtype(dtype).name] = result
    difference = (np.linalg.norm(out["float32"].Theta - out["float64"].Theta)
                  / np.linalg.norm(out["float64"].Theta))
    angles = {name: metasp.metrics.sin_angle(result.B, B) for name, result in out.items()}
    return angles, difference, {name: result.n_iter for name, result in out.items()}, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small shapes, a smoke test")
    parser.add_argument("--shape", type=int, nargs=4, action="append", metavar=("T", "m", "d", "s"),
                        help="speed shapes instead of the default ones (repeatable)")
    parser.add_argument("--no-accuracy", action="store_true", help="speed only")
    args = parser.parse_args()
    speed_shapes = args.shape or ([(2000, 10, 20, 3)] if args.quick else SPEED_SHAPES)
    accuracy_shapes = [] if args.no_accuracy else (
        [(200, 15, 50, 3)] if args.quick else ACCURACY_SHAPES)

    print("T | m | d | s | what | float64 [ms] | float32 [ms] | float64 / float32")
    print("---|---|---|---|---|---|---|---")
    for shape in speed_shapes:
        times = speed(*shape, args.repeat)
        for name in ("iteration", "gradient pass", "X.sum()"):
            double, single = times[name, "float64"], times[name, "float32"]
            print(" | ".join(str(v) for v in shape) + f" | {name} | {double * 1e3:.2f} | "
                  f"{single * 1e3:.2f} | {double / single:.2f}", flush=True)

    print()
    print("T | m | d | s | ns per element of X: float64 memory | float64 cache | "
          "float32 memory | float32 cache")
    print("---|---|---|---|---|---|---|---")
    for shape in speed_shapes:
        ns = per_element(*shape, args.repeat)
        print(" | ".join(str(v) for v in shape) + " | " + " | ".join(
            f"{ns[where, dtype]:.3f}" for dtype in ("float64", "float32")
            for where in ("memory", "cache")), flush=True)

    if not accuracy_shapes:
        return
    print()
    print("T | m | d | s | sigma | sin angle float64 | sin angle float32 | "
          "rel. difference of Theta | iterations (64, 32) | fit CPU time [s] (64, 32)")
    print("---|---|---|---|---|---|---|---|---|---")
    for shape in accuracy_shapes:
        for sigma in (0.1, 0.0):
            angles, difference, n_iter, seconds = accuracy(*shape, sigma)
            print(" | ".join(str(v) for v in shape) + f" | {sigma} | {angles['float64']:.3e} | "
                  f"{angles['float32']:.3e} | {difference:.2e} | {n_iter['float64']}, "
                  f"{n_iter['float32']} | {seconds['float64']:.3f}, {seconds['float32']:.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
