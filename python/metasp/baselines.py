r"""Competing methods for learning a shared linear subspace, under the interface of :func:`metasp.fit`.

Every function here has the signature ``name(Xs, ys=None, s=None, **options)``, accepts the same
task inputs as :func:`metasp.fit` (lists of per-task arrays, a 3-D array, or a
:class:`metasp.Tasks`), and returns a :class:`metasp.MetaSPResult`: ``B`` (s, d) with
orthonormal rows, heads ``W`` (T, s), ``Theta = W @ B``, so that
:meth:`~metasp.MetaSPResult.adapt` and :meth:`~metasp.MetaSPResult.predict` work the same for
every method. ``B`` and ``W`` are put in the same canonical form as Meta-SP's: the rows of ``B``
are the right singular vectors of ``Theta``, ``W = Theta @ B.T``.

Methods that only estimate the subspace (:func:`mom`, :func:`anil`, :func:`oracle`) fit the heads
by per-task least squares in the estimated subspace (the minimum-norm solution when a task has
fewer than ``s`` samples). The heavy passes over the data (gradients, Hessian-vector products)
and partial SVDs run in the C++ kernels of :mod:`metasp.kernels`.

The methods, with the objective each one minimises, where
:math:`L(\Theta) = \sum_t \frac{1}{2 m_t}\|y_t - X_t\theta_t\|_2^2` is Meta-SP's loss:

- :func:`mom`: method of moments, no optimisation.
- :func:`anil`: ANIL (almost no inner loop) meta-learning for linear regression.
- :func:`burer_monteiro`: :math:`L(WB) + \frac18 \|BB^\top - W^\top W\|_F^2` over ``(W, B)``.
- :func:`altmin`, :func:`altmin_gd`: :math:`L(WB)` by alternating minimisation.
- :func:`nuclear_norm`: :math:`\frac1T L(\Theta) + \frac{\lambda}{\sqrt T}\|\Theta\|_*`.
- :func:`single_task`: per-task least squares or ridge, then a rank-s truncation.
- :func:`oracle`: the true subspace, heads by least squares; the reference for the others.
"""

from __future__ import annotations

import warnings

import numpy as np

from . import kernels
from ._result import ConvergenceWarning, DivergenceWarning, MetaSPResult
from ._tasks import Tasks, as_tasks
from ._validation import (
    DIVERGENCE_FACTOR,
    check_max_iter,
    check_rank,
    check_tol,
    is_integer,
    is_real,
    orthonormal_rows,
    seed_from,
)

__all__ = [
    "altmin",
    "altmin_gd",
    "anil",
    "burer_monteiro",
    "mom",
    "nuclear_norm",
    "oracle",
    "default_lambda",
    "noise_level",
    "single_task",
]


# ---------------------------------------------------------------------------------------------
# Shared pieces


def _prepare(Xs, ys, s) -> tuple[Tasks, int]:
    tasks = as_tasks(Xs, ys)
    return tasks, check_rank(s, tasks)


def _check_choice(value, name: str, choices: tuple) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def _check_positive(value, name: str, allow_zero: bool = False) -> float:
    if not is_real(value):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be {bound} and finite; got {value!r}")
    return float(value)


def _check_count(value, name: str, minimum: int = 1) -> int:
    if not is_integer(value):
        raise TypeError(f"{name} must be an integer; got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}; got {value}")
    return int(value)


def _per_task_sum(values: np.ndarray, tasks: Tasks) -> np.ndarray:
    """Sum rows of a per-sample array within each task."""
    return np.add.reduceat(values, tasks.offsets[:-1], axis=0)


def _task_heads(tasks: Tasks, B: np.ndarray) -> np.ndarray:
    """Per-task least squares heads in the row space of ``B`` (s, d): the (T, s) array ``W``.

    The minimum-norm solution when a task's ``X_t B^T`` is rank deficient (``m_t < s``).
    """
    Z = tasks.X @ B.T
    grams = _per_task_sum(Z[:, :, None] * Z[:, None, :], tasks)
    moments = _per_task_sum(Z * tasks.y[:, None], tasks)
    return np.einsum("tij,tj->ti", np.linalg.pinv(grams, hermitian=True), moments)


def _result(W, B, n_iter, status, history=None) -> MetaSPResult:
    """A MetaSPResult in Meta-SP's canonical form from any factorisation ``Theta = W @ B``."""
    Q, R = np.linalg.qr(np.asarray(B, dtype=np.float64).T)
    U, singular_values, Vt = np.linalg.svd(W @ R.T, full_matrices=False)
    B = np.ascontiguousarray(Vt @ Q.T)
    W = U * singular_values
    return MetaSPResult(
        B=B, W=W, Theta=W @ B, singular_values=singular_values, n_iter=int(n_iter),
        status=status, history={key: np.asarray(value) for key, value in (history or {}).items()},
    )


def _warn_max_iter(method: str, max_iter: int, detail: str) -> None:
    warnings.warn(
        f"{method} stopped at max_iter={max_iter} ({detail}); increase max_iter or tol.",
        ConvergenceWarning,
        stacklevel=3,
    )


def _moments(tasks: Tasks, n_jobs) -> np.ndarray:
    """(T, d) per-task moments ``X_t^T y_t / m_t``: the negative gradient at Theta = 0."""
    zero = np.zeros((tasks.n_tasks, tasks.n_features))
    return kernels.gradient(tasks, zero, n_jobs=n_jobs).G


def _hessian_product(tasks_without_y: Tasks, Theta, n_jobs) -> np.ndarray:
    """Row t: ``X_t^T X_t theta_t / m_t`` (the gradient pass with the targets set to zero)."""
    return -kernels.gradient(tasks_without_y, Theta, n_jobs=n_jobs).G


def _without_targets(tasks: Tasks) -> Tasks:
    # Shares X (already C-contiguous float64: Tasks does not copy it).
    return Tasks(tasks.X, np.zeros_like(tasks.y), tasks.offsets)


def _spectral_start(tasks: Tasks, s: int, seed: int, n_jobs):
    """Top-s SVD ``U S V^T`` of the stacked moments ``X_t^T y_t / m_t`` (the first Meta-SP step)."""
    return kernels.truncated_svd(_moments(tasks, n_jobs), s, random_state=seed, n_jobs=n_jobs)


def _random_rows(rng, s: int, d: int) -> np.ndarray:
    return np.linalg.qr(rng.standard_normal((d, s)))[0].T


# ---------------------------------------------------------------------------------------------
# Method of moments


