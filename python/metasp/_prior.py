"""The Gaussian prior on task heads behind ``adapt(prior="empirical")``: maximum marginal
likelihood by EM accelerated by SQUAREM, in a fixed subspace."""

from __future__ import annotations

import numpy as np

from . import _core
from ._scaling import rescaled
from .kernels import task_statistics


def head_prior_in_data_units(tasks, B, max_iter=100, tol=1e-5):
    """(mean, cov, noise variance) of the head prior of ``tasks`` in the row space of ``B``,
    in the data's units; see :meth:`metasp.MetaSPResult.fit_prior`.

    Raises FloatingPointError where the prior is beyond the float64 range in those units.
    """
    # On data of extreme scale the statistics are taken where they cannot under- or
    # overflow, and the prior scaled back (heads scale as y / X).
    scaled, scale = rescaled(tasks)
    mean, cov, noise = fit_head_prior(
        task_sufficient_statistics(scaled, B), tasks.n_samples, max_iter, tol)
    heads = scale.y - scale.x
    with np.errstate(over="ignore", under="ignore"):
        mean, cov = np.ldexp(mean, heads), np.ldexp(cov, 2 * heads)
        noise = float(np.ldexp(noise, 2 * scale.y))
    tiny = np.finfo(float).tiny
    if not (np.isfinite(cov).all() and np.diag(cov).min() >= tiny and tiny <= noise < np.inf):
        raise FloatingPointError(
            f"the head prior of these tasks is beyond the float64 range in the data's units "
            f"(noise variance about 2^{2 * scale.y} times its value on data scaled to 1): "
            f"scale y (or X) by a power of ten towards 1, or adapt with prior='ridge'")
    return mean, cov, noise


# The smallest jitter of least_squares_heads: all-zero statistics give zero heads, not an error.
TINY = np.finfo(float).tiny


def task_sufficient_statistics(tasks, B, n_jobs=None):
    """Per-task Z_t^T Z_t, Z_t^T y_t and y_t^T y_t for Z_t = X_t B^T (one compiled pass)."""
    return task_statistics(tasks, B, n_jobs=n_jobs)[:3]


def least_squares_heads(gram, cross, floor=TINY):
    """(T, s) per-task least-squares heads from the statistics in a subspace
    (:func:`task_sufficient_statistics`): ``(gram_t + jitter I)^-1 cross_t`` with a jitter of
    1e-10 times the Gram matrix's mean eigenvalue plus ``floor``, so that a task with fewer
    samples than s (or none that vary) gets about the minimum-norm solution, never an error."""
    s = cross.shape[1]
    jitter = 1e-10 * np.trace(gram, axis1=1, axis2=2)[:, None, None] / s + floor
    return np.linalg.solve(gram + jitter * np.eye(s), cross[..., None])[..., 0]


def residual_sums(heads, gram, cross, squares):
    """||y_t - Z_t w_t||^2 per task from the sufficient statistics."""
    return (squares - 2 * np.einsum("ts,ts->t", heads, cross)
            + np.einsum("ts,tsr,tr->t", heads, gram, heads))


def posterior_heads(result, tasks) -> np.ndarray:
    """Posterior-mean heads (T, s) of ``tasks`` under ``result``'s head prior: adapt, per task.

    Computed on the tasks rescaled as a fit rescales them (so that data of extreme scale do not
    under- or overflow); least-squares heads (minimum norm) where the result has no head prior,
    as where float64 cannot hold one in the data's units.
    """
    scaled, scale = rescaled(tasks)
    heads = scale.y - scale.x  # the heads scale as y / X
    gram, cross, _ = task_sufficient_statistics(scaled, result.B)
    if result.head_cov is None or result.head_mean is None or result.noise_variance is None:
        solution = np.einsum("tij,tj->ti", np.linalg.pinv(gram, hermitian=True), cross)
    else:
        noise = np.ldexp(result.noise_variance, -2 * scale.y)
        precision = noise * np.linalg.inv(np.ldexp(result.head_cov, -2 * heads))
        rhs = cross + precision @ np.ldexp(result.head_mean, -heads)
        solution = np.linalg.solve(gram + precision, rhs[..., None])[..., 0]
    return np.ldexp(solution, heads)


def compiled_em_step(params, statistics, n, floor, n_threads=1):
    """One EM step from ``params = (mean, cov, noise)``; returns (new params, log-likelihood of
    ``params``), the log marginal likelihood up to its constant. Compiled; its NumPy twin is
    :func:`metasp.reference.head_prior_em_step`."""
    gram, cross, squares = statistics[:3]
    mean, cov, noise = params
    *new, log_likelihood = _core.head_prior_em_step(gram, cross, squares, mean, cov, noise,
                                                    float(n), floor, n_threads)
    return tuple(new), log_likelihood


