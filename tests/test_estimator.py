"""metasp.MetaSP: the scikit-learn estimator, with and without scikit-learn installed."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import metasp
from metasp import Tasks


def long_format(T=40, m=12, d=10, s=2, sigma=0.1, seed=0):
    """Rows of all tasks, shuffled, with a string label per task."""
    X3, y2, B, W = metasp.datasets.make_hps(T=T, m=m, d=d, s=s, sigma=sigma, random_state=seed)
    X, y = X3.reshape(-1, d), y2.reshape(-1)
    groups = np.repeat([f"task{t:03d}" for t in range(T)], m)
    order = np.random.default_rng(seed).permutation(X.shape[0])
    return X[order], y[order], groups[order], B, W


@pytest.fixture
def data():
    return long_format()


@pytest.fixture
def fitted(data):
    X, y, groups, _, _ = data
    return metasp.MetaSP(rank=2, random_state=0).fit(X, y, groups)


def test_fit_matches_the_functional_api(data, fitted):
    X, y, groups, B, _ = data
    expected = metasp.fit(Tasks.from_groups(X, y, groups), s=2, random_state=0)
    np.testing.assert_array_equal(fitted.B_, expected.B)
    np.testing.assert_array_equal(fitted.W_, expected.W)
    assert fitted.result_.status == "converged"
    assert fitted.groups_.tolist() == sorted(set(groups.tolist()))
    assert fitted.n_features_in_ == 10
    assert metasp.metrics.sin_angle(fitted.B_, B) < 0.05


def test_init_stores_arguments_verbatim_and_fit_validates():
    model = metasp.MetaSP(rank="two", shots=0, tol=-1)
    assert (model.rank, model.shots, model.tol) == ("two", 0, -1)
    X, y, groups, _, _ = long_format(T=10)
    with pytest.raises(ValueError, match="shots must be an integer >= 1"):
        model.fit(X, y, groups)
    with pytest.raises(TypeError, match="rank s must be an integer"):
        model.set_params(shots=5).fit(X, y, groups)
    with pytest.raises(ValueError, match="tol must be non-negative"):
        model.set_params(rank=2).fit(X, y, groups)
    with pytest.raises(ValueError, match="prior must be"):
        metasp.MetaSP(rank=2, prior="flat").fit(X, y, groups)
    with pytest.raises(ValueError, match="ridge must be a non-negative"):
        metasp.MetaSP(rank=2, prior="ridge", ridge=-1.0).fit(X, y, groups)


def test_fit_needs_groups(data):
    X, y, _, _, _ = data
    with pytest.raises(TypeError, match="needs groups.*metasp__groups"):
        metasp.MetaSP().fit(X, y)
    with pytest.raises(TypeError, match="needs groups.*metasp__groups"):
        metasp.MetaSP().fit_transform(X, y)


def test_bad_group_labels(data, fitted):
    X, y, groups, _, _ = data
    with_nan = np.where(np.arange(X.shape[0]) == 7, np.nan, np.arange(X.shape[0]) % 20)
    with pytest.raises(ValueError, match=r"groups has 1 missing label\(s\).*first at row 7"):
        metasp.MetaSP(rank=2).fit(X, y, with_nan)
    with_none = groups.astype(object)
    with_none[[3, 9]] = None
    with pytest.raises(ValueError, match=r"groups has 2 missing label\(s\).*first at row 3"):
        metasp.MetaSP(rank=2).fit(X, y, with_none)
    with pytest.raises(ValueError, match=r"2 missing label\(s\)"):
        fitted.predict(X, with_none)
    with pytest.raises(ValueError, match=r"2 missing label\(s\)"):
        fitted.score(X, y, with_none)
    mixed = groups.astype(object)
    mixed[:100] = 5
    with pytest.raises(TypeError, match=r"groups mixes labels of types \['int', 'str'\]"):
        metasp.MetaSP(rank=2).fit(X, y, mixed)


def test_fit_transform_and_n_iter(data, fitted):
    X, y, groups, _, _ = data
    model = metasp.MetaSP(rank=2, random_state=0)
    features = model.fit_transform(X, y, groups)
    np.testing.assert_array_equal(features, fitted.transform(X))
    np.testing.assert_array_equal(model.B_, fitted.B_)
    assert fitted.n_iter_ == fitted.result_.n_iter >= 1
    assert isinstance(fitted.n_iter_, int)


def test_transform_and_predict(data, fitted):
    X, y, groups, _, _ = data
    np.testing.assert_allclose(fitted.transform(X), X @ fitted.B_.T)
    rows = np.searchsorted(fitted.groups_, groups)
    expected = np.einsum("ij,ij->i", X, fitted.result_.Theta[rows])
    np.testing.assert_allclose(fitted.predict(X, groups), expected, rtol=1e-10, atol=1e-12)
    assert np.mean((fitted.predict(X, groups) - y) ** 2) < 0.02  # noise variance 0.01


def test_predict_refuses_unseen_groups(data, fitted):
    X, _, groups, _, _ = data
    groups = groups.copy()
    groups[:3] = ["new1", "new2", "new1"]
    with pytest.raises(ValueError, match=r"2 groups were not seen in fit \(for example 'new1', "
                                         r"'new2'\).*adapt"):
        fitted.predict(X, groups)
    with pytest.raises(ValueError, match=r"1 groups were not seen in fit \(for example 0.0\)"):
        fitted.predict(X, np.zeros(X.shape[0]))
    with pytest.raises(TypeError, match="cannot be compared with the training groups"):
        fitted.predict(X, np.zeros(X.shape[0], dtype=object))
    with pytest.raises(TypeError, match="needs groups"):
        fitted.predict(X)
    with pytest.raises(ValueError, match=r"groups must have shape \(480,\)"):
        fitted.predict(X, groups[:5])


def test_bad_designs(fitted):
    with pytest.raises(ValueError, match="X has 4 features, but MetaSP is expecting 10 features "
                                         r"as input \(d = 10 columns, as in fit\)"):
        fitted.transform(np.ones((3, 4)))
    with pytest.raises(ValueError, match="NaN or inf"):
        fitted.transform(np.full((2, 10), np.nan))
    with pytest.raises(ValueError, match=r"got shape \(10,\). Reshape your data"):
        fitted.predict(np.ones(10), fitted.groups_[:1])


def test_bad_training_data_is_reported_before_missing_groups(data):
    X, y, groups, _, _ = data
    model = metasp.MetaSP(rank=2)
    with pytest.raises(ValueError, match="requires y to be passed, but the target y is None"):
        model.fit(X, None, groups)
    with pytest.raises(ValueError, match="requires y to be passed"):
        model.fit(X, None)
    with pytest.raises(ValueError, match="Complex data not supported: X has complex dtype"):
        model.fit(X + 1j, y)
    with pytest.raises(ValueError, match="Complex data not supported: y has complex dtype"):
        model.fit(X, y + 1j, groups)
    with pytest.raises(ValueError, match=r"0 feature\(s\) \(shape=\(480, 0\)\)"):
        model.fit(X[:, :0], y)
    with pytest.raises(ValueError, match="X has 0 samples"):
        model.fit(X[:0], y[:0])
    with pytest.raises(ValueError, match=r"y must be 1-D.*\(480, 1\); pass y.ravel\(\)"):
        model.fit(X, y[:, None], groups)
    with pytest.raises(ValueError, match="X has 480 rows but y has 479 entries"):
        model.fit(X, y[1:], groups)
    with pytest.raises(ValueError, match="X contains NaN or inf"):
        model.fit(np.where(X > 2, np.nan, X), y)


def test_sparse_input_is_refused(data, fitted):
    sparse = pytest.importorskip("scipy.sparse")
    X, y, groups, _, _ = data
    for matrix in (sparse.csr_matrix(X), sparse.coo_array(X)):
        with pytest.raises(TypeError, match=r"X is a sparse \w+; metasp needs dense data: pass "
                                            r"X.toarray\(\)"):
            metasp.MetaSP(rank=2).fit(matrix, y, groups)
        with pytest.raises(TypeError, match="sparse"):
            metasp.MetaSP(rank=2).fit(matrix, y)  # before the missing groups
        with pytest.raises(TypeError, match="sparse"):
            fitted.predict(matrix, groups)
        with pytest.raises(TypeError, match="sparse"):
            fitted.transform(matrix)
    np.testing.assert_array_equal(fitted.transform(sparse.csr_matrix(X).toarray()),
                                  fitted.transform(X))


def test_object_arrays_of_numbers_are_accepted(data, fitted):
    X, y, groups, _, _ = data
    model = metasp.MetaSP(rank=2, random_state=0).fit(X.astype(object), y.astype(object), groups)
    np.testing.assert_array_equal(model.B_, fitted.B_)
    np.testing.assert_array_equal(fitted.predict(X.astype(object), groups),
                                  fitted.predict(X, groups))
    np.testing.assert_array_equal(fitted.transform(X.astype(object)), fitted.transform(X))
    assert fitted.score(X.astype(object), y.astype(object), groups) == fitted.score(X, y, groups)
    bad = X.astype(object)
    bad[3, 4] = "2.5"
    with pytest.raises(TypeError, match=r"X has dtype object, which is not numeric: its entry "
                                        r"at \[3, 4\] is '2.5' \(a str\)"):
        metasp.MetaSP(rank=2).fit(bad, y, groups)
    with pytest.raises(TypeError, match="entry at \\[3, 4\\] is '2.5'"):
        fitted.predict(bad, groups)


def test_frame_mixing_bool_and_float_columns():
    pd = pytest.importorskip("pandas")
    X, y, groups, _, _ = long_format(T=20)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(10)])
    frame["flag"] = X[:, 0] > 0  # bool next to float: to_numpy() gives an object array
    model = metasp.MetaSP(rank=2, random_state=0).fit(frame, y, groups)
    alone = metasp.MetaSP(rank=2, random_state=0).fit(frame.to_numpy(dtype=float), y, groups)
    np.testing.assert_allclose(model.B_, alone.B_)


def test_not_fitted():
    model = metasp.MetaSP()
    for call in (lambda: model.transform(np.ones((2, 3))), lambda: model.adapt(np.ones((2, 3)),
                 np.ones(2)), lambda: model.predict_new(np.ones((2, 3))),
                 lambda: model.score(np.ones((2, 3)), np.ones(2), [0, 1])):
        with pytest.raises(ValueError, match="not fitted yet") as error:
            call()
        assert isinstance(error.value, AttributeError)  # scikit-learn's NotFittedError contract


def test_adapt_and_predict_new(data, fitted):
    X_new3, y_new2, _, _ = metasp.datasets.make_hps(T=1, m=30, d=10, s=2, sigma=0.1,
                                                    random_state=5)
    with pytest.raises(ValueError, match="call adapt"):
        fitted.predict_new(X_new3[0])
    assert fitted.adapt(X_new3[0, :6], y_new2[0, :6]) is fitted
    np.testing.assert_array_equal(fitted.head_, fitted.result_.adapt(X_new3[0, :6],
                                                                     y_new2[0, :6]))
    np.testing.assert_array_equal(fitted.predict_new(X_new3[0]),
                                  fitted.result_.predict(X_new3[0], fitted.head_))
    X, y, groups, _, _ = data
    fitted.fit(X, y, groups)
    assert not hasattr(fitted, "head_")  # a refit forgets the head adapted to the old subspace


def test_prior_and_ridge_reach_adapt(data):
    X, y, groups, _, _ = data
    X_new, y_new = X[:4], y[:4] + 1.0
    model = metasp.MetaSP(rank=2, prior="ridge", ridge=3.0, random_state=0).fit(X, y, groups)
    np.testing.assert_array_equal(model.adapt(X_new, y_new).head_,
                                  model.result_.adapt(X_new, y_new, prior="ridge", ridge=3.0))
    model.set_params(prior="none", ridge=None)
    np.testing.assert_array_equal(model.adapt(X_new, y_new).head_,
                                  model.result_.adapt(X_new, y_new, prior="none"))


def r2(y, prediction):
    return 1 - np.sum((y - prediction) ** 2) / np.sum((y - y.mean()) ** 2)


def test_score_on_training_tasks_is_r2_of_predict(data, fitted):
    X, y, groups, _, _ = data
    assert fitted.score(X, y, groups) == pytest.approx(r2(y, fitted.predict(X, groups)))


def test_score_on_unseen_tasks_is_few_shot():
    X, y, groups, _, _ = long_format(T=45, m=9)
    new = np.isin(groups, [f"task{t:03d}" for t in range(40, 45)])
    fitted = metasp.MetaSP(rank=2, random_state=0).fit(X[~new], y[~new], groups[~new])
    X, y, groups = X[new], y[new], np.char.add("new", groups[new])
    support, query = [], []
    for label in np.unique(groups):
        rows = np.flatnonzero(groups == label)
        support.append(rows[:5])
        query.append(rows[5:])
    prediction = np.concatenate([
        X[q] @ fitted.B_.T @ fitted.result_.adapt(X[s], y[s]) for s, q in zip(support, query)])
    expected = r2(y[np.concatenate(query)], prediction)
    assert fitted.score(X, y, groups) == pytest.approx(expected, rel=1e-12)
    assert expected > 0.9
    with pytest.raises(ValueError, match="unseen group 'newtask040' has 9 rows; score needs "
                                         "more than shots=9"):
        fitted.set_params(shots=9).score(X, y, groups)


def test_score_constant_target(fitted):
    X = np.zeros((4, 10))
    groups = fitted.groups_[[0, 0, 1, 1]]
    assert fitted.score(X, np.zeros(4), groups) == 1.0
    assert fitted.score(X, np.ones(4), groups) == 0.0


def test_score_with_sample_weight(data, fitted):
    X, y, groups, _, _ = data
    weights = np.random.default_rng(1).uniform(0, 2, X.shape[0])
    prediction = fitted.predict(X, groups)
    mean = np.average(y, weights=weights)
    expected = 1 - np.sum(weights * (y - prediction) ** 2) / np.sum(weights * (y - mean) ** 2)
    assert fitted.score(X, y, groups, sample_weight=weights) == pytest.approx(expected, rel=1e-12)
    assert fitted.score(X, y, groups, sample_weight=weights) != fitted.score(X, y, groups)
    assert fitted.score(X, y, groups, sample_weight=np.ones(X.shape[0])) == pytest.approx(
        fitted.score(X, y, groups), rel=1e-12)
    assert fitted.score(X, y, groups, sample_weight=3.0) == pytest.approx(
        fitted.score(X, y, groups), rel=1e-12)
    for bad, match in ((weights[:5], r"sample_weight must have shape \(480,\)"),
                       (-weights, "negative entries"), (np.zeros(X.shape[0]), "zero on every"),
                       (np.full(X.shape[0], np.nan), "NaN or inf")):
        with pytest.raises(ValueError, match=match):
            fitted.score(X, y, groups, sample_weight=bad)


def test_score_with_sample_weight_on_unseen_tasks():
    """The weights of the rows that adapt a head are not used: those rows are not scored."""
    X, y, groups, _, _ = long_format(T=45, m=9)
    new = np.isin(groups, [f"task{t:03d}" for t in range(40, 45)])
    fitted = metasp.MetaSP(rank=2, random_state=0).fit(X[~new], y[~new], groups[~new])
    X, y, groups = X[new], y[new], groups[new]
    weights = np.ones(X.shape[0])
    for label in np.unique(groups):
        weights[np.flatnonzero(groups == label)[:5]] = 1e6  # support rows
    assert fitted.score(X, y, groups, sample_weight=weights) == pytest.approx(
        fitted.score(X, y, groups), rel=1e-12)


def test_get_and_set_params():
    model = metasp.MetaSP(rank=4, tol=1e-6)
    params = model.get_params()
    assert params["rank"] == 4 and params["tol"] == 1e-6 and params["shots"] == 5
    assert set(params) == {"rank", "prior", "ridge", "shots", "heads", "step", "max_iter", "tol",
                           "n_jobs", "random_state"}
    assert model.set_params(rank=2, prior="none") is model
    assert (model.rank, model.prior) == (2, "none")
    with pytest.raises(ValueError, match="(?i)invalid parameter"):
        model.set_params(colour="red")


def test_import_metasp_does_not_import_the_estimator():
    code = "import sys, metasp; print('metasp.estimator' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "False"


def test_works_without_scikit_learn():
    code = textwrap.dedent("""
        import sys
        sys.modules["sklearn"] = None  # as if scikit-learn were not installed
        import numpy as np
        import metasp
        X3, y2, B, W = metasp.datasets.make_hps(T=30, m=10, d=8, s=2, random_state=0)
        X, y, groups = X3.reshape(-1, 8), y2.reshape(-1), np.repeat(np.arange(30), 10)
        model = metasp.MetaSP(rank=2, random_state=0)
        assert metasp.MetaSP.__mro__[1].__name__ == "_ParamsBase"
        assert repr(model) == "MetaSP(random_state=0, rank=2)", repr(model)
        clone = type(model)(**model.get_params())
        assert clone.get_params() == model.get_params()
        assert model.set_params(tol=1e-8) is model and model.tol == 1e-8
        try:
            model.set_params(colour=1)
        except ValueError as error:
            assert "invalid parameter 'colour'" in str(error)
        try:
            model.predict(X, groups)
        except ValueError as error:
            assert isinstance(error, AttributeError) and "not fitted" in str(error)
        model.fit(X, y, groups)
        assert np.allclose(model.predict(X, groups), y)
        assert model.score(X, y, groups) > 0.999
        assert model.n_iter_ >= 1
        np.testing.assert_array_equal(model.fit_transform(X, y, groups), model.transform(X))
        import pandas as pd
        frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(8)])
        model.fit(frame, y, groups)
        try:
            model.predict(frame.iloc[:, ::-1], groups)
        except ValueError as error:
            assert "same order" in str(error)
        else:
            raise AssertionError("reordered columns were accepted")
        print("ok", "sklearn" in sys.modules and sys.modules["sklearn"] is not None)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "ok False"


