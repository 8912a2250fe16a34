"""metasp.dask.Tasks: tasks co-located once by Dask's shuffle and persisted on the workers."""

from __future__ import annotations

import numpy as np

from .._tasks import Tasks as LocalTasks
from . import _shards

# Seconds to wait for any one result from the cluster before giving up: a driver whose
# scheduler went away raises instead of hanging.
GATHER_TIMEOUT = 300.0


def current_client(client=None):
    """``client``, or the current dask.distributed client; a clear error when there is none."""
    from distributed import Client, default_client

    if client is not None:
        if not isinstance(client, Client):
            raise TypeError(f"client must be a distributed.Client; got {type(client).__name__}")
        return client
    try:
        return default_client()
    except ValueError:
        raise ValueError("no dask.distributed client: start one (distributed.Client() or "
                         "Client('scheduler-address:8786')) or pass client=") from None


def gather(client, futures, timeout=GATHER_TIMEOUT):
    """The results of ``futures``, in order; raises where the cluster does not answer within
    ``timeout`` seconds (a lost scheduler, a disconnected client) instead of hanging."""
    futures = list(futures)
    wait_for(client, futures, timeout)
    try:
        return client.gather(futures)
    except Exception:
        check_connected(client)
        raise


def wait_for(client, futures, timeout=GATHER_TIMEOUT) -> None:
    """Wait until ``futures`` are done, their results left on the workers; raises as
    :func:`gather` does."""
    from distributed import wait

    check_connected(client)
    try:
        wait(futures, timeout=timeout)
    except TimeoutError:
        raise no_answer(timeout) from None
    except Exception:
        check_connected(client)
        raise


def no_answer(timeout) -> TimeoutError:
    return TimeoutError(f"the Dask cluster did not answer within {timeout:g} s (pass a larger "
                        "timeout= for slow shards)")


def check_connected(client) -> None:
    if client.status != "running":
        raise ConnectionError(f"the Dask client is {client.status}: it lost its scheduler or "
                              "was closed; reconnect and fit again")