def mom(Xs, ys=None, s=None):
    r"""Method of moments: the top-s eigenvectors of the weighted second moment of the features.

    .. math:: \hat M = \frac1N \sum_{i=1}^N y_i^2\, x_i x_i^\top, \qquad
              \hat B = \text{top-}s \text{ eigenvectors of } \hat M .

    For isotropic Gaussian features
    :math:`\mathbb E \hat M = (\sigma^2 + \tfrac1T\|\Theta\|_F^2) I + \tfrac2T \Theta^\top\Theta`,
    whose top-s eigenvectors span the true subspace. Heads are fitted by per-task least squares
    in :math:`\hat B`. Computed with a symmetric eigensolver on the d x d matrix (never an
    N x N weight matrix).

    Parameters
    ----------
    Xs : list of array_like (m_t, d), array_like (T, m, d), or Tasks
        Design matrices, as in :func:`metasp.fit`.
    ys : list of array_like (m_t,), array_like (T, m), or None
        Targets; ``None`` when ``Xs`` is a :class:`metasp.Tasks`.
    s : int
        Rank of the shared subspace.

    Returns
    -------
    MetaSPResult
        ``n_iter == 0``, ``status == "converged"``; ``history["eigenvalues"]`` holds the top
        s + 1 eigenvalues of :math:`\hat M` (a small gap to the (s+1)-th means a poor estimate).

    References
    ----------
    .. [1] Tripuraneni, Jin, Jordan, "Provable meta-learning of linear representations",
       ICML 2021.

    Examples
    --------
    >>> import metasp
    >>> from metasp import baselines
    >>> X, y, B, W = metasp.datasets.make_hps(T=200, m=50, d=10, s=2, random_state=0)
    >>> result = baselines.mom(X, y, 2)
    >>> result.B.shape, result.W.shape
    ((2, 10), (200, 2))
    """
    tasks, s = _prepare(Xs, ys, s)
    weighted = tasks.X * (tasks.y**2)[:, None]
    moment = weighted.T @ tasks.X / tasks.n_samples
    eigenvalues, eigenvectors = np.linalg.eigh(moment)
    order = np.argsort(eigenvalues)[::-1]
    B = np.ascontiguousarray(eigenvectors[:, order[:s]].T)
    top = eigenvalues[order[: min(s + 1, tasks.n_features)]]
    return _result(_task_heads(tasks, B), B, 0, "converged", {"eigenvalues": top})


# ---------------------------------------------------------------------------------------------
# Oracle and single-task least squares


def oracle(Xs, ys=None, s=None, B_true=None):
    """The true subspace with per-task least-squares heads: what the other methods aim at.

    Parameters
    ----------
    Xs : list of array_like (m_t, d), array_like (T, m, d), or Tasks
        Design matrices, as in :func:`metasp.fit`.
    ys : list of array_like (m_t,), array_like (T, m), or None
        Targets; ``None`` when ``Xs`` is a :class:`metasp.Tasks`.
    s : int
        Rank of the shared subspace.
    B_true : array_like of shape (s, d)
        A basis of the true subspace (rows; orthonormalised here).

    Returns
    -------
    MetaSPResult
        ``B`` spans the row space of ``B_true``; ``n_iter == 0``.

    Examples
    --------
    >>> import metasp
    >>> from metasp import baselines
    >>> X, y, B, W = metasp.datasets.make_hps(T=50, m=10, d=20, s=2, random_state=0)
    >>> result = baselines.oracle(X, y, 2, B_true=B)
    >>> bool(metasp.metrics.sin_angle(result.B, B) < 1e-12)
    True
    """
    tasks, s = _prepare(Xs, ys, s)
    if B_true is None:
        raise TypeError("oracle needs the true subspace: oracle(Xs, ys, s, B_true=B)")
    B = orthonormal_rows(B_true, "B_true", tasks.n_features)
    if B.shape[0] != s:
        raise ValueError(f"B_true must have s = {s} rows; got shape {np.shape(B_true)}")
    return _result(_task_heads(tasks, B), B, 0, "converged")


def _ridge_solutions(tasks: Tasks, ridge: float) -> np.ndarray:
    """Row t: argmin ||y_t - X_t theta||^2 / (2 m_t) + ridge ||theta||^2 / 2 (min-norm if 0)."""
    sizes = tasks.task_sizes
    d = tasks.n_features
    Theta = np.empty((tasks.n_tasks, d))
    if np.all(sizes == sizes[0]):  # equal sizes: one batched solve
        m = int(sizes[0])
        X = tasks.X.reshape(tasks.n_tasks, m, d)
        y = tasks.y.reshape(tasks.n_tasks, m, 1)
        if ridge == 0:
            return (np.linalg.pinv(X) @ y)[:, :, 0]
        gram = X @ X.transpose(0, 2, 1) + m * ridge * np.eye(m)
        return np.einsum("tmd,tm->td", X, np.linalg.solve(gram, y)[:, :, 0])
    for t in range(tasks.n_tasks):
        X, y = tasks[t]
        if ridge == 0:
            Theta[t] = np.linalg.lstsq(X, y, rcond=None)[0]
        else:
            gram = X @ X.T + X.shape[0] * ridge * np.eye(X.shape[0])
            Theta[t] = X.T @ np.linalg.solve(gram, y)
    return Theta


def single_task(Xs, ys=None, s=None, *, ridge=0.0, random_state=None, n_jobs=None):
    r"""Solve every task on its own, then keep the top-s subspace of the stacked solutions.

    .. math:: \tilde\theta_t = \arg\min_\theta \frac{1}{2m_t}\|y_t - X_t\theta\|_2^2
              + \frac{\text{ridge}}{2}\|\theta\|_2^2, \qquad
              \hat\Theta = H_s(\tilde\Theta),

    with :math:`H_s` the best rank-s approximation. With ``ridge=0`` and ``m_t < d`` each
    :math:`\tilde\theta_t` is the minimum-norm interpolant, which only recovers the part of
    :math:`\theta_t` in the row space of :math:`X_t`.

    Parameters
    ----------
    Xs : list of array_like (m_t, d), array_like (T, m, d), or Tasks
        Design matrices, as in :func:`metasp.fit`.
    ys : list of array_like (m_t,), array_like (T, m), or None
        Targets; ``None`` when ``Xs`` is a :class:`metasp.Tasks`.
    s : int
        Rank of the shared subspace.
    ridge : float, default 0.0
        Non-negative ridge strength per task (0: least squares, minimum-norm when m_t < d).
    random_state : None, int or numpy.random.Generator
        Seeds the partial SVD's random start.
    n_jobs : int or None
        Threads of the partial SVD, as in :func:`metasp.fit`.

    Returns
    -------
    MetaSPResult
        ``Theta`` is the rank-s truncation of the stacked per-task solutions.

    Examples
    --------
    >>> import metasp
    >>> from metasp import baselines
    >>> X, y, B, W = metasp.datasets.make_hps(T=100, m=30, d=10, s=2, random_state=0)
    >>> result = baselines.single_task(X, y, 2, random_state=0)
    >>> bool(metasp.metrics.sin_angle(result.B, B) < 1e-8)
    True
    """
    tasks, s = _prepare(Xs, ys, s)
    ridge = _check_positive(ridge, "ridge", allow_zero=True)
    svd = kernels.truncated_svd(
        _ridge_solutions(tasks, ridge), s, random_state=random_state, n_jobs=n_jobs
    )
    return _result(svd.W, svd.V.T, 0, "converged")


