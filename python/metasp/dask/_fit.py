"""metasp.dask.fit: metasp.fit on a Dask cluster, with the tasks held by the workers.

Random heads (the default): the driver runs the same L-BFGS
(:func:`metasp._random_heads.fit_marginal`) and holds only d x s matrices and scalars; every
evaluation sends (U, noise) to the shards and gets back their sums of
:func:`metasp.kernels.marginal_pass` (a deviance, a d x s gradient, two scalars). Fixed heads
and the least-squares polish: the same solver as :func:`metasp.reference.fit`
(:mod:`metasp._hard_thresholding`, :mod:`metasp._polish`) on a problem whose row blocks stay
on the workers (:class:`metasp.dask._problem.ShardedProblem`).
"""

from __future__ import annotations

import sys
import time
import uuid

import numpy as np

from .. import kernels, metrics
from .._diagnostics import diagnose, spike_over_edge
from .._hard_thresholding import best_start
from .._polish import joined_history, polish_sweeps
from .._postprocess import heads_shrunk, unscaled
from .._prior import VARIANCE_FLOOR, squarem
from .._random_heads import (
    HOLDOUT_FOLDS,
    NEGLIGIBLE_NOISE,
    SCARCE_RATIO,
    fit_marginal,
)
from .._result import (
    MetaSPResult,
    checked,
    make_result,
    warn_about_diagnostics,
    warn_about_status,
)
from .._scaling import SAFE_EXPONENT, SQUARE_EXPONENT, TASK_EXPONENT, Scale
from .._validation import FitArguments, check_fit_options, rescaled_step
from . import _shards
from ._problem import ShardedProblem
from ._tasks import Tasks, gather, no_answer

# Seconds between checks that the workers a gather waits on are still alive.
BOUND_POLL = 2.0


class DaskResult(MetaSPResult):
    """A :class:`metasp.MetaSPResult` whose per-task heads stay on the cluster.

    ``B``, ``singular_values``, ``n_iter``, ``status``, ``history``, ``diagnostics``, the head
    prior and :meth:`adapt` / :meth:`predict` are as from :func:`metasp.fit`; ``W`` and
    ``Theta`` hold no rows (T-sized, they live on the workers: :meth:`heads`), so
    :meth:`save` writes the model without heads.
    """

    _heads = None  # (futures of heads and of labels per shard, exponent to the data, client)

    def heads(self):
        """The per-task heads ``W`` (T, s) as a dask DataFrame indexed by the group label.

        Returns
        -------
        dask.dataframe.DataFrame
            Columns ``w0 .. w{s-1}``; task t's coefficients are ``W[t] @ B``.
        """
        import dask
        import dask.dataframe as dd
        import pandas as pd

        futures, labels, exponent, client = self._heads
        columns = [f"w{j}" for j in range(self.B.shape[0])]

        def frame(heads, labels):
            W = np.ldexp(heads, exponent)
            return pd.DataFrame(W, index=pd.Index(labels, name="group"), columns=columns)

        parts = [dask.delayed(frame)(f, lab) for f, lab in zip(futures, labels)]
        return dd.from_delayed(parts, meta=pd.DataFrame(
            {c: np.zeros(0) for c in columns}, index=pd.Index([], name="group")),
            verify_meta=False)


