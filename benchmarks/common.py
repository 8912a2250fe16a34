"""Seeded problems and the one-iteration drivers shared by the asv benchmarks.

Everything is generated from fixed seeds, so every benchmark run times the same data. The
problems are cached per process: asv calls ``setup`` before every repeat.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np

import metasp
from metasp import kernels, reference

SEED = 0
SIGMA = 0.1  # noise level of the benchmark problems: noisy enough that the SVD has work to do

# Warm-up iterations before a kernel is timed, so the kernels see a mid-fit iterate.
WARM_ITERATIONS = 5


def shape_label(T, m, d, s):
    return f"T={T},m={m},d={d},s={s}"


def parse_shape(label):
    """``"T=2000,m=20,d=100,s=5"`` -> ``(2000, 20, 100, 5)``."""
    values = dict(item.split("=") for item in label.split(","))
    return tuple(int(values[key]) for key in ("T", "m", "d", "s"))


# Makes the float32 problem in a child process, so that the float64 X it is rounded from never
# counts in the peak memory (ru_maxrss) of the benchmark's own process.
_ROUND_TO_FLOAT32 = """
import sys
import numpy as np
import metasp
T, m, d, s, seed = map(int, sys.argv[1:6])
X, y, B, _ = metasp.datasets.make_hps(T, m, d, s, sigma=float(sys.argv[6]), random_state=seed)
np.savez(sys.argv[7], X=X.astype(np.float32), y=y, B=B)
"""


@functools.lru_cache(maxsize=4)
def problem(T, m, d, s, dtype="float64"):
    """``(tasks, B_true)``: a :func:`metasp.datasets.make_hps` problem as :class:`metasp.Tasks`.

    ``dtype`` is the dtype of the stored X ("float64" or "float32", which the C++ core reads
    natively: the float32 X is the float64 one rounded); y is float64.
    """
    if dtype == "float64":
        X, y, B, _ = metasp.datasets.make_hps(T, m, d, s, sigma=SIGMA, random_state=SEED)
        return metasp.Tasks.from_array(X, y), B
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "problem.npz")
        subprocess.run([sys.executable, "-c", _ROUND_TO_FLOAT32, *map(str, (T, m, d, s, SEED)),
                        repr(SIGMA), path], check=True)
        with np.load(path) as saved:
            return metasp.Tasks.from_array(saved["X"], saved["y"], dtype=dtype), saved["B"]


def paper_iterations(tasks, s, n_iter, n_jobs=1):
    """``metasp.fit`` running exactly ``n_iter`` iterations of the paper's iteration (gradient
    pass, adaptive step, truncated SVD, update: ``accel=None, polish=None, tol=0``), seeded."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metasp.ConvergenceWarning)
        return metasp.fit(tasks, None, s, max_iter=n_iter, tol=0, n_jobs=n_jobs,
                          random_state=SEED, accel=None, polish=None)


@functools.lru_cache(maxsize=4)
def mid_fit_state(T, m, d, s, dtype="float64"):
    """The C++ solver's iterate after WARM_ITERATIONS iterations: ``(Theta, V, basis, svd_tol)``.

    ``basis`` is the warm start the solver's next truncated SVD would get and ``svd_tol`` the
    tolerance the solver would give it (relative to the iterate's last change). The fit runs
    on the problem with X in ``dtype``.
    """
    tasks, _ = problem(T, m, d, s, dtype)
    result = paper_iterations(tasks, s, WARM_ITERATIONS)
    V = np.asfortranarray(result.B.T)
    svd = kernels.truncated_svd(result.Theta, s, random_state=SEED, n_jobs=1)
    svd_tol = max(kernels.SVD_TOL, kernels.SVD_RELATIVE_TOL * result.history["rel_change"][-1])
    return result.Theta, V, svd.basis, svd_tol


def cpp_iteration(tasks, Theta, V, basis, svd_tol, s, n_jobs):
    """One Meta-SP iteration with the compiled kernels: fused gradient and step sums,
    gradient step, warm-started truncated SVD, rank-s update."""
    g = kernels.gradient(tasks, Theta, subspace=V, n_jobs=n_jobs)
    step = g.projected.sum() / g.curvature.sum()
    svd = kernels.truncated_svd(Theta + step * g.G, s, warm_start=basis, random_state=SEED,
                                tol=svd_tol, n_jobs=n_jobs)
    return svd.W @ svd.V.T


def reference_iteration(tasks, Theta, V, s):
    """The same iteration with metasp.reference's NumPy kernels (einsum and a LAPACK SVD)."""
    g = reference.gradient(tasks, Theta, subspace=V)
    step = g.projected.sum() / g.curvature.sum()
    svd = reference.truncated_svd(Theta + step * g.G, s)
    return svd.W @ svd.V.T