def test_frame_columns_must_match_fit():
    pd = pytest.importorskip("pandas")
    X, y, groups, _, _ = long_format(T=20)
    names = [f"x{i}" for i in range(10)]
    frame = pd.DataFrame(X, columns=names)
    model = metasp.MetaSP(rank=2, random_state=0).fit(frame, y, groups)
    assert model.feature_names_in_.dtype == object
    assert model.feature_names_in_.tolist() == names
    expected = model.predict(frame, groups)
    with pytest.raises(TypeError, match="needs groups"):  # a failed refit changes nothing
        model.fit(pd.DataFrame(X[:, ::-1]), y)
    assert model.feature_names_in_.tolist() == names
    reordered = frame[names[::-1]]
    calls = {
        "predict": lambda X: model.predict(X, groups), "transform": model.transform,
        "score": lambda X: model.score(X, y, groups), "adapt": lambda X: model.adapt(X, y),
        "predict_new": model.predict_new,
    }
    for call in calls.values():
        with pytest.raises(ValueError, match=r"(?s)should match those that were passed during "
                                             r"fit.*must be in the same order.*"
                                             r"X\[model.feature_names_in_\]"):
            call(reordered)
        call(frame)  # the columns of fit, in order: no warning (warnings are errors here)
    np.testing.assert_array_equal(model.predict(reordered[model.feature_names_in_], groups),
                                  expected)
    renamed = frame.rename(columns={"x3": "x3b"})
    with pytest.raises(ValueError, match=r"unseen at fit time:\n- x3b\n.*yet now missing:\n- x3"
                                         r"\n"):
        model.predict(renamed, groups)
    with pytest.raises(ValueError, match=r"yet now missing:\n- x8\n- x9\n"):
        model.transform(frame[names[:8]])
    with pytest.warns(UserWarning, match="X does not have valid feature names, but MetaSP was "
                                         "fitted with feature names"):
        np.testing.assert_array_equal(model.predict(X, groups), expected)
    # Fitted on an array: a frame gets a warning, and the names from before are forgotten.
    model.fit(X, y, groups)
    assert not hasattr(model, "feature_names_in_")
    with pytest.warns(UserWarning, match="X has feature names, but MetaSP was fitted without"):
        model.predict(frame, groups)
    # Column names that are not all strings are not feature names, as in scikit-learn.
    model.fit(pd.DataFrame(X), y, groups)
    assert not hasattr(model, "feature_names_in_")
    with pytest.raises(TypeError, match="only supported if all input features have string names"):
        model.fit(frame.rename(columns={"x0": 0}), y, groups)