class Tasks:
    """T regression tasks spread over a Dask cluster, one shard of whole tasks per partition.

    Build it with :meth:`from_frame` or :meth:`from_arrays`: the rows of each task are brought
    together once, by Dask's own shuffle, into shards (a :class:`metasp.Tasks` each, tasks in
    sorted label order) that stay persisted on the workers; a fit only sends them subspaces
    and gets back small sums. The global task order is the shards' order, then each shard's.
    Where a worker is lost, Dask recomputes its shards from the input partitions.

    Attributes
    ----------
    shards : list of distributed.Future
        One per partition after the shuffle (some may hold no task).
    n_tasks, n_samples, n_features : int
    feature_names : tuple of str
    shard_tasks : ndarray of int
        Tasks per shard, in shard order.
    """

    def __init__(self, shards, client, summaries, feature_names):
        self.shards, self.client = list(shards), client
        self.feature_names = tuple(feature_names)
        self.summaries = list(summaries)
        self.shard_tasks = np.array([s.n_tasks for s in summaries], dtype=np.int64)
        self.n_tasks = int(self.shard_tasks.sum())
        self.n_samples = int(sum(s.n_samples for s in summaries))
        self.n_features = len(self.feature_names)
        if self.n_tasks == 0:
            raise ValueError("the frame holds no rows: there are no tasks to fit")

    @property
    def first_task(self) -> np.ndarray:
        """Global index of each shard's first task."""
        return np.concatenate([[0], np.cumsum(self.shard_tasks)[:-1]])

    @classmethod
    def from_frame(cls, ddf, group, target, features=None, *, path_column=None, dtype=None,
                   client=None) -> Tasks:
        """Tasks from a dask DataFrame in long format (one row per sample).

        Every input partition is checked (group and target present, numeric finite features,
        the same feature columns everywhere) before the rows are shuffled by ``group`` with
        ``ddf.shuffle(on=group)``; the shards are then built, spread over the workers in
        proportion to their threads (by rows) and persisted, and a bad partition raises here,
        naming it, before any fit.

        Parameters
        ----------
        ddf : dask.dataframe.DataFrame
        group : column label
            The column saying which task each row belongs to.
        target : column label
            The numeric column to predict.
        features : list of column labels, optional
            By default every numeric column of ``ddf``'s schema other than ``group``,
            ``target`` and ``path_column``.
        path_column : column label, optional
            A column naming each row's source file (``dd.read_csv(...,
            include_path_column=True)``): errors then name the file too.
        dtype : {None, numpy.float32, numpy.float64}
            As in :class:`metasp.Tasks`.
        client : distributed.Client, optional
            Default: the current client.

        Returns
        -------
        Tasks

        Raises
        ------
        ValueError, TypeError
            For a missing group or target column, non-numeric or missing feature columns,
            NaN or inf values (naming the partition, and the file where known), or no rows.
        """
        import dask
        import dask.dataframe as dd

        client = current_client(client)
        if not isinstance(ddf, dd.DataFrame):
            raise TypeError(f"ddf must be a dask DataFrame; got {type(ddf).__name__} (for a "
                            "pandas frame, use metasp.Tasks.from_frame or dd.from_pandas)")
        features = _features(ddf, group, target, features, path_column)
        checked = ddf.map_partitions(
            _shards.check_partition, group, target, features, path_column=path_column,
            meta=ddf._meta)
        shuffled = checked.shuffle(on=group)
        token = dask.base.tokenize(shuffled, group, target, features, dtype)
        parts = shuffled.to_delayed()
        delayed = [dask.delayed(_shards.build_shard, pure=True)(
            part, i, group, target, features, dtype, dask_key_name=f"metasp-shard-{i}-{token}")
            for i, part in enumerate(parts)]
        futures = client.compute(delayed)
        summaries = gather(client, client.map(_shards.summary, futures,
                                              key=[f"metasp-summary-{i}-{token}"
                                                   for i in range(len(futures))]))
        futures = _spread(client, futures, [s.n_samples for s in summaries], token)
        return cls(futures, client, summaries, [str(f) for f in features])

    @classmethod
    def from_arrays(cls, X, y, groups, *, dtype=None, client=None) -> Tasks:
        """Tasks from dask arrays chunked by rows: ``X`` (N, d), ``y`` (N,), ``groups`` (N,).

        Parameters
        ----------
        X : dask.array.Array of shape (N, d)
            Chunked by rows only (one chunk across the columns; others are rechunked).
        y : dask.array.Array of shape (N,)
        groups : dask.array.Array of shape (N,)
            Task labels.
        dtype, client
            As in :meth:`from_frame`.

        Returns
        -------
        Tasks
        """
        import dask.array as da
        import dask.dataframe as dd

        for name, array, ndim in (("X", X, 2), ("y", y, 1), ("groups", groups, 1)):
            if not isinstance(array, da.Array):
                raise TypeError(f"{name} must be a dask array; got {type(array).__name__}")
            if array.ndim != ndim:
                raise ValueError(f"{name} must be {ndim}-D; got shape {array.shape}")
        if X.shape[0] != y.shape[0] or X.shape[0] != groups.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows, y {y.shape[0]}, groups {groups.shape[0]}; "
                             "they must match")
        if X.shape[1] == 0:
            raise ValueError("X has no feature columns")
        if not np.issubdtype(X.dtype, np.number) or not np.issubdtype(y.dtype, np.number):
            raise TypeError(f"X and y must be numeric; got dtypes {X.dtype} and {y.dtype}")
        X = X.rechunk({1: -1})
        y, groups = y.rechunk(X.chunks[0]), groups.rechunk(X.chunks[0])
        names = [f"x{j}" for j in range(X.shape[1])]
        frame = dd.concat([dd.from_dask_array(X, columns=names),
                           dd.from_dask_array(y, columns="y").to_frame(),
                           dd.from_dask_array(groups, columns="group").to_frame()], axis=1)
        return cls.from_frame(frame, "group", "y", names, dtype=dtype, client=client)

    def to_local(self) -> LocalTasks:
        """All tasks gathered into one :class:`metasp.Tasks`, in the global task order (for
        data that fit in the driver's memory: tests and small problems)."""
        shards = [s for s in gather(self.client, self.shards) if s.tasks is not None]
        X = np.concatenate([s.tasks.X for s in shards])
        y = np.concatenate([s.tasks.y for s in shards])
        sizes = np.concatenate([s.tasks.task_sizes for s in shards])
        labels = np.concatenate([s.labels for s in shards])
        return LocalTasks(X, y, np.concatenate([[0], np.cumsum(sizes)]), labels,
                          self.feature_names)

    def __repr__(self) -> str:
        return (f"metasp.dask.Tasks(T={self.n_tasks}, N={self.n_samples}, d={self.n_features}, "
                f"shards={len(self.shards)})")


