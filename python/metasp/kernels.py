"""The compiled building blocks of Meta-SP, for benchmarks and for running on shards of tasks.

Each function validates its input and runs one C++ kernel with the GIL released.
:mod:`metasp.reference` has NumPy versions with the same signatures.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _core
from ._tasks import Tasks, _check_finite, _float64, _numeric_array
from ._validation import check_max_iter, check_tol, resolve_n_jobs, seed_from

__all__ = ["GradientPass", "MarginalPass", "TaskStatistics", "TruncatedSVD", "curvature",
           "gradient", "marginal_pass", "task_statistics", "truncated_svd"]


class TruncatedSVD(NamedTuple):
    """Top-s singular triplets of a T x d matrix ``A``."""

    V: np.ndarray  #: (d, s) right singular vectors, as columns
    singular_values: np.ndarray  #: (s,), descending
    W: np.ndarray  #: (T, s), ``A @ V`` = left singular vectors times singular values
    basis: np.ndarray  #: (d, b) orthonormal search block, a warm start for the next call
    n_steps: int  #: subspace-iteration steps taken
    converged: bool  #: whether the Ritz residuals reached the tolerance


def _matrix(values, name: str, shape: tuple) -> np.ndarray:
    array = _float64(_numeric_array(values, name))
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}; got {array.shape}")
    _check_finite(array, name)
    return array


class GradientPass(NamedTuple):
    """What one pass over the tasks' data computes."""

    G: np.ndarray  #: (T, d) per-task negative gradients
    task_loss: np.ndarray  #: (T,) per-task mean squared residuals
    projected: np.ndarray | None  #: (T,) ``||V V^T G[t]||^2``, with a subspace
    curvature: np.ndarray | None  #: (T,) ``||X_t V V^T G[t]||^2 / m_t``, with a subspace


def _basis(V, d: int, name: str) -> np.ndarray:
    """A (d, k) float64 block for the C++ side (column-major, as Eigen stores it)."""
    V = np.asfortranarray(_numeric_array(V, name), dtype=np.float64)
    if V.ndim != 2 or V.shape[0] != d or V.shape[1] == 0:
        raise ValueError(f"{name} must have shape (d, k) with d = {d}; got {V.shape}")
    _check_finite(V, name)
    return V


def gradient(tasks: Tasks, Theta, *, subspace=None, n_jobs=None) -> GradientPass:
    """Fused per-task gradient and loss pass.

    For every task, with :math:`r_t = y_t - X_t \\theta_t`, computes ``G[t] = X_t^T r_t / m_t``
    (the negative gradient of ``||r_t||^2 / (2 m_t)``) and ``task_loss[t] = ||r_t||^2 / m_t``,
    reading each row of ``X`` from memory once. Given the current row space ``subspace`` (d, s)
    with orthonormal columns, the same pass also computes the two sums of the adaptive step for
    ``p_t = V V^T G[t]``: ``projected[t] = ||p_t||^2`` and ``curvature[t] = ||X_t p_t||^2 / m_t``.

    Parameters
    ----------
    tasks : Tasks
    Theta : array_like of shape (T, d)
    subspace : array_like of shape (d, s), optional
    n_jobs : int or None
        Threads, as in :func:`metasp.fit`.

    Returns
    -------
    GradientPass
    """
    if not isinstance(tasks, Tasks):
        raise TypeError("tasks must be a metasp.Tasks")
    Theta = _matrix(Theta, "Theta", (tasks.n_tasks, tasks.n_features))
    V = None if subspace is None else _basis(subspace, tasks.n_features, "subspace")
    threads = resolve_n_jobs(n_jobs, _core.max_threads())
    return GradientPass(*_core.task_gradient(tasks.X, tasks.y, tasks.offsets, Theta, V, threads))


def curvature(tasks: Tasks, C, B, n_jobs=None) -> np.ndarray:
    """Per-task curvature ``||X_t d_t||^2 / m_t`` along ``D = C B^T`` (row t: ``d_t = B c_t``).

    This is the denominator of the adaptive step; ``D`` is never formed.

    Parameters
    ----------
    tasks : Tasks
    C : array_like of shape (T, r)
    B : array_like of shape (d, r)
    n_jobs : int or None

    Returns
    -------
    ndarray of shape (T,)
    """
    if not isinstance(tasks, Tasks):
        raise TypeError("tasks must be a metasp.Tasks")
    B = _basis(B, tasks.n_features, "B")
    C = _matrix(C, "C", (tasks.n_tasks, B.shape[1]))
    threads = resolve_n_jobs(n_jobs, _core.max_threads())
    return _core.task_curvature(tasks.X, tasks.y, tasks.offsets, C, B, threads)


class TaskStatistics(NamedTuple):
    """Per-task sufficient statistics of the regressions restricted to a subspace."""

    gram: np.ndarray  #: (T, s, s) ``Z_t^T Z_t`` for ``Z_t = X_t B^T``
    cross: np.ndarray  #: (T, s) ``Z_t^T y_t``
    squares: np.ndarray  #: (T,) ``y_t^T y_t``
    G: np.ndarray | None  #: (T, d) ``X_t^T r_t / m_t`` at ``Theta = heads @ B``, with heads