class Cluster:
    """Submits one kernel per shard, on the worker holding the shard, with readable keys, and
    gathers with a timeout.

    Dask's work stealing would otherwise move a shard (all its rows of X) to an idle worker
    to run a 0.1 s kernel there; so every kernel whose result is gathered is bound to the
    worker holding its shard, and one whose worker is lost before it ran is submitted again
    unbound (Dask recomputes the shard wherever there is room). Kernels whose results stay on
    the cluster prefer the shard's worker without being bound to it.
    """

    def __init__(self, client, timeout):
        self.client, self.timeout = client, timeout

    def submit_each(self, name, func, shards, *args, others=None, bound=False):
        futures, _ = self._submit(name, func, shards, args, others, bound)
        return futures

    def each(self, name, func, shards, *args, others=None):
        """``func(shard, *extra, *args)`` of every shard, in shard order."""
        others = others or [()] * len(shards)
        futures, workers = self._submit(name, func, shards, args, others, bound=True)
        deadline = time.monotonic() + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                return gather(self.client, futures, timeout=min(BOUND_POLL, max(remaining, 0)))
            except TimeoutError:
                if remaining <= BOUND_POLL:
                    raise no_answer(self.timeout) from None
            alive = set(self.client.nthreads())
            lost = [i for i, f in enumerate(futures)
                    if workers[i] and not f.done() and not alive & workers[i]]
            if lost:
                retried, _ = self._submit(f"{name}-retry", func, [shards[i] for i in lost], args,
                                          [others[i] for i in lost], bound=False)
                for i, future in zip(lost, retried):
                    futures[i], workers[i] = future, set()

    def _submit(self, name, func, shards, args, others, bound):
        """Futures of ``func`` per shard, and the workers each one is bound to (none: free)."""
        from ._tasks import check_connected

        check_connected(self.client)
        tag = uuid.uuid4().hex[:8]
        others = others or [()] * len(shards)
        holders = self.client.who_has(shards)
        futures, workers = [], []
        for i, (shard, extra) in enumerate(zip(shards, others)):
            where = list(holders.get(shard.key, ()))
            futures.append(self.client.submit(
                func, shard, *extra, *args, key=f"metasp-{name}-{i}-{tag}",
                workers=where or None, allow_other_workers=bool(where) and not bound))
            workers.append(set(where) if bound else set())
        return futures, workers


class _ShardedLikelihood:
    """:class:`metasp._random_heads._MarginalLikelihood` over shards on the cluster."""

    def __init__(self, cluster, shards, n, x_scale, y_scale, n_threads):
        self.cluster, self.shards, self.n = cluster, shards, n
        self.to_data = y_scale / x_scale
        self.y_scale, self.n_threads = y_scale, n_threads
        self.n_tasks = None  # set by the caller: the tasks these shards hold

    def value(self, U, noise, with_gradient=True):
        U_data = np.asfortranarray(U * self.to_data)
        parts = self.cluster.each("marginal", _shards.marginal_sums, self.shards, U_data,
                                  noise * self.y_scale**2, self.n_threads)
        deviance = sum(p[0] for p in parts)
        f = deviance / (2 * self.n) - np.log(self.y_scale)
        if not with_gradient:
            return f
        if not np.isfinite(f):
            return np.inf, None, None, None, None
        gradient = sum(p[1] for p in parts)
        expected = sum(p[2] for p in parts)
        mean_loss = sum(p[3] for p in parts) / self.n_tasks
        dU = gradient * (self.to_data / (2 * self.n))
        dlog_noise = 0.5 * (1 - expected / (noise * self.y_scale**2 * self.n))
        return f, dU, dlog_noise, None, mean_loss

    def least_squares_moments(self, basis):
        return sum(self.cluster.each("moments", _shards.least_squares_moments, self.shards,
                                     np.ascontiguousarray(basis.T), self.n_threads))

    def posterior_heads(self, U, noise):
        """Futures of each shard's (T_p, s) posterior means: they stay on the workers."""
        return self.cluster.submit_each(
            "heads", _shards.posterior_heads, self.shards,
            np.asfortranarray(U * self.to_data), noise * self.y_scale**2, self.n_threads)


