"""select_rank: the rank by held-out prediction error, within tasks or on held-out tasks."""


import numpy as np
import pytest
from conftest import ragged_tasks

import metasp
from metasp._select_rank import _choose, _sample_folds

# Ranks above the truth converge slowly; the scores of capped fits are what is compared here.
capped = pytest.mark.filterwarnings("ignore::metasp.ConvergenceWarning")
FAST = {"max_iter": 200}


@pytest.mark.parametrize("seed", [0, 1, 2])
@capped
def test_finds_the_true_rank_with_a_clear_gap(seed):
    X, y, B, W = metasp.datasets.make_hps(T=80, m=16, d=12, s=3, sigma=0.1, random_state=seed)
    selection = metasp.select_rank(X, y, ranks=range(1, 7), cv=4, random_state=seed,
                                    **FAST)
    assert selection.best_rank == 3
    assert selection.ranks.tolist() == [1, 2, 3, 4, 5, 6]
    assert selection.fold_mse.shape == (6, 4)
    np.testing.assert_allclose(selection.mean_mse, selection.fold_mse.mean(axis=1))
    # Too small a rank is far worse than the truth: the gap is clear.
    assert selection.mean_mse[1] > 5 * selection.mean_mse[2]
    assert [row["rank"] for row in selection.table()] == [1, 2, 3, 4, 5, 6]
    assert "<- best" in str(selection).splitlines()[3]


@capped
def test_is_reproducible():
    X, y, _, _ = metasp.datasets.make_hps(T=60, m=10, d=10, s=2, sigma=0.1, random_state=0)
    first = metasp.select_rank(X, y, ranks=[1, 2, 3], cv=3, random_state=7, **FAST)
    second = metasp.select_rank(X, y, ranks=[1, 2, 3], cv=3, random_state=7, **FAST)
    np.testing.assert_array_equal(first.fold_mse, second.fold_mse)