def task_statistics(tasks: Tasks, B, *, heads=None, n_jobs=None) -> TaskStatistics:
    """Per-task ``Z_t^T Z_t``, ``Z_t^T y_t`` and ``y_t^T y_t`` for ``Z_t = X_t B^T``, in one pass.

    Everything the per-task regressions in the row space of ``B`` need (least-squares or
    posterior heads, the head prior of :meth:`metasp.MetaSPResult.fit_prior`), reading each
    row of ``X`` once and never forming ``Z``. Given heads ``W``, the same pass also computes
    the negative gradient at ``Theta = W B``: ``G[t] = X_t^T r_t / m_t`` with
    ``r_t = y_t - Z_t w_t``, as :func:`gradient` does.

    Parameters
    ----------
    tasks : Tasks
    B : array_like of shape (s, d)
        Rows spanning the subspace (orthonormal or not).
    heads : array_like of shape (T, s), optional
    n_jobs : int or None
        Threads, as in :func:`metasp.fit`; the results do not depend on it.

    Returns
    -------
    TaskStatistics
    """
    if not isinstance(tasks, Tasks):
        raise TypeError("tasks must be a metasp.Tasks")
    B = _float64(_numeric_array(B, "B"))
    if B.ndim != 2 or B.shape[0] == 0 or B.shape[1] != tasks.n_features:
        raise ValueError(f"B must have shape (s, d) with s >= 1 and d = {tasks.n_features}; "
                         f"got {B.shape}")
    _check_finite(B, "B")
    if heads is not None:
        heads = _matrix(heads, "heads", (tasks.n_tasks, B.shape[0]))
    threads = resolve_n_jobs(n_jobs, _core.max_threads())
    return TaskStatistics(*_core.task_statistics(tasks.X, tasks.y, tasks.offsets,
                                                 np.asfortranarray(B.T), heads, threads))


class MarginalPass(NamedTuple):
    """The random-heads model's fit to the tasks at one (U, noise)."""
    deviance: float  #: ``-2 log p(y)`` less ``N log(2 pi)``; inf where it is not defined
    gradient: np.ndarray  #: (d, s) its gradient in ``U``
    expected: float  #: posterior expectation of ``sum_t ||y_t - X_t U z_t||^2``
    heads: np.ndarray  #: (T, s) posterior means of ``z_t``
    task_loss: np.ndarray  #: (T,) ``||y_t - X_t U heads[t]||^2 / m_t``


def marginal_pass(tasks: Tasks, U, noise, *, n_jobs=None) -> MarginalPass:
    r"""Deviance, gradient and posterior heads of the random-heads model, in one pass.

    The model: :math:`\theta_t = U z_t` with :math:`z_t \sim N(0, I_s)` and noise
    :math:`N(0, \text{noise})`, so :math:`y_t \sim N(0, X_t U U^\top X_t^\top + \text{noise}\,
    I)`. Each task's rows are read twice while in cache (:math:`Z_t = X_t U`, then
    :math:`X_t^\top R_t`); tasks are summed in fixed chunks, so the result does not depend on
    the thread count. This is what :func:`metasp.fit` (``heads="random"``) minimises.

    Parameters
    ----------
    tasks : Tasks
    U : array_like of shape (d, s)
    noise : float
        Noise variance, positive.
    n_jobs : int or None
        Threads, as in :func:`metasp.fit`.

    Returns
    -------
    MarginalPass
    """
    if not isinstance(tasks, Tasks):
        raise TypeError("tasks must be a metasp.Tasks")
    U = _basis(U, tasks.n_features, "U")
    if not (np.isscalar(noise) and np.isreal(noise) and np.isfinite(noise) and noise > 0):
        raise ValueError(f"noise must be a positive finite number; got {noise!r}")
    threads = resolve_n_jobs(n_jobs, _core.max_threads())
    return MarginalPass(*_core.marginal_pass(tasks.X, tasks.y, tasks.offsets, U, float(noise),
                                             threads))


def truncated_svd(
    A, s, *, warm_start=None, tol=1e-12, max_steps=300, random_state=None, n_jobs=None
) -> TruncatedSVD:
    """Top-s singular triplets of ``A`` by block subspace iteration (no full SVD).

    The search block has ``s`` plus oversampling columns. It starts from ``warm_start`` (for
    example the ``basis`` of a previous call) or at random (a randomized range finder), and
    stops when every top-s Ritz pair has ``||A^T A v - lambda v|| <= tol * lambda_1``. For
    ``d`` up to twice the block size, and for ``d <= 2048`` once iterating has cost as much
    without converging (small spectral gaps), the top eigenvectors of the d x d Gram matrix
    ``A^T A`` are computed directly instead.

    Parameters
    ----------
    A : array_like of shape (T, d)
    s : int
        ``1 <= s <= min(T, d)``.
    warm_start : array_like of shape (d, k), optional
    tol : float, default 1e-12
    max_steps : int, default 300
    random_state : None, int or numpy.random.Generator
    n_jobs : int or None

    Returns
    -------
    TruncatedSVD
    """
    A = _float64(_numeric_array(A, "A"))
    if A.ndim != 2 or A.size == 0:
        raise ValueError(f"A must be a non-empty 2-D array; got shape {A.shape}")
    _check_finite(A, "A")
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
        raise TypeError(f"s must be an integer; got {type(s).__name__}")
    if not 1 <= s <= min(A.shape):
        raise ValueError(f"s must satisfy 1 <= s <= min(A.shape) = {min(A.shape)}; got {s}")
    if warm_start is not None:
        warm_start = _basis(warm_start, A.shape[1], "warm_start")
    out = _core.truncated_svd(
        A, int(s), warm_start, seed_from(random_state),
        resolve_n_jobs(n_jobs, _core.max_threads()), check_tol(tol), check_max_iter(max_steps, "max_steps"),
    )
    return TruncatedSVD(**out)
