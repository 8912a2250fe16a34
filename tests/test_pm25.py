"""The built-in Beijing PM2.5 data: integrity, counts, encoding and scaling."""

import hashlib
import re
from importlib import resources

import numpy as np
import pytest

from metasp.datasets import PM25_FEATURES, PM25_SHA256, load_beijing_pm25


@pytest.fixture(scope="module")
def pm25():
    return load_beijing_pm25()


def test_file_matches_the_sha256_in_the_data_readme():
    data_dir = resources.files("metasp").joinpath("data")
    readme = data_dir.joinpath("README.md").read_text()
    published = re.search(r"sha256: ([0-9a-f]{64})", readme).group(1)
    actual = hashlib.sha256(data_dir.joinpath("beijing_pm25.csv.gz").read_bytes()).hexdigest()
    assert actual == published == PM25_SHA256
    assert "CC BY 4.0" in readme and "Liang" in readme
    assert "Creative Commons Attribution 4.0" in data_dir.joinpath("LICENSE").read_text()


def test_day_tasks_counts(pm25):
    tasks = pm25.tasks
    assert tasks.n_tasks == 1571
    assert (tasks.task_sizes == 24).all()
    assert tasks.n_samples == 1571 * 24
    assert tasks.n_features == len(pm25.feature_names) == 10
    assert pm25.feature_names == PM25_FEATURES == tasks.feature_names
    assert pm25.days.dtype == np.dtype("datetime64[D]")
    assert (np.diff(pm25.days) > np.timedelta64(0, "D")).all()  # distinct days, in order
    assert pm25.days[0] == np.datetime64("2010-01-02")
    assert pm25.days[-1] <= np.datetime64("2014-12-31")
    np.testing.assert_array_equal(tasks.labels, pm25.days)
    assert "CC BY 4.0" in pm25.description and "Liang" in pm25.description


def test_encoding_has_an_intercept_standardised_columns_and_no_collinearity(pm25):
    X = pm25.tasks.X
    np.testing.assert_array_equal(X[:, 0], 1.0)
    np.testing.assert_allclose(X[:, 1:].mean(axis=0), 0, atol=1e-10)
    np.testing.assert_allclose(X[:, 1:].std(axis=0), 1, rtol=1e-10)
    assert np.linalg.matrix_rank(X) == X.shape[1]  # no dummy collinear with the intercept
    wind = X[:, 7:] * pm25.feature_scale[7:] + pm25.feature_mean[7:]
    np.testing.assert_allclose(np.round(wind), wind, atol=1e-10)  # 0/1 dummies
    directions = np.round(wind).sum(axis=1)
    assert directions.max() == 1  # at most one direction; "cv" (calm) is all zeros
    assert (directions == 0).any()


def test_target_and_features_match_the_raw_table(pm25):
    pytest.importorskip("pandas")
    frame = load_beijing_pm25(return_frame=True).frame
    assert frame.shape == (43824, 13)
    assert int(frame["pm2.5"].isna().sum()) == 2067
    date = frame["year"].astype(str) + "-" + frame["month"].map("{:02d}".format) + "-" + \
        frame["day"].map("{:02d}".format)
    day = frame[date == "2012-07-09"]
    t = int(np.flatnonzero(pm25.days == np.datetime64("2012-07-09"))[0])
    X, y = pm25.tasks[t]
    np.testing.assert_allclose(y, np.log1p(day["pm2.5"].to_numpy()))
    np.testing.assert_allclose(X[:, 2] * pm25.feature_scale[2] + pm25.feature_mean[2],
                               day["TEMP"].to_numpy())
    np.testing.assert_allclose(np.expm1(X[:, 4] * pm25.feature_scale[4] + pm25.feature_mean[4]),
                               day["Iws"].to_numpy())


def test_return_frame_must_be_a_bool():
    with pytest.raises(TypeError, match="return_frame"):
        load_beijing_pm25(return_frame="yes")