# ---------------------------------------------------------------------------------------------
# Alternating minimisation


def _solve_subspace_factor(tasks, tasks_without_y, W, B, moments, *, steps, precondition, tol,
                           n_jobs):
    r"""Minimise L(W B) over B for fixed heads W by (preconditioned) conjugate gradients.

    The normal equations are :math:`\sum_t w_t w_t^\top B H_t = W^\top M` with
    :math:`H_t = X_t^\top X_t / m_t` and M the per-task moments; one Hessian product is one
    pass over the data. Since :math:`\mathbb E H_t = I`, :math:`(W^\top W)^{-1}` is a good
    preconditioner. Returns the new B and the number of passes.
    """
    def operator(D):
        return W.T @ _hessian_product(tasks_without_y, W @ D, n_jobs)

    gram = W.T @ W
    try:
        factor = np.linalg.cholesky(gram) if precondition else None
    except np.linalg.LinAlgError:  # rank-deficient heads: no preconditioning
        factor = None

    def apply_preconditioner(R):
        if factor is None:
            return R
        return np.linalg.solve(factor.T, np.linalg.solve(factor, R))

    rhs = W.T @ moments
    residual = rhs - operator(B)
    target = tol * max(np.linalg.norm(rhs), np.finfo(float).tiny)
    z = apply_preconditioner(residual)
    direction = z.copy()
    rz = np.sum(residual * z)
    passes = 1
    for _ in range(steps):
        if np.linalg.norm(residual) <= target:
            break
        image = operator(direction)
        passes += 1
        curvature = np.sum(direction * image)
        if curvature <= 0:
            break
        alpha = rz / curvature
        B = B + alpha * direction
        residual = residual - alpha * image
        z = apply_preconditioner(residual)
        rz_new = np.sum(residual * z)
        direction = z + (rz_new / rz) * direction
        rz = rz_new
    return B, passes


def _altmin(tasks, s, *, init, max_iter, tol, random_state, n_jobs, steps, precondition,
            name):
    init = _check_choice(init, "init", ("spectral", "random"))
    max_iter = check_max_iter(max_iter)
    tol = check_tol(tol)
    seed = seed_from(random_state)
    if init == "spectral":
        B = _spectral_start(tasks, s, seed, n_jobs).V.T
    else:
        B = _random_rows(np.random.default_rng(seed), s, tasks.n_features)
    moments = _moments(tasks, n_jobs)
    tasks_without_y = _without_targets(tasks)
    Theta = np.zeros((tasks.n_tasks, tasks.n_features))
    history = {"rel_change": [], "passes": []}
    status = "max_iter"
    for k in range(max_iter):
        W = _task_heads(tasks, B)
        B, passes = _solve_subspace_factor(
            tasks, tasks_without_y, W, B, moments, steps=steps, precondition=precondition,
            tol=1e-10, n_jobs=n_jobs,
        )
        Q, R = np.linalg.qr(B.T)
        B = np.ascontiguousarray(Q.T)
        new_Theta = (W @ R.T) @ B
        norm = np.linalg.norm(new_Theta)
        change = np.linalg.norm(new_Theta - Theta)
        Theta = new_Theta
        history["rel_change"].append(change / norm if norm > 0 else 0.0)
        history["passes"].append(passes)
        if change <= tol * norm:
            status = "converged"
            break
    if status == "max_iter" and tol > 0:
        _warn_max_iter(name, max_iter, f"relative change {history['rel_change'][-1]:.2g}")
    return _result(_task_heads(tasks, B), B, k + 1, status, history)


def altmin(Xs, ys=None, s=None, *, init="spectral", max_iter=200, tol=1e-8, cg_steps=50,
           random_state=None, n_jobs=None):
    r"""Alternating minimisation: exact least squares for the heads, then for the subspace.

    Minimises Meta-SP's loss over the factors,

    .. math:: \min_{W, B} \sum_{t=1}^T \frac{1}{2 m_t}\|y_t - X_t B^\top w_t\|_2^2,

    alternating (1) per-task s x s least squares for :math:`w_t` given :math:`B`, and (2) the
    joint least squares for :math:`B` given :math:`W` (an sd-dimensional linear system, solved
    matrix-free by conjugate gradients preconditioned with :math:`(W^\top W)^{-1}`, each step one
    pass over the data in the C++ kernel), then re-orthonormalising :math:`B`.

    Parameters
    ----------
    Xs : list of array_like (m_t, d), array_like (T, m, d), or Tasks
        Design matrices, as in :func:`metasp.fit`.
    ys : list of array_like (m_t,), array_like (T, m), or None
        Targets; ``None`` when ``Xs`` is a :class:`metasp.Tasks`.
    s : int
        Rank of the shared subspace.
    init : {"spectral", "random"}, default "spectral"
        Starting subspace: the top-s right singular vectors of the stacked moments
        :math:`X_t^\top y_t / m_t`, or a uniformly random subspace.
    max_iter : int, default 200
        Maximum number of alternations.
    tol : float, default 1e-8
        Stop when :math:`\|\Theta^{k+1}-\Theta^k\|_F \le \text{tol}\,\|\Theta^{k+1}\|_F`.
    cg_steps : int, default 50
        Maximum conjugate-gradient steps per subspace solve (it stops earlier at a relative
        residual of 1e-10).
    random_state : None, int or numpy.random.Generator
        Seeds the random start (and the partial SVD of the spectral start).
    n_jobs : int or None
        Threads of the C++ kernels, as in :func:`metasp.fit`.

    Returns
    -------
    MetaSPResult
        ``history["rel_change"]`` and ``history["passes"]`` (data passes per alternation).

    Warns
    -----
    ConvergenceWarning
        When ``max_iter`` was reached.

    References
    ----------
    .. [1] Jain, Netrapalli, Sanghavi, "Low-rank matrix completion using alternating
       minimization", STOC 2013.
    .. [2] Thekumparampil, Jain, Netrapalli, Oh, "Statistically and computationally efficient
       linear meta-representation learning", NeurIPS 2021.

    Examples
    --------
    >>> import metasp
    >>> from metasp import baselines
    >>> X, y, B, W = metasp.datasets.make_hps(T=100, m=20, d=10, s=2, random_state=0)
    >>> result = baselines.altmin(X, y, 2, random_state=0)
    >>> result.status, bool(metasp.metrics.sin_angle(result.B, B) < 1e-6)
    ('converged', True)
    """
    tasks, s = _prepare(Xs, ys, s)
    steps = _check_count(cg_steps, "cg_steps")
    return _altmin(tasks, s, init=init, max_iter=max_iter, tol=tol, random_state=random_state,
                   n_jobs=n_jobs, steps=steps, precondition=True, name="altmin")