def fit(tasks, s=None, *, heads="auto", step="auto", accel="cg", polish="auto", init="zero",
        n_starts=1, max_iter=1000, tol=1e-10, sin_tol=None, n_jobs=None, random_state=None,
        reference_B=None, on_iteration=None, progress=False, timeout=300.0,
        client=None) -> DaskResult:
    """:func:`metasp.fit` on tasks held by a Dask cluster.

    The same options, defaults and result as :func:`metasp.fit`, with every pass over the tasks
    run on the shards and reduced to at most (d s) x (d s) numbers. Random heads (the
    default): the same power-of-two rescaling, spectral start (the top eigenvectors of the
    d x d Gram matrix of the rows X_t^T y_t / m_t, summed over the shards), the same choice of
    the noise by held-out folds of tasks where data are scarce, the same L-BFGS, head prior and
    diagnostics, and where the fitted noise is negligible the same least-squares polish.
    Fixed heads (``heads="fixed"``, or a fixed-heads option changed): hard thresholding
    with the truncated SVD from the d x d Gram matrix of the iterate's rows (exact, where
    :func:`metasp.fit` iterates to a tolerance), then the polish, whose Newton step is solved
    matrix-free as in :func:`metasp.fit`; the iterate, its gradient and directions stay on the
    workers.

    Parameters
    ----------
    tasks : metasp.dask.Tasks
    s : int
        Rank of the shared subspace, ``1 <= s <= min(T, d)``.
    heads, step, accel, polish, init, n_starts, max_iter, tol, sin_tol, random_state, reference_B
        As in :func:`metasp.fit`. The polish (of fixed heads, or of random heads with
        negligible noise) needs ``d * s <= 2000`` here (:data:`metasp.kernels.MAX_DENSE_BASIS`):
        beyond, NotImplementedError says to use :func:`metasp.fit` on ``tasks.to_local()``.
    n_jobs : int or None
        Threads of each shard's kernel call (default 1: a worker's threads run shards side by
        side). Results do not depend on it.
    on_iteration : callable, optional
        Random heads only: ``on_iteration(B)`` after every iteration of the final fit with the
        current (s, d) subspace; returning True stops the fit.
    progress : bool, default False
        A progress bar on the driver (tqdm where installed): one step per iteration of the
        final fit with random heads, per pass over the data with fixed heads.
    timeout : float, default 300
        Seconds to wait for any one evaluation; a cluster that does not answer (a lost
        scheduler or client connection) raises instead of hanging.
    client : distributed.Client, optional
        Default: the client ``tasks`` were built with.

    Returns
    -------
    DaskResult
        As :class:`metasp.MetaSPResult`, with the heads on the cluster (:meth:`~DaskResult.heads`).
    """
    if not isinstance(tasks, Tasks):
        raise TypeError(f"tasks must be a metasp.dask.Tasks (md.Tasks.from_frame or "
                        f"from_arrays); got {type(tasks).__name__}")
    args = _fit_arguments(tasks, s, heads, step, accel, polish, init, n_starts, max_iter, tol,
                          sin_tol, n_jobs, random_state, reference_B)
    if args.heads == "fixed" and on_iteration is not None:
        raise ValueError("on_iteration is called by the random-heads fit only; leave it out "
                         "with heads='fixed'")
    cluster = Cluster(client or tasks.client, timeout)
    scale = data_scale(tasks)
    shards = tasks.shards
    if not scale.identity:
        shards = cluster.submit_each("rescale", _shards.rescaled, shards, scale.x, scale.y)
    bar = _progress_bar(args) if progress else None
    try:
        if args.heads == "fixed":
            result = _fit_fixed_heads(cluster, shards, tasks, args, scale, bar)
        else:
            result = _fit_random_heads(cluster, shards, tasks, args, scale, on_iteration, bar)
    finally:
        if bar is not None:
            bar.close()
    return _postprocess(result, cluster, shards, tasks, args, scale)


def _fit_arguments(tasks, s, heads, step, accel, polish, init, n_starts, max_iter, tol, sin_tol,
                   n_jobs, random_state, reference_B) -> FitArguments:
    """metasp.fit's checks (:func:`metasp._validation.check_fit_options`), on a cluster's
    tasks; ``tasks`` of the result is None (they stay on the cluster)."""
    args = check_fit_options(tasks, s, step, init, max_iter, tol, n_jobs,
                             lambda n: 1 if n is None else int(n), random_state, reference_B,
                             accel, polish, n_starts, sin_tol, heads)._replace(tasks=None)
    d = tasks.n_features
    if args.heads == "fixed" and args.polish and d * args.s > kernels.MAX_DENSE_BASIS:
        raise NotImplementedError(_dense_polish_only(d, args.s))
    return args


def _dense_polish_only(d, s) -> str:
    return (f"metasp.dask's polish falls back to dense basis systems, so it runs up to "
            f"d * s = {kernels.MAX_DENSE_BASIS} (here {d * s}); metasp.fit polishes larger "
            f"ones by conjugate gradients: use metasp.fit(tasks.to_local(), s) where the data "
            f"fit in memory")


def _fit_fixed_heads(cluster, shards, tasks, args, scale, bar) -> DaskResult:
    """The fixed-heads solver (:func:`metasp._hard_thresholding.best_start`) on the shards."""
    work = args._replace(step=rescaled_step(args, scale))
    problem = ShardedProblem(cluster, shards, tasks, args.n_threads)
    problem.on_pass = None if bar is None else (lambda: bar.update(1))
    run = best_start(work, problem)
    heads, s, d = run.W, args.s, tasks.n_features
    run.W, run.Theta = np.zeros((0, s)), np.zeros((0, d))
    return _keep_heads(make_result(run, work, DaskResult), cluster, tasks, heads, scale)


