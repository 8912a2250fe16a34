"""The random-heads estimate of the shared subspace: maximum marginal likelihood with the heads
integrated out, the default of :func:`metasp.fit`.

Model: theta_t = U z_t with z_t ~ N(0, I_s), so y_t ~ N(0, X_t U U^T X_t^T + noise I); a mean
of the heads is absorbed in U U^T (the second moment), which keeps the subspace. (A free mean
drifts without bound where tasks are few: the likelihood is flat along it.)
With fixed (least-squares) heads, the estimate of the subspace overfits the noise when tasks have
few samples more than s (the incidental-parameter problem); integrating the heads out shrinks
them towards their common prior, which is what helps exactly there. The marginal likelihood is
minimised over (U, log noise) by L-BFGS; each evaluation is two passes over X (Z = X U, then
X^T R) plus s x s work per task.

Where tasks have so few samples that the noise variance can collapse to zero (U then fits the
noise: the Heywood case of factor models), the noise variance is a regularisation strength
instead, chosen from a grid by the marginal likelihood of held-out tasks.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import kernels
from ._prior import least_squares_heads, residual_sums
from ._tasks import Tasks

# T (m - s) / (d s) below which the noise variance can collapse (the tasks' residual degrees of
# freedom barely outnumber the subspace's unknowns): the noise variance is then chosen by
# held-out tasks. On the d = 100, s = 5 grid of the scarce-data benchmark it is 0 (m = 5),
# 1 (T = 100) and 4-8 (T = 400-800, m = 10); maximum likelihood was as good from 16 up.
SCARCE_RATIO = 10.0
# Candidate noise variances, as shares of the mean squared target, from strong to weak
# shrinkage; the search stops once the held-out score has worsened twice in a row. It ends below
# NEGLIGIBLE_NOISE, so that noiseless data end in the least-squares polish.
NOISE_GRID = (0.8, 0.65, 0.5, 0.3, 0.18, 0.1, 0.05, 0.02, 0.007, 0.002, 6e-4, 2e-4, 6e-5)
HOLDOUT_FOLDS = 3
# The held-out fits compare candidates, which needs less accuracy than the final fit: L-BFGS
# stops when an iteration lowers the loss by less than this relative amount.
HOLDOUT_TOL = 1e-6
# Below this share of the mean squared target the fitted noise is negligible, the random-heads
# and least-squares estimates coincide, and the least-squares polish finishes the fit (it
# reaches exact recovery on noiseless data, where L-BFGS on log-noise only crawls).
NEGLIGIBLE_NOISE = 1e-4
# The start where the noise is free: the least-squares heads' second moment spans U's columns,
# each given at least this share of the largest one's variance (a zero column of U has zero
# gradient: L-BFGS would never turn it on), and the noise is their residual variance, at least
# START_NOISE_FLOOR (in shares of the mean squared target; noiseless data in an exact start
# subspace then stop after one iteration).
START_SPREAD_FLOOR = 1e-2
START_NOISE_FLOOR = 1e-6
# L-BFGS: stored pairs, Armijo constant, halvings before giving up on a direction.
MEMORY = 10
ARMIJO = 1e-4
MAX_HALVINGS = 40


class RandomHeadsFit(NamedTuple):
    U: np.ndarray  # (d, s) in the original units: theta_t = U z_t
    heads: np.ndarray  # (T, s) posterior means of z_t
    noise: float  # noise variance, original units
    noise_share: float  # ... over the mean squared target
    n_iter: int
    status: str  # "converged", "max_iter" or "stalled"
    loss: np.ndarray  # per iteration: mean over tasks of ||y_t - X_t U mu_t||^2 / m_t
    marginal_nll: np.ndarray  # per iteration: negative log marginal likelihood per sample,
    # without the constant log(2 pi) / 2
    rel_change: np.ndarray  # per iteration: ||U+ - U||_F / ||U+||_F
    noise_candidates: np.ndarray  # shares of the mean squared target tried (empty: free noise)
    holdout_score: np.ndarray  # their held-out negative log likelihood per sample

    def history(self, sin_angle=None) -> dict:
        """The result's ``history``: one array per recorded quantity (``sin_angle`` where a
        reference subspace was given)."""
        out = {"loss": self.loss, "rel_change": self.rel_change,
               "marginal_nll": self.marginal_nll,
               "phase": np.full(self.n_iter, "random_heads"),
               "noise_candidates": self.noise_candidates,
               "holdout_score": self.holdout_score}
        if sin_angle is not None:
            out["sin_angle"] = np.asarray(sin_angle)
        return out


class _MarginalLikelihood:
    """The negative log marginal likelihood per sample of one set of tasks and its gradient, in
    standardised units: U and noise act on ``X / x_scale`` and ``y / y_scale``, which keeps
    L-BFGS's first steps and the noise grid independent of the data's scale."""

    def __init__(self, tasks: Tasks, x_scale: float, y_scale: float, n_threads: int):
        self.tasks, self.n = tasks, tasks.n_samples
        self.to_data = y_scale / x_scale  # U in the data's units
        self.y_scale, self.n_threads = y_scale, n_threads

    def value(self, U, noise, with_gradient=True):
        """(f, dU, d log noise, posterior means, mean task loss) or f alone; f is +inf where
        the model is not defined (a line search then steps back). The mean over tasks of
        ||y_t - X_t U mu_t||^2 / m_t is in the data's units."""
        out = kernels.marginal_pass(self.tasks, U * self.to_data, noise * self.y_scale**2,
                                    n_jobs=self.n_threads)
        f = out.deviance / (2 * self.n) - np.log(self.y_scale)
        if not with_gradient:
            return f
        if not np.isfinite(f):
            return np.inf, None, None, None, None
        dU = out.gradient * (self.to_data / (2 * self.n))
        dlog_noise = 0.5 * (1 - out.expected / (noise * self.y_scale**2 * self.n))
        return f, dU, dlog_noise, out.heads, float(np.mean(out.task_loss))

    def posterior_heads(self, U, noise):
        """(T, s) posterior means of the heads at (U, noise), standardised units."""
        return self.value(U, noise)[3]

    def least_squares_moments(self, basis):
        """:func:`least_squares_moments` of the tasks in the span of ``basis`` (d, s), in the
        data's units."""
        # Through the module, as every pass of the fit, so that benchmarks can clock it.
        gram, cross, squares = kernels.task_statistics(self.tasks, basis.T,
                                                       n_jobs=self.n_threads)[:3]
        return least_squares_moments(gram, cross, squares, self.tasks.task_sizes)


