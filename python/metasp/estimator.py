"""A scikit-learn estimator over :func:`metasp.fit`: ``MetaSP(rank).fit(X, y, groups)``.

With scikit-learn installed, :class:`MetaSP` subclasses ``sklearn.base.BaseEstimator`` and
``RegressorMixin``, so ``clone``, ``Pipeline``, ``GridSearchCV``, metadata routing
(``set_fit_request``) and the HTML repr all work as for any scikit-learn regressor. Without
scikit-learn, a small base class gives the same ``get_params`` / ``set_params`` conventions, and
everything else works the same. The choice is made once, when this module is imported; ``import
metasp`` defers that import until ``metasp.MetaSP`` is first used, because importing
scikit-learn takes about a second.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np

from ._arrays import check_finite, is_integer, numeric_array
from ._solver import fit
from ._tasks import Tasks, refuse_missing_labels, unique_labels

__all__ = ["MetaSP"]


class _ParamsBase:
    """``get_params`` / ``set_params`` with scikit-learn's conventions, for use without it."""

    @classmethod
    def _get_param_names(cls) -> list[str]:
        parameters = inspect.signature(cls.__init__).parameters.values()
        return sorted(p.name for p in parameters if p.name != "self")

    def get_params(self, deep=True) -> dict:
        """The constructor arguments, by name (``deep`` is accepted for compatibility)."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        """Set constructor arguments by name; returns the estimator."""
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for {type(self).__name__}; "
                                 f"valid parameters are {valid}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = inspect.signature(type(self).__init__).parameters
        changed = [f"{name}={value!r}" for name, value in self.get_params().items()
                   if value is not defaults[name].default and value != defaults[name].default]
        return f"{type(self).__name__}({', '.join(changed)})"


try:
    from sklearn.base import BaseEstimator, RegressorMixin
    from sklearn.exceptions import NotFittedError

    _BASES: tuple = (RegressorMixin, BaseEstimator)
except ImportError:
    _BASES = (_ParamsBase,)

    class NotFittedError(ValueError, AttributeError):
        """The estimator is used before ``fit`` (scikit-learn's exception, when installed)."""


def _feature_names(X):
    """The column names of a data frame ``X`` as an object array, or None.

    As in scikit-learn: names are kept only when every column name is a string; a mix of
    strings and other types is a ``TypeError``, other names (integers, say) are ignored.
    """
    columns = getattr(X, "columns", None)
    if columns is None:
        return None
    names = np.asarray(list(columns), dtype=object)
    types = sorted({type(name).__qualname__ for name in names})
    if len(types) > 1 and "str" in types:
        raise TypeError(
            "Feature names are only supported if all input features have string names, but "
            f"your input has {types} as feature name / column name types. Convert them all to "
            "strings (X.columns = X.columns.astype(str)), or to another type to use no names"
        )
    return names if types == ["str"] else None


def _real_array(values, name: str) -> np.ndarray:
    """``numeric_array``, with scikit-learn's ``ValueError`` for complex data."""
    try:
        return numeric_array(values, name)
    except TypeError:
        try:
            is_complex = np.iscomplexobj(values)
        except (TypeError, ValueError):  # ragged lists and the like: keep the first error
            is_complex = False
        if is_complex:
            raise ValueError(f"Complex data not supported: {name} has complex dtype; MetaSP "
                             f"fits real-valued regressions. Pass np.real({name}), or the real "
                             "and imaginary parts as separate features") from None
        raise


def _listed(names) -> str:
    shown = [f"- {name}\n" for name in names[:5]]
    return "".join(shown) + ("- ...\n" if len(names) > 5 else "")


def _sklearn_expected_failed_checks() -> dict:
    """scikit-learn estimator checks that cannot pass, by name, with the reason.

    Those checks call ``fit(X, y)`` without ``groups``; :meth:`MetaSP.fit` refuses that with a
    ``TypeError``, rather than fit a single task that the caller did not ask for. Pass this to
    ``check_estimator(..., expected_failed_checks=...)`` (scikit-learn >= 1.6); older versions
    read it from the ``_xfail_checks`` tag.
    """
    reason = ("fits without groups, which MetaSP refuses: the rows of every task must be "
              "labelled with fit(X, y, groups)")
    names = [
        "check_fit_score_takes_y", "check_estimators_overwrite_params",
        "check_dont_overwrite_parameters", "check_estimators_fit_returns_self",
        "check_readonly_memmap_input", "check_n_features_in_after_fitting",
        "check_positive_only_tag_during_fit", "check_estimators_dtypes", "check_dtype_object",
        "check_pipeline_consistency", "check_estimators_nan_inf", "check_estimators_pickle",
        "check_f_contiguous_array_estimator", "check_regressors_train",
        "check_regressor_data_not_an_array", "check_regressors_no_decision_function",
        "check_supervised_y_2d", "check_regressors_int",
        "check_non_transformer_estimators_n_iter", "check_transformer_data_not_an_array",
        "check_transformer_general", "check_transformer_preserve_dtypes",
        "check_transformer_n_iter", "check_methods_sample_order_invariance",
        "check_methods_subset_invariance", "check_fit2d_1sample", "check_fit2d_1feature",
        "check_dict_unchanged", "check_fit_idempotent", "check_fit_check_is_fitted",
        "check_n_features_in", "check_fit2d_predict1d",
    ]
    return dict.fromkeys(names, reason)


class MetaSP(*_BASES):
    """Meta Subspace Pursuit as a scikit-learn estimator, on long-format data.

    Rows of ``X`` are samples; ``groups`` says which task (station, school, patient, day) each
    row belongs to. :meth:`fit` learns the shared subspace ``B_`` (``rank`` x d) and one head
    per training task; :meth:`transform` gives the subspace features ``X @ B_.T``;
    :meth:`predict` predicts rows of training tasks; :meth:`adapt` and :meth:`predict_new` fit
    and use the head of a new task from a few of its samples.

    ``groups`` is required: ``fit(X, y)`` without it is a ``TypeError`` that says how to pass
    it, rather than a fit that treats all rows as one task. A forgotten ``groups`` (a Pipeline
    or a search without metadata routing) would otherwise fit a model nobody asked for, and a
    single task cannot support a subspace of rank above 1. ``X`` and ``y`` are checked first,
    so that bad data (sparse, complex, NaN, ``y=None``) is reported as such in any case.

    Parameters
    ----------
    rank : int, default 3
        Dimension s of the shared subspace.
    prior : {"empirical", "ridge", "none"} or None, default None
        How :meth:`adapt` and :meth:`score` fit the head of a new task; see
        :meth:`metasp.MetaSPResult.adapt` (``None``: ``"empirical"``, or ``"ridge"`` when
        ``ridge`` is given).
    ridge : float or None, default None
        Ridge strength for ``prior="ridge"``.
    shots : int, default 5
        Samples of each unseen task that :meth:`score` uses to adapt its head (the first
        ``shots`` rows of the task, in the order given); the remaining rows are scored.
    heads, step, max_iter, tol, n_jobs, random_state
        Passed to :func:`metasp.fit`.

    Attributes
    ----------
    result_ : MetaSPResult
        The fit, with everything :func:`metasp.fit` returns.
    B_ : ndarray of shape (rank, n_features_in_)
        Orthonormal basis (rows) of the shared subspace.
    W_ : ndarray of shape (n_tasks, rank)
        Heads of the training tasks, in the order of ``groups_``.
    groups_ : ndarray of shape (n_tasks,)
        The training task labels, sorted.
    n_features_in_ : int
        Number of features seen in :meth:`fit`.
    feature_names_in_ : ndarray of shape (n_features_in_,), dtype object
        Column names of ``X`` in :meth:`fit`, set only when ``X`` was a data frame whose column
        names are all strings. A data frame given later must have the same columns in the same
        order (else a ``ValueError``; select them with ``X[model.feature_names_in_]``).
    n_iter_ : int
        Iterations the solver ran (``result_.n_iter``).
    head_ : ndarray of shape (rank,)
        Head of the new task, set by :meth:`adapt`.

    Notes
    -----
    Cross-validation. ``GroupKFold`` holds out whole tasks, so :meth:`predict` cannot be
    scored on the held-out rows: their tasks have no head. :meth:`score` therefore scores the
    way the model is used: rows of training tasks with their fitted heads, and each unseen task
    few-shot (adapt its head on its first ``shots`` rows, score the rest). ``groups`` must reach
    both ``fit`` and ``score``; turn on scikit-learn's metadata routing::

        sklearn.set_config(enable_metadata_routing=True)
        model = MetaSP().set_fit_request(groups=True).set_score_request(groups=True)
        GridSearchCV(model, {"rank": [1, 2, 3]}, cv=GroupKFold(5)).fit(X, y, groups=groups)

    With scikit-learn >= 1.8 this also scores a ``Pipeline`` ending in MetaSP:
    ``GridSearchCV(make_pipeline(StandardScaler(), model), {"metasp__rank": [1, 2, 3]},
    cv=GroupKFold(5))`` (older versions do not route ``groups`` through a Pipeline's ``score``,
    so every candidate fails). In a ``Pipeline`` without routing, pass
    ``metasp__groups=groups`` to ``fit`` and ``groups=groups`` to ``predict``.

    scikit-learn's ``check_estimator`` runs on MetaSP. The checks that call ``fit(X, y)``
    without groups cannot pass; ``metasp.estimator._sklearn_expected_failed_checks()`` lists
    them for its ``expected_failed_checks`` argument.

    Examples
    --------
    >>> import numpy as np
    >>> import metasp
    >>> X3, y2, B, W = metasp.datasets.make_hps(T=100, m=12, d=20, s=3, random_state=0)
    >>> X, y = X3.reshape(-1, 20), y2.reshape(-1)
    >>> groups = np.repeat(np.arange(100), 12)
    >>> model = metasp.MetaSP(rank=3, random_state=0).fit(X, y, groups)
    >>> model.B_.shape, model.transform(X[:5]).shape
    ((3, 20), (5, 3))
    >>> bool(np.allclose(model.predict(X[:12], groups[:12]), y[:12]))
    True
    """

    def __init__(self, rank=3, *, prior=None, ridge=None, shots=5, heads="auto", step="auto",
                 max_iter=1000, tol=1e-10, n_jobs=None, random_state=None):
        self.rank = rank
        self.prior = prior
        self.ridge = ridge
        self.shots = shots
        self.heads = heads
        self.step = step
        self.max_iter = max_iter
        self.tol = tol
        self.n_jobs = n_jobs
        self.random_state = random_state

    def fit(self, X, y, groups=None):
        """Learn the shared subspace and one head per task.

        Parameters
        ----------
        X : array_like of shape (n_samples, n_features)
            All samples of all tasks, one row per sample, in any order. Dense, real numbers
            (object arrays of numbers are read as float64); a pandas DataFrame with string
            column names sets ``feature_names_in_``.
        y : array_like of shape (n_samples,)
            Targets.
        groups : array_like of shape (n_samples,)
            Task label of each row (required; a keyword so that scikit-learn can route it).
            Labels must not be missing (NaN, None) and must sort together (not str and int).

        Returns
        -------
        self : MetaSP
            The fitted estimator.
        """
        # X and y first, so that bad data is reported as such even when groups are missing.
        names = _feature_names(X)
        X, y = self._check_training_data(X, y)
        if groups is None:
            raise TypeError(
                "MetaSP.fit needs groups: the task label of every row, as in fit(X, y, groups). "
                "In a Pipeline, pass metasp__groups=groups; in GridSearchCV or cross_validate, "
                "enable metadata routing (sklearn.set_config(enable_metadata_routing=True)) and "
                "use MetaSP().set_fit_request(groups=True).set_score_request(groups=True)"
            )
        if not is_integer(self.shots) or self.shots < 1:
            raise ValueError(f"shots must be an integer >= 1; got {self.shots!r}")
        tasks = Tasks.from_groups(X, y, groups)
        result = fit(tasks, s=self.rank, heads=self.heads, step=self.step,
                     max_iter=self.max_iter, tol=self.tol, n_jobs=self.n_jobs,
                     random_state=self.random_state)
        # Check prior and ridge now, with adapt's own rules, rather than at the first adapt.
        result.adapt(*tasks[0], **self._adapt_options())
        self.result_ = result
        self.B_, self.W_ = result.B, result.W
        self.groups_ = tasks.labels
        self.n_features_in_ = tasks.n_features
        self.n_iter_ = result.n_iter
        if names is None:
            self.__dict__.pop("feature_names_in_", None)  # from an earlier fit on a data frame
        else:
            self.feature_names_in_ = names
        self.__dict__.pop("head_", None)  # a head adapted to the previous subspace
        return self

    def fit_transform(self, X, y, groups=None) -> np.ndarray:
        """Fit, then return the subspace features of ``X``: ``fit(X, y, groups).transform(X)``.

        Parameters
        ----------
        X : array_like of shape (n_samples, n_features)
            All samples of all tasks.
        y : array_like of shape (n_samples,)
            Targets.
        groups : array_like of shape (n_samples,)
            Task label of each row (required, as in :meth:`fit`).

        Returns
        -------
        ndarray of shape (n_samples, rank)
            ``X @ B_.T``.
        """
        return self.fit(X, y, groups).transform(X)

    def __sklearn_tags__(self):
        # scikit-learn >= 1.6 reads these; the import is here so that older versions and
        # installs without scikit-learn never need TransformerTags.
        from sklearn.utils import TransformerTags

        tags = super().__sklearn_tags__()
        tags.transformer_tags = TransformerTags(preserves_dtype=["float64"])
        tags.target_tags.required = True
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        return tags

    def _more_tags(self) -> dict:
        # The same for scikit-learn < 1.6, which reads this instead of __sklearn_tags__.
        return {"requires_y": True, "preserves_dtype": [np.float64],
                "_xfail_checks": _sklearn_expected_failed_checks()}

    def _check_training_data(self, X, y) -> tuple[np.ndarray, np.ndarray]:
        """``X`` and ``y`` of fit, checked in scikit-learn's order, before ``groups``."""
        if y is None:
            raise ValueError("MetaSP requires y to be passed, but the target y is None; call "
                             "fit(X, y, groups)")
        X = self._check_X(X, fitting=True)
        y = self._check_y(y, X.shape[0])
        return X, y

    def _check_X(self, X, *, fitting: bool) -> np.ndarray:
        """``X`` as a 2-D array of real numbers; after fit, with fit's number of columns."""
        X = _real_array(X, "X")
        if X.ndim != 2:
            hint = (". Reshape your data: X.reshape(-1, 1) if it is a single feature, "
                    "X.reshape(1, -1) if it is a single sample" if X.ndim == 1 else "")
            raise ValueError(f"X must be 2-D (n_samples, n_features); got shape "
                             f"{X.shape}{hint}")
        if fitting:
            if X.shape[0] == 0:
                raise ValueError(f"X has 0 samples (shape={X.shape}); fit needs the rows of at "
                                 "least one task")
            if X.shape[1] == 0:
                raise ValueError(f"X has 0 feature(s) (shape={X.shape}) while a minimum of 1 "
                                 "is required.")
        elif X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is "
                             f"expecting {self.n_features_in_} features as input (d = "
                             f"{self.n_features_in_} columns, as in fit)")
        check_finite(X, "X")
        return X

    def _check_feature_names(self, names) -> None:
        """Refuse columns of a data frame that differ from fit's, or come in another order."""
        fitted = getattr(self, "feature_names_in_", None)
        if names is None and fitted is None:
            return
        model = type(self).__name__
        if fitted is None:
            warnings.warn(f"X has feature names, but {model} was fitted without feature names",
                          UserWarning, stacklevel=4)
            return
        if names is None:
            warnings.warn(f"X does not have valid feature names, but {model} was fitted with "
                          "feature names", UserWarning, stacklevel=4)
            return
        if len(names) == len(fitted) and (names == fitted).all():
            return
        unseen = sorted(set(names.tolist()) - set(fitted.tolist()))
        missing = sorted(set(fitted.tolist()) - set(names.tolist()))
        message = "The feature names should match those that were passed during fit.\n"
        if unseen:
            message += "Feature names unseen at fit time:\n" + _listed(unseen)
        if missing:
            message += "Feature names seen at fit time, yet now missing:\n" + _listed(missing)
        if not unseen and not missing:
            message += "Feature names must be in the same order as they were in fit.\n"
        raise ValueError(message + "Select the columns of fit, in their order, with "
                         "X[model.feature_names_in_]")

    def _check_y(self, y, n_rows: int) -> np.ndarray:
        y = _real_array(y, "y")
        if y.ndim != 1:
            hint = "; pass y.ravel()" if y.ndim == 2 and y.shape[1] == 1 else ""
            raise ValueError(f"y must be 1-D (n_samples,), one target per row of X; got shape "
                             f"{y.shape}{hint}")
        if y.shape[0] != n_rows:
            raise ValueError(f"X has {n_rows} rows but y has {y.shape[0]} entries")
        check_finite(y, "y")
        return np.asarray(y, dtype=np.float64)

    def _adapt_options(self) -> dict:
        return {"prior": self.prior, "ridge": self.ridge}

    def _check_fitted(self) -> None:
        if not hasattr(self, "result_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call "
                                 "fit(X, y, groups) first")

    def _checked_features(self, X) -> np.ndarray:
        """``X`` of a fitted model's methods, as float64, its columns checked against fit's."""
        self._check_fitted()
        self._check_feature_names(_feature_names(X))
        return np.asarray(self._check_X(X, fitting=False), dtype=np.float64)

    def _rows_like(self, values, n_rows: int, name: str) -> np.ndarray:
        values = np.asarray(values)
        if values.shape != (n_rows,):
            raise ValueError(f"{name} must have shape ({n_rows},), one entry per row of X; got "
                             f"{values.shape}")
        return values

    def _task_index(self, groups) -> tuple[np.ndarray, np.ndarray]:
        """Row of ``W_`` for every label, and whether the label is a training task at all."""
        try:
            position = np.searchsorted(self.groups_, groups)
        except TypeError:
            raise TypeError(f"groups of dtype {groups.dtype} cannot be compared with the "
                            f"training groups (dtype {self.groups_.dtype})") from None
        position = np.minimum(position, self.groups_.size - 1)
        return position, self.groups_[position] == groups

    def transform(self, X) -> np.ndarray:
        """Features in the shared subspace, ``X @ B_.T``.

        Parameters
        ----------
        X : array_like of shape (n_samples, n_features_in_)
            Samples.

        Returns
        -------
        ndarray of shape (n_samples, rank)
            The subspace features.
        """
        return self._checked_features(X) @ self.B_.T

    def predict(self, X, groups=None) -> np.ndarray:
        """Predict rows of training tasks with their fitted heads.

        Parameters
        ----------
        X : array_like of shape (n_samples, n_features_in_)
            Samples.
        groups : array_like of shape (n_samples,)
            Task label of each row; every label must be one of ``groups_``. For a new task, use
            :meth:`adapt` and :meth:`predict_new`.

        Returns
        -------
        ndarray of shape (n_samples,)
            Predictions.
        """
        X = self._checked_features(X)
        if groups is None:
            raise TypeError("MetaSP.predict needs groups: the training task of every row")
        groups = self._rows_like(groups, X.shape[0], "groups")
        refuse_missing_labels(groups)
        position, known = self._task_index(groups)
        if not known.all():
            unseen = np.unique(groups[~known])
            shown = ", ".join(repr(label) for label in unseen[:5].tolist())
            raise ValueError(
                f"{unseen.size} groups were not seen in fit (for example {shown}); predict new "
                "tasks with adapt(X_support, y_support) then predict_new(X)"
            )
        return np.einsum("ij,ij->i", X @ self.B_.T, self.W_[position])

    def adapt(self, X, y):
        """Fit the head of a new task on a few of its samples (see ``MetaSPResult.adapt``).

        Parameters
        ----------
        X : array_like of shape (m, n_features_in_)
            Samples of the new task.
        y : array_like of shape (m,)
            Their targets.

        Returns
        -------
        self : MetaSP
            With the new head in ``head_``; predict with :meth:`predict_new`.
        """
        X = self._checked_features(X)
        self.head_ = self.result_.adapt(X, y, **self._adapt_options())
        return self

    def predict_new(self, X) -> np.ndarray:
        """Predict samples of the new task given to :meth:`adapt`.

        Parameters
        ----------
        X : array_like of shape (n_samples, n_features_in_)
            Samples of the new task.

        Returns
        -------
        ndarray of shape (n_samples,)
            Predictions.
        """
        self._check_fitted()
        if not hasattr(self, "head_"):
            raise NotFittedError("no new task yet: call adapt(X_support, y_support) first")
        return self.result_.predict(self._checked_features(X), self.head_)

    def score(self, X, y, groups=None, sample_weight=None) -> float:
        """Coefficient of determination R^2, scoring training and unseen tasks alike.

        Rows of training tasks are predicted with their fitted heads. Each unseen task is
        scored few-shot: its head is adapted on its first ``shots`` rows (in the order given),
        which are then left out, and its other rows are predicted. R^2 is computed over all
        predicted rows. Higher is better, as scikit-learn's model selection expects.

        Parameters
        ----------
        X : array_like of shape (n_samples, n_features_in_)
            Samples.
        y : array_like of shape (n_samples,)
            Targets.
        groups : array_like of shape (n_samples,)
            Task label of each row (required).
        sample_weight : array_like of shape (n_samples,), optional
            Non-negative weight of each row in R^2, as in ``sklearn.metrics.r2_score``; the
            weights of the rows used to adapt an unseen task's head are not used.

        Returns
        -------
        float
            ``1 - sum(w (y - pred)^2) / sum(w (y - mean_w(y))^2)`` over the predicted rows;
            1.0 or 0.0 when those targets are constant (perfect predictions or not).
        """
        X = self._checked_features(X)
        if groups is None:
            raise TypeError("MetaSP.score needs groups; with GridSearchCV, enable metadata "
                            "routing and call set_score_request(groups=True)")
        if X.shape[0] == 0:
            raise ValueError("X has no rows; score needs at least one")
        if y is None:
            raise ValueError("MetaSP.score requires y to be passed, but the target y is None")
        y = self._check_y(y, X.shape[0])
        groups = self._rows_like(groups, X.shape[0], "groups")
        refuse_missing_labels(groups)
        weights = self._check_sample_weight(sample_weight, X.shape[0])
        features = X @ self.B_.T
        position, known = self._task_index(groups)
        prediction = np.zeros(y.shape)
        prediction[known] = np.einsum("ij,ij->i", features[known], self.W_[position[known]])
        scored = known.copy()
        new_rows = np.flatnonzero(~known)
        labels, task_of_row, _ = unique_labels(groups[new_rows])
        for task, label in enumerate(labels.tolist()):
            rows = new_rows[task_of_row == task]
            if rows.size <= self.shots:
                raise ValueError(
                    f"unseen group {label!r} has {rows.size} rows; score needs more than "
                    f"shots={self.shots} (that many to adapt its head, the rest to score)"
                )
            support, query = rows[:self.shots], rows[self.shots:]
            head = self.result_.adapt(X[support], y[support], **self._adapt_options())
            prediction[query] = features[query] @ head
            scored[query] = True
        y, prediction, weights = y[scored], prediction[scored], weights[scored]
        if not weights.sum() > 0:
            raise ValueError("sample_weight is zero on every scored row; give some of them a "
                             "positive weight")
        residual = np.sum(weights * (y - prediction) ** 2)
        total = np.sum(weights * (y - np.average(y, weights=weights)) ** 2)
        if total == 0:  # constant targets: perfect or nothing, as scikit-learn's r2_score
            return 1.0 if residual == 0 else 0.0
        return float(1.0 - residual / total)

    def _check_sample_weight(self, sample_weight, n_rows: int) -> np.ndarray:
        if sample_weight is None:
            return np.ones(n_rows)
        weights = np.asarray(numeric_array(sample_weight, "sample_weight"), dtype=np.float64)
        if weights.ndim == 0:  # one number for every row, as scikit-learn allows
            weights = np.full(n_rows, float(weights))
        if weights.shape != (n_rows,):
            raise ValueError(f"sample_weight must have shape ({n_rows},), one weight per row of "
                             f"X; got {weights.shape}")
        check_finite(weights, "sample_weight")
        if (weights < 0).any():
            raise ValueError("sample_weight has negative entries; weights must be >= 0")
        return weights
