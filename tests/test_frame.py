"""Tasks.from_frame: long-format pandas data in, tasks out; nothing is dropped silently."""

import sys

import numpy as np
import pytest

import metasp
from metasp import Tasks

pd = pytest.importorskip("pandas")


@pytest.fixture
def frame():
    """Three stations with 3, 2 and 4 rows, deliberately not sorted by station."""
    return pd.DataFrame({
        "station": ["b", "a", "b", "c", "a", "c", "b", "c", "c"],
        "temp": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
        "rain": [0, 1, 0, 1, 1, 0, 0, 1, 0],
        "windy": [True, False, True, False, False, True, True, False, True],
        "pm25": [10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0, 18.0],
    })


def test_matches_from_groups(frame):
    tasks = Tasks.from_frame(frame, group="station", target="pm25")
    expected = Tasks.from_groups(frame[["temp", "rain", "windy"]].to_numpy(dtype=float),
                                 frame["pm25"].to_numpy(), frame["station"].to_numpy())
    np.testing.assert_array_equal(tasks.X, expected.X)
    np.testing.assert_array_equal(tasks.y, expected.y)
    np.testing.assert_array_equal(tasks.offsets, expected.offsets)
    assert tasks.labels.tolist() == ["a", "b", "c"]
    assert tasks.feature_names == ("temp", "rain", "windy")
    assert tasks.task_sizes.tolist() == [2, 3, 4]
    # Task "a" holds rows 1 and 4 of the frame, in their original order.
    X_a, y_a = tasks[0]
    np.testing.assert_array_equal(y_a, [11.0, 14.0])
    np.testing.assert_array_equal(X_a[:, 0], [2.0, 5.0])


def test_explicit_features_keep_their_order(frame):
    tasks = Tasks.from_frame(frame, "station", "pm25", features=["rain", "temp"])
    assert tasks.feature_names == ("rain", "temp")
    np.testing.assert_array_equal(tasks[0][0], [[1.0, 2.0], [1.0, 5.0]])
    single = Tasks.from_frame(frame, "station", "pm25", features="temp")
    assert single.feature_names == ("temp",) and single.n_features == 1


def test_fit_runs_on_frame_tasks(frame):
    rng = np.random.default_rng(0)
    n = 400
    df = pd.DataFrame(rng.standard_normal((n, 4)), columns=list("abcd"))
    df["task"] = rng.integers(0, 20, n)
    theta = rng.standard_normal((20, 1)) * rng.standard_normal((1, 4))  # rank 1
    df["y"] = np.einsum("ij,ij->i", df[list("abcd")].to_numpy(), theta[df["task"]])
    result = metasp.fit(Tasks.from_frame(df, "task", "y"), s=1, random_state=0)
    assert result.status == "converged"
    assert result.history["loss"][-1] < 1e-12


def test_non_numeric_columns_left_out_with_a_warning(frame):
    frame["name"] = ["x"] * len(frame)
    frame["day"] = pd.Timestamp("2024-01-01")
    with pytest.warns(UserWarning, match=r"left out non-numeric columns \['name', 'day'\]"):
        tasks = Tasks.from_frame(frame, "station", "pm25")
    assert tasks.feature_names == ("temp", "rain", "windy")


def test_non_numeric_feature_listed_is_an_error(frame):
    frame["name"] = ["x"] * len(frame)
    frame["kind"] = pd.Categorical(["u", "v"] * 4 + ["u"])
    with pytest.raises(TypeError, match=r"not numeric.*'name'.*'kind'.*get_dummies"):
        Tasks.from_frame(frame, "station", "pm25", features=["temp", "name", "kind"])


def test_non_numeric_target_is_an_error(frame):
    frame["pm25"] = frame["pm25"].astype(str)
    with pytest.raises(TypeError, match="target column 'pm25'.*to_numeric"):
        Tasks.from_frame(frame, "station", "pm25")


def test_missing_values_raise_by_default(frame):
    frame.loc[0, "temp"] = np.nan
    frame.loc[3, "pm25"] = np.nan
    frame.loc[5, "temp"] = np.nan
    with pytest.raises(ValueError, match=r"3 of 9 rows have missing values.*'pm25': 1, 'temp': 2"
                                         r".*dropna=True"):
        Tasks.from_frame(frame, "station", "pm25")


def test_dropna_drops_rows_and_reports(frame):
    frame.loc[0, "temp"] = np.nan
    frame.loc[3, "station"] = None
    with pytest.warns(UserWarning, match=r"dropped 2 of 9 rows with missing values"):
        tasks = Tasks.from_frame(frame, "station", "pm25", dropna=True)
    assert tasks.task_sizes.tolist() == [2, 2, 3]
    assert tasks.n_samples == 7
    # Only the columns in use count: a gap in an unused column drops nothing.
    # A copy, not a view of the filtered frame: pandas < 3 warns when a view is assigned to.
    frame = frame.dropna().copy()
    frame["notes"] = [np.nan] * len(frame)
    tasks = Tasks.from_frame(frame, "station", "pm25", features=["temp"])
    assert tasks.n_samples == 7


