"""Burer-Monteiro: factored least squares with a balancing term."""

from __future__ import annotations

import warnings

import numpy as np

from .. import kernels
from .._result import DivergenceWarning
from .._validation import check_max_iter, check_tol, seed_from
from ._common import (
    canonical_result,
    check_choice,
    prepare,
    random_rows,
    spectral_start,
    warn_max_iter,
)


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
    tasks, s = prepare(Xs, ys, s)
    solver = check_choice(solver, "solver", ("auto", "lbfgs", "gd"))
    init = check_choice(init, "init", ("spectral", "random"))
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

    start = spectral_start(tasks, s, seed, n_jobs)
    scale = np.sqrt(np.maximum(start.singular_values, np.finfo(float).tiny))
    if init == "spectral":
        W0, B0 = start.W / scale, scale[:, None] * start.V.T
    else:
        rng = np.random.default_rng(seed)
        W0 = np.linalg.qr(rng.standard_normal((T, s)))[0] * scale
        B0 = scale[:, None] * random_rows(rng, s, d)

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
        warn_max_iter("burer_monteiro", max_iter, "objective still decreasing")
    W, B = x[: T * s].reshape(T, s), x[T * s:].reshape(s, d)
    return canonical_result(W, B, n_iter, status, history)


def _gradient_descent(objective, x, max_iter, tol):
    """Gradient descent with Armijo backtracking; the step grows again after each success."""
    value, grad = objective(x)
    step, history, status, k = 1.0, [value], "max_iter", 0
    for k in range(1, max_iter + 1):  # noqa: B007  (k: the iterations returned below)
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
