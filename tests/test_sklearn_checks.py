"""scikit-learn's own estimator checks on metasp.MetaSP.

scikit-learn's checks call ``fit(X, y)`` without groups, which MetaSP refuses. They run twice:

- on ``MetaSP`` itself, where the checks that fit are expected failures (their list and
  reason come from ``metasp.estimator``), and the others (cloning, tags, parameters, bad data:
  sparse, complex, empty, ``y=None``) must pass;
- on ``MetaSPOneTask``, which gives every row the same task when no groups are passed, so
  that the rest of the contract (fit_transform, n_iter_, n_features_in_, pickling,
  idempotence, dtypes, object and read-only input) is checked by scikit-learn too.
"""

import inspect

import numpy as np
import pytest

import metasp

estimator_checks = pytest.importorskip("sklearn.utils.estimator_checks")
from metasp.estimator import _sklearn_expected_failed_checks  # noqa: E402  (needs scikit-learn)

ONE_TASK_EXPECTED_FAILURES = {
    "check_supervised_y_2d": "a column-vector y is refused with an error that says to pass "
                             "y.ravel(), rather than raveled with a DataConversionWarning",
}


def _one_task(X) -> np.ndarray:
    """One task label for every row of ``X``; ``X`` may be anything the checks pass."""
    shape = X.shape if hasattr(X, "shape") else np.asarray(X).shape
    return np.zeros(shape[0] if shape else 0)


class MetaSPOneTask(metasp.MetaSP):
    """MetaSP with all rows in one task when no groups are given (rank 1 at most)."""

    def fit(self, X, y, groups=None):
        return super().fit(X, y, _one_task(X) if groups is None else groups)

    def predict(self, X, groups=None):
        return super().predict(X, _one_task(X) if groups is None else groups)

    def score(self, X, y, groups=None, sample_weight=None):
        return super().score(X, y, _one_task(X) if groups is None else groups, sample_weight)

    # Both tag methods, as scikit-learn asks of a class that supports versions before and
    # after 1.6: only the expected failures differ from MetaSP's.
    def __sklearn_tags__(self):
        return super().__sklearn_tags__()

    def _more_tags(self) -> dict:
        return {**super()._more_tags(), "_xfail_checks": ONE_TASK_EXPECTED_FAILURES}


def parametrize_with_checks(estimator, expected: dict):
    """``parametrize_with_checks`` with expected failures, as the installed version takes them.

    scikit-learn >= 1.6 takes them as an argument; older versions read the ``_xfail_checks``
    tag of ``_more_tags``, which gives the same lists.
    """
    parameters = inspect.signature(estimator_checks.parametrize_with_checks).parameters
    if "expected_failed_checks" in parameters:
        mark = estimator_checks.parametrize_with_checks(
            [estimator], expected_failed_checks=lambda _: expected).mark
    else:
        mark = estimator_checks.parametrize_with_checks([estimator]).mark
    # Older versions parametrize with a generator, which recent pytest deprecates.
    names, values = mark.args
    return pytest.mark.parametrize(names, list(values), **mark.kwargs)


@parametrize_with_checks(metasp.MetaSP(), _sklearn_expected_failed_checks())
def test_sklearn_checks(estimator, check):
    check(estimator)


@parametrize_with_checks(MetaSPOneTask(rank=1, random_state=0), ONE_TASK_EXPECTED_FAILURES)
def test_sklearn_checks_on_one_task(estimator, check):
    check(estimator)


def test_check_estimator_runs_to_the_end():
    if "expected_failed_checks" not in inspect.signature(
            estimator_checks.check_estimator).parameters:
        pytest.skip("scikit-learn < 1.6 reads the expected failures from the tags")
    results = estimator_checks.check_estimator(
        metasp.MetaSP(), expected_failed_checks=_sklearn_expected_failed_checks(), on_skip=None)
    status = {result["check_name"]: result["status"] for result in results}
    assert "failed" not in status.values()
    assert status["check_estimators_unfitted"] == "passed"
    assert status["check_estimator_sparse_array"] == "passed"
    assert status["check_requires_y_none"] == "passed"
    assert status["check_fit_score_takes_y"] == "xfail"


def test_data_frame_column_names():
    pytest.importorskip("pandas")
    estimator_checks.check_dataframe_column_names_consistency(
        "MetaSPOneTask", MetaSPOneTask(rank=1, random_state=0))