def least_squares_moments(gram, cross, squares, sizes) -> np.ndarray:
    """Sums over the tasks with more samples than s of their least-squares heads w_t in a
    subspace, from the statistics of :func:`metasp.kernels.task_statistics`: the flat
    ``[sum w_t w_t^T (s * s entries), sum of squared residuals, sum of (m_t - s), count]``.
    Sums, so that shards of tasks add up."""
    s = cross.shape[1]
    chosen = np.asarray(sizes) > s
    gram, cross, squares = gram[chosen], cross[chosen], squares[chosen]
    heads = least_squares_heads(gram, cross)
    residual = np.maximum(residual_sums(heads, gram, cross, squares), 0.0)
    return np.concatenate([(heads.T @ heads).ravel(),
                           [residual.sum(), float(np.sum(np.asarray(sizes)[chosen] - s)),
                            float(chosen.sum())]])


def moment_start(moments, basis, scales):
    """(U, noise) in standardised units from :func:`least_squares_moments` in the span of the
    orthonormal ``basis`` (d, s): U U^T the heads' second moment, the noise their residual
    variance. None where no task has more samples than s or the moments are not finite."""
    s = basis.shape[1]
    second, residual, spare, count = (moments[: s * s].reshape(s, s), *moments[s * s:])
    if count < 1 or spare < 1 or not np.isfinite(moments).all():
        return None
    x_scale, y_scale = scales
    spread, axes = np.linalg.eigh(second / count * (x_scale / y_scale) ** 2)
    if not spread[-1] > 0:
        return None
    spread = np.maximum(spread, START_SPREAD_FLOOR * spread[-1])
    noise = max(residual / spare / y_scale**2, START_NOISE_FLOOR)
    return basis @ axes * np.sqrt(spread), noise


