"""Pieces shared by the baselines: validation, least-squares heads, canonical results,
kernel passes and starting points."""

from __future__ import annotations

import warnings

import numpy as np

from .. import kernels
from .._arrays import canonical_factors
from .._prior import task_sufficient_statistics
from .._result import ConvergenceWarning, MetaSPResult, checked
from .._scaling import check_unscaled
from .._tasks import Tasks, as_tasks
from .._validation import check_rank


def prepare(Xs, ys, s) -> tuple[Tasks, int]:
    # The baselines are NumPy, whose products of float32 X with itself (X^T X) stay float32:
    # they get float64 X (float32 is converted once, here).
    tasks = as_tasks(Xs, ys, dtype=np.float64)
    s = check_rank(s, tasks)
    # Their options (ridge, lam, learning rates) are in the data's units, so the data are not
    # rescaled as metasp.fit rescales them: data beyond the safe range are refused instead.
    check_unscaled(tasks, "metasp.baselines")
    return tasks, s


def check_choice(value, name: str, choices: tuple) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def task_heads(tasks: Tasks, B: np.ndarray) -> np.ndarray:
    """Per-task least squares heads in the row space of ``B`` (s, d): the (T, s) array ``W``.

    The minimum-norm solution when a task's ``X_t B^T`` is rank deficient (``m_t < s``).
    """
    grams, moments, _ = task_sufficient_statistics(tasks, B)
    return np.einsum("tij,tj->ti", np.linalg.pinv(grams, hermitian=True), moments)


def canonical_result(W, B, n_iter, status, history=None) -> MetaSPResult:
    """A MetaSPResult in Meta-SP's canonical form from any factorisation ``Theta = W @ B``."""
    W, V, singular_values = canonical_factors(W, np.asarray(B, dtype=np.float64).T)
    B = np.ascontiguousarray(V.T)
    return checked(MetaSPResult(
        B=B, W=W, Theta=W @ B, singular_values=singular_values, n_iter=int(n_iter),
        status=status, history={key: np.asarray(value) for key, value in (history or {}).items()},
    ))


def warn_max_iter(method: str, max_iter: int, detail: str) -> None:
    warnings.warn(
        f"{method} stopped at max_iter={max_iter} ({detail}); increase max_iter or tol.",
        ConvergenceWarning,
        stacklevel=3,
    )


def task_moments(tasks: Tasks, n_jobs) -> np.ndarray:
    """(T, d) per-task moments ``X_t^T y_t / m_t``: the negative gradient at Theta = 0."""
    zero = np.zeros((tasks.n_tasks, tasks.n_features))
    return kernels.gradient(tasks, zero, n_jobs=n_jobs).G


def hessian_product(tasks_without_y: Tasks, Theta, n_jobs) -> np.ndarray:
    """Row t: ``X_t^T X_t theta_t / m_t`` (the gradient pass with the targets set to zero)."""
    return -kernels.gradient(tasks_without_y, Theta, n_jobs=n_jobs).G


def without_targets(tasks: Tasks) -> Tasks:
    # Shares X (already C-contiguous float64: Tasks does not copy it).
    return Tasks(tasks.X, np.zeros_like(tasks.y), tasks.offsets)


def spectral_start(tasks: Tasks, s: int, seed: int, n_jobs):
    """Top-s SVD ``U S V^T`` of the stacked moments ``X_t^T y_t / m_t`` (the first Meta-SP step)."""
    return kernels.truncated_svd(task_moments(tasks, n_jobs), s, random_state=seed, n_jobs=n_jobs)


def random_rows(rng, s: int, d: int) -> np.ndarray:
    return np.linalg.qr(rng.standard_normal((d, s)))[0].T
