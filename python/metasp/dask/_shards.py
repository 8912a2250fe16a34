"""What runs on the workers: one shard of tasks (the rows of whole tasks, co-located by the
shuffle) and the per-shard kernels whose small outputs the driver reduces."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import kernels
from .._tasks import Tasks as LocalTasks
from .._tasks import is_numeric_column


class Shard(NamedTuple):
    """The tasks of one partition after the shuffle, in sorted label order."""

    index: int  # partition number after the shuffle
    tasks: LocalTasks | None  # None where the shuffle left the partition empty
    labels: np.ndarray  # (T_p,) group labels, in task order


class ShardSummary(NamedTuple):
    """What the driver needs to know about a shard: sizes and the scale of its data."""

    n_tasks: int
    n_samples: int
    n_features: int
    spare: int  # sum over tasks of max(m_t - s, 0) is computed later; here the sizes' sum
    x_task_max_largest: float  # largest max |X| over its tasks
    x_task_max_smallest: float  # smallest positive max |X| over its tasks (inf if none)
    y_largest: float


def where(index, file=None) -> str:
    return f"partition {index}" + (f" (file {file})" if file is not None else "")


def check_partition(pdf, group, target, features, partition_info=None, path_column=None):
    """Raise a ValueError/TypeError naming the input partition (and its file, where the frame
    carries a path column) for anything a fit cannot use; return the partition unchanged."""
    index = None if partition_info is None else partition_info.get("number")
    file = None
    if path_column is not None and path_column in pdf.columns and len(pdf):
        file = str(pdf[path_column].iloc[0])
    place = where(index, file)
    for role, column in (("group", group), ("target", target)):
        if column not in pdf.columns:
            raise ValueError(f"{place}: the {role} column {column!r} is missing; its columns "
                             f"are {pdf.columns.tolist()}")
    absent = [c for c in features if c not in pdf.columns]
    if absent:
        raise ValueError(f"{place}: feature columns {absent} are missing (its columns are "
                         f"{pdf.columns.tolist()}); every partition and file needs the same "
                         f"feature columns")
    for column in (target, *features):
        if not is_numeric_column(pdf[column]):
            raise TypeError(f"{place}: column {column!r} has dtype {pdf[column].dtype}, which is "
                            f"not numeric; encode or convert it (pd.to_numeric) first")
    if pdf[group].isna().any():
        raise ValueError(f"{place}: {int(pdf[group].isna().sum())} rows have no {group!r} label; "
                         f"drop them or give them a label first")
    values = pdf[[target, *features]].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        columns = [str(c) for c, b in zip([target, *features], bad.any(axis=0)) if b]
        raise ValueError(f"{place}: columns {columns} hold NaN or infinite values "
                         f"({int(bad.sum())} entries); drop or impute them first")
    return pdf


def build_shard(pdf, index, group, target, features, dtype=None) -> Shard:
    """The tasks of one shuffled partition, ordered by sorted group label."""
    if len(pdf) == 0:
        return Shard(index, None, np.empty(0, dtype=object))
    values = pdf[[target, *features]].to_numpy(dtype=np.float64)
    tasks = LocalTasks.from_groups(values[:, 1:], values[:, 0], pdf[group].to_numpy(),
                                   dtype=dtype)
    tasks.feature_names = tuple(str(f) for f in features)
    return Shard(index, tasks, np.asarray(tasks.labels))


def summary(shard: Shard) -> ShardSummary:
    tasks = shard.tasks
    if tasks is None:
        return ShardSummary(0, 0, 0, 0, 0.0, np.inf, 0.0)
    X = tasks.X
    row_max = np.maximum(X.max(axis=1), -X.min(axis=1))
    task_max = np.maximum.reduceat(row_max, tasks.offsets[:-1]).astype(np.float64)
    positive = task_max[task_max > 0]
    return ShardSummary(tasks.n_tasks, tasks.n_samples, tasks.n_features, tasks.n_samples,
                        float(task_max.max()),
                        float(positive.min()) if positive.size else np.inf,
                        float(np.abs(tasks.y).max()))