def _lbfgs(objective, x, max_iter, tol, record):
    """Minimise ``objective(x) -> (f, gradient)`` by L-BFGS with a backtracking (Armijo) line
    search; ``record(x, f)`` is called after every iteration and returns True to stop.
    Returns (x, iterations, status)."""
    f, g = objective(x)
    pairs = []
    for k in range(1, max_iter + 1):
        q = g.copy()
        alphas = []
        for s_, y_ in reversed(pairs):
            alpha = (s_ @ q) / (y_ @ s_)
            alphas.append(alpha)
            q -= alpha * y_
        if pairs:
            s_, y_ = pairs[-1]
            q *= (s_ @ y_) / (y_ @ y_)
        else:
            q *= min(1.0, 1e-2 / max(np.linalg.norm(g), np.finfo(float).tiny))
        for (s_, y_), alpha in zip(pairs, reversed(alphas)):
            q += (alpha - (y_ @ q) / (y_ @ s_)) * s_
        slope = -(g @ q)
        if not slope < 0:  # not a descent direction (rounding): restart from the gradient
            pairs.clear()
            q = g * min(1.0, 1e-2 / max(np.linalg.norm(g), np.finfo(float).tiny))
            slope = -(g @ q)
        step = 1.0
        for _ in range(MAX_HALVINGS):
            f_new, g_new = objective(x - step * q)
            if f_new <= f + ARMIJO * step * slope:
                break
            step *= 0.5
        else:
            return x, k - 1, "stalled"
        dx, dg = -step * q, g_new - g
        with np.errstate(over="ignore"):  # a huge trial difference is no curvature pair
            curvature = 1e-12 * np.linalg.norm(dx) * np.linalg.norm(dg)
        if dx @ dg > curvature:
            pairs.append((dx, dg))
            if len(pairs) > MEMORY:
                pairs.pop(0)
        x = x + dx
        decrease = f - f_new
        f, g = f_new, g_new
        if record(x, f) or decrease <= tol * max(abs(f), 1.0):
            return x, k, "converged"
    return x, max_iter, "max_iter"


def _maximise(likelihood, U, noise, max_iter, tol, on_iteration=None):
    """Maximum marginal likelihood from (U, noise); ``noise`` is fixed when given as a float,
    free (started from ``noise[0]``) when given as a one-element list. Returns (U, noise,
    iterations, status, history, heads): ``heads`` are the posterior means at the returned
    (U, noise) where the last evaluation was there and gave them, else None."""
    d, s = U.shape
    free = isinstance(noise, list)

    def unpack(x):
        return x[: d * s].reshape(d, s), (np.exp(x[-1]) if free else noise)

    last_loss = [np.nan]
    evaluated = [None, None]  # the last point evaluated, and its posterior heads

    def objective(x):
        # Outside exp's range: underflow on the way to a noiseless fit, or a trial step of the
        # line search too long; either way the search steps back.
        if free and not -745 < x[-1] < 709:
            return np.inf, None
        f, dU, dlog_noise, heads, mean_loss = likelihood.value(*unpack(x))
        if not np.isfinite(f):
            return np.inf, None
        evaluated[:] = x, heads
        last_loss[0] = mean_loss  # the line search ends on the accepted point
        return f, (np.append(dU.ravel(), dlog_noise) if free else dU.ravel())

    history = {"marginal_nll": [], "loss": [], "rel_change": []}
    previous = [U]

    def record(x, f):
        U_new = unpack(x)[0]
        history["marginal_nll"].append(f)
        history["loss"].append(last_loss[0])
        history["rel_change"].append(np.linalg.norm(U_new - previous[0]) /
                                     max(np.linalg.norm(U_new), np.finfo(float).tiny))
        previous[0] = U_new
        if free and np.exp(x[-1]) < NEGLIGIBLE_NOISE / 10:
            return True  # heads no longer shrink: the least-squares polish takes over
        return on_iteration is not None and on_iteration(U_new)

    x0 = np.append(U.ravel(), np.log(noise[0])) if free else U.ravel()
    x, n_iter, status = _lbfgs(objective, x0, max_iter, tol, record)
    U, noise = unpack(x)
    # An accepted step ends the line search, so its heads are at hand (not after a stall).
    heads = evaluated[1] if np.array_equal(evaluated[0], x) else None
    return U, float(noise), n_iter, status, history, heads


