"""The one data layout of metasp: T regression tasks stacked into a single array."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from ._arrays import (
    as_core_matrix,
    as_float64,
    check_finite,
    is_float32,
    is_integer,
    numeric_array,
)

__all__ = ["Tasks", "as_tasks"]


def _is_missing(value) -> bool:
    """None, NaN, NaT or pandas.NA."""
    if value is None:
        return True
    try:
        return bool(value != value)  # only NaN and NaT differ from themselves
    except TypeError:  # pandas.NA: comparisons give NA, whose truth value is ambiguous
        return True


def _missing_labels(labels: np.ndarray) -> np.ndarray:
    """Boolean mask of the missing entries of a 1-D label array."""
    if labels.dtype.kind in "fc":
        return np.isnan(labels)
    if labels.dtype.kind in "mM":
        return np.isnat(labels)
    if labels.dtype == object:
        return np.fromiter((_is_missing(v) for v in labels), dtype=bool, count=labels.size)
    return np.zeros(labels.shape, dtype=bool)


def refuse_missing_labels(groups: np.ndarray, name: str = "groups") -> None:
    """Raise a ValueError that counts the missing task labels, when there are any."""
    missing = _missing_labels(groups)
    if missing.any():
        raise ValueError(
            f"{name} has {int(missing.sum())} missing label(s) (NaN, None or NaT; first at row "
            f"{int(np.flatnonzero(missing)[0])}); every row needs a task label. Drop those rows "
            "or give them a label first"
        )


def unique_labels(groups: np.ndarray, name: str = "groups"):
    """``np.unique(groups, return_inverse=True, return_counts=True)`` for task labels.

    Missing labels are a ``ValueError`` (NumPy would make NaN a task of its own, or one task
    per NaN in an object array), and labels of types that cannot be sorted together, such as
    str and int, a ``TypeError`` that says so.
    """
    try:
        labels, codes, counts = np.unique(groups, return_inverse=True, return_counts=True)
    except TypeError:  # object labels that cannot be compared with each other
        refuse_missing_labels(groups, name)
        types = sorted({type(v).__name__ for v in groups.tolist()})
        raise TypeError(
            f"{name} mixes labels of types {types}, which cannot be sorted together; convert "
            f"them to one type first, for example np.asarray({name}).astype(str)"
        ) from None
    # A missing label survives np.unique as a label of its own (one per NaN in an object
    # array), so the T labels tell whether any of the N rows has one.
    if _missing_labels(labels).any():
        refuse_missing_labels(groups, name)
    return labels, codes.reshape(-1), counts


def _check_dtype(dtype):
    """``None``, or the NumPy scalar type (float32 or float64) a ``dtype=`` option asks for."""
    if dtype is None:
        return None
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be None, numpy.float32 or numpy.float64; got {dtype!r}"
                        ) from None
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be None, numpy.float32 or numpy.float64; got {dtype}")
    return dtype.type


def import_pandas(caller: str):
    """The pandas module, or an ImportError that says how to install it for ``caller``."""
    try:
        import pandas
    except ImportError:
        raise ImportError(f'{caller} needs pandas: pip install "metasp[pandas]"') from None
    return pandas


def is_numeric_column(column) -> bool:
    """Real numbers or booleans (which become 0 and 1); not complex, text, dates or categories."""
    from pandas.api import types

    return types.is_bool_dtype(column) or (
        types.is_numeric_dtype(column) and not types.is_complex_dtype(column))


def _feature_columns(df, group, target, features) -> list:
    """The feature column labels: checked when given, every numeric column when not."""
    if features is None:
        candidates = [c for c in df.columns if c != group and c != target]
        features = [c for c in candidates if is_numeric_column(df[c])]
        skipped = [c for c in candidates if c not in features]
        if skipped:
            warnings.warn(
                f"left out non-numeric columns {skipped}; encode them (pd.get_dummies) and list "
                "the features explicitly to use them, or pass features=[...] to silence this",
                UserWarning, stacklevel=3,
            )
        if not features:
            raise ValueError("df has no numeric feature columns besides the group and target")
        return features
    features = [features] if isinstance(features, str) else list(features)
    if not features:
        raise ValueError("features is empty; list at least one column, or pass None for all")
    absent = [c for c in features if c not in df.columns]
    if absent:
        raise ValueError(f"feature columns {absent} are not in df; its columns are "
                         f"{df.columns.tolist()}")
    if len(set(features)) != len(features):
        raise ValueError(f"features lists a column more than once: {features}")
    for role, column in (("group", group), ("target", target)):
        if column in features:
            raise ValueError(f"the {role} column {column!r} cannot also be a feature")
    text = {str(c): str(df[c].dtype) for c in features if not is_numeric_column(df[c])}
    if text:
        raise TypeError(f"feature columns are not numeric (dtypes {text}); encode them first, "
                        "for example with pd.get_dummies(df, columns=[...], drop_first=True)")
    return features


class Tasks:
    """T linear regression tasks stored as one stacked design matrix.

    Task ``t`` owns rows ``offsets[t]:offsets[t + 1]`` of ``X`` and ``y``. This is the layout
    the C++ core reads without copying; every other input format is converted to it once.

    Parameters
    ----------
    X : array_like of shape (N, d)
        All samples of all tasks, task by task. A C-contiguous float64 or float32 array is used
        as is (never copied); other layouts are made C-contiguous, and other dtypes (integers,
        booleans, float16, object arrays whose entries are all real numbers) converted to
        float64, once. Sparse matrices are refused: pass ``X.toarray()``.
    y : array_like of shape (N,)
        Targets, aligned with the rows of ``X``.
    offsets : array_like of int, shape (T + 1,)
        Task boundaries: ``offsets[0] == 0``, ``offsets[-1] == N``, strictly increasing (every
        task has at least one sample).
    labels : array_like of shape (T,), optional
        A name for each task (for example the group labels of :meth:`from_groups`).
    feature_names : sequence of str, optional
        A name for each of the d columns of ``X`` (for example the columns read by
        :meth:`from_frame`).
    dtype : {None, numpy.float32, numpy.float64}, default None
        The dtype of the stored ``X``. ``None`` keeps float32 data in float32 and stores
        everything else as float64; a dtype converts ``X`` to it once, on purpose (for example
        ``np.float32`` to halve the memory a fit reads). The C++ core reads float32 ``X`` as it
        is and computes in float64, so float32 costs only the rounding of ``X`` itself. ``y``
        is always float64.

    Attributes
    ----------
    X : ndarray of shape (N, d), float64 or float32, C-contiguous
    y : ndarray of shape (N,), float64
    offsets : ndarray of shape (T + 1,), int64
    labels : ndarray of shape (T,) or None
    feature_names : tuple of str or None

    Examples
    --------
    >>> import numpy as np
    >>> from metasp import Tasks
    >>> tasks = Tasks.from_list([np.ones((3, 2)), np.ones((5, 2))], [np.ones(3), np.ones(5)])
    >>> tasks.n_tasks, tasks.n_features, tasks.task_sizes.tolist()
    (2, 2, [3, 5])
    """

    def __init__(self, X, y, offsets, labels=None, feature_names=None, *, dtype=None):
        dtype = _check_dtype(dtype)
        X = numeric_array(X, "X")
        y = numeric_array(y, "y")
        offsets = numeric_array(offsets, "offsets")
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (N samples, d features); got shape {X.shape}")
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D (N,); got shape {y.shape}")
        if X.shape[0] != y.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]} entries")
        if X.shape[1] == 0:
            raise ValueError("X has no features (d = 0)")
        if offsets.dtype.kind not in "iu":
            raise TypeError(f"offsets must be a 1-D integer array; got dtype {offsets.dtype}")
        if offsets.ndim != 1:
            raise ValueError(f"offsets must be a 1-D integer array; got shape {offsets.shape}")
        if offsets.size < 2:
            raise ValueError("there are no tasks: offsets needs at least 2 entries")
        offsets = offsets.astype(np.int64)
        if offsets[0] != 0 or offsets[-1] != X.shape[0]:
            raise ValueError(
                f"offsets must start at 0 and end at N = {X.shape[0]}; "
                f"got {offsets[0]} and {offsets[-1]}"
            )
        sizes = np.diff(offsets)
        if (sizes <= 0).any():
            empty = int(np.flatnonzero(sizes <= 0)[0])
            raise ValueError(
                f"task {empty} has no samples (offsets must increase strictly); drop empty "
                "tasks before fitting"
            )
        X, y = as_core_matrix(X, dtype), as_float64(y)
        check_finite(X, "X")
        check_finite(y, "y")
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (offsets.size - 1,):
                raise ValueError(
                    f"labels must have one entry per task ({offsets.size - 1}); "
                    f"got shape {labels.shape}"
                )
        if feature_names is not None:
            feature_names = tuple(feature_names)
            if len(feature_names) != X.shape[1]:
                raise ValueError(
                    f"feature_names must have one entry per column of X ({X.shape[1]}); "
                    f"got {len(feature_names)}"
                )
        self.X, self.y, self.offsets, self.labels = X, y, offsets, labels
        self.feature_names = feature_names

    @classmethod
    def from_list(cls, Xs: Sequence, ys: Sequence, *, dtype=None) -> Tasks:
        """Stack per-task arrays ``Xs[t]`` of shape (m_t, d) and ``ys[t]`` of shape (m_t,).

        The m_t may differ. The arrays are copied once into the stacked layout: float32 when
        every ``Xs[t]`` is float32 (or ``dtype=np.float32``), else float64.
        """
        dtype = _check_dtype(dtype)
        if isinstance(Xs, np.ndarray):
            raise TypeError("from_list expects a sequence of per-task arrays; for a 3-D array "
                            "use Tasks.from_array")
        Xs, ys = list(Xs), list(ys)
        if len(Xs) != len(ys):
            raise ValueError(f"got {len(Xs)} design matrices but {len(ys)} target vectors")
        if not Xs:
            raise ValueError("there are no tasks: Xs and ys are empty")
        Xs = [numeric_array(X, f"Xs[{t}]") for t, X in enumerate(Xs)]
        ys = [numeric_array(y, f"ys[{t}]") for t, y in enumerate(ys)]
        d = None
        for t, (X, y) in enumerate(zip(Xs, ys)):
            if X.ndim != 2:
                raise ValueError(f"Xs[{t}] must be 2-D (m_t, d); got shape {X.shape}")
            if y.ndim != 1:
                raise ValueError(f"ys[{t}] must be 1-D (m_t,); got shape {y.shape}")
            if X.shape[0] != y.shape[0]:
                raise ValueError(
                    f"task {t}: Xs[{t}] has {X.shape[0]} rows but ys[{t}] has {y.shape[0]} entries"
                )
            if X.shape[0] == 0:
                raise ValueError(f"task {t} is empty (m_t = 0); drop empty tasks before fitting")
            d = X.shape[1] if d is None else d
            if X.shape[1] != d:
                raise ValueError(
                    f"all tasks need the same number of features: Xs[0] has {d} columns, "
                    f"Xs[{t}] has {X.shape[1]}"
                )
        offsets = np.zeros(len(Xs) + 1, dtype=np.int64)
        np.cumsum([X.shape[0] for X in Xs], out=offsets[1:])
        if dtype is None:
            dtype = np.float32 if all(is_float32(X) for X in Xs) else np.float64
        # One copy, straight into the stored dtype, whatever the per-task dtypes.
        try:
            with np.errstate(over="raise"):
                X = np.concatenate(Xs, axis=0, dtype=dtype)
        except FloatingPointError:
            raise ValueError(f"Xs have values beyond the range of {np.dtype(dtype).name}; keep "
                             "them in float64 (dtype=None)") from None
        return cls(X, np.concatenate(ys, dtype=np.float64), offsets)

    @classmethod
    def from_array(cls, X, y, *, dtype=None) -> Tasks:
        """Tasks of equal size from ``X`` of shape (T, m, d) and ``y`` of shape (T, m).

        A C-contiguous float64 or float32 ``X`` is viewed as (T * m, d) without copying;
        ``dtype`` as in :class:`Tasks`.
        """
        dtype = _check_dtype(dtype)
        X = numeric_array(X, "X")
        y = numeric_array(y, "y")
        if X.ndim != 3:
            hint = (
                "; for one row per sample with a task label per row, use "
                "metasp.Tasks.from_groups(X, y, groups)" if X.ndim == 2 else ""
            )
            raise ValueError(f"X must be 3-D (T, m, d); got shape {X.shape}{hint}")
        if y.ndim != 2:
            raise ValueError(f"with a 3-D X, y must be 2-D (T, m); got shape {y.shape}")
        T, m, d = X.shape
        if y.shape != (T, m):
            raise ValueError(f"X has shape {X.shape}, so y must have shape {(T, m)}; got {y.shape}")
        if T == 0:
            raise ValueError("there are no tasks: X has T = 0")
        if m == 0:
            raise ValueError("every task is empty: X has m = 0 samples per task")
        offsets = np.arange(T + 1, dtype=np.int64) * m
        return cls(as_core_matrix(X, dtype).reshape(T * m, d), as_float64(y).reshape(T * m), offsets)

    @classmethod
    def from_groups(cls, X, y, groups, *, dtype=None) -> Tasks:
        """Tasks from long-format data: one row per sample and a task label per row.

        Tasks are ordered by sorted label; the labels are kept in :attr:`labels`. When the rows
        are already grouped in that order, ``X`` is not reordered (and, if it is C-contiguous
        float64 or float32, not copied); ``dtype`` as in :class:`Tasks`. A missing label (NaN,
        None, NaT, ``pandas.NA``) is a ``ValueError``, as in :meth:`from_frame`; labels that
        cannot be sorted together (str and int) are a ``TypeError``.
        """
        X = numeric_array(X, "X")
        y = numeric_array(y, "y")
        groups = np.asarray(groups)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (N samples, d features); got shape {X.shape}")
        if y.ndim != 1 or groups.ndim != 1:
            raise ValueError(
                f"y and groups must be 1-D; got shapes {y.shape} and {groups.shape}"
            )
        if not X.shape[0] == y.shape[0] == groups.shape[0]:
            raise ValueError(
                f"X, y and groups must have the same number of rows; got "
                f"{X.shape[0]}, {y.shape[0]} and {groups.shape[0]}"
            )
        if X.shape[0] == 0:
            raise ValueError("there are no tasks: X has no rows")
        labels, codes, counts = unique_labels(groups)
        if (np.diff(codes) < 0).any():
            order = np.argsort(codes, kind="stable")
            X, y = X[order], y[order]
        offsets = np.zeros(labels.size + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return cls(X, y, offsets, labels=labels, dtype=dtype)

    @classmethod
    def from_frame(cls, df, group, target, features=None, *, min_samples=1,
                   dropna=False, dtype=None) -> Tasks:
        """Tasks from a pandas DataFrame in long format: one row per sample.

        Every choice that removes data is reported: columns left out and rows or tasks dropped
        each raise a warning that counts them, and anything that cannot be used as it is (a
        missing value without ``dropna=True``, a non-numeric feature, an infinite value) is a
        clear error.

        Parameters
        ----------
        df : pandas.DataFrame
            The data: one row per sample (requires pandas, ``pip install "metasp[pandas]"``).
        group : column label
            The column saying which task each row belongs to (station, school, patient, day).
        target : column label
            The numeric column to predict.
        features : column label or list of column labels, optional
            The feature columns, in this order. By default every numeric or boolean column other
            than ``group`` and ``target``; other columns are then left out with a warning that
            names them. Listing a non-numeric column here is a ``TypeError``: encode it first
            (``pd.get_dummies``).
        min_samples : int, default 1
            Tasks with fewer rows than this (after missing values are handled) are dropped with
            a warning that counts them.
        dropna : bool, default False
            Rows with a missing value (NaN, None, NA) in the group, target or a feature column:
            ``False`` raises a ``ValueError`` that counts them per column; ``True`` drops them
            with a warning that counts them.
        dtype : {None, numpy.float32, numpy.float64}, default None
            The dtype of the stored ``X``: float64 unless ``np.float32`` is asked for.

        Returns
        -------
        Tasks
            Tasks ordered by sorted group value, as in :meth:`from_groups`; the group values are
            in :attr:`labels` and the feature columns in :attr:`feature_names`.

        Examples
        --------
        >>> import pandas as pd
        >>> from metasp import Tasks
        >>> df = pd.DataFrame({"station": ["a", "a", "b", "b", "b"],
        ...                    "temp": [1.0, 2.0, 3.0, 4.0, 5.0],
        ...                    "wind": [0.5, 0.1, 0.2, 0.3, 0.9],
        ...                    "pm25": [10.0, 12.0, 30.0, 31.0, 28.0]})
        >>> tasks = Tasks.from_frame(df, group="station", target="pm25")
        >>> tasks.labels.tolist(), tasks.feature_names, tasks.task_sizes.tolist()
        (['a', 'b'], ('temp', 'wind'), [2, 3])
        """
        pd = import_pandas("Tasks.from_frame")
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"df must be a pandas DataFrame; got {type(df).__name__}. For "
                            "arrays, use Tasks.from_groups(X, y, groups)")
        if not df.columns.is_unique:
            duplicated = df.columns[df.columns.duplicated()].unique().tolist()
            raise ValueError(f"df has duplicated column labels {duplicated}; rename them first")
        if not is_integer(min_samples) or min_samples < 1:
            raise ValueError(f"min_samples must be an integer >= 1; got {min_samples!r}")
        if not isinstance(dropna, (bool, np.bool_)):
            raise TypeError(f"dropna must be True or False; got {dropna!r}")
        for role, column in (("group", group), ("target", target)):
            if column not in df.columns:
                raise ValueError(f"the {role} column {column!r} is not in df; its columns are "
                                 f"{df.columns.tolist()}")
        if group == target:
            raise ValueError(f"group and target are the same column {group!r}")
        if not is_numeric_column(df[target]):
            raise TypeError(f"the target column {target!r} has dtype {df[target].dtype}, which is "
                            "not numeric; convert it (pd.to_numeric) first")
        features = _feature_columns(df, group, target, features)

        used = df[[group, target, *features]]
        missing = used.isna()
        missing_rows = missing.any(axis=1)
        if missing_rows.any():
            per_column = {str(c): int(n) for c, n in missing.sum().items() if n}
            if not dropna:
                raise ValueError(
                    f"{int(missing_rows.sum())} of {len(used)} rows have missing values (count "
                    f"per column: {per_column}); pass dropna=True to drop those rows, or impute "
                    "them first"
                )
            warnings.warn(
                f"dropped {int(missing_rows.sum())} of {len(used)} rows with missing values "
                f"(count per column: {per_column})", UserWarning, stacklevel=2,
            )
            used = used[~missing_rows]
        values = used[[target, *features]].to_numpy(dtype=np.float64)
        infinite = np.isinf(values).any(axis=0)
        if infinite.any():
            columns = [str(c) for c, bad in zip([target, *features], infinite) if bad]
            raise ValueError(f"columns {columns} contain infinite values; remove or replace them")

        sizes = used[group].value_counts(sort=False)
        small = sizes[sizes < min_samples]
        if len(small):
            keep = ~used[group].isin(small.index).to_numpy()
            shown = ", ".join(repr(label) for label in small.index[:5])
            warnings.warn(
                f"dropped {len(small)} of {len(sizes)} tasks with fewer than min_samples="
                f"{min_samples} rows ({int(small.sum())} rows in all; for example {shown})",
                UserWarning, stacklevel=2,
            )
            used, values = used[keep], values[keep]
        if len(used) == 0:
            raise ValueError("no rows are left after dropping missing values and small tasks")
        tasks = cls.from_groups(values[:, 1:], values[:, 0], used[group].to_numpy(),
                                dtype=dtype)
        tasks.feature_names = tuple(features)
        return tasks

    @property
    def n_tasks(self) -> int:
        """Number of tasks T."""
        return self.offsets.size - 1

    @property
    def n_features(self) -> int:
        """Number of features d."""
        return self.X.shape[1]

    @property
    def n_samples(self) -> int:
        """Total number of samples N over all tasks."""
        return self.X.shape[0]

    @property
    def task_sizes(self) -> np.ndarray:
        """Samples per task, m_t, as an int64 array of shape (T,)."""
        return np.diff(self.offsets)

    @property
    def task_of_row(self) -> np.ndarray:
        """The task of every row of ``X`` and ``y``, as an int64 array of shape (N,)."""
        return np.repeat(np.arange(self.n_tasks), self.task_sizes)

    def subset(self, indices) -> Tasks:
        """The tasks ``indices`` (in that order) as new :class:`Tasks`; labels follow them.

        Parameters
        ----------
        indices : array_like of int, or boolean mask of shape (T,)
            Which tasks to keep.

        Returns
        -------
        Tasks
            A copy holding only those tasks.

        Examples
        --------
        >>> import numpy as np
        >>> from metasp import Tasks
        >>> tasks = Tasks.from_array(np.zeros((4, 3, 2)), np.zeros((4, 3)))
        >>> tasks.subset([2, 0]).n_tasks
        2
        """
        indices = np.asarray(indices)
        if indices.dtype == bool:
            if indices.shape != (self.n_tasks,):
                raise ValueError(f"a boolean task mask needs shape ({self.n_tasks},); "
                                 f"got {indices.shape}")
            indices = np.flatnonzero(indices)
        if indices.size == 0:
            raise ValueError("indices selects no task")
        if indices.dtype.kind not in "iu" or indices.ndim != 1:
            raise TypeError("indices must be a 1-D array of task numbers or a boolean mask")
        if (indices < -self.n_tasks).any() or (indices >= self.n_tasks).any():
            raise IndexError(f"task indices must lie in [0, {self.n_tasks}); got "
                             f"{indices.min()}..{indices.max()}")
        indices = indices % self.n_tasks
        sizes = self.task_sizes[indices]
        rows = np.concatenate([np.arange(self.offsets[t], self.offsets[t + 1]) for t in indices])
        offsets = np.zeros(indices.size + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        labels = None if self.labels is None else self.labels[indices]
        return Tasks(self.X[rows], self.y[rows], offsets, labels=labels,
                     feature_names=self.feature_names)

    def split_tasks(self, test_fraction=0.2, random_state=None) -> tuple[Tasks, Tasks]:
        """Split into meta-train and meta-test tasks at random.

        Parameters
        ----------
        test_fraction : float, default 0.2
            Fraction of the tasks held out, in (0, 1); rounded to a whole number of tasks, at
            least one on each side.
        random_state : None, int or numpy.random.Generator, default None
            Seed for the draw; the same seed gives the same split.

        Returns
        -------
        train, test : Tasks
            Disjoint sets of whole tasks (the order within each follows the original order).

        Examples
        --------
        >>> import numpy as np
        >>> from metasp import Tasks
        >>> tasks = Tasks.from_array(np.zeros((10, 3, 2)), np.zeros((10, 3)))
        >>> train, test = tasks.split_tasks(0.3, random_state=0)
        >>> train.n_tasks, test.n_tasks
        (7, 3)
        """
        test = self._test_task_mask(test_fraction, random_state)
        return self.subset(~test), self.subset(test)

    def _test_task_mask(self, test_fraction, random_state) -> np.ndarray:
        if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float,
                                                                             np.floating)):
            raise TypeError(f"test_fraction must be a number in (0, 1); got {test_fraction!r}")
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must lie strictly between 0 and 1; got "
                             f"{test_fraction!r}")
        if self.n_tasks < 2:
            raise ValueError("splitting tasks needs at least 2 tasks")
        n_test = min(max(int(round(test_fraction * self.n_tasks)), 1), self.n_tasks - 1)
        chosen = np.random.default_rng(random_state).permutation(self.n_tasks)[:n_test]
        mask = np.zeros(self.n_tasks, dtype=bool)
        mask[chosen] = True
        return mask

    def split_samples(self, k, random_state=None) -> tuple[Tasks, Tasks]:
        """Split every task into ``k`` support samples and the rest as query samples.

        This is the few-shot protocol: fit a new task's head on the support set, score it on
        the query set.

        Parameters
        ----------
        k : int
            Support samples per task, drawn at random without replacement. Every task needs
            more than ``k`` samples (so that its query set is not empty); drop smaller tasks
            first with :meth:`subset`.
        random_state : None, int or numpy.random.Generator, default None
            Seed for the draw; the same seed gives the same split.

        Returns
        -------
        support, query : Tasks
            Same tasks in the same order (and labels); ``support`` has ``k`` samples per task,
            ``query`` the remaining ``m_t - k``.

        Examples
        --------
        >>> import numpy as np
        >>> from metasp import Tasks
        >>> tasks = Tasks.from_array(np.zeros((4, 10, 2)), np.zeros((4, 10)))
        >>> support, query = tasks.split_samples(3, random_state=0)
        >>> support.task_sizes.tolist(), query.task_sizes.tolist()
        ([3, 3, 3, 3], [7, 7, 7, 7])
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"k must be an integer; got {k!r}")
        if k < 1:
            raise ValueError(f"k must be at least 1; got {k}")
        sizes = self.task_sizes
        if (sizes <= k).any():
            small = np.flatnonzero(sizes <= k)
            raise ValueError(
                f"{small.size} task(s) have at most k = {k} samples (first: task {small[0]} "
                f"with {sizes[small[0]]}), so their query set would be empty; keep larger tasks "
                f"with tasks.subset(np.flatnonzero(tasks.task_sizes > {k}))"
            )
        rng = np.random.default_rng(random_state)
        # A random key per row; the k smallest keys of each task form its support set.
        rank_in_task = rank_within_tasks(rng.random(self.n_samples), self)
        support = rank_in_task < k
        return self._take_rows(support), self._take_rows(~support)

    def _take_rows(self, mask: np.ndarray) -> Tasks:
        """The rows where ``mask`` is True, task by task; every task must keep a row."""
        counts = np.add.reduceat(mask.astype(np.int64), self.offsets[:-1])
        offsets = np.zeros(self.n_tasks + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return Tasks(self.X[mask], self.y[mask], offsets, labels=self.labels,
                     feature_names=self.feature_names)

    def __len__(self) -> int:
        return self.n_tasks

    def __getitem__(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """``(X_t, y_t)`` of task ``t``, as views."""
        t = range(self.n_tasks)[t]
        rows = slice(self.offsets[t], self.offsets[t + 1])
        return self.X[rows], self.y[rows]

    def __repr__(self) -> str:
        sizes = self.task_sizes
        return (
            f"Tasks(n_tasks={self.n_tasks}, n_features={self.n_features}, "
            f"samples per task {sizes.min()}..{sizes.max()})"
        )


def rank_within_tasks(keys: np.ndarray, tasks: Tasks) -> np.ndarray:
    """Rank (0, 1, ...) of each row's key among the rows of its own task."""
    task_of_row = tasks.task_of_row
    order = np.lexsort((keys, task_of_row))
    ranks = np.empty(keys.size, dtype=np.int64)
    ranks[order] = np.arange(keys.size) - tasks.offsets[task_of_row[order]]
    return ranks


def as_tasks(Xs, ys=None, dtype=None) -> Tasks:
    """Convert any supported task input to :class:`Tasks` (see :func:`metasp.fit`).

    ``dtype`` as in :class:`Tasks`; given Tasks of another dtype are converted (a copy).
    """
    dtype = _check_dtype(dtype)
    if isinstance(Xs, Tasks):
        if ys is not None:
            raise TypeError("ys must be None when the tasks come as a metasp.Tasks")
        if dtype is None or Xs.X.dtype == dtype:
            return Xs
        return Tasks(Xs.X, Xs.y, Xs.offsets, labels=Xs.labels, feature_names=Xs.feature_names,
                     dtype=dtype)
    if ys is None:
        raise TypeError("ys is missing: pass the targets, or a metasp.Tasks as the only input")
    if isinstance(Xs, np.ndarray):
        if not isinstance(ys, np.ndarray):
            ys = numeric_array(ys, "ys")
        return Tasks.from_array(Xs, ys, dtype=dtype)
    if isinstance(Xs, (list, tuple)) and isinstance(ys, (list, tuple, np.ndarray)):
        return Tasks.from_list(Xs, ys, dtype=dtype)
    raise TypeError(
        "tasks must be given as lists of per-task arrays (Xs[t]: (m_t, d), ys[t]: (m_t,)), "
        "as a 3-D array X (T, m, d) with y (T, m), or as a metasp.Tasks; "
        f"got {type(Xs).__name__} and {type(ys).__name__}"
    )