def _spread(client, shards, rows, token) -> list:
    """``shards`` placed so that each worker holds rows in proportion to its threads.

    Every evaluation of a fit waits for the slowest worker, and each shard's kernels run
    where the shard is; where the shuffle left one worker more than its share, the excess
    shards move once, here (Dask keeps their lineage, so a lost one is still rebuilt).
    """
    threads = client.nthreads()
    if len(threads) < 2:
        return list(shards)
    holders = client.who_has(shards)
    share = sum(rows) / sum(threads.values())
    load = dict.fromkeys(threads, 0)
    placed, homeless = list(shards), []
    for i in sorted(range(len(shards)), key=lambda i: -rows[i]):
        home = next((w for w in holders.get(shards[i].key, ()) if w in load), None)
        if home is not None and load[home] + rows[i] <= share * threads[home] + rows[i] / 2:
            load[home] += rows[i]
        else:
            homeless.append(i)
    for i in homeless:
        worker = min(load, key=lambda w: (load[w] + rows[i]) / threads[w])
        load[worker] += rows[i]
        # Bound: a loose placement may run where the shard already is, undoing the spread.
        placed[i] = client.submit(_shards.placed, shards[i], workers=[worker],
                                  allow_other_workers=False, key=f"metasp-placed-{i}-{token}")
    if homeless:
        wait_for(client, placed)
    return placed


def _features(ddf, group, target, features, path_column) -> list:
    """The feature columns from ``ddf``'s schema, checked."""
    from .._tasks import is_numeric_column

    columns = list(ddf.columns)
    for role, column in (("group", group), ("target", target)):
        if column not in columns:
            raise ValueError(f"the {role} column {column!r} is not in the frame; its columns "
                             f"are {columns}")
    if group == target:
        raise ValueError(f"group and target are the same column {group!r}")
    meta = ddf._meta
    if not is_numeric_column(meta[target]):
        raise TypeError(f"the target column {target!r} has dtype {meta[target].dtype}, which is "
                        "not numeric; convert it first")
    skip = {group, target, path_column}
    if features is None:
        features = [c for c in columns if c not in skip and is_numeric_column(meta[c])]
        if not features:
            raise ValueError("the frame has no numeric feature columns besides the group and "
                             "target")
        return features
    features = [features] if isinstance(features, str) else list(features)
    if not features:
        raise ValueError("features is empty; list at least one column, or pass None for all")
    absent = [c for c in features if c not in columns]
    if absent:
        raise ValueError(f"feature columns {absent} are not in the frame; its columns are "
                         f"{columns}")
    clash = [c for c in features if c in skip]
    if clash:
        raise ValueError(f"columns {clash} cannot be features (they are the group, target or "
                         "path column)")
    text = {str(c): str(meta[c].dtype) for c in features if not is_numeric_column(meta[c])}
    if text:
        raise TypeError(f"feature columns are not numeric (dtypes {text}); encode them first")
    return features
