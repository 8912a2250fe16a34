"""The compiled building blocks of Meta-SP, for benchmarks and for running on shards of tasks.

Each function validates its input and runs one C++ kernel with the GIL released.
:mod:`metasp.reference` has NumPy versions with the same signatures. No function returns NaN
or inf: a result beyond the float64 range raises :class:`FloatingPointError` naming it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _core
from ._arrays import as_float, is_real
from ._arrays import as_float64 as _float64
from ._arrays import check_finite as _check_finite
from ._arrays import numeric_array as _numeric_array
from ._tasks import Tasks
from ._validation import check_max_iter, check_tol, resolve_n_jobs, seed_from

# The C++ core's truncated-SVD defaults, read from the core (their one source).
#: Ritz-residual tolerance of :func:`truncated_svd`, relative to the largest eigenvalue of A^T A.
SVD_TOL = _core.constants["svd_tol"]
#: Step budget of :func:`truncated_svd`.
SVD_MAX_STEPS = _core.constants["svd_max_steps"]
#: Inside metasp.fit's adaptive-step solver, an SVD may stop at this fraction of the iterate's
#: last relative change when that is above :data:`SVD_TOL`.
SVD_RELATIVE_TOL = _core.constants["svd_relative_tol"]

__all__ = ["MAX_DENSE_BASIS", "SVD_MAX_STEPS", "SVD_RELATIVE_TOL", "SVD_TOL", "BasisSystem",
           "GradientPass", "MarginalPass", "NewtonTerms", "TaskHeads", "TaskStatistics",
           "TruncatedSVD", "basis_system_sums", "curvature", "gradient", "marginal_pass",
           "newton_product", "newton_terms", "task_heads", "task_statistics", "truncated_svd"]

#: Most unknowns d * s of the dense basis system (:func:`basis_system_sums`): above it the
#: C++ polish solves its basis steps by conjugate gradients instead.
MAX_DENSE_BASIS = _core.constants["max_dense_normal"]


class TruncatedSVD(NamedTuple):
    """Top-s singular triplets of a T x d matrix ``A``."""

    V: np.ndarray  #: (d, s) right singular vectors, as columns
    singular_values: np.ndarray  #: (s,), descending
    W: np.ndarray  #: (T, s), ``A @ V`` = left singular vectors times singular values
    basis: np.ndarray  #: (d, b) orthonormal search block, a warm start for the next call
    n_steps: int  #: subspace-iteration steps taken
    converged: bool  #: whether the Ritz residuals reached the tolerance


def _aligned(array: np.ndarray, order: str = "C") -> np.ndarray:
    """``array`` as the C++ core reads it: contiguous in ``order`` and aligned (NumPy views
    of raw buffers may not be); a copy only when it is not already."""
    return np.require(array, requirements=[order, "A"])


def core_arrays(tasks: Tasks) -> tuple:
    """(X, y, offsets) of ``tasks`` for the C++ core."""
    return _aligned(tasks.X), _aligned(tasks.y), _aligned(tasks.offsets)


def _largest(array) -> float:
    return float(np.max(np.abs(array))) if np.size(array) else 0.0


def _check_output(kernel: str, outputs: dict, inputs: dict) -> None:
    """Raise FloatingPointError when an output of ``kernel`` overflowed (``inputs``: the
    arrays whose products it is, for the message)."""
    bad = [name for name, value in outputs.items()
           if value is not None and not _finite(value)]
    if bad:
        sizes = ", ".join(f"{name} {_largest(value):.3g}" for name, value in inputs.items())
        raise FloatingPointError(
            f"kernels.{kernel}: {' and '.join(bad)} overflowed the float64 range (largest "
            f"|entry|: {sizes}); rescale the data (for example divide X and y by their "
            f"standard deviations) so that their products stay below 1e308")


def _finite(array) -> bool:
    # As _check_finite: a finite sum means finite entries unless the sum itself overflows.
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.sum(array)):
            return True
    return bool(np.isfinite(array).all())


def _matrix(values, name: str, shape: tuple) -> np.ndarray:
    array = _numeric_array(values, name)
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}; got {array.shape}")
    array = _aligned(_float64(array))
    _check_finite(array, name)
    return array


class GradientPass(NamedTuple):
    """What one pass over the tasks' data computes."""

    G: np.ndarray  #: (T, d) per-task negative gradients
    task_loss: np.ndarray  #: (T,) per-task mean squared residuals
    projected: np.ndarray | None  #: (T,) ``||V V^T G[t]||^2``, with a subspace
    curvature: np.ndarray | None  #: (T,) ``||X_t V V^T G[t]||^2 / m_t``, with a subspace


