"""Baselines without iterations: method of moments, single-task least squares, oracle."""

from __future__ import annotations

import numpy as np

from .. import kernels
from .._tasks import Tasks
from .._validation import check_positive, orthonormal_rows
from ._common import canonical_result, prepare, task_heads


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
    tasks, s = prepare(Xs, ys, s)
    weighted = tasks.X * (tasks.y**2)[:, None]
    moment = weighted.T @ tasks.X / tasks.n_samples
    eigenvalues, eigenvectors = np.linalg.eigh(moment)
    order = np.argsort(eigenvalues)[::-1]
    B = np.ascontiguousarray(eigenvectors[:, order[:s]].T)
    top = eigenvalues[order[: min(s + 1, tasks.n_features)]]
    return canonical_result(task_heads(tasks, B), B, 0, "converged", {"eigenvalues": top})


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
    tasks, s = prepare(Xs, ys, s)
    if B_true is None:
        raise TypeError("oracle needs the true subspace: oracle(Xs, ys, s, B_true=B)")
    B = orthonormal_rows(B_true, "B_true", tasks.n_features)
    if B.shape[0] != s:
        raise ValueError(f"B_true must have s = {s} rows; got shape {np.shape(B_true)}")
    return canonical_result(task_heads(tasks, B), B, 0, "converged")


def _ridge_solutions(tasks: Tasks, ridge: float) -> np.ndarray:
    """Row t: argmin ||y_t - X_t theta||^2 / (2 m_t) + ridge ||theta||^2 / 2 (min-norm if 0).

    With a ridge, from the SVD X_t = U S V^T as V S / (S^2 + m_t ridge) U^T y_t, which stays
    exact where X_t X_t^T + m_t ridge I is singular in float64 (ridge below eps |X_t|^2).
    """
    sizes = tasks.task_sizes
    d = tasks.n_features
    Theta = np.empty((tasks.n_tasks, d))
    if np.all(sizes == sizes[0]):  # equal sizes: one batched solve
        m = int(sizes[0])
        X = tasks.X.reshape(tasks.n_tasks, m, d)
        y = tasks.y.reshape(tasks.n_tasks, m, 1)
        if ridge == 0:
            return (np.linalg.pinv(X) @ y)[:, :, 0]
        U, S, Vt = np.linalg.svd(X, full_matrices=False)
        shrunk = S / (S**2 + m * ridge) * (U.transpose(0, 2, 1) @ y)[:, :, 0]
        return np.einsum("tkd,tk->td", Vt, shrunk)
    for t in range(tasks.n_tasks):
        X, y = tasks[t]
        if ridge == 0:
            Theta[t] = np.linalg.lstsq(X, y, rcond=None)[0]
        else:
            U, S, Vt = np.linalg.svd(X, full_matrices=False)
            Theta[t] = Vt.T @ (S / (S**2 + X.shape[0] * ridge) * (U.T @ y))
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
    tasks, s = prepare(Xs, ys, s)
    ridge = check_positive(ridge, "ridge", allow_zero=True)
    svd = kernels.truncated_svd(
        _ridge_solutions(tasks, ridge), s, random_state=random_state, n_jobs=n_jobs
    )
    return canonical_result(svd.W, svd.V.T, 0, "converged")