def test_nullable_dtypes(frame):
    frame["rain"] = frame["rain"].astype("Int64")
    frame.loc[2, "rain"] = pd.NA
    with pytest.raises(ValueError, match="1 of 9 rows have missing values"):
        Tasks.from_frame(frame, "station", "pm25")
    with pytest.warns(UserWarning, match="dropped 1 of 9 rows"):
        tasks = Tasks.from_frame(frame, "station", "pm25", dropna=True)
    assert tasks.X.dtype == np.float64 and tasks.n_samples == 8


def test_small_tasks_dropped_with_a_report(frame):
    with pytest.warns(UserWarning, match=r"dropped 2 of 3 tasks with fewer than min_samples=4 "
                                         r"rows \(5 rows in all"):
        tasks = Tasks.from_frame(frame, "station", "pm25", min_samples=4)
    assert tasks.labels.tolist() == ["c"]
    assert tasks.task_sizes.tolist() == [4]
    with pytest.raises(ValueError, match="no rows are left"), pytest.warns(UserWarning):
        Tasks.from_frame(frame, "station", "pm25", min_samples=5)


def test_infinite_values_are_an_error(frame):
    frame.loc[4, "temp"] = np.inf
    with pytest.raises(ValueError, match=r"\['temp'\] contain infinite values"):
        Tasks.from_frame(frame, "station", "pm25")


@pytest.mark.parametrize("kwargs, error, match", [
    ({"group": "site"}, ValueError, "group column 'site' is not in df"),
    ({"target": "no2"}, ValueError, "target column 'no2' is not in df"),
    ({"target": "station"}, ValueError, "same column"),
    ({"features": ["temp", "wind"]}, ValueError, r"\['wind'\] are not in df"),
    ({"features": ["temp", "temp"]}, ValueError, "more than once"),
    ({"features": ["temp", "pm25"]}, ValueError, "target column 'pm25' cannot also be a feature"),
    ({"features": []}, ValueError, "features is empty"),
    ({"min_samples": 0}, ValueError, "min_samples must be an integer >= 1"),
    ({"min_samples": 2.5}, ValueError, "min_samples must be an integer >= 1"),
    ({"dropna": "yes"}, TypeError, "dropna must be True or False"),
])
def test_bad_arguments(frame, kwargs, error, match):
    arguments = {"group": "station", "target": "pm25", **kwargs}
    with pytest.raises(error, match=match):
        Tasks.from_frame(frame, **arguments)


def test_not_a_frame():
    with pytest.raises(TypeError, match="must be a pandas DataFrame.*from_groups"):
        Tasks.from_frame(np.ones((3, 3)), 0, 1)


def test_duplicated_columns(frame):
    frame.columns = ["station", "temp", "temp", "windy", "pm25"]
    with pytest.raises(ValueError, match=r"duplicated column labels \['temp'\]"):
        Tasks.from_frame(frame, "station", "pm25")


def test_only_non_numeric_features(frame):
    frame = frame[["station", "pm25"]].assign(name="x")
    with pytest.raises(ValueError, match="no numeric feature columns"), pytest.warns(UserWarning):
        Tasks.from_frame(frame, "station", "pm25")


def test_feature_names_length_is_checked():
    with pytest.raises(ValueError, match="one entry per column of X"):
        Tasks(np.ones((2, 3)), np.ones(2), [0, 2], feature_names=["a", "b"])


def test_without_pandas_the_error_names_the_extra(monkeypatch, frame):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r'pip install "metasp\[pandas\]"'):
        Tasks.from_frame(frame, "station", "pm25")


def test_group_column_of_mixed_types_is_named(frame):
    frame["station"] = frame["station"].astype(object)
    frame.loc[[0, 2], "station"] = 7
    with pytest.raises(TypeError, match=r"groups mixes labels of types \['int', 'str'\], which "
                                        r"cannot be sorted together"):
        Tasks.from_frame(frame, "station", "pm25")
    frame["station"] = frame["station"].astype(str)
    assert Tasks.from_frame(frame, "station", "pm25").labels.tolist() == ["7", "a", "b", "c"]


def test_missing_groups_are_refused_like_from_groups(frame):
    frame.loc[3, "station"] = None
    with pytest.raises(ValueError, match=r"1 of 9 rows have missing values.*'station': 1"):
        Tasks.from_frame(frame, "station", "pm25")
    groups = frame["station"].to_numpy()
    with pytest.raises(ValueError, match=r"groups has 1 missing label\(s\).*first at row 3"):
        Tasks.from_groups(frame[["temp"]].to_numpy(), frame["pm25"].to_numpy(), groups)
