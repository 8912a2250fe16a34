"""Timing helpers shared by the measurement scripts in this folder.

Every script times with the same rules: medians over repeats (interleaved where several
things are compared, so that a busy machine slows them alike), wall time and the process's
CPU time side by side (a busy machine inflates wall time by waiting for a core, not CPU time),
and the speed of a BLAS read of X measured in the same run as the yardstick for a pass over X.
Thread counts are pinned with threadpoolctl when it is installed (it comes with scikit-learn),
otherwise by OMP_NUM_THREADS, which must then be set before Python starts.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

# The asv suite's shared data makers (benchmarks/common.py) are importable from these scripts.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(run):
    """Run ``run()`` once; return ``(its result, wall seconds, CPU seconds of the process)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def wall_time(run) -> float:
    """Wall-clock seconds of one call of ``run()``."""
    return timed(run)[1]


def cpu_time(run) -> float:
    """CPU seconds (all threads of the process) of one call of ``run()``."""
    return timed(run)[2]


def median_time(run, repeats: int = 5, clock: str = "wall", warmup: int = 0) -> float:
    """Median over ``repeats`` calls of ``run()`` of its time on ``clock`` ("wall" or "cpu")."""
    measure = {"wall": wall_time, "cpu": cpu_time}[clock]
    for _ in range(warmup):
        run()
    return statistics.median(measure(run) for _ in range(repeats))


def interleaved_medians(runs: dict, repeats: int, clock: str = "wall") -> dict:
    """Median time of each of ``runs`` (name -> callable), the calls interleaved repeat by repeat."""
    measure = {"wall": wall_time, "cpu": cpu_time}[clock]
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(measure(run))
    return {name: statistics.median(values) for name, values in times.items()}


def blas_read_seconds(X, repeats: int = 9, clock: str = "wall") -> float:
    """Median time of ``X @ ones``: a BLAS matrix-vector product, the fastest read of X in NumPy.

    One warm-up call first; ``X.nbytes / blas_read_seconds(X)`` is the machine's read rate for
    X with NumPy's BLAS on its current thread count.
    """
    X = np.asarray(X)
    X2 = X.reshape(-1, X.shape[-1])
    ones = np.ones(X2.shape[1], dtype=X2.dtype)
    return median_time(lambda: X2 @ ones, repeats=repeats, clock=clock, warmup=1)


def blas_multiply_add_rate(repeats: int = 5) -> float:
    """Multiply-adds per second of a BLAS product of two 1000 x 1000 float64 matrices."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((1000, 1000)), rng.standard_normal((1000, 1000))
    return 1e9 / median_time(lambda: a @ b, repeats=repeats)


def pin_threads(n: int | None):
    """Context manager limiting BLAS and OpenMP pools to ``n`` threads (``None``: no limit).

    Uses threadpoolctl when installed; without it, returns a no-op context and the thread
    count is whatever OMP_NUM_THREADS said when Python started.
    """
    if n is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        if os.environ.get("OMP_NUM_THREADS") != str(n):
            print(f"# threadpoolctl is not installed: set OMP_NUM_THREADS={n} before starting "
                  "to pin the thread count", file=sys.stderr)
        return contextlib.nullcontext()
    return threadpool_limits(limits=n)


def available_threads() -> int:
    """Threads OpenMP may use: threadpoolctl's count when it sees an OpenMP runtime, else the
    CPUs this process may run on."""
    try:
        from threadpoolctl import threadpool_info

        import metasp  # noqa: F401  (loads the extension, and with it the OpenMP runtime)

        counts = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "openmp"]
        if counts:
            return max(counts)
    except ImportError:
        pass
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def machine_line() -> str:
    """One comment line naming the machine, the versions and the thread settings."""
    import metasp

    return (f"# {platform.processor() or platform.machine()}, numpy {np.__version__}, "
            f"metasp {metasp.__version__}, {available_threads()} threads available, "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")


# The compiled passes over the tasks that metasp.fit reaches through metasp.kernels (each
# parallel over tasks).
PROFILED_KERNELS = ("marginal_pass", "task_statistics", "gradient", "truncated_svd")


@contextlib.contextmanager
def kernel_clock(calls):
    """Counts the calls and seconds of each of PROFILED_KERNELS in ``calls`` (name -> [calls,
    seconds]) while the block runs; the fit reaches them through the module ``metasp.kernels``."""
    import metasp

    originals = {name: getattr(metasp.kernels, name) for name in PROFILED_KERNELS}

    def clocked(name, kernel):
        def run(*args, **kwargs):
            start = time.perf_counter()
            out = kernel(*args, **kwargs)
            entry = calls.setdefault(name, [0, 0.0])
            entry[0] += 1
            entry[1] += time.perf_counter() - start
            return out
        return run

    try:
        for name, kernel in originals.items():
            setattr(metasp.kernels, name, clocked(name, kernel))
        yield calls
    finally:
        for name, kernel in originals.items():
            setattr(metasp.kernels, name, kernel)