def altmin_gd(Xs, ys=None, s=None, *, init="spectral", max_iter=1000, tol=1e-8,
              random_state=None, n_jobs=None):
    r"""Alternating minimisation with a gradient step for the subspace (AltMinGD).

    As :func:`altmin`, but each alternation replaces the exact subspace solve by one gradient
    step on :math:`B` with an exact line search (the loss is quadratic in :math:`B` for fixed
    :math:`W`, so the step needs no tuning), followed by re-orthonormalisation:

    .. math:: w_t \leftarrow \arg\min_w \|y_t - X_t B^\top w\|^2, \qquad
              B \leftarrow \operatorname{orth}(B - \eta \nabla_B L(WB)) .

    Parameters
    ----------
    Xs : list of array_like (m_t, d), array_like (T, m, d), or Tasks
        Design matrices, as in :func:`metasp.fit`.
    ys : list of array_like (m_t,), array_like (T, m), or None
        Targets; ``None`` when ``Xs`` is a :class:`metasp.Tasks`.
    s : int
        Rank of the shared subspace.
    init : {"spectral", "random"}, default "spectral"
        Starting subspace, as in :func:`altmin`.
    max_iter : int, default 1000
        Maximum number of alternations.
    tol : float, default 1e-8
        Relative change of ``Theta`` at which to stop.
    random_state : None, int or numpy.random.Generator
        Seeds the start.
    n_jobs : int or None
        Threads of the C++ kernels.

    Returns
    -------
    MetaSPResult

    Warns
    -----
    ConvergenceWarning
        When ``max_iter`` was reached.

    References
    ----------
    .. [1] Thekumparampil, Jain, Netrapalli, Oh, "Statistically and computationally efficient
       linear meta-representation learning", NeurIPS 2021.

    Examples
    --------
    >>> import metasp
    >>> from metasp import baselines
    >>> X, y, B, W = metasp.datasets.make_hps(T=100, m=20, d=10, s=2, random_state=0)
    >>> result = baselines.altmin_gd(X, y, 2, random_state=0)
    >>> bool(metasp.metrics.sin_angle(result.B, B) < 1e-5)
    True
    """
    tasks, s = _prepare(Xs, ys, s)
    return _altmin(tasks, s, init=init, max_iter=max_iter, tol=tol, random_state=random_state,
                   n_jobs=n_jobs, steps=1, precondition=False, name="altmin_gd")


# ---------------------------------------------------------------------------------------------
# Burer-Monteiro factorisation


