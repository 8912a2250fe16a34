"""Accuracy tracked next to speed, so that a fast but wrong change shows on the dashboard."""

import warnings

import numpy as np

import metasp

from .common import SEED, cpp_iteration, mid_fit_state, problem, reference_iteration

SHAPE = (1000, 20, 100, 5)


def _fit(fit, tasks, s, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metasp.ConvergenceWarning)
        return fit(tasks, None, s, random_state=SEED, n_jobs=1, **options)


class Quality:
    """On a fixed noisy problem (sigma = 0.1): how close metasp gets to the true subspace, and
    how closely the C++ solver and kernels agree with metasp.reference."""

    timeout = 300

    def setup_cache(self):
        tasks, B = problem(*SHAPE)
        s = SHAPE[3]
        cpp = _fit(metasp.fit, tasks, s, heads="fixed")
        ref = _fit(metasp.reference.fit, tasks, s)
        Theta, V, basis, svd_tol = mid_fit_state(*SHAPE)
        one_cpp = cpp_iteration(tasks, Theta, V, basis, svd_tol, s, 1)
        one_ref = reference_iteration(tasks, Theta, V, s)
        return {
            "sin_angle_cpp": metasp.metrics.sin_angle(cpp.B, B),
            "sin_angle_reference": metasp.metrics.sin_angle(ref.B, B),
            "fit_relative_difference": float(np.linalg.norm(cpp.Theta - ref.Theta)
                                             / np.linalg.norm(ref.Theta)),
            "iteration_relative_difference": float(np.linalg.norm(one_cpp - one_ref)
                                                   / np.linalg.norm(one_ref)),
            "mean_svd_steps": float(np.mean(cpp.history["svd_steps"])),
        }

    def track_sin_angle_cpp(self, values):
        return values["sin_angle_cpp"]

    def track_sin_angle_reference(self, values):
        return values["sin_angle_reference"]

    def track_fit_relative_difference(self, values):
        """||Theta_cpp - Theta_reference||_F / ||Theta_reference||_F after whole fits."""
        return values["fit_relative_difference"]

    def track_iteration_relative_difference(self, values):
        """The same after one iteration from the same mid-fit iterate: the C++ SVD stops at the
        solver's tolerance relative to the last change, so this is ~1e-8, not rounding."""
        return values["iteration_relative_difference"]

    def track_mean_svd_steps(self, values):
        """Subspace-iteration steps per truncated SVD inside the solver (a Gram-matrix
        fallback counts one)."""
        return values["mean_svd_steps"]

    track_sin_angle_cpp.unit = track_sin_angle_reference.unit = "sin angle"
    track_fit_relative_difference.unit = track_iteration_relative_difference.unit = "relative"
    track_mean_svd_steps.unit = "steps"