def _fit_random_heads(cluster, shards, tasks, args, scale, on_iteration, bar) -> DaskResult:
    """metasp.fit's random-heads fit (:func:`metasp._random_heads.fit_marginal`) on the
    shards, finished by the polish where the fitted noise is negligible."""
    s, d, n_threads, reference = args.s, tasks.n_features, args.n_threads, args.reference_B
    sums = np.sum(cluster.each("squares", _shards.square_sums, shards, s), axis=0)
    x_scale = float(np.sqrt(sums[0] / sums[1])) or 1.0
    y_scale = float(np.sqrt(sums[2] / sums[3])) or 1.0
    scarce = sums[4] / (d * s) < SCARCE_RATIO and tasks.n_tasks >= 2 * HOLDOUT_FOLDS
    if args.init == "given":
        start = args.init_B
    else:
        gram = sum(cluster.each("start", _shards.start_gram, shards, d, n_threads))
        start = np.linalg.eigh(gram)[1][:, ::-1][:, :s].T

    def likelihood_of(parts, n, n_tasks):
        out = _ShardedLikelihood(cluster, parts, n, x_scale, y_scale, n_threads)
        out.n_tasks = n_tasks
        return out

    def fold_pairs(seed):
        pairs = []
        first = tasks.first_task
        for k in range(HOLDOUT_FOLDS):
            pair = []
            for held_out in (False, True):
                parts = cluster.submit_each(
                    f"fold{k}{'test' if held_out else 'train'}", _shards.fold, shards,
                    tasks.n_tasks, seed, k, held_out, others=[(f,) for f in first])
                counts = np.sum(cluster.each("count", _shards.square_sums, parts, s), axis=0)
                pair.append(likelihood_of(parts, int(counts[3]), int(counts[5])))
            pairs.append(tuple(pair))
        return pairs

    sin, reached = [], []

    def record(B):
        if reference is not None:
            sin.append(metrics.sin_angle(np.linalg.qr(B.T)[0].T, reference))
            if args.sin_tol > 0 and sin[-1] <= args.sin_tol:
                reached.append(True)
        if bar is not None:
            bar.update(1)
        stop = on_iteration is not None and bool(on_iteration(B))
        return bool(reached) or stop

    fitted = fit_marginal(likelihood_of(shards, tasks.n_samples, tasks.n_tasks), fold_pairs,
                          s, start, scarce=scarce, scales=(x_scale, y_scale),
                          max_iter=args.max_iter, tol=args.tol, seed=args.seed,
                          on_iteration=record)
    history = fitted.history(sin if reference is not None else None)
    if not (fitted.noise_share < NEGLIGIBLE_NOISE and not reached):
        return _canonical(cluster, shards, fitted, tasks, history, scale)
    # As metasp.fit: noise this small shrinks no head, and the least-squares polish finishes
    # the fit (exactly, on noiseless data) where L-BFGS crawls.
    if d * s > kernels.MAX_DENSE_BASIS:
        raise NotImplementedError(
            f"the fitted noise is negligible ({fitted.noise_share:.2g} of the mean squared "
            f"target), and metasp.fit finishes such fits with the least-squares polish; "
            + _dense_polish_only(d, s))
    polished = polish_sweeps(ShardedProblem(cluster, shards, tasks, n_threads), fitted.U,
                             max_iter=args.max_iter, tol=args.tol, sin_tol=args.sin_tol,
                             reference_B=reference)
    history = joined_history(history, polished, reference is not None)
    return _polished(cluster, polished, tasks, fitted.n_iter, history, scale)


class _PlainBar:
    def __init__(self):
        self.n = 0

    def update(self, k):
        self.n += k
        print(f"\rmetasp.dask.fit: iteration {self.n}", end="", file=sys.stderr)

    def close(self):
        print(file=sys.stderr)


