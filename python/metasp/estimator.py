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

import numpy as np

from ._solver import fit
from ._tasks import Tasks, _check_finite, _numeric_array
from ._validation import is_integer

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


class MetaSP(*_BASES):
    """Meta Subspace Pursuit as a scikit-learn estimator, on long-format data.

    Rows of ``X`` are samples; ``groups`` says which task (station, school, patient, day) each
    row belongs to. :meth:`fit` learns the shared subspace ``B_`` (``rank`` x d) and one head
    per training task; :meth:`transform` gives the subspace features ``X @ B_.T``;
    :meth:`predict` predicts rows of training tasks; :meth:`adapt` and :meth:`predict_new` fit
    and use the head of a new task from a few of its samples.

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

    In a ``Pipeline`` without routing, pass ``metasp__groups=groups`` to ``fit`` and
    ``groups=groups`` to ``predict``.

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
            All samples of all tasks, one row per sample, in any order.
        y : array_like of shape (n_samples,)
            Targets.
        groups : array_like of shape (n_samples,)
            Task label of each row (required; a keyword so that scikit-learn can route it).

        Returns
        -------
        self : MetaSP
            The fitted estimator.
        """
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
        self.__dict__.pop("head_", None)  # a head adapted to the previous subspace
        return self

    def _adapt_options(self) -> dict:
        return {"prior": self.prior, "ridge": self.ridge}

    def _check_fitted(self) -> None:
        if not hasattr(self, "result_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call "
                                 "fit(X, y, groups) first")

    def _design(self, X) -> np.ndarray:
        self._check_fitted()
        return self.result_._check_design(X)

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
        return self._design(X) @ self.B_.T

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
        X = self._design(X)
        if groups is None:
            raise TypeError("MetaSP.predict needs groups: the training task of every row")
        groups = self._rows_like(groups, X.shape[0], "groups")
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
        self._check_fitted()
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
        return self.result_.predict(X, self.head_)

    def score(self, X, y, groups=None) -> float:
        """Coefficient of determination R^2, scoring training and unseen tasks alike.

        Rows of training tasks are predicted with their fitted heads. Each unseen task is
        scored few-shot: its head is adapted on its first ``shots`` rows (in the order given),
        which are then left out, and its other rows are predicted. R^2 is computed over all
        predicted rows.

        Parameters
        ----------
        X : array_like of shape (n_samples, n_features_in_)
            Samples.
        y : array_like of shape (n_samples,)
            Targets.
        groups : array_like of shape (n_samples,)
            Task label of each row.

        Returns
        -------
        float
            ``1 - sum((y - pred)^2) / sum((y - mean(y))^2)`` over the predicted rows.
        """
        X = self._design(X)
        if groups is None:
            raise TypeError("MetaSP.score needs groups; with GridSearchCV, enable metadata "
                            "routing and call set_score_request(groups=True)")
        y = np.asarray(_numeric_array(y, "y"), dtype=np.float64)
        y = self._rows_like(y, X.shape[0], "y")
        _check_finite(y, "y")
        groups = self._rows_like(groups, X.shape[0], "groups")
        features = X @ self.B_.T
        position, known = self._task_index(groups)
        prediction = np.full(y.shape, np.nan)
        prediction[known] = np.einsum("ij,ij->i", features[known], self.W_[position[known]])
        new_rows = np.flatnonzero(~known)
        labels, task_of_row = np.unique(groups[new_rows], return_inverse=True)
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
        scored = ~np.isnan(prediction)
        residual = np.sum((y[scored] - prediction[scored]) ** 2)
        total = np.sum((y[scored] - y[scored].mean()) ** 2)
        if total == 0:  # constant targets: perfect or nothing, as scikit-learn's r2_score
            return 1.0 if residual == 0 else 0.0
        return float(1.0 - residual / total)