def _pack(params):
    mean, cov, noise = params
    return np.concatenate([mean, cov.ravel(), [noise]])


def _unpack(vector, s):
    cov = vector[s:s + s * s].reshape(s, s)
    return vector[:s], (cov + cov.T) / 2, float(vector[-1])


def _valid(params, floor):
    _, cov, noise = params
    return noise >= floor and np.linalg.eigvalsh(cov)[0] >= floor


# Floor of the head prior's variances, in units of the targets' mean square (and of the heads'
# in the subspace): a perfect fit (zero residuals, all-zero targets) is valid data, and its
# noise variance is this floor rather than 0, which keeps the prior's variances invertible.
VARIANCE_FLOOR = 1e-12


def fit_head_prior(statistics, n, max_iter=100, tol=1e-5, *, n_threads=1, em_step=None):
    """Maximum marginal likelihood (mean, cov, noise variance) of the Gaussian random-effects
    model of the heads in a subspace, from the tasks' statistics in it
    (:func:`task_sufficient_statistics`) and their total number of samples ``n``: EM
    accelerated by SQUAREM (Varadhan and Roland, 2008), started from per-task least squares.
    ``em_step(params, statistics, n, floor)`` replaces the compiled EM step (the reference
    passes its NumPy twin). The noise variance is at least VARIANCE_FLOOR times the targets'
    mean square (VARIANCE_FLOOR where every target is 0)."""
    gram, cross, squares = statistics[:3]
    s = cross.shape[1]
    # EM runs in units where the targets and the features in the subspace have mean square 1:
    # its floor and SQUAREM's steps then mean the same at any scale of the data, and no
    # variance (nor its inverse) leaves the float64 range.
    y_unit = float(np.sqrt(np.sum(squares) / n)) or 1.0
    x_unit = float(np.sqrt(np.trace(gram, axis1=1, axis2=2).sum() / (n * s))) or 1.0
    mean, cov, noise = _fit_scaled_head_prior(
        (gram / x_unit**2, cross / (x_unit * y_unit), squares / y_unit**2), n, max_iter, tol,
        n_threads, em_step)
    to_heads = y_unit / x_unit
    return mean * to_heads, cov * to_heads**2, noise * y_unit**2


def _fit_scaled_head_prior(statistics, n, max_iter, tol, n_threads, em_step):
    """fit_head_prior in units where the targets' mean square is 1 (or 0)."""
    gram, cross, squares = statistics
    T, s = cross.shape
    scale, floor = 1.0, VARIANCE_FLOOR  # the targets' mean square, and the variances' floor
    eye = np.eye(s)
    # Start: per-task least squares (minimum norm when a task has fewer than s samples).
    heads = least_squares_heads(gram, cross, floor)
    noise = max(float(residual_sums(heads, gram, cross, squares).sum()) / n, floor)
    cov = (np.atleast_2d(np.cov(heads.T, bias=True)) if T > 1 else scale * eye) + floor * eye
    params = (heads.mean(axis=0), cov, noise)

    def step(params):
        if em_step is not None:
            return em_step(params, statistics, n, floor)
        return compiled_em_step(params, statistics, n, floor, n_threads)

    return squarem(params, step, max_iter, tol)


def squarem(params, step, max_iter, tol):
    """EM accelerated by SQUAREM from ``params = (mean, cov, noise)``; ``step(params)`` is one
    EM step returning (new params, log-likelihood of ``params``) (the seam that lets the EM's
    sums be taken where the tasks live: :mod:`metasp.dask`)."""
    s, floor = params[0].shape[0], VARIANCE_FLOOR
    for _ in range(max(1, max_iter // 3)):
        first, _ = step(params)
        second, first_likelihood = step(first)
        x0, x1, x2 = _pack(params), _pack(first), _pack(second)
        r, v = x1 - x0, x2 - 2 * x1 + x0
        candidate = second
        if np.linalg.norm(v) > 0:
            alpha = -max(1.0, np.linalg.norm(r) / np.linalg.norm(v))
            extrapolated = _unpack(x0 - 2 * alpha * r + alpha**2 * v, s)
            if _valid(extrapolated, floor):
                stabilised, extrapolated_likelihood = step(extrapolated)
                if extrapolated_likelihood >= first_likelihood:  # else plain EM: monotone
                    candidate = stabilised
        change = np.linalg.norm(_pack(candidate) - x0) / max(np.linalg.norm(_pack(candidate)),
                                                             floor)
        params = candidate
        if change < tol:
            break
    return params