def burer_monteiro(Xs, ys=None, s=None, *, solver="auto", init="spectral", max_iter=1000,
                   tol=1e-10, random_state=None, n_jobs=None):
    r"""Factored least squares with a balancing term (Burer-Monteiro).

    .. math:: \min_{W \in \mathbb R^{T\times s},\, B \in \mathbb R^{s\times d}}
              \sum_{t=1}^T \frac{1}{2 m_t}\|y_t - X_t B^\top w_t\|_2^2
              + \frac18 \|B B^\top - W^\top W\|_F^2

    by L-BFGS (SciPy) or by gradient descent with backtracking. The balancing term removes the
    scaling ambiguity :math:`(W c, B / c)` without changing the minimisers of the loss.

    Parameters
    ----------
    Xs : list of array_like (m_t, d), array_like (T, m, d), or Tasks
        Design matrices, as in :func:`metasp.fit`.
    ys : list of array_like (m_t,), array_like (T, m), or None
        Targets; ``None`` when ``Xs`` is a :class:`metasp.Tasks`.
    s : int
        Rank of the shared subspace.
    solver : {"auto", "lbfgs", "gd"}, default "auto"
        ``"lbfgs"``: :func:`scipy.optimize.minimize` with L-BFGS-B (needs SciPy:
        ``pip install "metasp[sklearn]"``); ``"gd"``: gradient descent with Armijo
        backtracking; ``"auto"``: L-BFGS when SciPy is installed, else gradient descent.
    init : {"spectral", "random"}, default "spectral"
        ``"spectral"``: balanced factors of the rank-s SVD of the stacked moments
        :math:`X_t^\top y_t / m_t`; ``"random"``: random orthonormal factors with the same
        singular values.
    max_iter : int, default 1000
        Maximum iterations of the solver.
    tol : float, default 1e-10
        Stop when the objective decreases by less than ``tol`` relative to its value.
    random_state : None, int or numpy.random.Generator
        Seeds the start.
    n_jobs : int or None
        Threads of the C++ gradient pass.

    Returns
    -------
    MetaSPResult
        ``history["objective"]`` (L-BFGS: the final value only; gradient descent: every
        iteration).

    Warns
    -----
    ConvergenceWarning
        When ``max_iter`` was reached.

    References
    ----------
    .. [1] Burer, Monteiro, "A nonlinear programming algorithm for solving semidefinite
       programs via low-rank factorization", Math. Program. 95 (2003).
    .. [2] Tu, Boczar, Simchowitz, Soltanolkotabi, Recht, "Low-rank solutions of linear matrix
       equations via Procrustes flow", ICML 2016.

    Examples
    --------
    >>> import metasp
    >>> from metasp import baselines
    >>> X, y, B, W = metasp.datasets.make_hps(T=100, m=20, d=10, s=2, random_state=0)
    >>> result = baselines.burer_monteiro(X, y, 2, random_state=0)
    >>> bool(metasp.metrics.sin_angle(result.B, B) < 1e-4)
    True
    """
    tasks, s = _prepare(Xs, ys, s)
    solver = _check_choice(solver, "solver", ("auto", "lbfgs", "gd"))
    init = _check_choice(init, "init", ("spectral", "random"))
    max_iter = check_max_iter(max_iter)
    tol = check_tol(tol)
    seed = seed_from(random_state)
    minimize = None
    if solver in ("auto", "lbfgs"):
        try:
            from scipy.optimize import minimize
        except ImportError:
            if solver == "lbfgs":
                raise ImportError(
                    'burer_monteiro(solver="lbfgs") needs SciPy: pip install "metasp[sklearn]" '
                    '(or scipy), or use solver="gd"'
                ) from None
    T, d = tasks.n_tasks, tasks.n_features

    start = _spectral_start(tasks, s, seed, n_jobs)
    scale = np.sqrt(np.maximum(start.singular_values, np.finfo(float).tiny))
    if init == "spectral":
        W0, B0 = start.W / scale, scale[:, None] * start.V.T
    else:
        rng = np.random.default_rng(seed)
        W0 = np.linalg.qr(rng.standard_normal((T, s)))[0] * scale
        B0 = scale[:, None] * _random_rows(rng, s, d)

    def objective(vector):
        W = vector[: T * s].reshape(T, s)
        B = vector[T * s:].reshape(s, d)
        grad = kernels.gradient(tasks, W @ B, n_jobs=n_jobs)
        if not np.all(np.isfinite(grad.task_loss)):
            return np.inf, np.zeros_like(vector)
        imbalance = B @ B.T - W.T @ W
        value = 0.5 * grad.task_loss.sum() + 0.125 * np.sum(imbalance**2)
        grad_W = -grad.G @ B.T - 0.5 * W @ imbalance
        grad_B = -W.T @ grad.G + 0.5 * imbalance @ B
        return value, np.concatenate([grad_W.ravel(), grad_B.ravel()])

    x = np.concatenate([W0.ravel(), B0.ravel()])
    if minimize is not None:
        out = minimize(objective, x, jac=True, method="L-BFGS-B",
                       options={"maxiter": max_iter, "ftol": tol, "gtol": 0.0})
        x, n_iter = out.x, out.nit
        status = "max_iter" if out.nit >= max_iter else "converged"
        history = {"objective": [out.fun]}
    else:
        x, n_iter, status, history = _gradient_descent(objective, x, max_iter, tol)
    if not np.all(np.isfinite(x)):
        status = "diverged"
        warnings.warn("burer_monteiro diverged; do not use the result", DivergenceWarning,
                      stacklevel=2)
    elif status == "max_iter" and tol > 0:
        _warn_max_iter("burer_monteiro", max_iter, "objective still decreasing")
    W, B = x[: T * s].reshape(T, s), x[T * s:].reshape(s, d)
    return _result(W, B, n_iter, status, history)


def _gradient_descent(objective, x, max_iter, tol):
    """Gradient descent with Armijo backtracking; the step grows again after each success."""
    value, grad = objective(x)
    step, history, status, k = 1.0, [value], "max_iter", 0
    for k in range(1, max_iter + 1):
        norm2 = np.sum(grad**2)
        while True:
            candidate = x - step * grad
            new_value, new_grad = objective(candidate)
            if new_value <= value - 0.5 * step * norm2 or step < 1e-20:
                break
            step *= 0.5
        decrease = value - new_value
        x, value, grad = candidate, new_value, new_grad
        history.append(value)
        step *= 2.0
        if decrease <= tol * max(abs(value), np.finfo(float).tiny):
            status = "converged"
            break
    return x, k, status, {"objective": history}


# ---------------------------------------------------------------------------------------------
# Trace-norm regularisation


def _lipschitz(tasks: Tasks) -> float:
    """max_t of the largest eigenvalue of X_t^T X_t / m_t (the loss's curvature bound)."""
    sizes = tasks.task_sizes
    if np.all(sizes == sizes[0]):
        m = int(sizes[0])
        X = tasks.X.reshape(tasks.n_tasks, m, tasks.n_features)
        small = X @ X.transpose(0, 2, 1) if m <= tasks.n_features else X.transpose(0, 2, 1) @ X
        return float(np.linalg.eigvalsh(small)[:, -1].max() / m)
    return max(np.linalg.norm(tasks[t][0], 2) ** 2 / m for t, m in enumerate(sizes))


def noise_level(Xs, ys=None, s=None, *, random_state=None):
    r"""Estimate the noise standard deviation from the residuals of a rank-s Meta-SP fit.

    .. math:: \hat\sigma^2 = \frac{\sum_t \|y_t - X_t \hat\theta_t\|_2^2}{N - s(T + d - s)},

    the residual sum of squares over the residual degrees of freedom of a rank-s model.

    Parameters
    ----------
    Xs : list of array_like (m_t, d), array_like (T, m, d), or Tasks
        Design matrices, as in :func:`metasp.fit`.
    ys : list of array_like (m_t,), array_like (T, m), or None
        Targets; ``None`` when ``Xs`` is a :class:`metasp.Tasks`.
    s : int
        Rank of the shared subspace.
    random_state : None, int or numpy.random.Generator
        Passed to :func:`metasp.fit`.

    Returns
    -------
    float
    """
    from ._solver import fit

    tasks, s = _prepare(Xs, ys, s)
    dof = tasks.n_samples - s * (tasks.n_tasks + tasks.n_features - s)
    if dof <= 0:
        raise ValueError(
            f"too few samples to estimate the noise level: N = {tasks.n_samples} <= "
            f"s(T + d - s) = {tasks.n_samples - dof}; pass sigma or lam explicitly"
        )
    with warnings.catch_warnings():
        # An unconverged fit still gives a usable residual.
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = fit(tasks, None, s, random_state=random_state)
    loss = kernels.gradient(tasks, result.Theta).task_loss
    return float(np.sqrt(np.sum(loss * tasks.task_sizes) / dof))