def _fold_indices(T: int, folds: int, rng) -> list:
    return np.array_split(rng.permutation(T), folds)


def scarce_ratio(tasks: Tasks, s: int) -> float:
    """T (m - s) / (d s): the tasks' residual degrees of freedom over the subspace's unknowns."""
    spare = np.maximum(tasks.task_sizes - s, 0).sum()
    return float(spare) / (tasks.n_features * s)


def spectral_start(tasks: Tasks, s: int, seed: int, n_threads: int) -> np.ndarray:
    """(s, d): the top-s row space of the stacked X_t^T y_t / m_t."""
    G = kernels.gradient(tasks, np.zeros((tasks.n_tasks, tasks.n_features)), n_jobs=n_threads).G
    return kernels.truncated_svd(G, s, random_state=seed, n_jobs=n_threads).V.T


def standardising_scales(tasks: Tasks) -> tuple[float, float]:
    """(x_scale, y_scale): the root mean squares of X and y (1 where 0), the units in which
    the marginal likelihood is maximised."""
    X = tasks.X
    x_scale = float(np.sqrt(np.einsum("ij,ij->", X, X, dtype=np.float64) / X.size)) or 1.0
    y_scale = float(np.sqrt(np.mean(tasks.y ** 2))) or 1.0
    return x_scale, y_scale


def fit_random_heads(tasks: Tasks, s: int, start_B: np.ndarray, *, max_iter: int, tol: float,
                     seed: int, n_threads: int, on_iteration=None) -> RandomHeadsFit:
    """The random-heads estimate from the subspace spanned by ``start_B`` (s, d).

    ``on_iteration(B)`` (rows spanning the current subspace, original units) is called after
    every iteration of the final fit and returns True to stop it.
    """
    x_scale, y_scale = standardising_scales(tasks)

    def fold_pairs(seed):
        pairs = []
        for held_out in _fold_indices(tasks.n_tasks, HOLDOUT_FOLDS, np.random.default_rng(seed)):
            keep = np.setdiff1d(np.arange(tasks.n_tasks), held_out)
            pairs.append((_MarginalLikelihood(tasks.subset(keep), x_scale, y_scale, n_threads),
                          _MarginalLikelihood(tasks.subset(held_out), x_scale, y_scale,
                                              n_threads)))
        return pairs

    scarce = scarce_ratio(tasks, s) < SCARCE_RATIO and tasks.n_tasks >= 2 * HOLDOUT_FOLDS
    return fit_marginal(_MarginalLikelihood(tasks, x_scale, y_scale, n_threads), fold_pairs, s,
                        start_B, scarce=scarce, scales=(x_scale, y_scale), max_iter=max_iter,
                        tol=tol, seed=seed, on_iteration=on_iteration)


def fold_of_tasks(n_tasks: int, seed: int) -> np.ndarray:
    """(T,) the held-out fold of every task, as :func:`fit_random_heads` draws them (for
    evaluators that hold the tasks in pieces)."""
    folds = np.empty(n_tasks, dtype=np.int64)
    for k, held_out in enumerate(_fold_indices(n_tasks, HOLDOUT_FOLDS,
                                               np.random.default_rng(seed))):
        folds[held_out] = k
    return folds


