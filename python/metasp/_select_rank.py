"""Choose the rank s of the shared subspace by cross-validation within tasks."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ._arrays import is_integer
from ._prior import posterior_heads
from ._progress import progress
from ._result import ConvergenceWarning
from ._scaling import data_scale
from ._tasks import as_tasks, rank_within_tasks
from ._validation import check_rank, check_shots

__all__ = ["RankSelection", "select_rank"]

DEFAULT_RANKS = range(1, 11)


@dataclass(eq=False)
class RankSelection:
    """Cross-validated prediction error of each candidate rank, from :func:`select_rank`.

    Attributes
    ----------
    best_rank : int
        The chosen rank: the smallest rank whose mean held-out MSE ties with the lowest
        (``rule="min"``), or the smallest rank within one standard error of it
        (``rule="1se"``); scores within ``tie_rtol`` of each other are ties.
    ranks : ndarray of int, shape (n_ranks,)
        The candidate ranks, in the order given.
    mean_mse, std_mse : ndarray of shape (n_ranks,)
        Mean and standard deviation over the folds of the held-out MSE.
    fold_mse : ndarray of shape (n_ranks, cv)
        Held-out MSE of every rank on every fold.
    n_unconverged : ndarray of int, shape (n_ranks,)
        Fits that stopped at ``max_iter`` (their warnings are summarised in one).
    """

    best_rank: int
    ranks: np.ndarray
    mean_mse: np.ndarray
    std_mse: np.ndarray
    fold_mse: np.ndarray
    n_unconverged: np.ndarray

    def table(self) -> list:
        """The scores as a list of dicts (``rank``, ``mean_mse``, ``std_mse``), one per rank."""
        return [{"rank": int(s), "mean_mse": float(mean), "std_mse": float(std)}
                for s, mean, std in zip(self.ranks, self.mean_mse, self.std_mse)]

    def __str__(self) -> str:
        lines = ["rank  held-out MSE (mean +- sd over folds)"]
        for s, mean, std in zip(self.ranks, self.mean_mse, self.std_mse):
            mark = "  <- best" if s == self.best_rank else ""
            lines.append(f"{s:>4}  {mean:.4f} +- {std:.4f}{mark}")
        return "\n".join(lines)


def _sample_folds(tasks, cv: int, rng) -> np.ndarray:
    """Fold number of every sample: folds are balanced within each task; -1 = never held out.

    A task with 2 <= m_t < cv samples has one sample in each of its first m_t folds; a task
    with a single sample is never held out (it would have nothing left to fit its head).
    """
    folds = rank_within_tasks(rng.random(tasks.n_samples), tasks) % cv
    single = np.repeat(tasks.task_sizes == 1, tasks.task_sizes)
    folds[single] = -1
    return folds


def _held_out_samples(tasks, fold_of_row, heads):
    """``folds(f)``: the tasks without fold f's samples, and the scorer of those samples."""

    def folds(fold):
        mask = fold_of_row == fold
        if not mask.any():
            return None, None
        train = tasks._take_rows(~mask)
        task_of_row, X, y = tasks.task_of_row[mask], tasks.X[mask], tasks.y[mask]

        def score(result):
            Theta = result.Theta if heads == "fitted" else posterior_heads(result, train) @ result.B
            return float(np.mean((y - np.einsum("nd,nd->n", X, Theta[task_of_row])) ** 2))

        return train, score

    return folds


def fold_of_eligible(n_eligible: int, cv: int, rng) -> np.ndarray:
    """Fold of each of the ``n_eligible`` tasks that may be held out, in their order: a random
    permutation dealt round-robin, so fold sizes differ by at most one."""
    folds = np.empty(n_eligible, dtype=np.int64)
    folds[rng.permutation(n_eligible)] = np.arange(n_eligible) % cv
    return folds


def check_eligible(n_eligible: int, n_tasks: int, cv: int, shots) -> None:
    if n_eligible < cv:
        raise ValueError(
            f"holdout='tasks' with cv={cv} needs at least {cv} tasks with more than "
            f"max(shots) = {max(shots)} samples; {n_eligible} of {n_tasks} qualify: "
            "lower cv or shots")


