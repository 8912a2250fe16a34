"""metasp.dask.select_rank: the rank by held-out tasks, each fold fitted and scored on the
cluster with the folds, fits and scores of :func:`metasp.select_rank` (``holdout="tasks"``)."""

from __future__ import annotations

import uuid

import numpy as np

from .._select_rank import (
    DEFAULT_RANKS,
    RankSelection,
    check_eligible,
    check_options,
    cross_validate,
    selection_of,
)
from .._validation import check_shots
from . import _shards
from ._fit import Cluster, data_scale, fit
from ._tasks import GATHER_TIMEOUT, Tasks, current_client, gather


def select_rank(
    tasks,
    ranks=DEFAULT_RANKS,
    holdout="tasks",
    cv=5,
    random_state=None,
    *,
    shots=(3, 5, 8),
    heads="posterior",
    rule="1se",
    tie_rtol=1e-3,
    verbose=False,
    client=None,
    **fit_options,
) -> RankSelection:
    """:func:`metasp.select_rank` with ``holdout="tasks"`` on tasks held by a Dask cluster.

    The tasks are dealt into ``cv`` folds exactly as :func:`metasp.select_rank` deals them
    (from ``random_state``, over the global task order of ``tasks``: the order of
    ``tasks.to_local()``), so both give the same folds, support sets and fit seeds, and the
    same scores up to rounding. For each fold, the other folds' tasks are fitted by
    :func:`metasp.dask.fit` on shards derived on the workers, and the held-out tasks are scored
    on the workers: each is adapted on ``k`` random samples with the fitted subspace and head
    prior, and the squared errors on its other samples are summed; only these sums reach the
    driver. The score and the rank rule are those of :func:`metasp.select_rank`.

    Dealing the folds needs one permutation of the eligible tasks (the draw
    :func:`metasp.select_rank` makes): it runs once on one worker (8 bytes per task there),
    and each shard receives the folds of its own tasks.

    Parameters
    ----------
    tasks : metasp.dask.Tasks
    ranks : iterable of int, default range(1, 11)
        Candidate ranks, as in :func:`metasp.select_rank`.
    holdout : {"tasks"}
        Only whole tasks are held out here; ``"samples"`` raises NotImplementedError (use
        ``metasp.select_rank(tasks.to_local(), ...)`` where the data fit in memory).
    cv : int, default 5
        Number of folds of tasks (at least 2).
    random_state : None, int or numpy.random.Generator, default None
        Seeds the folds, the support sets and the fits, as in :func:`metasp.select_rank`.
    shots : sequence of int, default (3, 5, 8)
        The support-set sizes k; only tasks with more than ``max(shots)`` samples are held out.
    heads : {"posterior"}
        Held-out tasks are adapted with the posterior-mean head under the fitted prior.
    rule : {"1se", "min"}, default "1se"
    tie_rtol : float, default 1e-3
        As in :func:`metasp.select_rank`.
    verbose : bool, default False
        A progress bar over the ``len(ranks) * cv`` fits.
    client : distributed.Client, optional
        Default: the client ``tasks`` were built with.
    **fit_options
        Passed to :func:`metasp.dask.fit` (for example ``max_iter``, ``tol``, ``timeout``).

    Returns
    -------
    metasp.RankSelection
        As from :func:`metasp.select_rank`.

    Warns
    -----
    ConvergenceWarning
        Once, when some fits stopped at ``max_iter``.
    """
    if not isinstance(tasks, Tasks):
        raise TypeError(
            f"tasks must be a metasp.dask.Tasks (md.Tasks.from_frame or from_arrays); got {type(tasks).__name__}"
        )
    if holdout == "samples":
        raise NotImplementedError(
            "metasp.dask.select_rank holds out whole tasks only: holdout='samples' is not "
            "distributed yet; use holdout='tasks', or metasp.select_rank(tasks.to_local(), "
            "...) where the data fit in memory"
        )
    ranks = check_options(tasks, ranks, cv, rule, tie_rtol, heads, holdout, fit_options)
    shots = check_shots(shots)
    data_scale(tasks)  # a task too far below the others' scale is refused before any split
    client = tasks.client if client is None else current_client(client)
    cluster = Cluster(client, fit_options.get("timeout", GATHER_TIMEOUT))
    rng = np.random.default_rng(random_state)
    folds = _task_folds(cluster, tasks, cv, shots, rng)
    fit_options.setdefault("random_state", rng)
    fold_mse, n_unconverged = cross_validate(
        fit, ranks, cv, folds, fit_options, verbose, desc="metasp.dask.select_rank"
    )
    return selection_of(ranks, fold_mse, n_unconverged, rule, tie_rtol)


def _task_folds(cluster, tasks, cv, shots, rng):
    """``folds(f)``: the other folds' tasks (a metasp.dask.Tasks on derived shards) and the
    scorer of few-shot adaptation on fold f's tasks, as metasp._select_rank._task_folds."""
    fold_of_task = _deal_folds(cluster, tasks, cv, max(shots), rng)
    seeds = rng.integers(2**63, size=cv)
    others = [(f,) for f in fold_of_task]

    def folds(fold):
        train, test = (
            cluster.submit_each(
                f"fold{fold}-{'test' if held_out else 'train'}",
                _shards.tasks_in_fold,
                tasks.shards,
                fold,
                held_out,
                others=others,
            )
            for held_out in (False, True)
        )
        train_tasks = Tasks(
            train, cluster.client, cluster.each("train-summary", _shards.summary, train), tasks.feature_names
        )
        test_rows = [s.n_samples for s in cluster.each("test-summary", _shards.summary, test)]
        rows_before = np.concatenate([[0], np.cumsum(test_rows)[:-1]]).astype(int)

        def score(result):
            prior = _shards.HeadPrior(result.B, result.head_mean, result.head_cov, result.noise_variance)
            sums = sum(
                cluster.each(
                    "few-shot",
                    _shards.few_shot_sums,
                    test,
                    prior,
                    shots,
                    seeds[fold],
                    others=[(int(r),) for r in rows_before],
                )
            )
            return float(np.mean(sums[:, 0] / sums[:, 1]))

        return train_tasks, score

    return folds


def _deal_folds(cluster, tasks, cv, max_shots, rng):
    """Futures of each shard's (T_p,) task folds, dealt as metasp.select_rank deals them over
    all tasks; ``rng`` moves on as that draw moves it."""
    counts = cluster.each("eligible", _shards.eligible_count, tasks.shards, max_shots)
    check_eligible(int(np.sum(counts)), tasks.n_tasks, cv, [max_shots])
    client, tag = cluster.client, uuid.uuid4().hex[:8]
    draw = client.submit(_shards.draw_task_folds, rng, counts, cv, key=f"metasp-deal-folds-{tag}")
    pieces = [
        client.submit(_shards.shard_piece, draw, i, key=f"metasp-fold-piece-{i}-{tag}")
        for i in range(len(tasks.shards))
    ]
    after = client.submit(_shards.generator_after, draw, key=f"metasp-generator-{tag}")
    rng.bit_generator.state = gather(client, [after], cluster.timeout)[0].bit_generator.state
    return cluster.submit_each("task-folds", _shards.task_folds, tasks.shards, max_shots, others=[(p,) for p in pieces])
