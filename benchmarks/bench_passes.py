"""Cost of a fit in passes over X: machine-independent speed.

One pass is the time of one BLAS read of X (``X.reshape(-1, d) @ ones(d)``, one thread),
measured in the same process as the fit. A Meta-SP iteration cannot cost less than one pass,
so these numbers say how far the solver is from the memory-bandwidth limit, whatever the
machine: the ratio against the NumPy reference moves with the machine's memory speed, the
count of passes much less.
"""

from __future__ import annotations

import functools
import time
import warnings

import numpy as np

import metasp

SHAPE = (20000, 20, 100, 5)
PASS_REPEATS = 7


@functools.lru_cache(maxsize=2)
def _problem(sigma):
    T, m, d, s = SHAPE
    X, y, _, _ = metasp.datasets.make_hps(T, m, d, s, sigma=sigma, random_state=0)
    return X, metasp.Tasks.from_array(X, y)


def seconds_per_pass(X):
    """Median time of one BLAS read of X (the caller pins BLAS to one thread)."""
    flat = X.reshape(-1, X.shape[-1])
    ones = np.ones(flat.shape[1])
    flat @ ones  # first touch
    times = []
    for _ in range(PASS_REPEATS):
        start = time.perf_counter()
        flat @ ones
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _fit(tasks, heads):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metasp.ConvergenceWarning)
        return metasp.fit(tasks, None, SHAPE[3], heads=heads, n_jobs=1, random_state=0)


class Passes:
    """A whole fit (one thread) in passes over X, noisy (sigma 0.1) and noiseless, with the
    default random heads and with fixed heads (conjugate-direction IHT, then the polish)."""

    params = [[0.1, 0.0], ["auto", "fixed"]]
    param_names = ["sigma", "heads"]
    timeout = 600

    def setup(self, sigma, heads):
        self.X, self.tasks = _problem(sigma)
        self.result = _fit(self.tasks, heads)  # also warms caches and pages

    def track_passes_per_fit(self, sigma, heads):
        start = time.perf_counter()
        _fit(self.tasks, heads)
        seconds = time.perf_counter() - start
        return seconds / seconds_per_pass(self.X)

    track_passes_per_fit.unit = "passes over X"


class IterationPasses:
    """One iteration of the fixed-heads solver in passes over X: the median of its own clock
    (``history["seconds"]``) over the hard-thresholding iterations of one fit."""

    params = [0.1, 0.0]
    param_names = ["sigma"]
    timeout = 300

    def setup(self, sigma):
        self.X, self.tasks = _problem(sigma)
        _fit(self.tasks, "fixed")

    def track_passes_per_iteration(self, sigma):
        result = _fit(self.tasks, "fixed")
        iht = np.asarray(result.history["phase"]) == "iht"
        seconds = np.asarray(result.history["seconds"], dtype=float)[iht]
        return float(np.median(seconds)) / seconds_per_pass(self.X)

    track_passes_per_iteration.unit = "passes over X"