def _progress_bar(args):
    """tqdm's bar where tqdm is installed, else a counter on stderr: over the iterations of
    random heads, over the passes over the data of fixed heads (their count is not known)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _PlainBar()
    if args.heads == "fixed":
        return tqdm(desc="metasp.dask.fit", unit="pass", file=sys.stderr)
    return tqdm(total=args.max_iter, desc="metasp.dask.fit", unit="it", file=sys.stderr)


def data_scale(tasks: Tasks) -> Scale:
    """:func:`metasp._scaling.data_scale` from the shards' summaries."""
    x_largest = max(s.x_task_max_largest for s in tasks.summaries)
    smallest = min(s.x_task_max_smallest for s in tasks.summaries)
    if smallest < np.ldexp(x_largest, -TASK_EXPONENT):
        raise ValueError(
            f"some tasks have X entries at most {smallest:.3g}, below 2^-{TASK_EXPONENT} times "
            f"the largest entry ({x_largest:.3g}): on one float64 scale the products of their "
            f"rows underflow while the others' do not. Rescale each task, or leave those out.")
    y_largest = max(s.y_largest for s in tasks.summaries)
    if y_largest >= 2.0**SQUARE_EXPONENT:
        raise ValueError(f"the largest |y| is {y_largest:.3g}: its square is beyond the float64 "
                         f"range; divide y by a power of ten first")
    return Scale(_power_of_two(x_largest), _power_of_two(y_largest))


def _power_of_two(largest: float) -> int:
    """As metasp._scaling: 0 inside the safe range (or for 0), else the power of two."""
    if largest == 0 or 2.0**-SAFE_EXPONENT <= largest <= 2.0**SAFE_EXPONENT:
        return 0
    return int(np.frexp(largest)[1])


def _canonical(cluster, shards, fitted, tasks, history, scale) -> DaskResult:
    """Orthonormal B, the singular values of Theta = heads U^T and the heads in that form,
    from the s x s Gram matrix of the heads (as metasp.fit's SVD of the T x s heads, without
    moving them)."""
    heads, V, singular_values = ShardedProblem(cluster, shards, tasks, 1).canonical(
        fitted.heads, fitted.U)
    s, d = V.shape[1], V.shape[0]
    result = DaskResult(B=np.ascontiguousarray(V.T), W=np.zeros((0, s)),
                        Theta=np.zeros((0, d)), singular_values=singular_values,
                        n_iter=fitted.n_iter, status=fitted.status, history=history)
    return _keep_heads(result, cluster, tasks, heads, scale)


def _polished(cluster, polished, tasks, n_iter, history, scale) -> DaskResult:
    """The result of a fit finished by the polish, whose heads are canonical already."""
    B = polished["B"]
    s, d = B.shape
    result = DaskResult(B=B, W=np.zeros((0, s)), Theta=np.zeros((0, d)),
                        singular_values=polished["singular_values"],
                        n_iter=n_iter + polished["n_iter"], status=polished["status"],
                        history=history)
    return _keep_heads(result, cluster, tasks, polished["heads"], scale)


def _keep_heads(result, cluster, tasks, heads, scale) -> DaskResult:
    """``result`` with the futures of its heads (canonical, in the rescaled data's units) and
    of the shards' group labels: T-sized, they stay on the workers, for
    :meth:`DaskResult.heads`."""
    labels = cluster.submit_each("labels", _labels, tasks.shards)
    result._heads = (heads, labels, scale.y - scale.x, cluster.client)
    return result


def _labels(shard):
    return shard.labels


class _Summary:
    """The sizes of the tasks the diagnostics read (their data stay on the cluster)."""

    def __init__(self, tasks, mean_square_y):
        self.n_tasks, self.n_features = tasks.n_tasks, tasks.n_features
        self.n_samples = tasks.n_samples
        self.y = np.array([np.sqrt(mean_square_y)])  # checks_rank reads mean(y^2) only


def _postprocess(result, cluster, shards, tasks, args, scale) -> DaskResult:
    """metasp._postprocess.postprocess with every per-task pass on the shards."""
    s, n_threads = args.s, args.n_threads
    n, T = tasks.n_samples, tasks.n_tasks
    stats = None
    if result.status != "diverged":
        stats = cluster.submit_each("statistics", _shards.statistics, shards, result.B,
                                    n_threads)
        units = np.sum(cluster.each("units", _shards.unit_sums, stats), axis=0)
        y_unit = float(np.sqrt(units[0] / n)) or 1.0
        x_unit = float(np.sqrt(units[1] / (n * s))) or 1.0
        result.head_mean, result.head_cov, result.noise_variance = _head_prior(
            cluster, stats, n, T, s, x_unit, y_unit)
        mean_square_y = units[0] / n
    else:
        mean_square_y = np.sum(cluster.each("squares", _shards.square_sums, shards, s),
                               axis=0)[2] / n
    # Random heads are shrunk on purpose: the rank check reads the residual correlations at
    # least-squares heads instead (as metasp.fit does).
    heads = [None] * len(shards) if heads_shrunk(result) else result._heads[0]

    def spike():
        parts = cluster.each("rank", _shards.rank_gram, shards, result.B, n_threads,
                             others=list(zip(stats, heads)))
        gram = sum(p[0] for p in parts)
        total = sum(p[1] for p in parts)
        return spike_over_edge(np.linalg.eigvalsh(gram)[-1], total, T, tasks.n_features, s)

    def variance_ratio():
        variances = np.concatenate(cluster.each(
            "variances", _shards.predictive_variances, shards, result.head_cov,
            others=[(st,) for st in stats]))
        typical = np.median(variances)
        return float(variances.max() / typical) if typical > 0 else 0.0

    summary = _Summary(tasks, mean_square_y)
    result.diagnostics = diagnose(result, args._replace(tasks=summary), None, spike=spike,
                                  variance_ratio=None if stats is None else variance_ratio)
    result = checked(unscaled(result, scale))
    warn_about_status(result, args.adaptive, args.step, args.tol)
    warn_about_diagnostics(result)
    return result