def fit_marginal(likelihood, fold_pairs, s: int, start_B: np.ndarray, *, scarce: bool,
                 scales: tuple, max_iter: int, tol: float, seed: int,
                 on_iteration=None) -> RandomHeadsFit:
    """:func:`fit_random_heads` on any evaluator of the marginal likelihood: the seam that lets
    the tasks live elsewhere (on a cluster: :mod:`metasp.dask`).

    ``likelihood`` has ``value(U, noise, with_gradient=True)``, ``posterior_heads(U, noise)``
    and ``least_squares_moments(basis)`` as :class:`_MarginalLikelihood` (``n``: its number of
    samples);
    ``fold_pairs(seed)`` returns the (training, held-out) likelihoods of the
    :data:`HOLDOUT_FOLDS` folds of tasks drawn from ``seed`` (called only where ``scarce``);
    ``scales`` are the (x_scale, y_scale) of :func:`standardising_scales`. ``heads`` of the
    result is what ``likelihood.posterior_heads`` returns.
    """
    x_scale, y_scale = scales
    basis = np.linalg.qr(np.asarray(start_B, dtype=np.float64).T)[0]
    U = basis * np.sqrt(0.5 / s)  # half the target's variance in the heads at the start
    candidates, scores = [], []
    noise = [0.5]  # free: maximum likelihood
    if scarce:
        noise, fold_fit = _choose_noise(fold_pairs(seed), likelihood.n, U, candidates, scores,
                                        max_iter, tol)
    else:
        # Least squares in the start subspace puts U's scale and the noise near their
        # optimum: about two thirds of the L-BFGS iterations from the fixed start above.
        start = moment_start(likelihood.least_squares_moments(basis), basis, scales)
        if start is not None:
            U, noise = start[0], [start[1]]
    if not isinstance(noise, list) and noise < NEGLIGIBLE_NOISE:
        # Noiseless, or nearly: the fit on two thirds of the tasks is a start from which the
        # least-squares polish converges in a few sweeps; L-BFGS would only crawl.
        U, n_iter, status, heads = fold_fit, 0, "converged", None
        history = {"loss": [], "marginal_nll": [], "rel_change": []}
    else:
        U, noise, n_iter, status, history, heads = _maximise(
            likelihood, U, noise, max_iter, tol,
            None if on_iteration is None else lambda U: on_iteration(U.T))
    if heads is None:
        heads = likelihood.posterior_heads(U, noise)
    to_units = y_scale / x_scale
    return RandomHeadsFit(
        U=U * to_units, heads=heads, noise=noise * y_scale**2, noise_share=noise,
        n_iter=n_iter, status=status, loss=np.asarray(history["loss"]),  # in data units
        marginal_nll=np.asarray(history["marginal_nll"]) + np.log(y_scale),
        rel_change=np.asarray(history["rel_change"]),
        noise_candidates=np.asarray(candidates), holdout_score=np.asarray(scores))


def _choose_noise(pairs, n_samples, U, candidates, scores, max_iter, tol):
    """The noise variance (a share of the mean squared target, in standardised units) whose
    fits on all but one fold of tasks (``pairs``: (training, held-out) likelihoods) give the
    held-out folds the highest marginal likelihood; appends what it tried to ``candidates``
    and ``scores``. Returns the noise and the chosen candidate's fit on the first fold's
    training tasks."""
    starts = [U] * len(pairs)
    first_fold_fits = []
    worse = 0
    for noise in NOISE_GRID:
        fitted, score = [], 0.0
        for (train, test), U0 in zip(pairs, starts):
            U1, *_ = _maximise(train, U0, noise, max_iter, max(tol, HOLDOUT_TOL))
            fitted.append(U1)
            score += test.value(U1, noise, with_gradient=False) * test.n
        score /= n_samples
        candidates.append(noise)
        scores.append(score)
        first_fold_fits.append(fitted[0])
        starts = fitted
        worse = worse + 1 if score > min(scores) else 0
        if worse == 2:
            break
    best = int(np.argmin(scores))
    return candidates[best], first_fold_fits[best]