def query_squared_error(result, support, query) -> float:
    """Sum over the query rows of the squared error of the heads adapted on the support rows
    (``result`` needs ``B`` and the head prior only)."""
    Theta = posterior_heads(result, support) @ result.B
    prediction = np.einsum("nd,nd->n", query.X, Theta[query.task_of_row])
    return float(np.sum((query.y - prediction) ** 2))


def _task_folds(tasks, cv: int, shots, rng):
    """Folds of whole tasks: ``folds(f)`` returns the other folds' tasks and the scorer of
    few-shot adaptation on fold f's tasks (mean over ``shots`` of the query MSE)."""
    eligible = np.flatnonzero(tasks.task_sizes > max(shots))
    check_eligible(eligible.size, tasks.n_tasks, cv, shots)
    fold_of_task = np.full(tasks.n_tasks, -1)
    fold_of_task[eligible] = fold_of_eligible(eligible.size, cv, rng)
    seeds = rng.integers(2**63, size=cv)

    def folds(fold):
        held_out = fold_of_task == fold
        train, test = tasks.subset(~held_out), tasks.subset(held_out)
        splits = [test.split_samples(k, random_state=[seeds[fold], k]) for k in shots]

        def score(result):
            return float(np.mean([query_squared_error(result, support, query) / query.n_samples
                                  for support, query in splits]))

        return train, score

    return folds


