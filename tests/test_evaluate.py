"""metasp.evaluate.few_shot on synthetic tasks, and its competitors checked against direct fits."""

import numpy as np
import pytest

import metasp
from metasp import evaluate
from metasp.evaluate import _pooled_intercept, _ridge_loo, _ridge_paths, few_shot, format_table


@pytest.fixture(scope="module")
def shared_tasks():
    """Rank-2 heads scattered around a common mean: the regime where a prior on heads helps."""
    rng = np.random.default_rng(0)
    T, m, d, s = 150, 14, 12, 2
    B = np.linalg.qr(rng.standard_normal((d, s)))[0].T
    W = np.array([1.5, -1.0]) + 0.7 * rng.standard_normal((T, s))
    X = rng.standard_normal((T, m, d))
    y = np.einsum("tmd,td->tm", X, W @ B) + 0.2 * rng.standard_normal((T, m))
    return metasp.Tasks.from_array(X, y)


def test_table_has_one_row_per_method_and_shot(shared_tasks):
    table = few_shot(["metasp", "ridge", "pooled", "pooled_intercept"], shared_tasks,
                     shots=(3, 5), n_repeats=2, rank=2, random_state=0)
    assert [(row["method"], row["shots"]) for row in table] == [
        (name, k) for name in ("metasp", "ridge", "pooled", "pooled_intercept") for k in (3, 5)]
    for row in table:
        assert len(row["mse"]) == row["n_repeats"] == 2
        assert row["mean_mse"] == pytest.approx(np.mean(row["mse"]))
        assert row["std_mse"] == pytest.approx(np.std(row["mse"]))
        assert row["ranks"] == [2, 2]
    text = format_table(table)
    assert "k = 3" in text and text.count("*") == 2


def test_shared_subspace_wins_with_few_shots(shared_tasks):
    table = few_shot(["metasp", "metasp_no_prior", "ridge", "ridge_tuned", "pooled",
                      "pooled_intercept"], shared_tasks, shots=(3, 5), n_repeats=2, rank=2,
                     random_state=1)
    mse = {(row["method"], row["shots"]): row["mean_mse"] for row in table}
    for k in (3, 5):
        others = [mse[name, k] for name in ("ridge", "ridge_tuned", "pooled", "pooled_intercept")]
        assert mse["metasp", k] < 0.5 * min(others)
    assert mse["metasp", 3] < mse["metasp_no_prior", 3]  # the prior helps at k = 3 > s = 2


def test_same_seed_same_table_and_splits_independent_of_the_methods(shared_tasks):
    first = few_shot(["pooled", "metasp", "ridge_tuned"], shared_tasks, shots=(4,), n_repeats=2,
                     rank=2, random_state=3)
    second = few_shot(["ridge_tuned", "pooled"], shared_tasks, shots=(4,), n_repeats=2, rank=2,
                      random_state=3)
    assert first[0]["mse"] == second[1]["mse"]
    assert first[2]["mse"] == second[0]["mse"]  # its own draws do not depend on the others'
    second = second[1:]
    third = few_shot(["pooled"], shared_tasks, shots=(4,), n_repeats=2, rank=2, random_state=4)
    assert third[0]["mse"] != second[0]["mse"]


@pytest.mark.filterwarnings("ignore::metasp.ConvergenceWarning")
def test_rank_is_selected_on_the_training_tasks_when_not_given(shared_tasks):
    table = few_shot(["metasp"], shared_tasks, shots=(3,), n_repeats=1, random_state=0,
                     select_options={"ranks": [1, 2, 3], "cv": 3}, fit_options={"max_iter": 300})
    assert table[0]["ranks"] == [2]


def test_callable_methods_and_frames(shared_tasks):
    pd = pytest.importorskip("pandas")

    def task_mean(train, rank, rng):
        def predict(support, query):
            means = np.add.reduceat(support.y, support.offsets[:-1]) / support.task_sizes
            return np.repeat(means, query.task_sizes)
        return predict

    frame = few_shot([task_mean, "pooled"], shared_tasks, shots=(3,), n_repeats=2, rank=2,
                     random_state=0, as_frame=True)
    assert isinstance(frame, pd.DataFrame)
    assert frame["method"].tolist() == ["task_mean", "pooled"]
    assert "task_mean" in format_table(frame)