@capped
@pytest.mark.parametrize("heads", ["posterior", "fitted"])
def test_held_out_error_is_the_prediction_error_of_the_fit_on_the_other_samples(heads):
    Xs, ys, _, _ = ragged_tasks(T=40, d=8, s=2, sizes=(6, 12))
    tasks = metasp.Tasks.from_list(Xs, ys)
    selection = metasp.select_rank(tasks, ranks=[2], cv=3, random_state=3, heads=heads, **FAST)
    folds = _sample_folds(tasks, 3, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    rng.random(tasks.n_samples)  # the fold draw
    for fold in range(3):
        held = folds == fold
        train = tasks._take_rows(~held)
        result = metasp.fit(train, s=2, random_state=rng, **FAST)
        errors = []
        for t in range(tasks.n_tasks):
            rows = held[tasks.offsets[t]:tasks.offsets[t + 1]]
            X, y = tasks[t][0][rows], tasks[t][1][rows]
            w = result.W[t] if heads == "fitted" else result.adapt(*train[t])
            errors.extend(y - result.predict(X, w))
        assert selection.fold_mse[0, fold] == pytest.approx(np.mean(np.square(errors)))


def test_folds_are_balanced_within_tasks_and_small_tasks_are_handled():
    sizes = [1, 2, 3, 10, 11]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    tasks = metasp.Tasks(np.ones((offsets[-1], 2)), np.zeros(offsets[-1]), offsets)
    folds = _sample_folds(tasks, 5, np.random.default_rng(0))
    per_task = np.split(folds, offsets[1:-1])
    assert per_task[0].tolist() == [-1]  # a single sample is never held out
    assert sorted(per_task[1].tolist()) == [0, 1]  # fewer samples than folds: one per fold
    assert sorted(per_task[2].tolist()) == [0, 1, 2]
    assert np.bincount(per_task[3]).tolist() == [2, 2, 2, 2, 2]
    assert sorted(np.bincount(per_task[4]).tolist()) == [2, 2, 2, 2, 3]


@capped
def test_runs_with_tasks_smaller_than_the_number_of_folds():
    Xs, ys, _, _ = ragged_tasks(T=80, d=6, s=2, sizes=(1, 12), seed=4)
    selection = metasp.select_rank(Xs, ys, ranks=[1, 2, 3], cv=5, random_state=0, **FAST)
    assert selection.best_rank == 2
    assert np.isfinite(selection.fold_mse).all()


def test_unconverged_fits_give_one_warning_with_a_count():
    X, y, _, _ = metasp.datasets.make_hps(T=40, m=10, d=8, s=2, sigma=0.1, random_state=0)
    with pytest.warns(metasp.ConvergenceWarning, match=r"6 of 6 fits stopped at max_iter") as w:
        selection = metasp.select_rank(X, y, ranks=[1, 2], cv=3, random_state=0, max_iter=2)
    assert len(w) == 1
    assert selection.n_unconverged.tolist() == [3, 3]


@pytest.mark.parametrize("kwargs, error, match", [
    ({"ranks": []}, ValueError, "ranks is empty"),
    ({"ranks": [0, 1]}, ValueError, r"1 <= s <= min\(T, d\)"),
    ({"ranks": [11]}, ValueError, r"1 <= s <= min\(T, d\)"),
    ({"ranks": [1.5]}, TypeError, "ranks must be an iterable of integers"),
    ({"cv": 1}, ValueError, "cv must be at least 2"),
    ({"cv": 2.0}, TypeError, "cv must be an integer"),
    ({"s": 2}, TypeError, "ranks=..., not s="),
    ({"heads": "ols"}, ValueError, "heads must be 'posterior' or 'fitted'"),
    ({"rule": "2se"}, ValueError, "rule must be 'min' or '1se'"),
    ({"tie_rtol": -1e-3}, ValueError, "tie_rtol must be a non-negative number"),
    ({"tie_rtol": float("nan")}, ValueError, "tie_rtol must be a non-negative number"),
    ({"tie_rtol": "1e-3"}, TypeError, "tie_rtol must be a real number"),
])
def test_rejects(kwargs, error, match):
    X, y, _, _ = metasp.datasets.make_hps(T=20, m=6, d=10, s=2, random_state=0)
    with pytest.raises(error, match=match):
        metasp.select_rank(X, y, **kwargs)


@capped
def test_default_ranks_stop_at_the_number_of_features():
    X, y, _, _ = metasp.datasets.make_hps(T=30, m=8, d=3, s=1, sigma=0.1, random_state=0)
    selection = metasp.select_rank(X, y, cv=2, random_state=0, **FAST)
    assert selection.ranks.tolist() == [1, 2, 3]


def test_single_sample_tasks_cannot_be_scored():
    with pytest.raises(ValueError, match="single sample"):
        metasp.select_rank([np.ones((1, 3))] * 4, [np.ones(1)] * 4, ranks=[1])


def test_one_standard_error_rule_takes_the_smallest_rank_close_to_the_best():
    ranks = np.array([1, 2, 3, 4, 5])
    mean = np.array([2.0, 0.5, 0.30, 0.29, 0.28])
    se = np.full(5, 0.015)
    assert _choose(ranks, mean, se, "min") == 5
    assert _choose(ranks, mean, se, "1se") == 4
    assert _choose(ranks, mean, np.full(5, 0.03), "1se") == 3
    assert _choose(ranks[::-1], mean[::-1], se, "1se") == 4  # order of candidates is irrelevant


def test_scores_within_the_relative_tolerance_tie_and_the_smallest_rank_wins():
    ranks = np.array([2, 3, 4, 5])
    mean = np.array([0.5, 0.30020, 0.30000, 0.30010])  # 3 and 5 within 1e-3 of rank 4's
    se = np.zeros(4)
    assert _choose(ranks, mean, se, "min", tie_rtol=0.0) == 4
    assert _choose(ranks, mean, se, "min", tie_rtol=1e-3) == 3
    assert _choose(ranks, mean, se, "min", tie_rtol=1e-4) == 4  # 3 is 6.7e-4 above: no tie
    assert _choose(ranks[::-1], mean[::-1], se, "min", tie_rtol=1e-3) == 3
    # 1se: the reference is the smallest tied rank, and the threshold has the same tolerance.
    se = np.array([0.0, 0.01, 0.02, 0.0])
    assert _choose(ranks, mean, se, "1se", tie_rtol=0.0) == 3  # 0.3002 <= 0.30 + 0.02
    assert _choose(ranks, np.array([0.5, 0.3102, 0.30, 0.3]), np.array([0, 0, 0.01, 0]), "1se",
                   tie_rtol=0.0) == 4
    # 0.3102 <= (0.30 + 0.01) * 1.001 = 0.31031: a tie with the threshold.
    assert _choose(ranks, np.array([0.5, 0.3102, 0.30, 0.3]), np.array([0, 0, 0.01, 0]), "1se",
                   tie_rtol=1e-3) == 3


@capped
def test_tie_tolerance_reaches_select_rank():
    X, y, _, _ = metasp.datasets.make_hps(T=60, m=10, d=10, s=2, sigma=0.1, random_state=0)
    exact = metasp.select_rank(X, y, ranks=[1, 2, 3], cv=3, random_state=7, rule="min",
                               tie_rtol=0, **FAST)
    loose = metasp.select_rank(X, y, ranks=[1, 2, 3], cv=3, random_state=7, rule="min",
                               tie_rtol=np.inf, **FAST)
    np.testing.assert_array_equal(exact.fold_mse, loose.fold_mse)
    assert exact.best_rank == 2
    assert loose.best_rank == 1  # every score ties with the lowest


@capped
def test_one_standard_error_rule_finds_the_true_rank():
    X, y, _, _ = metasp.datasets.make_hps(T=80, m=16, d=12, s=3, sigma=0.1, random_state=5)
    selection = metasp.select_rank(X, y, ranks=range(1, 7), cv=4, random_state=5, rule="1se",
                                   **FAST)
    assert selection.best_rank == 3


# --- holdout="tasks": whole tasks held out, scored by few-shot adaptation ------------------------

@pytest.mark.parametrize("seed", [0, 1])
@capped
def test_task_holdout_finds_the_true_rank(seed):
    X, y, _, _ = metasp.datasets.make_hps(T=120, m=16, d=12, s=3, sigma=0.1, random_state=seed)
    selection = metasp.select_rank(X, y, ranks=range(1, 7), cv=3, random_state=seed,
                                   holdout="tasks", shots=(3, 5), **FAST)
    assert selection.best_rank == 3
    assert selection.mean_mse[1] > 2 * selection.mean_mse[2]
    assert np.isfinite(selection.fold_mse).all()


@capped
def test_task_holdout_score_is_the_few_shot_error_on_the_held_out_tasks():
    Xs, ys, _, _ = ragged_tasks(T=45, d=8, s=2, sizes=(4, 12), seed=1)
    tasks = metasp.Tasks.from_list(Xs, ys)
    shots = (2, 3)
    selection = metasp.select_rank(tasks, ranks=[2], cv=3, random_state=3, holdout="tasks",
                                   shots=shots, **FAST)
    # Replay the draws: task permutation, one seed per fold, then the fits.
    rng = np.random.default_rng(3)
    eligible = np.flatnonzero(tasks.task_sizes > max(shots))
    fold_of_task = np.full(tasks.n_tasks, -1)
    fold_of_task[rng.permutation(eligible)] = np.arange(eligible.size) % 3
    seeds = rng.integers(2**63, size=3)
    for fold in range(3):
        held = fold_of_task == fold
        result = metasp.fit(tasks.subset(~held), s=2, random_state=rng, **FAST)
        errors = []
        for k in shots:
            support, query = tasks.subset(held).split_samples(k, random_state=[seeds[fold], k])
            squared = [np.mean((query[t][1] - result.predict(query[t][0],
                                                             result.adapt(*support[t]))) ** 2)
                       for t in range(support.n_tasks)]
            # The score pools the query rows of all held-out tasks.
            errors.append(np.average(squared, weights=query.task_sizes))
        assert selection.fold_mse[0, fold] == pytest.approx(np.mean(errors))
    assert (tasks.task_sizes[fold_of_task >= 0] > max(shots)).all()


@pytest.mark.parametrize("kwargs, error, match", [
    ({"holdout": "days"}, ValueError, "holdout must be 'samples' or 'tasks'"),
    ({"holdout": "tasks", "heads": "fitted"}, ValueError, "needs heads='posterior'"),
    ({"holdout": "tasks", "shots": ()}, TypeError, "non-empty sequence"),
    ({"holdout": "tasks", "shots": (0,)}, ValueError, "shots must be at least 1"),
    ({"holdout": "tasks", "shots": (6,)}, ValueError, "more than max\\(shots\\) = 6 samples"),
    ({"holdout": "tasks", "cv": 25}, ValueError, "needs at least 25 tasks"),
])
def test_task_holdout_rejects(kwargs, error, match):
    X, y, _, _ = metasp.datasets.make_hps(T=20, m=6, d=10, s=2, random_state=0)
    with pytest.raises(error, match=match):
        metasp.select_rank(X, y, **kwargs)
