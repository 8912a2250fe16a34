"""Whole fits: metasp.fit (C++) against metasp.reference.fit (NumPy, exact SVD)."""

import warnings

import metasp

from .common import SEED, parse_shape, problem, shape_label

# Whole fits to tol=1e-10 on noisy data take tens to hundreds of iterations, and the reference
# about 20 s at the larger shape: the per-iteration benchmarks in bench_kernels.py cover the
# wider grid of T, m, d, s and threads.
FIT_SHAPES = [shape_label(*shape) for shape in [(200, 15, 50, 3), (1000, 20, 100, 5)]]
IMPLEMENTATIONS = {"cpp": metasp.fit, "reference": metasp.reference.fit}


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
        _fit("cpp", self.data, self.s, n_jobs=n_jobs, max_iter=10, tol=0, accel=None, refine=None)

    def peakmem_ten_iterations(self, shape, n_jobs, dtype):
        _fit("cpp", self.data, self.s, n_jobs=n_jobs, max_iter=10, tol=0, accel=None, refine=None)
