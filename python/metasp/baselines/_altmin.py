"""Alternating minimisation (AltMin) and its gradient variant (AltMinGD)."""

from __future__ import annotations

import numpy as np

from .._validation import check_count, check_max_iter, check_tol, seed_from
from ._common import (
    canonical_result,
    check_choice,
    hessian_product,
    prepare,
    random_rows,
    spectral_start,
    task_heads,
    task_moments,
    warn_max_iter,
    without_targets,
)


def _solve_subspace_factor(tasks, tasks_without_y, W, B, moments, *, steps, precondition, tol,
                           n_jobs):
    r"""Minimise L(W B) over B for fixed heads W by (preconditioned) conjugate gradients.

    The normal equations are :math:`\sum_t w_t w_t^\top B H_t = W^\top M` with
    :math:`H_t = X_t^\top X_t / m_t` and M the per-task moments; one Hessian product is one
    pass over the data. Since :math:`\mathbb E H_t = I`, :math:`(W^\top W)^{-1}` is a good
    preconditioner. Returns the new B and the number of passes.
    """
    def operator(D):
        return W.T @ hessian_product(tasks_without_y, W @ D, n_jobs)

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
    init = check_choice(init, "init", ("spectral", "random"))
    max_iter = check_max_iter(max_iter)
    tol = check_tol(tol)
    seed = seed_from(random_state)
    if init == "spectral":
        B = spectral_start(tasks, s, seed, n_jobs).V.T
    else:
        B = random_rows(np.random.default_rng(seed), s, tasks.n_features)
    moments = task_moments(tasks, n_jobs)
    tasks_without_y = without_targets(tasks)
    Theta = np.zeros((tasks.n_tasks, tasks.n_features))
    history = {"rel_change": [], "passes": []}
    status = "max_iter"
    for k in range(max_iter):  # noqa: B007  (k counts the sweeps returned below)
        W = task_heads(tasks, B)
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
        warn_max_iter(name, max_iter, f"relative change {history['rel_change'][-1]:.2g}")
    return canonical_result(task_heads(tasks, B), B, k + 1, status, history)


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
    tasks, s = prepare(Xs, ys, s)
    steps = check_count(cg_steps, "cg_steps")
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
    tasks, s = prepare(Xs, ys, s)
    return _altmin(tasks, s, init=init, max_iter=max_iter, tol=tol, random_state=random_state,
                   n_jobs=n_jobs, steps=1, precondition=False, name="altmin_gd")