def test_ridge_leave_one_out_matches_refitting():
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((4, 5, 3)), rng.standard_normal((4, 5))
    support = metasp.Tasks.from_array(X, y)
    strengths = np.array([0.1, 1.0, 10.0])
    coef, intercept, loo = _ridge_paths(support, strengths)
    for t in range(4):
        for j, lam in enumerate(strengths):
            Xc, yc = X[t] - X[t].mean(0), y[t] - y[t].mean()
            w = np.linalg.solve(Xc.T @ Xc + lam * np.eye(3), Xc.T @ yc)
            np.testing.assert_allclose(coef[t, j], w, atol=1e-10)
            np.testing.assert_allclose(intercept[t, j], y[t].mean() - X[t].mean(0) @ w)
            for i in range(5):
                keep = np.arange(5) != i
                Xi, yi = X[t][keep], y[t][keep]
                Xic, yic = Xi - Xi.mean(0), yi - yi.mean()
                wi = np.linalg.solve(Xic.T @ Xic + lam * np.eye(3), Xic.T @ yic)
                left_out = y[t][i] - (yi.mean() + (X[t][i] - Xi.mean(0)) @ wi)
                np.testing.assert_allclose(loo[t, j, i], left_out, atol=1e-10)


def test_ridge_never_picks_an_interpolating_fit_on_two_samples():
    rng = np.random.default_rng(3)
    support = metasp.Tasks.from_array(rng.standard_normal((3, 2, 4)), rng.standard_normal((3, 2)))
    query = metasp.Tasks.from_array(rng.standard_normal((3, 5, 4)), rng.standard_normal((3, 5)))
    train = metasp.Tasks.from_array(rng.standard_normal((3, 5, 4)), rng.standard_normal((3, 5)))
    assert np.isfinite(_ridge_loo(train, 1, rng)(support, query)).all()


def test_pooled_intercept_is_fixed_effects_least_squares():
    rng = np.random.default_rng(4)
    T, m, d = 6, 8, 3
    X, y = rng.standard_normal((T, m, d)), rng.standard_normal((T, m))
    train = metasp.Tasks.from_array(X, y)
    dummies = np.kron(np.eye(T), np.ones((m, 1)))
    full = np.linalg.lstsq(np.hstack([X.reshape(-1, d), dummies]), y.ravel(), rcond=None)[0]
    slopes = full[:d]
    support = metasp.Tasks.from_array(X[:2, :3], y[:2, :3])
    query = metasp.Tasks.from_array(X[:2, 3:], y[:2, 3:])
    prediction = _pooled_intercept(train, 1, rng)(support, query)
    intercepts = (y[:2, :3] - X[:2, :3] @ slopes).mean(axis=1)
    np.testing.assert_allclose(prediction, (intercepts[:, None] + X[:2, 3:] @ slopes).ravel())


def test_available_methods_include_the_competitors_and_the_baselines_present():
    names = evaluate.available_methods()
    for name in ("metasp", "ridge", "ridge_tuned", "pooled", "pooled_intercept"):
        assert name in names
    assert "oracle" not in names


@pytest.mark.parametrize("kwargs, error, match", [
    ({"methods": ["lasso"]}, ValueError, "unknown method 'lasso'"),
    ({"methods": ["oracle"]}, ValueError, "needs the true subspace"),
    ({"methods": [3]}, TypeError, "a name or a callable"),
    ({"shots": (0,)}, ValueError, "every entry of shots must be at least 1"),
    ({"shots": ()}, TypeError, "non-empty sequence"),
    ({"shots": (2.5,)}, TypeError, "every entry of shots must be an integer"),
    ({"shots": (14,)}, ValueError, "at most max\\(shots\\) = 14 samples"),
    ({"n_repeats": 0}, ValueError, "n_repeats"),
    ({"rank": 0}, ValueError, "rank must be None or a positive integer"),
])
def test_rejects(shared_tasks, kwargs, error, match):
    arguments = {"methods": ["pooled"], "tasks": shared_tasks, "rank": 2, **kwargs}
    with pytest.raises(error, match=match):
        few_shot(**arguments)


def test_float32_tasks_score_like_their_float64_values(shared_tasks):
    """float32 X (kept float32 for the fits) gives the table of the same values in float64."""
    single = metasp.Tasks(shared_tasks.X, shared_tasks.y, shared_tasks.offsets, dtype=np.float32)
    promoted = metasp.Tasks(single.X.astype(np.float64), single.y, single.offsets)
    methods = ["metasp", "ridge", "ridge_tuned", "pooled", "pooled_intercept"]
    tables = [few_shot(methods, tasks, shots=(3,), n_repeats=1, rank=2, random_state=0)
              for tasks in (single, promoted)]
    for row, expected in zip(*tables):
        assert row["method"] == expected["method"]
        np.testing.assert_allclose(row["mse"], expected["mse"], rtol=1e-6)
    # The NumPy baselines compute in float64 whatever the dtype of X.
    for baseline in (metasp.baselines.single_task, metasp.baselines.mom, metasp.baselines.altmin):
        np.testing.assert_allclose(baseline(single, None, 2).Theta,
                                   baseline(promoted, None, 2).Theta, rtol=0, atol=1e-12)
