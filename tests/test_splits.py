"""Splits by task (meta-train / meta-test) and within task (support / query)."""

import numpy as np
import pytest

from metasp import Tasks


def numbered_tasks(sizes=(5, 7, 4, 9, 6, 8), d=3):
    """Tasks whose y is the global row number, so rows can be traced through a split."""
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    n = offsets[-1]
    X = np.arange(n * d, dtype=float).reshape(n, d)
    return Tasks(X, np.arange(n, dtype=float), offsets, labels=[f"t{i}" for i in range(len(sizes))],
                 feature_names=[f"x{j}" for j in range(d)])


def test_subset_keeps_whole_tasks_in_the_given_order():
    tasks = numbered_tasks()
    sub = tasks.subset([3, 0])
    assert sub.labels.tolist() == ["t3", "t0"]
    assert sub.feature_names == tasks.feature_names
    np.testing.assert_array_equal(sub[0][1], tasks[3][1])
    np.testing.assert_array_equal(sub[1][0], tasks[0][0])
    mask = np.array([True, False, True, False, False, False])
    assert tasks.subset(mask).labels.tolist() == ["t0", "t2"]


@pytest.mark.parametrize("indices, error, match", [
    ([], ValueError, "no task"),
    ([0, 6], IndexError, r"\[0, 6\)"),
    ([0.5], TypeError, "task numbers"),
    (np.ones(3, dtype=bool), ValueError, r"shape \(6,\)"),
])
def test_subset_rejects(indices, error, match):
    with pytest.raises(error, match=match):
        numbered_tasks().subset(indices)


def test_split_tasks_is_a_reproducible_partition():
    tasks = numbered_tasks()
    train, test = tasks.split_tasks(1 / 3, random_state=4)
    assert (train.n_tasks, test.n_tasks) == (4, 2)
    assert sorted(train.labels.tolist() + test.labels.tolist()) == sorted(tasks.labels.tolist())
    assert np.intersect1d(train.y, test.y).size == 0
    again = tasks.split_tasks(1 / 3, random_state=4)[1]
    assert again.labels.tolist() == test.labels.tolist()
    different = {tuple(tasks.split_tasks(1 / 3, random_state=seed)[1].labels) for seed in range(20)}
    assert len(different) > 1


def test_split_tasks_keeps_a_task_on_each_side():
    tasks = numbered_tasks()
    assert tasks.split_tasks(0.01, random_state=0)[1].n_tasks == 1
    assert tasks.split_tasks(0.99, random_state=0)[0].n_tasks == 1


@pytest.mark.parametrize("fraction, error", [(0, ValueError), (1, ValueError), (-0.2, ValueError),
                                             ("0.2", TypeError), (True, TypeError)])
def test_split_tasks_rejects_bad_fractions(fraction, error):
    with pytest.raises(error, match="test_fraction"):
        numbered_tasks().split_tasks(fraction)


def test_split_samples_gives_k_support_and_the_rest_as_query_in_every_task():
    tasks = numbered_tasks()
    support, query = tasks.split_samples(3, random_state=0)
    assert support.task_sizes.tolist() == [3] * 6
    assert query.task_sizes.tolist() == (tasks.task_sizes - 3).tolist()
    for t in range(tasks.n_tasks):
        rows = np.concatenate([support[t][1], query[t][1]])
        np.testing.assert_array_equal(np.sort(rows), tasks[t][1])  # same task, no row lost
        np.testing.assert_array_equal(support[t][0], tasks.X[support[t][1].astype(int)])
    assert support.labels.tolist() == query.labels.tolist() == tasks.labels.tolist()
    again, _ = tasks.split_samples(3, random_state=0)
    np.testing.assert_array_equal(again.y, support.y)


def test_split_samples_draws_every_sample_eventually():
    tasks = numbered_tasks(sizes=(6, 6))
    seen = np.zeros(12, dtype=bool)
    for seed in range(40):
        seen[tasks.split_samples(1, random_state=seed)[0].y.astype(int)] = True
    assert seen.all()


def test_split_samples_refuses_tasks_without_query_samples():
    with pytest.raises(ValueError, match=r"at most k = 4 samples \(first: task 2 with 4\)"):
        numbered_tasks().split_samples(4)
    for k, error in ((0, ValueError), (2.0, TypeError), (True, TypeError)):
        with pytest.raises(error, match="k must"):
            numbered_tasks().split_samples(k)