def _basis(V, d: int, name: str, max_columns: int | None = None) -> np.ndarray:
    """A (d, k) float64 block for the C++ side (column-major, as Eigen stores it)."""
    V = _numeric_array(V, name)
    if V.ndim != 2 or V.shape[0] != d or V.shape[1] == 0:
        raise ValueError(f"{name} must have shape (d, k) with d = {d}; got {V.shape}")
    if max_columns is not None and V.shape[1] > max_columns:
        raise ValueError(f"{name} must have shape (d, k) with d = {d} and k <= d; got {V.shape}")
    V = _aligned(np.asfortranarray(V, dtype=np.float64), "F")
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
    out = GradientPass(*_core.task_gradient(*core_arrays(tasks), Theta, V, threads))
    _check_output("gradient", out._asdict(), {"X": tasks.X, "y": tasks.y, "Theta": Theta})
    return out


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
    out = _core.task_curvature(*core_arrays(tasks), C, B, threads)
    _check_output("curvature", {"curvature": out}, {"X": tasks.X, "C": C, "B": B})
    return out


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
    B = _numeric_array(B, "B")
    # Checked before anything is allocated: gram is (T, s, s), s^2 T entries from an (s, d) B.
    if (B.ndim != 2 or not 1 <= B.shape[0] <= tasks.n_features
            or B.shape[1] != tasks.n_features):
        raise ValueError(f"B must have shape (s, d) with 1 <= s <= d = {tasks.n_features}; "
                         f"got {B.shape}")
    B = _float64(B)
    _check_finite(B, "B")
    if heads is not None:
        heads = _matrix(heads, "heads", (tasks.n_tasks, B.shape[0]))
    threads = resolve_n_jobs(n_jobs, _core.max_threads())
    out = TaskStatistics(*_core.task_statistics(*core_arrays(tasks), _aligned(B.T, "F"), heads,
                                                threads))
    _check_output("task_statistics", out._asdict(), {"X": tasks.X, "y": tasks.y, "B": B})
    return out


class MarginalPass(NamedTuple):
    """The random-heads model's fit to the tasks at one (U, noise)."""
    deviance: float  #: ``-2 log p(y)`` less ``N log(2 pi)``; inf where it is not defined
    gradient: np.ndarray  #: (d, s) its gradient in ``U``
    expected: float  #: posterior expectation of ``sum_t ||y_t - X_t U z_t||^2``
    heads: np.ndarray  #: (T, s) posterior means of ``z_t`` (zeros where deviance is inf)
    task_loss: np.ndarray  #: (T,) ``||y_t - X_t U heads[t]||^2 / m_t`` (idem)


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
        ``1 <= s <= d``.
    noise : float
        Noise variance, positive.
    n_jobs : int or None
        Threads, as in :func:`metasp.fit`.

    Returns
    -------
    MarginalPass
        Where the model is not defined at ``(U, noise)``, or its sums overflow float64,
        ``deviance`` is inf and the other fields are zeros.
    """
    if not isinstance(tasks, Tasks):
        raise TypeError("tasks must be a metasp.Tasks")
    U = _basis(U, tasks.n_features, "U", max_columns=tasks.n_features)
    if not is_real(noise):
        raise TypeError(f"noise must be a real number; got {type(noise).__name__}")
    variance = as_float(noise)
    if not (np.isfinite(variance) and variance > 0):
        raise ValueError(f"noise must be a positive finite number; got {noise!r}")
    threads = resolve_n_jobs(n_jobs, _core.max_threads())
    return MarginalPass(*_core.marginal_pass(*core_arrays(tasks), U, variance, threads))


def truncated_svd(
    A, s, *, warm_start=None, tol=SVD_TOL, max_steps=SVD_MAX_STEPS, random_state=None,
    n_jobs=None
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
        The C++ core's default, :data:`SVD_TOL`.
    max_steps : int, default 300
        The C++ core's default, :data:`SVD_MAX_STEPS`.
    random_state : None, int or numpy.random.Generator
    n_jobs : int or None

    Returns
    -------
    TruncatedSVD

    Raises
    ------
    OverflowError
        When the top singular values themselves exceed the float64 range (``A`` of any other
        scale is fine: it is rescaled internally where ``A^T A`` would under- or overflow).
    """
    A = _numeric_array(A, "A")
    if A.ndim != 2 or A.size == 0:
        raise ValueError(f"A must be a non-empty 2-D array; got shape {A.shape}")
    A = _aligned(_float64(A))
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