def default_lambda(tasks: Tasks, sigma: float) -> float:
    r"""The default trace-norm weight of :func:`nuclear_norm` (Boursier et al. 2022).

    .. math:: \lambda = \sigma \sqrt{T + d^2/m} \,/\, \sqrt{T m},

    with m the mean number of samples per task.

    Parameters
    ----------
    tasks : Tasks
        The training tasks (for T, d and m).
    sigma : float
        Noise standard deviation.

    Returns
    -------
    float
    """
    T, d = tasks.n_tasks, tasks.n_features
    m = tasks.n_samples / T
    return float(sigma * np.sqrt(T + d**2 / m) / np.sqrt(T * m))


def _singular_value_threshold(A, threshold, rank_guess, basis, seed, n_jobs):
    """Soft-threshold the singular values of A by a partial SVD that grows until it has every
    singular value above the threshold. Returns (A shrunk, its rank, the SVD's basis)."""
    limit = min(A.shape)
    k = min(max(rank_guess, 1) + 1, limit)
    while True:
        svd = kernels.truncated_svd(A, k, warm_start=basis, random_state=seed, n_jobs=n_jobs)
        basis = svd.basis
        if svd.singular_values[-1] <= threshold or k == limit:
            break
        k = min(2 * k, limit)
    keep = svd.singular_values > threshold
    rank = int(keep.sum())
    shrink = (svd.singular_values[keep] - threshold) / svd.singular_values[keep]
    return (svd.W[:, keep] * shrink) @ svd.V[:, keep].T, rank, basis


def _fista(tasks, lam, *, max_iter, tol, seed, n_jobs):
    """FISTA with gradient-based adaptive restart on (1/T) L + lam/sqrt(T) ||Theta||_*."""
    T, d = tasks.n_tasks, tasks.n_features
    lipschitz = _lipschitz(tasks)
    # Multiplying the objective by T: L(Theta) + lam sqrt(T) ||Theta||_*, step 1 / lipschitz.
    threshold = lam * np.sqrt(T) / lipschitz
    Theta = np.zeros((T, d))
    extrapolated, momentum = Theta, 1.0
    rank, basis = 0, None
    history = {"rank": [], "rel_change": []}
    status = "max_iter"
    for k in range(max_iter):
        G = kernels.gradient(tasks, extrapolated, n_jobs=n_jobs).G
        new_Theta, rank, basis = _singular_value_threshold(
            extrapolated + G / lipschitz, threshold, max(rank, 1), basis, seed, n_jobs
        )
        change = new_Theta - Theta
        norm = np.linalg.norm(new_Theta)
        history["rank"].append(rank)
        history["rel_change"].append(np.linalg.norm(change) / norm if norm > 0 else 0.0)
        if np.sum((extrapolated - new_Theta) * change) > 0:  # the momentum points uphill
            momentum = 1.0
        next_momentum = (1 + np.sqrt(1 + 4 * momentum**2)) / 2
        extrapolated = new_Theta + ((momentum - 1) / next_momentum) * change
        Theta, momentum = new_Theta, next_momentum
        if np.linalg.norm(change) <= tol * norm or norm == 0 and k > 0:
            status = "converged"
            break
    return Theta, k + 1, status, history


def nuclear_norm(Xs, ys=None, s=None, *, lam="default", sigma=None, lam_grid=(0.25, 0.5, 1, 2, 4),
                 validation_fraction=0.2, max_iter=500, tol=1e-6, random_state=None, n_jobs=None):
    r"""Trace-norm regularised least squares, then the top-s subspace of the solution.

    .. math:: \hat\Theta = \arg\min_\Theta \frac1T \sum_{t=1}^T \frac{1}{2 m_t}
              \|y_t - X_t\theta_t\|_2^2 + \frac{\lambda}{\sqrt T}\|\Theta\|_* ,

    solved by accelerated proximal gradient (FISTA with adaptive restart): a gradient pass in the
    C++ kernel, then singular-value soft-thresholding by a warm-started partial SVD that grows
    until it holds every singular value above the threshold. ``B`` is the top-s right singular
    subspace of :math:`\hat\Theta` and ``Theta`` its rank-s truncation (shrunk, as the
    estimator is).

    The default weight is :math:`\lambda = \sigma\sqrt{T + d^2/m}\,/\sqrt{T m}` (Boursier,
    Konobeev, Flammarion 2022; m the mean task size), with :math:`\sigma` given, or estimated by
    :func:`noise_level` (residuals of a rank-s Meta-SP fit over its residual degrees of
    freedom). The :math:`1/\sqrt T` in front of the trace norm makes this weight the right
    scale: it is then close to the size of the noise term :math:`\|\frac1T[X_t^\top
    \varepsilon_t/m]_t\|_2` the threshold must remove.

    Parameters
    ----------
    Xs : list of array_like (m_t, d), array_like (T, m, d), or Tasks
        Design matrices, as in :func:`metasp.fit`.
    ys : list of array_like (m_t,), array_like (T, m), or None
        Targets; ``None`` when ``Xs`` is a :class:`metasp.Tasks`.
    s : int
        Rank of the shared subspace (used for the output only).
    lam : "default", "search" or float, default "default"
        ``"default"``: the formula above; ``"search"``: the multiple of the default in
        ``lam_grid`` with the smallest validation error (each task's last
        ``validation_fraction`` of samples held out), refitted on all samples; a float: that
        weight.
    sigma : float, optional
        Noise standard deviation for the default weight; estimated when omitted.
    lam_grid : sequence of float, default (0.25, 0.5, 1, 2, 4)
        Multiples of the default weight tried by ``lam="search"``.
    validation_fraction : float, default 0.2
        Share of each task's samples held out by ``lam="search"`` (every task needs at least
        two samples).
    max_iter : int, default 500
        Maximum FISTA iterations.
    tol : float, default 1e-6
        Stop when :math:`\|\Theta^{k+1}-\Theta^k\|_F \le \text{tol}\,\|\Theta^{k+1}\|_F`.
    random_state : None, int or numpy.random.Generator
        Seeds the partial SVDs (and the noise estimate).
    n_jobs : int or None
        Threads of the C++ kernels.

    Returns
    -------
    MetaSPResult
        ``history``: ``"rank"`` and ``"rel_change"`` per iteration, ``"lambda"`` (the weight
        used), and with ``lam="search"`` also ``"lambda_grid"`` and ``"validation_error"``.

    Warns
    -----
    ConvergenceWarning
        When ``max_iter`` was reached.

    References
    ----------
    .. [1] Boursier, Konobeev, Flammarion, "Trace norm regularization for multi-task learning
       with scarce data", COLT 2022.
    .. [2] Beck, Teboulle, "A fast iterative shrinkage-thresholding algorithm for linear
       inverse problems", SIAM J. Imaging Sci. 2 (2009).
    .. [3] O'Donoghue, Candes, "Adaptive restart for accelerated gradient schemes", Found.
       Comput. Math. 15 (2015).

    Examples
    --------
    >>> import metasp
    >>> from metasp import baselines
    >>> X, y, B, W = metasp.datasets.make_hps(T=100, m=30, d=10, s=2, sigma=0.1, random_state=0)
    >>> result = baselines.nuclear_norm(X, y, 2, sigma=0.1, random_state=0)
    >>> bool(metasp.metrics.sin_angle(result.B, B) < 0.05)
    True
    """
    tasks, s = _prepare(Xs, ys, s)
    max_iter = check_max_iter(max_iter)
    tol = check_tol(tol)
    seed = seed_from(random_state)
    if sigma is not None:
        sigma = _check_positive(sigma, "sigma", allow_zero=True)
    history = {}
    if isinstance(lam, str):
        _check_choice(lam, "lam", ("default", "search"))
        if sigma is None:
            sigma = noise_level(tasks, None, s, random_state=seed)
        base = default_lambda(tasks, sigma)
        if lam == "search":
            lam, history = _search_lambda(tasks, s, base, lam_grid, validation_fraction,
                                          max_iter=max_iter, tol=tol, seed=seed, n_jobs=n_jobs)
        else:
            lam = base
    else:
        lam = _check_positive(lam, "lam", allow_zero=True)
    Theta, n_iter, status, fista_history = _fista(tasks, lam, max_iter=max_iter, tol=tol,
                                                  seed=seed, n_jobs=n_jobs)
    history = {**fista_history, "lambda": [lam], **history}
    if status == "max_iter" and tol > 0:
        _warn_max_iter("nuclear_norm", max_iter,
                       f"relative change {fista_history['rel_change'][-1]:.2g}")
    if not np.any(Theta):
        raise ValueError(
            f"the trace-norm weight lam = {lam:.3g} is so large that the solution is 0 and has "
            "no subspace; pass a smaller lam or sigma, or lam='search'"
        )
    svd = kernels.truncated_svd(Theta, s, random_state=seed, n_jobs=n_jobs)
    return _result(svd.W, svd.V.T, n_iter, status, history)


