"""Trace-norm regularised least squares by accelerated proximal gradient."""

from __future__ import annotations

import warnings

import numpy as np

from .. import kernels
from .._result import ConvergenceWarning
from .._tasks import Tasks
from .._validation import check_max_iter, check_positive, check_tol, seed_from
from ._common import canonical_result, check_choice, prepare, warn_max_iter


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
    from .._solver import fit

    tasks, s = prepare(Xs, ys, s)
    dof = _residual_dof(tasks, s)
    if dof <= 0:
        raise ValueError(
            f"too few samples to estimate the noise level: N = {tasks.n_samples} <= "
            f"s(T + d - s) = {tasks.n_samples - dof}; pass sigma or lam explicitly"
        )
    with warnings.catch_warnings():
        # An unconverged fit still gives a usable residual.
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = fit(tasks, None, s, heads="fixed", random_state=random_state)
    loss = kernels.gradient(tasks, result.Theta).task_loss
    return float(np.sqrt(np.sum(loss * tasks.task_sizes) / dof))


# Multiples of the default weight at the targets' root mean square (an upper bound on the noise
# level) that nuclear_norm searches where the noise level cannot be estimated.
SCARCE_LAMBDA_GRID = tuple(2.0 ** -k for k in range(7))


def _residual_dof(tasks: Tasks, s: int) -> int:
    """N - s(T + d - s): the residual degrees of freedom of a rank-s fit with free heads."""
    return tasks.n_samples - s * (tasks.n_tasks + tasks.n_features - s)


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
    if lipschitz == 0:
        raise ValueError("X is 0 in every task: the loss does not depend on Theta, so the "
                         "trace-norm solution is 0 and has no subspace")
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
    freedom). Where there are none (tasks with at most s samples, or fewer samples than the
    s(T + d - s) unknowns), the weight is searched as with ``lam="search"``, over multiples
    1, 1/2, ..., 1/64 of the default weight for the targets' root mean square as the noise
    level (an upper bound on it). The :math:`1/\sqrt T` in front of the trace norm makes this weight the right
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
    tasks, s = prepare(Xs, ys, s)
    max_iter = check_max_iter(max_iter)
    tol = check_tol(tol)
    seed = seed_from(random_state)
    if sigma is not None:
        sigma = check_positive(sigma, "sigma", allow_zero=True)
    history = {}
    if isinstance(lam, str):
        check_choice(lam, "lam", ("default", "search"))
        if sigma is None and _residual_dof(tasks, s) <= 0:
            # No residual degrees of freedom to estimate the noise from (m <= s, or below the
            # information limit): search below the largest noise level the targets allow.
            sigma = float(np.sqrt(np.mean(tasks.y**2)))
            lam, lam_grid = "search", SCARCE_LAMBDA_GRID
        elif sigma is None:
            sigma = noise_level(tasks, None, s, random_state=seed)
        base = default_lambda(tasks, sigma)
        if lam == "search":
            lam, history = _search_lambda(tasks, s, base, lam_grid, validation_fraction,
                                          max_iter=max_iter, tol=tol, seed=seed, n_jobs=n_jobs)
        else:
            lam = base
    else:
        lam = check_positive(lam, "lam", allow_zero=True)
    Theta, n_iter, status, fista_history = _fista(tasks, lam, max_iter=max_iter, tol=tol,
                                                  seed=seed, n_jobs=n_jobs)
    history = {**fista_history, "lambda": [lam], **history}
    if status == "max_iter" and tol > 0:
        warn_max_iter("nuclear_norm", max_iter,
                       f"relative change {fista_history['rel_change'][-1]:.2g}")
    if not np.any(Theta):
        raise ValueError(
            f"the trace-norm weight lam = {lam:.3g} is so large that the solution is 0 and has "
            "no subspace; pass a smaller lam or sigma, or lam='search'"
        )
    svd = kernels.truncated_svd(Theta, s, random_state=seed, n_jobs=n_jobs)
    return canonical_result(svd.W, svd.V.T, n_iter, status, history)


def _search_lambda(tasks, s, base, lam_grid, validation_fraction, *, max_iter, tol, seed,
                   n_jobs):
    grid = np.asarray(lam_grid, dtype=np.float64)
    if grid.ndim != 1 or grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid <= 0):
        raise ValueError(f"lam_grid must be a non-empty sequence of positive numbers; got {lam_grid!r}")
    fraction = check_positive(validation_fraction, "validation_fraction")
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