class TaskHeads(NamedTuple):
    """Per-task least-squares heads in a subspace."""

    W: np.ndarray  #: (T, s) heads: task t's coefficients are ``V @ W[t]``
    task_loss: np.ndarray  #: (T,) ``||y_t - X_t V W[t]||^2 / m_t``


def task_heads(tasks: Tasks, V, *, n_jobs=None) -> TaskHeads:
    """Per-task least-squares heads in the column space of ``V``: the polish's heads step.

    ``W[t] = argmin_w ||y_t - X_t V w||^2``, the minimum-norm solution where ``X_t V`` is rank
    deficient (tasks with fewer samples than s).

    Parameters
    ----------
    tasks : Tasks
    V : array_like of shape (d, s)
        Any full-rank basis, ``1 <= s <= d``.
    n_jobs : int or None
        Threads, as in :func:`metasp.fit`; the results do not depend on it.

    Returns
    -------
    TaskHeads
    """
    if not isinstance(tasks, Tasks):
        raise TypeError("tasks must be a metasp.Tasks")
    V = _basis(V, tasks.n_features, "V", max_columns=tasks.n_features)
    threads = resolve_n_jobs(n_jobs, _core.max_threads())
    out = TaskHeads(*_core.task_heads(*core_arrays(tasks), V, threads))
    _check_output("task_heads", out._asdict(), {"X": tasks.X, "y": tasks.y, "V": V})
    return out


class BasisSystem(NamedTuple):
    """Normal equations of a basis step of the polish, summed over tasks."""

    M: np.ndarray  #: (d s, d s) symmetric; unknowns ordered column by column of the (d, s) basis
    rhs: np.ndarray  #: (d s,)


def basis_system_sums(tasks: Tasks, W, *, subspace=None, n_jobs=None) -> BasisSystem:
    r"""The normal equations of one basis step of the polish, summed over the tasks.

    Without ``subspace``: the least-squares basis for fixed heads (alternating least squares),
    :math:`\sum_t (w_t w_t^\top \otimes X_t^\top X_t / m_t)\, \mathrm{vec}(U) = \mathrm{vec}(
    \sum_t X_t^\top y_t w_t^\top / m_t)`. With the orthonormal ``subspace`` V (and ``W`` the
    exact heads in it, :func:`task_heads`): the Newton system of a correction D of V with the
    heads eliminated task by task. Sums over disjoint sets of tasks add up: the polish adds
    the gauge penalty ``scale (I_s kron V V^T)`` (scale: the mean diagonal entry of ``M``) once,
    to the total (``metasp._polish.finished_system``).

    Parameters
    ----------
    tasks : Tasks
    W : array_like of shape (T, s)
    subspace : array_like of shape (d, s), optional
        Orthonormal columns.
    n_jobs : int or None
        Threads, as in :func:`metasp.fit`; the results do not depend on it.

    Returns
    -------
    BasisSystem

    Raises
    ------
    ValueError
        Where ``d * s`` exceeds :data:`MAX_DENSE_BASIS` (the matrix would be too large).
    """
    if not isinstance(tasks, Tasks):
        raise TypeError("tasks must be a metasp.Tasks")
    W = _numeric_array(W, "W")
    if W.ndim != 2 or W.shape[0] != tasks.n_tasks or not 1 <= W.shape[1] <= tasks.n_features:
        raise ValueError(f"W must have shape (T, s) with T = {tasks.n_tasks} and 1 <= s <= "
                         f"d = {tasks.n_features}; got {W.shape}")
    if tasks.n_features * W.shape[1] > MAX_DENSE_BASIS:
        raise ValueError(f"d * s = {tasks.n_features * W.shape[1]} is above "
                         f"{MAX_DENSE_BASIS}: the dense basis system would be too large")
    W = _matrix(W, "W", W.shape)
    V = None if subspace is None else _basis(subspace, tasks.n_features, "subspace")
    if V is not None and V.shape[1] != W.shape[1]:
        raise ValueError(f"subspace must have shape (d, s) = ({tasks.n_features}, "
                         f"{W.shape[1]}); got {V.shape}")
    threads = resolve_n_jobs(n_jobs, _core.max_threads())
    out = BasisSystem(*_core.basis_system_sums(*core_arrays(tasks), W, V, threads))
    _check_output("basis_system_sums", out._asdict(), {"X": tasks.X, "y": tasks.y, "W": W})
    return out