def _search_lambda(tasks, s, base, lam_grid, validation_fraction, *, max_iter, tol, seed,
                   n_jobs):
    grid = np.asarray(lam_grid, dtype=np.float64)
    if grid.ndim != 1 or grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid <= 0):
        raise ValueError(f"lam_grid must be a non-empty sequence of positive numbers; got {lam_grid!r}")
    fraction = _check_positive(validation_fraction, "validation_fraction")
    if fraction >= 1:
        raise ValueError(f"validation_fraction must be below 1; got {fraction}")
    sizes = tasks.task_sizes
    if sizes.min() < 2:
        raise ValueError("lam='search' needs at least 2 samples in every task")
    held_out = np.clip(np.round(fraction * sizes).astype(np.int64), 1, sizes - 1)
    is_validation = np.zeros(tasks.n_samples, dtype=bool)
    for start, size in zip(tasks.offsets[1:] - held_out, held_out):
        is_validation[start:start + size] = True
    offsets = np.concatenate([[0], np.cumsum(sizes - held_out)])
    train = Tasks(tasks.X[~is_validation], tasks.y[~is_validation], offsets)
    validation = Tasks(tasks.X[is_validation], tasks.y[is_validation],
                       np.concatenate([[0], np.cumsum(held_out)]))
    errors = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for factor in grid:
            Theta = _fista(train, base * factor, max_iter=max_iter, tol=tol, seed=seed,
                           n_jobs=n_jobs)[0]
            errors.append(kernels.gradient(validation, Theta, n_jobs=n_jobs).task_loss.mean())
    best = base * grid[int(np.argmin(errors))]
    return best, {"lambda_grid": base * grid, "validation_error": errors}


# ---------------------------------------------------------------------------------------------
# ANIL