def _head_prior(cluster, stats, n, T, s, x_unit, y_unit):
    """metasp._prior.fit_head_prior with its sums taken on the shards."""
    floor = VARIANCE_FLOOR
    parts = cluster.each("prior-start", _shards.prior_start_sums, stats, floor, x_unit, y_unit)
    sum_heads = sum(p[1] for p in parts)
    sum_outer = sum(p[2] for p in parts)
    mean = sum_heads / T
    cov = ((sum_outer / T - np.outer(mean, mean)) if T > 1 else np.eye(s)) + floor * np.eye(s)
    noise = max(sum(p[3] for p in parts) / n, floor)

    def step(params):
        mean, cov, noise = params
        parts = cluster.each("prior-em", _shards.em_sums, stats, params, x_unit, y_unit)
        sum_mean, sum_outer, sum_cov = (sum(p[i] for p in parts) for i in range(3))
        sum_residual, log_det, quadratic = (sum(p[i] for p in parts) for i in range(3, 6))
        shift = np.linalg.solve(cov, mean)
        log_likelihood = -0.5 * (quadratic + T * float(mean @ shift) + n * np.log(noise)
                                 + T * float(np.linalg.slogdet(cov)[1]) + log_det)
        new_mean = sum_mean / T
        new_cov = (sum_outer + sum_cov) / T - np.outer(new_mean, new_mean)
        new_cov = (new_cov + new_cov.T) / 2 + floor * np.eye(s)
        return (new_mean, new_cov, max(sum_residual / n, floor)), log_likelihood

    mean, cov, noise = squarem((mean, np.atleast_2d(cov), noise), step, 100, 1e-5)
    to_heads = y_unit / x_unit
    return mean * to_heads, cov * to_heads**2, noise * y_unit**2


def marginal_pass(tasks, U, noise, *, n_jobs=None, timeout=300.0, client=None):
    """One evaluation of :func:`metasp.kernels.marginal_pass` over all shards, reduced: what
    every L-BFGS step of :func:`fit` costs (the heads stay on the workers).

    Parameters
    ----------
    tasks : metasp.dask.Tasks
    U : array_like of shape (d, s)
    noise : float
        Noise variance, positive.
    n_jobs, timeout, client
        As in :func:`fit`.

    Returns
    -------
    dict
        ``deviance`` (float), ``gradient`` ((d, s) ndarray), ``expected`` (float) summed over
        all tasks as in :class:`metasp.kernels.MarginalPass`, and ``mean_task_loss``.
    """
    if not isinstance(tasks, Tasks):
        raise TypeError(f"tasks must be a metasp.dask.Tasks; got {type(tasks).__name__}")
    U = np.asfortranarray(np.asarray(U, dtype=np.float64))
    if U.ndim != 2 or U.shape[0] != tasks.n_features:
        raise ValueError(f"U must have shape (d, s) with d = {tasks.n_features}; got {U.shape}")
    cluster = Cluster(client or tasks.client, timeout)
    parts = cluster.each("marginal", _shards.marginal_sums, tasks.shards, U, float(noise),
                         1 if n_jobs is None else int(n_jobs))
    return {"deviance": sum(p[0] for p in parts), "gradient": sum(p[1] for p in parts),
            "expected": sum(p[2] for p in parts),
            "mean_task_loss": sum(p[3] for p in parts) / tasks.n_tasks}