# --- with scikit-learn -------------------------------------------------------------------------


def test_sklearn_tags():
    pytest.importorskip("sklearn", minversion="1.6")
    from sklearn.utils import get_tags

    tags = get_tags(metasp.MetaSP())
    assert tags.estimator_type == "regressor"
    assert tags.transformer_tags is not None and tags.regressor_tags is not None
    assert tags.target_tags.required
    assert not tags.input_tags.sparse and not tags.input_tags.allow_nan


def test_clone_and_repr():
    sklearn_base = pytest.importorskip("sklearn.base")
    model = metasp.MetaSP(rank=2, shots=3)
    copy = sklearn_base.clone(model)
    assert copy is not model and copy.get_params() == model.get_params()
    assert repr(model) == "MetaSP(rank=2, shots=3)"
    assert sklearn_base.is_regressor(model)


def test_in_a_pipeline_after_a_scaler(data):
    pytest.importorskip("sklearn")
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y, groups, _, _ = data
    X = X * np.arange(1, 11) + 5.0  # features on different scales
    pipe = make_pipeline(StandardScaler(), metasp.MetaSP(rank=2, random_state=0))
    pipe.fit(X, y, metasp__groups=groups)
    scaled = StandardScaler().fit_transform(X)
    alone = metasp.MetaSP(rank=2, random_state=0).fit(scaled, y, groups)
    np.testing.assert_allclose(pipe.predict(X, groups=groups), alone.predict(scaled, groups),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(pipe.transform(X), alone.transform(scaled), rtol=1e-10,
                               atol=1e-12)


def test_as_a_transformer_before_a_regressor(data):
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline

    X, y, groups, _, _ = data
    pipe = make_pipeline(metasp.MetaSP(rank=2, random_state=0), LinearRegression())
    pipe.fit(X, y, metasp__groups=groups)
    features = pipe[0].transform(X)
    assert features.shape == (X.shape[0], 2)
    np.testing.assert_allclose(pipe.predict(X), LinearRegression().fit(features, y)
                               .predict(features), rtol=1e-10)


@pytest.mark.filterwarnings("ignore::metasp.ConvergenceWarning")
def test_grid_search_over_groups_finds_the_rank():
    """GroupKFold holds out whole tasks; score adapts each on 4 shots and scores the rest.

    With least-squares heads (prior="none") every extra dimension costs on 4 shots, so the
    true rank 2 wins (it did on 10 of 10 data seeds, by 0.056 to 0.39 in R^2). With the
    default empirical prior, extra dimensions cost almost nothing, but too few still do.
    """
    sklearn = pytest.importorskip("sklearn")
    from sklearn.model_selection import GridSearchCV, GroupKFold

    X, y, groups, _, _ = long_format(T=90, m=16, d=10, s=2, sigma=0.2, seed=0)
    with sklearn.config_context(enable_metadata_routing=True):
        for prior in ("none", None):
            model = metasp.MetaSP(prior=prior, shots=4, tol=1e-8, random_state=0)
            model.set_fit_request(groups=True).set_score_request(groups=True)
            search = GridSearchCV(model, {"rank": [1, 2, 3, 4]}, cv=GroupKFold(3))
            search.fit(X, y, groups=groups)
            scores = search.cv_results_["mean_test_score"]
            assert np.isfinite(scores).all()
            assert scores[1] > scores[0] + 0.1  # rank 1 misses a direction
            if prior == "none":
                assert search.best_params_ == {"rank": 2}
                assert scores[1] > max(scores[2], scores[3]) + 0.02
            assert search.best_estimator_.rank == search.best_params_["rank"]


@pytest.mark.filterwarnings("ignore::metasp.ConvergenceWarning")
@pytest.mark.filterwarnings("ignore::metasp.DiagnosticWarning")  # rank 1 is too small
def test_grid_search_over_a_pipeline_scores_every_candidate():
    """Pipeline.score hands MetaSP.score a sample_weight; groups reach it by routing.

    Before scikit-learn 1.8, GridSearchCV's default scorer routes only what the Pipeline
    itself requests, so groups never reach MetaSP.score (scikit-learn PR 31898).
    """
    sklearn = pytest.importorskip("sklearn", minversion="1.8")
    from sklearn.model_selection import GridSearchCV, GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y, groups, _, _ = long_format(T=60, m=16, d=10, s=2, sigma=0.2, seed=0)
    X = X * np.arange(1, 11) + 3.0
    with sklearn.config_context(enable_metadata_routing=True):
        model = metasp.MetaSP(prior="none", shots=4, tol=1e-8, random_state=0)
        model.set_fit_request(groups=True).set_score_request(groups=True)
        search = GridSearchCV(make_pipeline(StandardScaler(), model),
                              {"metasp__rank": [1, 2, 3]}, cv=GroupKFold(3))
        search.fit(X, y, groups=groups)
        scores = search.cv_results_["mean_test_score"]
        assert np.isfinite(scores).all(), scores
        assert search.best_params_ == {"metasp__rank": 2}
        assert scores[1] > scores[0] + 0.1
        # The search's score is MetaSP's few-shot score of the scaled data.
        train, test = next(GroupKFold(3).split(X, y, groups))
        pipe = make_pipeline(StandardScaler(), metasp.MetaSP(rank=2, prior="none", shots=4,
                                                             tol=1e-8, random_state=0)
                             .set_fit_request(groups=True).set_score_request(groups=True))
        pipe.fit(X[train], y[train], groups=groups[train])
        scaled = pipe[0].transform(X[test])
        assert search.cv_results_["split0_test_score"][1] == pytest.approx(
            pipe.score(X[test], y[test], groups=groups[test]), rel=1e-12)
        assert pipe.score(X[test], y[test], groups=groups[test]) == pytest.approx(
            pipe[-1].score(scaled, y[test], groups[test]), rel=1e-12)
        # sample_weight reaches MetaSP.score once requested.
        pipe[-1].set_score_request(sample_weight=True)
        weights = np.linspace(0.5, 2, test.size)
        assert pipe.score(X[test], y[test], groups=groups[test],
                          sample_weight=weights) == pytest.approx(
            pipe[-1].score(scaled, y[test], groups[test], weights), rel=1e-12)


def test_grid_search_without_routing_says_how_to_route_groups(data):
    pytest.importorskip("sklearn")
    from sklearn.model_selection import GridSearchCV, GroupKFold

    X, y, groups, _, _ = data
    search = GridSearchCV(metasp.MetaSP(), {"rank": [1, 2]}, cv=GroupKFold(2))
    with pytest.raises(ValueError, match="(?s)All the 4 fits failed.*enable metadata routing"):
        search.fit(X, y, groups=groups)
