"""The kernels of one iteration, C++ against metasp.reference: the fused gradient pass, the
truncated SVD, and one whole iteration (gradient pass, step, truncated SVD, update)."""

import numpy as np

from metasp import kernels, reference

from .common import (
    SEED,
    cpp_iteration,
    mid_fit_state,
    paper_iterations,
    parse_shape,
    problem,
    reference_iteration,
    shape_label,
)

IMPLEMENTATIONS = ["cpp", "reference"]
THREADS = [1, 2]
DTYPES = ["float64", "float32"]  # of X: the C++ core reads float32 natively
# (2000, 20, 100, 5) is the headline shape; (20000, 20, 100, 5) the threading one; (20000, 5,
# 50, 5) has short tasks (5 rows each), where per-task overhead shows.
KERNEL_SHAPES = [shape_label(*shape) for shape in
                 [(2000, 20, 100, 5), (20000, 20, 100, 5), (20000, 5, 50, 5)]]


class _MidFit:
    params = (IMPLEMENTATIONS, KERNEL_SHAPES, THREADS)
    param_names = ["implementation", "shape", "n_jobs"]
    timeout = 300

    def setup(self, implementation, shape, n_jobs, dtype="float64"):
        if implementation == "reference" and n_jobs != 1:
            raise NotImplementedError("the reference has no thread count of its own")
        if implementation == "reference" and dtype != "float64":
            raise NotImplementedError("the reference computes in float64 only")
        self.T, self.m, self.d, self.s = parse_shape(shape)
        self.tasks, _ = problem(self.T, self.m, self.d, self.s, dtype)
        self.Theta, self.V, self.basis, self.svd_tol = mid_fit_state(self.T, self.m, self.d,
                                                                     self.s, dtype)


class GradientPass(_MidFit):
    """Per-task gradients, losses and the two step sums, in one pass over X."""

    params = (*_MidFit.params, DTYPES)
    param_names = [*_MidFit.param_names, "dtype"]

    def time_gradient(self, implementation, shape, n_jobs, dtype):
        if implementation == "cpp":
            kernels.gradient(self.tasks, self.Theta, subspace=self.V, n_jobs=n_jobs)
        else:
            reference.gradient(self.tasks, self.Theta, subspace=self.V)

    def peakmem_gradient(self, implementation, shape, n_jobs, dtype):
        self.time_gradient(implementation, shape, n_jobs, dtype)


class StreamBandwidth:
    """The gradient pass against NumPy's sum over X (a pure stream of the same bytes):
    ``track_fraction_of_sum`` is time(X.sum()) / time(gradient pass), ideally near 1."""

    params = (KERNEL_SHAPES, THREADS, DTYPES)
    param_names = ["shape", "n_jobs", "dtype"]
    timeout = 300

    def setup(self, shape, n_jobs, dtype):
        self.T, self.m, self.d, self.s = parse_shape(shape)
        self.tasks, _ = problem(self.T, self.m, self.d, self.s, dtype)
        self.Theta, self.V, _, _ = mid_fit_state(self.T, self.m, self.d, self.s, dtype)

    def time_numpy_sum(self, shape, n_jobs, dtype):
        self.tasks.X.sum()

    def track_fraction_of_sum(self, shape, n_jobs, dtype):
        from timeit import repeat

        def gradient():
            kernels.gradient(self.tasks, self.Theta, subspace=self.V, n_jobs=n_jobs)

        def stream():
            self.tasks.X.sum()

        # Interleaved, medians: the machine may be busy.
        ratios = [min(repeat(stream, number=1, repeat=3)) / min(repeat(gradient, number=1,
                                                                         repeat=3))
                  for _ in range(5)]
        return float(np.median(ratios))

    track_fraction_of_sum.unit = "ratio"


class TruncatedSVD(_MidFit):
    """Top-s SVD of the gradient-step target: warm-started subspace iteration (C++) to the
    tolerance the solver would use, against a full LAPACK thin SVD (reference)."""

    def setup(self, implementation, shape, n_jobs):
        super().setup(implementation, shape, n_jobs)
        g = reference.gradient(self.tasks, self.Theta, subspace=self.V)
        self.target = self.Theta + g.projected.sum() / g.curvature.sum() * g.G

    def time_truncated_svd(self, implementation, shape, n_jobs):
        if implementation == "cpp":
            kernels.truncated_svd(self.target, self.s, warm_start=self.basis, tol=self.svd_tol,
                                  random_state=SEED, n_jobs=n_jobs)
        else:
            reference.truncated_svd(self.target, self.s)

    def peakmem_truncated_svd(self, implementation, shape, n_jobs):
        self.time_truncated_svd(implementation, shape, n_jobs)


class Iteration(_MidFit):
    """One whole iteration: gradient pass, step, truncated SVD, update, rebuilt from the kernels
    of ``metasp.kernels`` (C++) and ``metasp.reference`` (NumPy). The C++ one also pays the
    Python wrappers' checks and fresh (T, d) arrays, which page-fault: noisy, and slower than
    the solver's own iteration (``SolverIteration``)."""

    params = (*_MidFit.params, DTYPES)
    param_names = [*_MidFit.param_names, "dtype"]

    def time_iteration(self, implementation, shape, n_jobs, dtype):
        if implementation == "cpp":
            cpp_iteration(self.tasks, self.Theta, self.V, self.basis, self.svd_tol, self.s,
                          n_jobs)
        else:
            reference_iteration(self.tasks, self.Theta, self.V, self.s)

    def peakmem_iteration(self, implementation, shape, n_jobs, dtype):
        self.time_iteration(implementation, shape, n_jobs, dtype)


class SolverIteration:
    """Seconds per iteration inside the C++ solver, from its own timing of each iteration
    (``history["seconds"]``): the median over iterations 2 to 21 of the paper's iteration
    (``accel=None, polish=None``), whose buffers are reused from one iteration to the next.
    A short fit first starts the threads (a single timed fit in a fresh process is otherwise
    at the mercy of where the second thread first lands)."""

    params = (KERNEL_SHAPES, THREADS, DTYPES)
    param_names = ["shape", "n_jobs", "dtype"]
    unit = "seconds"
    timeout = 300

    def setup(self, shape, n_jobs, dtype):
        self.T, self.m, self.d, self.s = parse_shape(shape)
        self.tasks, _ = problem(self.T, self.m, self.d, self.s, dtype)

    def track_seconds_per_iteration(self, shape, n_jobs, dtype):
        paper_iterations(self.tasks, self.s, 3, n_jobs)
        result = paper_iterations(self.tasks, self.s, 21, n_jobs)
        return float(np.median(result.history["seconds"][1:]))
