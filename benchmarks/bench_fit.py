"""Whole fits: metasp.fit (C++) against metasp.reference.fit (NumPy, exact SVD), and the default
random-heads fit on the scarce-data benchmark's grid."""

import functools
import warnings

import numpy as np

import metasp

from .common import SEED, parse_shape, problem, shape_label

# Whole fits to tol=1e-10 on noisy data take tens to hundreds of iterations, and the reference
# about 20 s at the larger shape: the per-iteration benchmarks in bench_kernels.py cover the
# wider grid of T, m, d, s and threads.
FIT_SHAPES = [shape_label(*shape) for shape in [(200, 15, 50, 3), (1000, 20, 100, 5)]]
# The reference is the fixed-heads solver's twin.
IMPLEMENTATIONS = {"cpp": functools.partial(metasp.fit, heads="fixed"),
                   "reference": metasp.reference.fit}


def _fit(implementation, data, s, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metasp.ConvergenceWarning)
        return IMPLEMENTATIONS[implementation](data, None, s, random_state=SEED, **options)


class Fit:
    """A fit to the default tolerance, one thread."""

    params = (list(IMPLEMENTATIONS), FIT_SHAPES)
    param_names = ["implementation", "shape"]
    timeout = 600

    def setup(self, implementation, shape):
        self.T, self.m, self.d, self.s = parse_shape(shape)
        self.data, _ = problem(self.T, self.m, self.d, self.s)

    def time_fit(self, implementation, shape):
        _fit(implementation, self.data, self.s, n_jobs=1)

    def peakmem_fit(self, implementation, shape):
        _fit(implementation, self.data, self.s, n_jobs=1)


class FitThreadsAndDtype:
    """Ten C++ iterations on a large problem: threads and the dtype of X (float32 X is read
    natively, computing in float64: half the bytes per pass)."""

    params = (["T=20000,m=20,d=100,s=5"], [1, 2], ["float64", "float32"])
    param_names = ["shape", "n_jobs", "dtype"]
    timeout = 300

    def setup(self, shape, n_jobs, dtype):
        self.T, self.m, self.d, self.s = parse_shape(shape)
        self.data, _ = problem(self.T, self.m, self.d, self.s, dtype)

    def time_ten_iterations(self, shape, n_jobs, dtype):
        _fit("cpp", self.data, self.s, n_jobs=n_jobs, max_iter=10, tol=0, accel=None, polish=None)

    def peakmem_ten_iterations(self, shape, n_jobs, dtype):
        _fit("cpp", self.data, self.s, n_jobs=n_jobs, max_iter=10, tol=0, accel=None, polish=None)


class ScarceFit:
    """The default fit (random heads) on points of the scarce-data benchmark (d = 100, s = 5,
    noise 1, heads N(0, I)): wall time and sin angle to the true subspace."""

    params = (["T=100,m=10", "T=800,m=5", "T=800,m=10", "T=6400,m=10"], [1, 2])
    param_names = ["shape", "n_jobs"]
    timeout = 300

    def setup(self, shape, n_jobs):
        T, m = (int(part.split("=")[1]) for part in shape.split(","))
        rng = np.random.default_rng(SEED)
        self.B = np.linalg.qr(rng.standard_normal((100, 5)))[0].T
        X = rng.standard_normal((T, m, 100))
        y = np.einsum("tmd,td->tm", X, rng.standard_normal((T, 5)) @ self.B)
        self.tasks = metasp.Tasks.from_array(X, y + rng.standard_normal((T, m)))

    def _fit(self, n_jobs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", metasp.DiagnosticWarning)  # m = 5: information limit
            return metasp.fit(self.tasks, None, 5, n_jobs=n_jobs, random_state=SEED)

    def time_fit(self, shape, n_jobs):
        self._fit(n_jobs)

    def track_sin_angle(self, shape, n_jobs):
        return metasp.metrics.sin_angle(self._fit(n_jobs).B, self.B)