def select_rank(Xs, ys=None, ranks=DEFAULT_RANKS, cv=5, random_state=None, *,
                holdout="samples", shots=(3, 5, 8), heads="posterior", rule="1se",
                tie_rtol=1e-3, verbose=False, **fit_options):
    r"""Choose the rank s by held-out prediction error, holding out samples or whole tasks.

    With ``holdout="samples"`` (the default), the samples of every task are split at random
    into ``cv`` folds. For each fold and each candidate rank, :func:`metasp.fit` runs on the
    remaining samples of *all* tasks, and the held-out samples are predicted in the fitted
    subspace, :math:`\hat y = x^\top B^\top w_t`. The score of a rank is the mean squared
    error over the held-out samples, averaged over folds; the best rank has the lowest mean.
    This is the way to choose s on real data, where the true rank is unknown.

    With ``holdout="tasks"``, the *tasks* are split into ``cv`` folds and a rank is scored the
    way a few-shot model is used: fit on the other folds' tasks, then on each held-out task
    fit the head on ``k`` random samples (``adapt``'s empirical prior) and score the others,
    for every ``k`` in ``shots``; the score is the mean over folds of the mean over ``shots``
    of these query MSEs (the protocol of :func:`metasp.evaluate.few_shot`). Within-task
    scores favour the ranks that help tasks with all their samples; this one favours the ranks
    that help new tasks with a handful.

    The heads :math:`w_t` are, by default, the posterior means of each task's head given its
    training samples under the fitted head prior (what :meth:`MetaSPResult.adapt` returns with
    its default ``prior="empirical"``), so that a rank is scored the way the model is used.
    ``heads="fitted"`` uses the rows of the fitted ``W`` instead; those unregularised
    least-squares heads can overfit tasks whose features barely vary, and then penalise
    larger ranks heavily (on the Beijing PM2.5 day tasks, held-out MSE 50 at rank 7 against
    0.19 at rank 2 with converged fits, where posterior heads give 0.12 and 0.16).

    Tasks too small to split are handled as follows: a task with fewer than ``cv`` samples
    (but at least 2) has one sample held out in each of its first ``m_t`` folds and is fully
    used for training in the others; a task with a single sample is never held out (it still
    helps to fit the subspace).

    Parameters
    ----------
    Xs : tasks in any form accepted by :func:`metasp.fit`
        Design matrices (list of (m_t, d) arrays, a (T, m, d) array, or a :class:`Tasks`).
    ys : list of array_like, array_like (T, m), or None
        Targets; ``None`` when ``Xs`` is a :class:`metasp.Tasks`.
    ranks : iterable of int, default range(1, 11)
        Candidate ranks; each must satisfy ``1 <= s <= min(T, d)``. The default is cut at
        ``min(T, d)``.
    cv : int, default 5
        Number of folds (at least 2): of samples within each task, or of tasks.
    random_state : None, int or numpy.random.Generator, default None
        Seeds the fold assignment, the support sets and the fits.
    holdout : {"samples", "tasks"}, default "samples"
        Hold out samples within every task, or whole tasks scored by few-shot adaptation.
    shots : sequence of int, default (3, 5, 8)
        With ``holdout="tasks"``: the support-set sizes k. Only tasks with more than
        ``max(shots)`` samples are held out; smaller ones always help to fit.
    heads : {"posterior", "fitted"}, default "posterior"
        With ``holdout="samples"``: how the held-out samples of a task are predicted, with the
        posterior-mean head under the fitted head prior or with the task's row of ``W``.
        Held-out tasks have no fitted head, so ``holdout="tasks"`` needs ``"posterior"``.
    rule : {"1se", "min"}, default "1se"
        ``"1se"``: the smallest rank whose mean score is within one standard error (fold
        standard deviation / sqrt(folds)) of the lowest. Once the true rank is reached, extra
        ranks fit noise and their scores flatten out within that error, so this prefers the
        lower-dimensional subspace. ``"min"``: the rank with the lowest mean score.
    tie_rtol : float, default 1e-3
        Relative tolerance under which two scores tie. Among the ranks whose mean score is
        within ``tie_rtol`` of the lowest (``score <= lowest * (1 + tie_rtol)``) the smallest
        is the best; ``rule="1se"`` then takes its standard error and counts a rank as within
        one standard error when ``score <= (best + standard error) * (1 + tie_rtol)``. Scores
        of near-equivalent ranks differ in their last digits between thread counts and
        BLAS builds; the tolerance keeps those rounding differences from changing the
        choice. ``0`` compares exactly.
    verbose : bool, default False
        Show a progress bar over the ``len(ranks) * cv`` fits.
    **fit_options
        Passed to :func:`metasp.fit` (for example ``max_iter``, ``tol``, ``n_jobs``).

    Returns
    -------
    RankSelection
        ``best_rank`` and the table of scores (``ranks``, ``mean_mse``, ``std_mse``,
        ``fold_mse``); ``str()`` of it prints the table.

    Warns
    -----
    ConvergenceWarning
        Once, when some fits stopped at ``max_iter``; the count per rank is in
        ``n_unconverged``.

    Examples
    --------
    >>> import metasp
    >>> X, y, B, W = metasp.datasets.make_hps(T=100, m=20, d=15, s=2, sigma=0.1, random_state=0)
    >>> metasp.select_rank(X, y, ranks=[1, 2, 3], cv=3, random_state=0, tol=1e-6).best_rank
    2
    """
    from ._solver import fit

    tasks = as_tasks(Xs, ys)
    ranks = check_options(tasks, ranks, cv, rule, tie_rtol, heads, holdout, fit_options)
    data_scale(tasks)  # a task too far below the others' scale is refused before any split
    rng = np.random.default_rng(random_state)
    if holdout == "samples":
        if (tasks.task_sizes < 2).all():
            raise ValueError("every task has a single sample: there is nothing to hold out "
                             "within tasks; use holdout='tasks'")
        folds = _held_out_samples(tasks, _sample_folds(tasks, cv, rng), heads)
    else:
        folds = _task_folds(tasks, cv, check_shots(shots), rng)
    fit_options.setdefault("random_state", rng)
    fold_mse, n_unconverged = cross_validate(fit, ranks, cv, folds, fit_options, verbose)
    return selection_of(ranks, fold_mse, n_unconverged, rule, tie_rtol)