def anil(Xs, ys=None, s=None, *, order=1, inner_lr=0.1, inner_steps=3, outer_lr=0.1,
         max_iter=1000, support_fraction=0.5, tol=1e-7, random_state=None, n_jobs=None):
    r"""ANIL (almost no inner loop) meta-learning for linear regression.

    Each task's samples are split into a support and a query set. With the shared
    representation :math:`B \in \mathbb R^{s\times d}` (not constrained to be orthonormal), the
    head starts at zero and takes ``inner_steps`` gradient steps on the support loss; the outer
    step moves :math:`B` down the gradient of the mean query loss after adaptation:

    .. math:: w_t^{(0)} = 0, \quad
              w_t^{(k+1)} = w_t^{(k)} - \alpha \nabla_w \frac{1}{2 m_t^{s}}
              \|y_t^{s} - X_t^{s} B^\top w\|^2 \big|_{w_t^{(k)}}, \qquad
              \min_B \frac1T \sum_t \frac{1}{2 m_t^{q}}
              \|y_t^{q} - X_t^{q} B^\top w_t^{(\tau)}(B)\|^2 .

    ``order=2`` differentiates through the inner steps (exact meta-gradient, by reverse-mode
    differentiation written out by hand); ``order=1`` treats the adapted heads as constants
    (first-order ANIL). Each inner step and each backward step is one pass over the data in the
    C++ kernel. The returned heads are least-squares heads on all of each task's samples in the
    learned subspace (``B`` orthonormalised).

    Defaults and tuning: first-order ANIL, 1000 outer steps from a random orthonormal B, on
    3 seeds of (T=50, m=10, d=50, s=3, sigma=0.1) and 2 seeds of (T=100, m=60, d=10, s=2,
    sigma=0.01), over inner_lr in {0.05, 0.1, 0.25, 0.5}, inner_steps in {1, 3} and outer_lr in
    {0.05, 0.1, 0.25, 0.5, 1}. The defaults (0.1, 3, 0.1) gave the best median sin angle on the
    first setting (0.81; no setting did better than 0.81 there, where Meta-SP reaches 0.08) and
    0.0063 on the second (one inner step: 0.027, biased by the short adaptation). Steps of 0.25
    and more diverged on some seeds of the first setting, whose 5-sample support Gram matrices
    have norms near :math:`(1 + \sqrt{d/m})^2`. With a zero head start the adapted prediction
    is about :math:`\alpha\tau B^\top B \theta_t`, so B settles at a basis scaled by about
    :math:`1/\sqrt{\alpha\tau}`.

    Parameters
    ----------
    Xs : list of array_like (m_t, d), array_like (T, m, d), or Tasks
        Design matrices, as in :func:`metasp.fit`.
    ys : list of array_like (m_t,), array_like (T, m), or None
        Targets; ``None`` when ``Xs`` is a :class:`metasp.Tasks`.
    s : int
        Rank of the shared subspace.
    order : {1, 2}, default 1
        First-order or second-order (exact) meta-gradient.
    inner_lr : float, default 0.1
        Step size :math:`\alpha` of the inner (head) steps.
    inner_steps : int, default 3
        Inner gradient steps :math:`\tau`.
    outer_lr : float, default 0.1
        Step size of the outer gradient step on B.
    max_iter : int, default 1000
        Outer steps (full-batch: every task in every step).
    support_fraction : float, default 0.5
        Share of each task's samples in the support set (each side gets at least one sample;
        every task needs at least two).
    tol : float, default 1e-7
        Stop when the outer step changes B by less than ``tol`` relative to its norm.
    random_state : None, int or numpy.random.Generator
        Seeds the random start of B.
    n_jobs : int or None
        Threads of the C++ kernels.

    Returns
    -------
    MetaSPResult
        ``history["query_loss"]`` per outer step.

    Warns
    -----
    ConvergenceWarning
        When ``max_iter`` was reached (the usual outcome: ANIL converges slowly).
    DivergenceWarning
        When the query loss overflowed (step sizes too large for the data).

    References
    ----------
    .. [1] Raghu, Raghu, Bengio, Vinyals, "Rapid learning or feature reuse? Towards
       understanding the effectiveness of MAML", ICLR 2020.
    .. [2] Collins, Mokhtari, Oh, Shakkottai, "MAML and ANIL provably learn representations",
       ICML 2022.

    Examples
    --------
    >>> import metasp
    >>> from metasp import baselines
    >>> X, y, B, W = metasp.datasets.make_hps(T=100, m=60, d=10, s=2, random_state=0)
    >>> result = baselines.anil(X, y, 2, max_iter=300, tol=0, random_state=0)  # 300 steps
    >>> result.status, bool(metasp.metrics.sin_angle(result.B, B) < 0.1)
    ('max_iter', True)
    """
    tasks, s = _prepare(Xs, ys, s)
    order = _check_count(order, "order")
    if order not in (1, 2):
        raise ValueError(f"order must be 1 (first-order ANIL) or 2 (exact meta-gradient); got {order}")
    alpha = _check_positive(inner_lr, "inner_lr")
    steps = _check_count(inner_steps, "inner_steps")
    beta = _check_positive(outer_lr, "outer_lr")
    max_iter = check_max_iter(max_iter)
    tol = check_tol(tol)
    fraction = _check_positive(support_fraction, "support_fraction")
    if fraction >= 1:
        raise ValueError(f"support_fraction must be below 1; got {fraction}")
    support, query = _split_tasks(tasks, fraction)
    support_without_y = _without_targets(support)
    rng = np.random.default_rng(seed_from(random_state))
    B = _random_rows(rng, s, tasks.n_features)
    history = {"query_loss": []}
    status = "max_iter"
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(max_iter):
            loss, grad_B = _anil_meta_gradient(support, support_without_y, query, B, alpha,
                                               steps, order, n_jobs)
            if k == 0:
                initial_loss = loss
            if not np.isfinite(loss) or loss > DIVERGENCE_FACTOR * initial_loss:
                status = "diverged"
                break
            history["query_loss"].append(loss)
            update = beta * grad_B
            if not np.all(np.isfinite(update)):
                status = "diverged"
                break
            B = B - update
            if np.linalg.norm(update) <= tol * np.linalg.norm(B):
                status = "converged"
                break
    if status == "diverged":
        warnings.warn(
            f"anil diverged at outer step {k + 1}: reduce inner_lr or outer_lr. The result "
            "(from the last finite B) should not be used.",
            DivergenceWarning,
            stacklevel=2,
        )
    elif status == "max_iter" and tol > 0:
        _warn_max_iter("anil", max_iter, "ANIL's outer loop converges slowly")
    B = np.ascontiguousarray(np.linalg.qr(B.T)[0].T)
    return _result(_task_heads(tasks, B), B, k + 1, status, history)


def _anil_meta_gradient(support, support_without_y, query, B, alpha, steps, order, n_jobs):
    """Mean query loss after ``steps`` inner head steps from zero, and its gradient in B.

    ``order=2`` back-propagates through the inner steps (reverse mode written out: one Hessian
    product per step); ``order=1`` treats the adapted heads as constants.
    """
    T, s = query.n_tasks, B.shape[0]
    heads, support_grads = [np.zeros((T, s))], []
    for _ in range(steps):
        support_grads.append(kernels.gradient(support, heads[-1] @ B, n_jobs=n_jobs).G)
        heads.append(heads[-1] + alpha * support_grads[-1] @ B.T)
    out = kernels.gradient(query, heads[-1] @ B, n_jobs=n_jobs)
    loss = 0.5 * out.task_loss.mean()
    grad_B = -heads[-1].T @ out.G
    if order == 2:
        head_adjoint = -out.G @ B.T
        for inner in range(steps - 1, -1, -1):
            v = head_adjoint @ B  # row t: B^T (adjoint of w_t^(inner+1))
            Hv = _hessian_product(support_without_y, v, n_jobs)
            grad_B += alpha * (head_adjoint.T @ support_grads[inner] - heads[inner].T @ Hv)
            head_adjoint = head_adjoint - alpha * Hv @ B.T
    return loss, grad_B / T


def _split_tasks(tasks: Tasks, fraction: float) -> tuple[Tasks, Tasks]:
    """Support (first samples of each task) and query (the rest) sets."""
    sizes = tasks.task_sizes
    if sizes.min() < 2:
        raise ValueError("anil needs at least 2 samples in every task (a support and a query set)")
    support_sizes = np.clip(np.round(fraction * sizes).astype(np.int64), 1, sizes - 1)
    in_support = np.zeros(tasks.n_samples, dtype=bool)
    for start, size in zip(tasks.offsets[:-1], support_sizes):
        in_support[start:start + size] = True
    def subset(mask, task_sizes):
        return Tasks(tasks.X[mask], tasks.y[mask], np.concatenate([[0], np.cumsum(task_sizes)]))
    return subset(in_support, support_sizes), subset(~in_support, sizes - support_sizes)
