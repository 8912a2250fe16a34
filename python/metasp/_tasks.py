"""The one data layout of metasp: T regression tasks stacked into a single array."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["Tasks", "as_tasks"]


def _numeric_array(values, name: str) -> np.ndarray:
    """Return ``values`` as an array, refusing dtypes that are not real numbers."""
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as error:  # ragged nested lists, objects numpy rejects
        raise TypeError(f"{name} could not be read as a numeric array: {error}") from None
    if array.dtype.kind == "c":
        raise TypeError(
            f"{name} has complex dtype {array.dtype}; metasp fits real-valued regressions. "
            "Pass the real part (np.real) or split real and imaginary parts into features."
        )
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} has dtype {array.dtype}, which is not numeric; convert it with "
            f"np.asarray({name}, dtype=float) after encoding any non-numeric columns."
        )
    return array


def _float64(array: np.ndarray) -> np.ndarray:
    """C-contiguous float64: the same object when it already is, else one deliberate copy."""
    return np.ascontiguousarray(array, dtype=np.float64)


def _check_finite(array: np.ndarray, name: str) -> None:
    # A sum is finite exactly when no entry is NaN or inf, unless it overflows; it needs no
    # temporary the size of the array, which matters for a data set of several GB.
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.sum(array)):
            return
    bad = np.argwhere(~np.isfinite(array))
    if bad.size:
        where = ", ".join(str(i) for i in bad[0])
        raise ValueError(
            f"{name} contains NaN or inf (first at index [{where}]); remove or impute those "
            "samples before fitting."
        )


class Tasks:
    """T linear regression tasks stored as one stacked design matrix.

    Task ``t`` owns rows ``offsets[t]:offsets[t + 1]`` of ``X`` and ``y``. This is the layout
    the C++ core reads without copying; every other input format is converted to it once.

    Parameters
    ----------
    X : array_like of shape (N, d)
        All samples of all tasks, task by task. A C-contiguous float64 array is used as is
        (never copied); other dtypes or layouts are converted to C-contiguous float64 once.
    y : array_like of shape (N,)
        Targets, aligned with the rows of ``X``.
    offsets : array_like of int, shape (T + 1,)
        Task boundaries: ``offsets[0] == 0``, ``offsets[-1] == N``, strictly increasing (every
        task has at least one sample).
    labels : array_like of shape (T,), optional
        A name for each task (for example the group labels of :meth:`from_groups`).

    Attributes
    ----------
    X : ndarray of shape (N, d), float64, C-contiguous
    y : ndarray of shape (N,), float64
    offsets : ndarray of shape (T + 1,), int64
    labels : ndarray of shape (T,) or None

    Examples
    --------
    >>> import numpy as np
    >>> from metasp import Tasks
    >>> tasks = Tasks.from_list([np.ones((3, 2)), np.ones((5, 2))], [np.ones(3), np.ones(5)])
    >>> tasks.n_tasks, tasks.n_features, tasks.task_sizes.tolist()
    (2, 2, [3, 5])
    """

    def __init__(self, X, y, offsets, labels=None):
        X = _numeric_array(X, "X")
        y = _numeric_array(y, "y")
        offsets = _numeric_array(offsets, "offsets")
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
        X, y = _float64(X), _float64(y)
        _check_finite(X, "X")
        _check_finite(y, "y")
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (offsets.size - 1,):
                raise ValueError(
                    f"labels must have one entry per task ({offsets.size - 1}); "
                    f"got shape {labels.shape}"
                )
        self.X, self.y, self.offsets, self.labels = X, y, offsets, labels

    @classmethod
    def from_list(cls, Xs: Sequence, ys: Sequence) -> Tasks:
        """Stack per-task arrays ``Xs[t]`` of shape (m_t, d) and ``ys[t]`` of shape (m_t,).

        The m_t may differ. The arrays are copied once into the stacked layout.
        """
        if isinstance(Xs, np.ndarray):
            raise TypeError("from_list expects a sequence of per-task arrays; for a 3-D array "
                            "use Tasks.from_array")
        Xs, ys = list(Xs), list(ys)
        if len(Xs) != len(ys):
            raise ValueError(f"got {len(Xs)} design matrices but {len(ys)} target vectors")
        if not Xs:
            raise ValueError("there are no tasks: Xs and ys are empty")
        Xs = [_numeric_array(X, f"Xs[{t}]") for t, X in enumerate(Xs)]
        ys = [_numeric_array(y, f"ys[{t}]") for t, y in enumerate(ys)]
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
        # One copy, straight into float64, whatever the per-task dtypes.
        X = np.concatenate(Xs, axis=0, dtype=np.float64)
        return cls(X, np.concatenate(ys, dtype=np.float64), offsets)

    @classmethod
    def from_array(cls, X, y) -> Tasks:
        """Tasks of equal size from ``X`` of shape (T, m, d) and ``y`` of shape (T, m).

        A C-contiguous float64 ``X`` is viewed as (T * m, d) without copying.
        """
        X = _numeric_array(X, "X")
        y = _numeric_array(y, "y")
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
        return cls(_float64(X).reshape(T * m, d), _float64(y).reshape(T * m), offsets)

    @classmethod
    def from_groups(cls, X, y, groups) -> Tasks:
        """Tasks from long-format data: one row per sample and a task label per row.

        Tasks are ordered by sorted label; the labels are kept in :attr:`labels`. When the rows
        are already grouped in that order, ``X`` is not reordered (and, if it is C-contiguous
        float64, not copied).
        """
        X = _numeric_array(X, "X")
        y = _numeric_array(y, "y")
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
        labels, codes, counts = np.unique(groups, return_inverse=True, return_counts=True)
        if (np.diff(codes) < 0).any():
            order = np.argsort(codes, kind="stable")
            X, y = X[order], y[order]
        offsets = np.zeros(labels.size + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return cls(X, y, offsets, labels=labels)

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


def as_tasks(Xs, ys=None) -> Tasks:
    """Convert any supported task input to :class:`Tasks` (see :func:`metasp.fit`)."""
    if isinstance(Xs, Tasks):
        if ys is not None:
            raise TypeError("ys must be None when the tasks come as a metasp.Tasks")
        return Xs
    if ys is None:
        raise TypeError("ys is missing: pass the targets, or a metasp.Tasks as the only input")
    if isinstance(Xs, np.ndarray):
        if not isinstance(ys, np.ndarray):
            ys = _numeric_array(ys, "ys")
        return Tasks.from_array(Xs, ys)
    if isinstance(Xs, (list, tuple)) and isinstance(ys, (list, tuple, np.ndarray)):
        return Tasks.from_list(Xs, ys)
    raise TypeError(
        "tasks must be given as lists of per-task arrays (Xs[t]: (m_t, d), ys[t]: (m_t,)), "
        "as a 3-D array X (T, m, d) with y (T, m), or as a metasp.Tasks; "
        f"got {type(Xs).__name__} and {type(ys).__name__}"
    )