def check_options(tasks, ranks, cv, rule, tie_rtol, heads, holdout, fit_options) -> np.ndarray:
    """The candidate ranks as an array, after checking every option of :func:`select_rank`
    (``tasks`` needs ``n_tasks`` and ``n_features`` only)."""
    if ranks is DEFAULT_RANKS:
        ranks = range(1, min(DEFAULT_RANKS.stop - 1, tasks.n_tasks, tasks.n_features) + 1)
    try:
        ranks = np.array([check_rank(s, tasks) for s in ranks], dtype=np.int64)
    except TypeError as error:
        raise TypeError(f"ranks must be an iterable of integers: {error}") from None
    if ranks.size == 0:
        raise ValueError("ranks is empty: give at least one candidate rank")
    if not is_integer(cv):
        raise TypeError(f"cv must be an integer; got {type(cv).__name__}")
    if cv < 2:
        raise ValueError(f"cv must be at least 2; got {cv}")
    if rule not in ("min", "1se"):
        raise ValueError(f"rule must be 'min' or '1se'; got {rule!r}")
    if isinstance(tie_rtol, (bool, np.bool_)) or not isinstance(tie_rtol, (int, float, np.number)):
        raise TypeError(f"tie_rtol must be a real number; got {type(tie_rtol).__name__}")
    if not tie_rtol >= 0:
        raise ValueError(f"tie_rtol must be a non-negative number (0 compares exactly); "
                         f"got {tie_rtol}")
    if heads not in ("posterior", "fitted"):
        raise ValueError(f"heads must be 'posterior' or 'fitted'; got {heads!r}")
    if holdout not in ("samples", "tasks"):
        raise ValueError(f"holdout must be 'samples' or 'tasks'; got {holdout!r}")
    if holdout == "tasks" and heads != "posterior":
        raise ValueError("held-out tasks have no fitted head: holdout='tasks' needs "
                         "heads='posterior'")
    if "s" in fit_options:
        raise TypeError("pass the candidate ranks as ranks=..., not s=")
    return ranks


def cross_validate(fit, ranks, cv, folds, fit_options, verbose, desc="select_rank"):
    """``(fold_mse, n_unconverged)``: every rank fitted by ``fit(train, s=..., **fit_options)``
    on every fold ``folds(f) = (train, score)`` and scored; folds outer, ranks inner (the order
    in which the fits draw from a shared random generator)."""
    fold_mse = np.full((ranks.size, cv), np.nan)
    n_unconverged = np.zeros(ranks.size, dtype=np.int64)
    jobs = [(i, fold) for fold in range(cv) for i in range(ranks.size)]
    for i, fold in progress(jobs, desc=desc, enable=verbose):
        if i == 0:
            train, score = folds(fold)
        if train is None:  # only when every task is smaller than this fold number
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            result = fit(train, s=int(ranks[i]), **fit_options)
        n_unconverged[i] += result.status == "max_iter"
        fold_mse[i, fold] = score(result)
    return fold_mse, n_unconverged


def selection_of(ranks, fold_mse, n_unconverged, rule, tie_rtol) -> RankSelection:
    """The :class:`RankSelection` of the scores, with one warning for unconverged fits."""
    used = ~np.isnan(fold_mse[0])
    # On a power-of-two scale, so that the sums and squares of large MSEs stay finite.
    unit = np.ldexp(1.0, int(np.frexp(np.abs(fold_mse[:, used]).max(initial=1.0))[1]))
    mean_mse = (fold_mse[:, used] / unit).mean(axis=1) * unit
    std_mse = (fold_mse[:, used] / unit).std(axis=1) * unit
    if n_unconverged.any():
        warnings.warn(
            f"select_rank: {int(n_unconverged.sum())} of {ranks.size * int(used.sum())} fits "
            "stopped at max_iter; the scores are those of the unconverged fits. Increase "
            "max_iter for a sharper comparison.",
            ConvergenceWarning,
            stacklevel=3,
        )
    return RankSelection(
        best_rank=_choose(ranks, mean_mse, std_mse / np.sqrt(used.sum()), rule, tie_rtol),
        ranks=ranks, mean_mse=mean_mse,
        std_mse=std_mse, fold_mse=fold_mse, n_unconverged=n_unconverged,
    )


def _choose(ranks, mean_mse, standard_error, rule, tie_rtol=0.0):
    """The chosen rank: ties (within ``tie_rtol``, relative) go to the smallest rank."""
    scale = 1.0 + float(tie_rtol)
    tied_with_lowest = mean_mse <= mean_mse.min() * scale
    best = int(np.flatnonzero(tied_with_lowest)[np.argmin(ranks[tied_with_lowest])])
    if rule == "min":
        return int(ranks[best])
    within = mean_mse <= (mean_mse[best] + standard_error[best]) * scale
    return int(ranks[within].min())