class NewtonTerms(NamedTuple):
    """The right-hand side and diagonal of the polish's Newton system, summed over tasks."""

    rhs: np.ndarray  #: (d, s) sum_t g_t w_t^T, with g_t = X_t^T (y_t - X_t V w_t) / m_t
    diagonal: np.ndarray  #: (d, s) the diagonal of the tasks' terms (no gauge penalty)


def _newton_arguments(tasks, W, subspace):
    if not isinstance(tasks, Tasks):
        raise TypeError("tasks must be a metasp.Tasks")
    V = _basis(subspace, tasks.n_features, "subspace", max_columns=tasks.n_features)
    W = _matrix(W, "W", (tasks.n_tasks, V.shape[1]))
    return W, V


def newton_terms(tasks: Tasks, W, subspace, *, n_jobs=None) -> NewtonTerms:
    """The right-hand side and diagonal of the polish's Newton system, matrix-free.

    The Newton system of a correction D of the orthonormal basis V (heads ``W``, the exact
    least-squares heads in span(V): :func:`task_heads`) is the one :func:`basis_system_sums`
    forms densely; here, as :func:`newton_product` applies it, it is never formed. Sums over
    disjoint sets of tasks add up.

    Parameters
    ----------
    tasks : Tasks
    W : array_like of shape (T, s)
    subspace : array_like of shape (d, s)
        V, orthonormal columns.
    n_jobs : int or None
        Threads, as in :func:`metasp.fit`; the results do not depend on it.

    Returns
    -------
    NewtonTerms
    """
    W, V = _newton_arguments(tasks, W, subspace)
    threads = resolve_n_jobs(n_jobs, _core.max_threads())
    out = NewtonTerms(*_core.newton_sums(*core_arrays(tasks), W, V, None, threads))
    _check_output("newton_terms", out._asdict(), {"X": tasks.X, "y": tasks.y, "W": W})
    return out


def newton_product(tasks: Tasks, W, subspace, D, *, n_jobs=None) -> np.ndarray:
    """The tasks' terms of the polish's Newton matrix times D.

    ``vec(out) = M vec(D)`` for the matrix ``M`` of :func:`basis_system_sums` (with the
    same ``W`` and ``subspace``), never formed; the polish adds the gauge penalty
    ``scale V V^T D`` once, to the sum over all tasks. Each call builds the per-task terms
    again (about five passes over X; ``metasp.fit``'s polish keeps them and applies them in
    two).

    Parameters
    ----------
    tasks : Tasks
    W : array_like of shape (T, s)
    subspace : array_like of shape (d, s)
        V, orthonormal columns.
    D : array_like of shape (d, s)
    n_jobs : int or None
        Threads, as in :func:`metasp.fit`; the results do not depend on it.

    Returns
    -------
    ndarray of shape (d, s)
    """
    W, V = _newton_arguments(tasks, W, subspace)
    D = _basis(D, tasks.n_features, "D", max_columns=tasks.n_features)
    if D.shape != V.shape:
        raise ValueError(f"D must have the shape of subspace, {V.shape}; got {D.shape}")
    threads = resolve_n_jobs(n_jobs, _core.max_threads())
    out = _core.newton_sums(*core_arrays(tasks), W, V, D, threads)
    _check_output("newton_product", {"product": out}, {"X": tasks.X, "W": W, "D": D})
    return out
