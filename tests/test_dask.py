"""metasp.dask on a LocalCluster of two worker processes: the same answer as metasp.fit, bad
input named by partition, heads and saving, and a fit that survives a killed worker."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

import metasp

pd = pytest.importorskip("pandas")
dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")
md = pytest.importorskip("metasp.dask")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning",
                                        "ignore::FutureWarning:dask",
                                        "ignore::UserWarning:distributed",
                                        "ignore:.*(shuffle|Shuffle).*")


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        yield client


def long_frame(T, m, d, s, sigma, seed=0):
    X, y, B, _ = metasp.datasets.make_hps(T=T, m=m, d=d, s=s, sigma=sigma, random_state=seed)
    df = pd.DataFrame(X.reshape(-1, d), columns=[f"f{j}" for j in range(d)])
    df["y"] = y.ravel()
    df["station"] = np.repeat([f"s{t:04d}" for t in range(T)], m)
    # Shuffled rows: a task's rows start out in several partitions.
    return df.sample(frac=1, random_state=seed).reset_index(drop=True), B


def distributed_tasks(client, df, npartitions=4):
    return md.Tasks.from_frame(dd.from_pandas(df, npartitions=npartitions), "station", "y",
                               client=client)


def projector_gap(A, B):
    return np.abs(A.T @ A - B.T @ B).max()


def assert_same_fit(ours, theirs, max_extra_sweeps=0):
    """The same fit; ``max_extra_sweeps``: polish sweeps one fit may take beyond the other's
    at the noise floor, besides the one iteration either way."""
    assert projector_gap(ours.B, theirs.B) < 1e-8
    np.testing.assert_allclose(ours.singular_values, theirs.singular_values, rtol=1e-8)
    assert ours.status == theirs.status
    assert abs(ours.n_iter - theirs.n_iter) <= 1 + max_extra_sweeps
    assert [f.code for f in ours.diagnostics] == [f.code for f in theirs.diagnostics]
    np.testing.assert_allclose(ours.noise_variance, theirs.noise_variance, rtol=1e-8)
    # The head prior's mean flips with the sign of each basis row; its projection does not.
    np.testing.assert_allclose(ours.head_mean @ ours.B, theirs.head_mean @ theirs.B,
                               rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("shape", [(120, 15, 10, 2, 0.3),   # maximum likelihood noise
                                   (90, 5, 20, 2, 0.5)],    # scarce: noise by held-out folds
                         ids=["plenty", "scarce"])
def test_fit_gives_metasp_fits_answer(client, shape):
    df, _ = long_frame(*shape)
    tasks = distributed_tasks(client, df)
    local = tasks.to_local()
    theirs = metasp.fit(local, None, shape[3], random_state=0)
    ours = md.fit(tasks, shape[3], random_state=0)
    assert_same_fit(ours, theirs)
    assert (len(ours.history["noise_candidates"]) > 0) == (shape[1] == 5)
    np.testing.assert_array_equal(ours.history["noise_candidates"],
                                  theirs.history["noise_candidates"])
    X_new, y_new = local[3]
    np.testing.assert_allclose(ours.predict(X_new, ours.adapt(X_new, y_new)),
                               theirs.predict(X_new, theirs.adapt(X_new, y_new)),
                               rtol=1e-7, atol=1e-9)
    # Heads on the cluster, indexed by the group label: the same coefficients W B per task.
    heads = ours.heads().compute().loc[list(local.labels)]
    np.testing.assert_allclose(heads.to_numpy() @ ours.B, theirs.W @ theirs.B, rtol=1e-6,
                               atol=1e-8)


def test_noiseless_data_are_polished_on_the_cluster_as_in_memory(client):
    df, B = long_frame(60, 12, 8, 2, 0.0)
    tasks = distributed_tasks(client, df, npartitions=3)
    local = tasks.to_local()
    theirs = metasp.fit(local, None, 2, random_state=0)
    ours = md.fit(tasks, 2, random_state=0)
    assert "polish" in theirs.history["phase"]
    assert_same_fit(ours, theirs)
    assert projector_gap(ours.B, B) < 1e-10  # noiseless data: the exact subspace
    n_polish = np.count_nonzero(ours.history["phase"] == "polish")
    assert n_polish > 0 and len(ours.history["loss"]) == ours.n_iter
    heads = ours.heads().compute().loc[list(local.labels)]
    np.testing.assert_allclose(heads.to_numpy() @ ours.B, theirs.W @ theirs.B, rtol=1e-8,
                               atol=1e-10)


@pytest.mark.parametrize("options", [
    {"heads": "fixed"},                                    # CGIHT, then the polish
    {"heads": "fixed", "init": "spectral", "accel": None},  # NIHT from the spectral start
    {"step": 0.5, "max_iter": 30, "tol": 0},                # the paper's fixed step
    {"n_starts": 2, "random_state": 1},                     # random starts from the seed
], ids=["cgiht", "niht-spectral", "fixed-step", "starts"])
def test_fixed_heads_give_metasp_fits_answer(client, options):
    df, _ = long_frame(120, 15, 10, 2, 0.3)
    tasks = distributed_tasks(client, df)
    local = tasks.to_local()
    theirs = metasp.fit(local, None, 2, **options)
    ours = md.fit(tasks, 2, **options)
    assert_same_fit(ours, theirs, max_extra_sweeps=2)
    # Every start ends at the same loss. Hard thresholding takes the same steps; the polish's
    # last sweeps, at the noise floor, are kept or not on whether the loss fell by rounding
    # (the subspace is the same).
    np.testing.assert_allclose(ours.history["start_loss"], theirs.history["start_loss"],
                               rtol=1e-9)
    if len(theirs.history["start_loss"]) == 1:  # else rounding may pick either equal start
        iht = [r.history["loss"][r.history["phase"] == "iht"] for r in (ours, theirs)]
        assert len(iht[0]) == len(iht[1])
        np.testing.assert_allclose(iht[0], iht[1], rtol=1e-9)
    heads = ours.heads().compute().loc[list(local.labels)]
    np.testing.assert_allclose(heads.to_numpy() @ ours.B, theirs.W @ theirs.B, rtol=1e-7,
                               atol=1e-9)


def test_fixed_heads_survive_a_killed_worker(client):
    df, _ = long_frame(150, 15, 10, 2, 0.3, seed=1)
    tasks = distributed_tasks(client, df, npartitions=4)
    started = time.monotonic()
    undisturbed = md.fit(tasks, 2, heads="fixed")
    duration = time.monotonic() - started
    pid = list(client.run(os.getpid).values())[0]
    killed = []

    def kill():
        os.kill(pid, signal.SIGKILL)  # the nanny starts a new worker process
        killed.append(time.monotonic())

    killer = threading.Timer(0.3 * duration, kill)
    killer.start()
    try:
        survived = md.fit(tasks, 2, heads="fixed")
        finished = time.monotonic()
    finally:
        killer.cancel()
    assert killed and killed[0] < finished  # during the fit
    client.wait_for_workers(2, timeout=60)
    assert pid not in client.run(os.getpid).values()
    assert metasp.metrics.sin_angle(survived.B, undisturbed.B) < 1e-6
    assert survived.status == undisturbed.status


def test_fixed_heads_options_are_checked_as_metasp_fit_checks_them(client):
    df, _ = long_frame(30, 10, 6, 2, 0.3)
    tasks = distributed_tasks(client, df, npartitions=2)
    with pytest.raises(ValueError, match="options of the fixed-heads solver"):
        md.fit(tasks, 2, heads="random", step=0.5)
    with pytest.raises(ValueError, match="accel must be"):
        md.fit(tasks, 2, heads="fixed", accel="nesterov")
    with pytest.raises(ValueError, match="on_iteration"):
        md.fit(tasks, 2, heads="fixed", on_iteration=lambda B: False)
    wide, _ = long_frame(6, 4, 1001, 2, 0.3)
    with pytest.raises(NotImplementedError, match=r"d \* s = 2000 \(here 2002\)"):
        md.fit(distributed_tasks(client, wide, npartitions=2), 2, heads="fixed")


def test_saved_result_loads_with_metasp_load(client, tmp_path):
    df, _ = long_frame(60, 15, 8, 2, 0.3)
    result = md.fit(distributed_tasks(client, df, 2), 2, random_state=0)
    loaded = metasp.load(result.save(tmp_path / "model.npz"))
    np.testing.assert_array_equal(loaded.B, result.B)
    np.testing.assert_array_equal(loaded.head_cov, result.head_cov)
    assert loaded.W.shape == (0, 2)


def test_from_arrays_matches_from_frame(client):
    da = pytest.importorskip("dask.array")
    df, _ = long_frame(40, 10, 6, 2, 0.3)
    features = [f"f{j}" for j in range(6)]
    X = da.from_array(df[features].to_numpy(), chunks=(100, 6))
    y = da.from_array(df["y"].to_numpy(), chunks=100)
    groups = da.from_array(df["station"].to_numpy(), chunks=100)
    tasks = md.Tasks.from_arrays(X, y, groups, client=client)
    local = tasks.to_local()
    reference = metasp.Tasks.from_frame(df, "station", "y")
    assert tasks.n_tasks == 40 and tasks.n_samples == 400
    order = np.argsort(local.labels)
    np.testing.assert_array_equal(local.labels[order], reference.labels)
    for t in range(0, 40, 7):
        Xt, yt = local[order[t]]
        np.testing.assert_array_equal(np.sort(yt), np.sort(reference[t][1]))


def bad_partition(df, column, value, npartitions=3):
    frame = dd.from_pandas(df, npartitions=npartitions)
    parts = frame.to_delayed()
    import dask

    def spoil(pdf):
        pdf = pdf.copy()
        pdf.iloc[0, pdf.columns.get_loc(column)] = value
        return pdf

    parts[1] = dask.delayed(spoil)(parts[1])
    return dd.from_delayed(parts, meta=frame._meta, verify_meta=False)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_values_name_the_partition(client, value):
    df, _ = long_frame(20, 6, 4, 2, 0.3)
    with pytest.raises(ValueError, match=r"partition 1.*'f2'.*NaN or infinite"):
        md.Tasks.from_frame(bad_partition(df, "f2", value), "station", "y", client=client)


def test_schema_errors_are_clear(client):
    df, _ = long_frame(20, 6, 4, 2, 0.3)
    frame = dd.from_pandas(df, npartitions=2)
    with pytest.raises(ValueError, match="group column 'site' is not in the frame"):
        md.Tasks.from_frame(frame, "site", "y", client=client)
    with pytest.raises(ValueError, match="target column 'z'"):
        md.Tasks.from_frame(frame, "station", "z", client=client)
    with pytest.raises(TypeError, match="not numeric"):
        md.Tasks.from_frame(frame.assign(f1=frame.f1.astype(str)), "station", "y",
                            features=["f0", "f1"], client=client)
    with pytest.raises(ValueError, match="features is empty"):
        md.Tasks.from_frame(frame, "station", "y", features=[], client=client)
    with pytest.raises(ValueError, match="no rows"):
        md.Tasks.from_frame(dd.from_pandas(df.iloc[:0], npartitions=1), "station", "y",
                            client=client)


def test_mismatched_feature_columns_name_the_partition(client):
    import dask

    df, _ = long_frame(20, 6, 4, 2, 0.3)
    frame = dd.from_pandas(df, npartitions=3)
    parts = frame.to_delayed()
    parts[2] = dask.delayed(lambda pdf: pdf.rename(columns={"f3": "g3"}))(parts[2])
    spoiled = dd.from_delayed(parts, meta=frame._meta, verify_meta=False)
    with pytest.raises(ValueError, match=r"partition 2.*\['f3'\] are missing"):
        md.Tasks.from_frame(spoiled, "station", "y", client=client)


def test_a_killed_worker_does_not_kill_the_fit(client):
    df, _ = long_frame(150, 15, 10, 2, 0.3, seed=1)
    tasks = distributed_tasks(client, df, npartitions=4)
    undisturbed = md.fit(tasks, 2, random_state=0)
    pids = list(client.run(os.getpid).values())
    killed = []

    def kill_once(B):
        if not killed:
            os.kill(pids[0], signal.SIGKILL)  # the nanny starts a new worker process
            killed.append(pids[0])
        return False

    survived = md.fit(tasks, 2, random_state=0, on_iteration=kill_once)
    assert killed
    client.wait_for_workers(2, timeout=60)
    assert pids[0] not in client.run(os.getpid).values()  # the shards were rebuilt elsewhere
    assert metasp.metrics.sin_angle(survived.B, undisturbed.B) < 1e-6
    assert survived.status == undisturbed.status


def test_shard_kernels_run_where_the_shard_is(client):
    """Work stealing would send a busy worker's shards to an idle one; the kernels a gather
    waits on are bound to the worker holding their shard."""
    from metasp.dask._fit import Cluster

    df, _ = long_frame(40, 10, 6, 2, 0.3)
    tasks = distributed_tasks(client, df, npartitions=4)
    holder = sorted(client.nthreads())[0]
    on_one = client.scatter(client.gather(tasks.shards), workers=[holder])

    def where(shard, seconds):
        time.sleep(seconds)  # long enough for the idle worker to steal, were it allowed
        return distributed.get_worker().address

    assert Cluster(client, timeout=60).each("where", where, on_one, 0.3) == [holder] * 4
    assert all(list(w) == [holder] for w in client.who_has(on_one).values())


def test_shards_are_spread_over_the_workers_by_rows(client):
    from metasp.dask._tasks import _spread

    df, _ = long_frame(40, 10, 6, 2, 0.3)
    tasks = distributed_tasks(client, df, npartitions=4)
    first, second = sorted(client.nthreads())
    on_one = client.scatter(client.gather(tasks.shards), workers=[first])
    rows = [s.n_samples for s in tasks.summaries]
    spread = _spread(client, on_one, rows, "spread-test")
    holders = client.who_has(spread)
    mine = {w: sum(r for f, r in zip(spread, rows) if w in holders[f.key]) for w in (first, second)}
    assert abs(mine[first] - mine[second]) <= max(rows), mine
    shards = client.gather(spread)
    assert [s.index for s in shards] == [s.index for s in client.gather(tasks.shards)]
    moved = md.Tasks(spread, client, tasks.summaries, tasks.feature_names)
    U = np.ones((6, 2))
    assert md.marginal_pass(moved, U, 0.5)["deviance"] == \
        pytest.approx(md.marginal_pass(tasks, U, 0.5)["deviance"], rel=1e-12)


def test_a_kernel_bound_to_a_lost_worker_runs_again(client):
    from metasp.dask._fit import Cluster

    client.wait_for_workers(2, timeout=60)
    df, _ = long_frame(60, 10, 6, 2, 0.3, seed=3)
    tasks = distributed_tasks(client, df, npartitions=4)
    holder = next(iter(client.who_has(tasks.shards[:1]).values()))[0]
    pid = client.run(os.getpid, workers=[holder])[holder]

    def count(shard, seconds):
        time.sleep(seconds)
        return 0 if shard.tasks is None else shard.tasks.n_tasks

    killer = threading.Timer(0.5, os.kill, (pid, signal.SIGKILL))
    killer.start()
    counts = Cluster(client, timeout=60).each("count", count, tasks.shards, 1.5)
    killer.join()
    assert counts == list(tasks.shard_tasks)
    client.wait_for_workers(2, timeout=60)
    assert pid not in client.run(os.getpid).values()


def bytes_sent_by_workers(client):
    """Dask's own counter of the bytes the workers sent (to other workers and the driver)."""
    return sum(client.run(lambda dask_worker: dask_worker.transfer_outgoing_bytes_total).values())


def test_iterations_move_no_rows_of_x(client):
    """Per iteration the workers send small sums (O(d s) per shard), never rows: the traffic
    stays far below a shard's data and does not grow with the number of tasks."""
    medians = {}
    for T in (300, 1200):
        df, _ = long_frame(T, 20, 20, 3, 0.3, seed=2)
        tasks = distributed_tasks(client, df, npartitions=4)
        sent = []
        md.fit(tasks, 3, random_state=0,
               on_iteration=lambda B, sent=sent: sent.append(bytes_sent_by_workers(client)))
        per_iteration = np.diff(sent)
        shard_bytes = T * 20 * 20 * 8 / 4
        assert per_iteration.max() < shard_bytes / 10, (T, per_iteration.max(), shard_bytes)
        medians[T] = np.median(per_iteration)
    assert medians[1200] <= 1.5 * medians[300], medians


def test_fixed_heads_move_no_rows_either(client):
    """The iterate, gradient and directions stay with their shards: a fixed-heads fit's
    traffic per iteration (sums, Gram matrices, the polish's normal equations) is far below a
    shard's data and does not grow with the number of tasks."""
    per_iteration = {}
    for T in (1200, 4800):
        df, _ = long_frame(T, 20, 20, 3, 0.3, seed=2)
        tasks = distributed_tasks(client, df, npartitions=4)
        before = bytes_sent_by_workers(client)
        result = md.fit(tasks, 3, heads="fixed")
        per_iteration[T] = (bytes_sent_by_workers(client) - before) / result.n_iter
        assert per_iteration[T] < T * 20 * 20 * 8 / 4 / 10, per_iteration
    assert per_iteration[4800] <= 1.5 * per_iteration[1200], per_iteration


def test_shard_kernels_of_fixed_heads_accept_an_empty_shard():
    """The shuffle may leave a partition without tasks: its kernels return empty blocks and
    zero sums of the right shapes."""
    from metasp.dask import _shards

    empty = _shards.Shard(0, None, np.empty(0, dtype=object))
    d, s = 6, 2
    V = np.linalg.qr(np.random.default_rng(0).standard_normal((d, s)))[0]
    Theta = _shards.zeros(empty, d)
    assert Theta.shape == (0, d)
    G, loss = _shards.gradient_and_loss(empty, Theta, d, 1)
    assert G.shape == (0, d) and loss == 0
    assert _shards.curvature_sum(empty, np.zeros((0, s)), V, 1) == 0
    np.testing.assert_array_equal(_shards.line_search_sums(empty, G, G, V.T, 1), 0)
    W, loss = _shards.polish_heads(empty, V, 1)
    assert W.shape == (0, s) and loss == 0
    M, rhs = _shards.basis_system_sums(empty, W, V, d, 1)
    assert M.shape == (d * s, d * s) and rhs.shape == (d * s,) and not M.any()
    assert _shards.initial_loss_sum(empty) == 0
    np.testing.assert_array_equal(_shards.gram(Theta), np.zeros((d, d)))
    np.testing.assert_array_equal(_shards.difference_sums(Theta, Theta), [0, 0])
    assert _shards.is_zero(Theta)


def test_a_lost_client_raises_instead_of_hanging(client):
    df, _ = long_frame(60, 15, 8, 2, 0.3)
    second = distributed.Client(client.scheduler.address)
    tasks = distributed_tasks(second, df, npartitions=2)

    def disconnect(B):
        second.close()
        return False

    with pytest.raises(ConnectionError, match="client is clos"):
        md.fit(tasks, 2, random_state=0, on_iteration=disconnect, timeout=20)


def test_a_cluster_that_does_not_answer_in_time_raises(client):
    df, _ = long_frame(30, 10, 6, 2, 0.3)
    tasks = distributed_tasks(client, df, npartitions=2)
    with pytest.raises(TimeoutError, match="did not answer within"):
        md.fit(tasks, 2, timeout=1e-4)


def test_marginal_pass_sums_the_shards(client):
    df, _ = long_frame(40, 10, 6, 2, 0.3)
    tasks = distributed_tasks(client, df, npartitions=3)
    U = np.random.default_rng(0).standard_normal((6, 2))
    ours = md.marginal_pass(tasks, U, 0.4)
    theirs = metasp.kernels.marginal_pass(tasks.to_local(), U, 0.4)
    assert ours["deviance"] == pytest.approx(theirs.deviance, rel=1e-12)
    assert ours["expected"] == pytest.approx(theirs.expected, rel=1e-12)
    np.testing.assert_allclose(ours["gradient"], theirs.gradient, rtol=1e-10)
    assert ours["mean_task_loss"] == pytest.approx(theirs.task_loss.mean(), rel=1e-12)


def test_progress_bar_counts_iterations(client, capsys):
    df, _ = long_frame(40, 15, 6, 2, 0.3)
    result = md.fit(distributed_tasks(client, df, npartitions=2), 2, random_state=0,
                    progress=True)
    assert "metasp.dask.fit" in capsys.readouterr().err
    assert result.n_iter > 0


def ragged_frame(T, m_max, d, s, sigma, seed=0):
    """Tasks of 4 to m_max rows: the small ones are never held out by select_rank."""
    X, y, _, _ = metasp.datasets.make_hps(T=T, m=m_max, d=d, s=s, sigma=sigma, random_state=seed)
    sizes = np.random.default_rng(seed).integers(4, m_max + 1, size=T)
    keep = (np.arange(m_max) < sizes[:, None]).ravel()
    df = pd.DataFrame(X.reshape(-1, d)[keep], columns=[f"f{j}" for j in range(d)])
    df["y"] = y.ravel()[keep]
    df["station"] = np.repeat([f"s{t:04d}" for t in range(T)], sizes)
    return df.sample(frac=1, random_state=seed).reset_index(drop=True)


def test_select_rank_gives_metasp_select_ranks_answer(client):
    """The same folds of tasks, support sets and fit seeds as metasp.select_rank on the same
    tasks in the same order, so the same scores and the same rank."""
    tasks = distributed_tasks(client, ragged_frame(150, 14, 8, 2, 0.3), npartitions=4)
    generator = np.random.default_rng(5)
    ours = md.select_rank(tasks, ranks=[1, 2, 3], cv=3, random_state=generator, shots=(3, 5))
    local = tasks.to_local()
    assert (local.task_sizes <= 5).any()  # some tasks are too small to be held out
    replay = np.random.default_rng(5)
    theirs = metasp.select_rank(local, ranks=[1, 2, 3], cv=3, random_state=replay,
                                holdout="tasks", shots=(3, 5))
    np.testing.assert_allclose(ours.fold_mse, theirs.fold_mse, rtol=1e-8)
    np.testing.assert_allclose(ours.mean_mse, theirs.mean_mse, rtol=1e-8)
    np.testing.assert_array_equal(ours.n_unconverged, theirs.n_unconverged)
    assert ours.best_rank == theirs.best_rank == 2
    assert ours.ranks.tolist() == [1, 2, 3]
    # The generator moved on exactly as metasp.select_rank moves it.
    assert generator.integers(2**63) == replay.integers(2**63)


def test_select_rank_refuses_what_it_does_not_distribute(client):
    tasks = distributed_tasks(client, ragged_frame(30, 8, 5, 2, 0.3), npartitions=2)
    with pytest.raises(NotImplementedError, match="holdout='samples' is not distributed"):
        md.select_rank(tasks, ranks=[1], holdout="samples")
    with pytest.raises(ValueError, match="needs heads='posterior'"):
        md.select_rank(tasks, ranks=[1], heads="fitted")
    with pytest.raises(ValueError, match="needs at least 25 tasks with more than"):
        md.select_rank(tasks, ranks=[1], cv=25, shots=(3, 6))
    with pytest.raises(TypeError, match="metasp.dask.Tasks"):
        md.select_rank(tasks.to_local(), ranks=[1])


def cli_files(tmp_path):
    """Two CSV files of one table of 50 rank-2 tasks, each task's rows in both files, plus a
    file of new tasks; features on shifted, different scales, and a text column."""
    X, y, _, _ = metasp.datasets.make_hps(T=58, m=20, d=6, s=2, sigma=0.1, random_state=0)
    frame = pd.DataFrame(X.reshape(-1, 6) * np.arange(1, 7) + 3.0, columns=[f"f{j}" for j in range(6)])
    frame["y"] = y.reshape(-1)
    frame["station"] = np.repeat([f"s{t:02d}" for t in range(58)], 20)
    frame["note"] = "text"
    train = frame.iloc[:1000]
    train.iloc[::2].to_csv(tmp_path / "part-0.csv", index=False)
    train.iloc[1::2].to_csv(tmp_path / "part-1.csv", index=False)
    train.to_csv(tmp_path / "whole.csv", index=False)
    frame.iloc[1000:].to_csv(tmp_path / "new.csv", index=False)
    return str(tmp_path / "part-*.csv")


def test_cli_fits_a_glob_of_files_on_the_cluster(client, tmp_path, capsys):
    from metasp._cli import main

    pattern = cli_files(tmp_path)
    common = ["--group", "station", "--target", "y", "--random-state", "0"]
    on_cluster = ["--dask-scheduler", client.scheduler.address]
    chosen = tmp_path / "chosen.npz"
    assert main(["fit", pattern, *common, *on_cluster, "--max-rank", "3", "--cv", "3",
                 "--out", str(chosen)]) == 0
    out, err = capsys.readouterr()
    assert "warning: left out non-numeric columns ['note']" in err
    assert "50 tasks, 1000 rows, 6 features (f0, f1, f2, f3, f4, f5) + intercept" in out
    assert "<- best" in out and "saved" in out
    model = metasp.load(chosen)
    assert model.rank == model.metadata["rank"] == 2  # the true rank, by held-out tasks
    assert [row["rank"] for row in model.metadata["rank_selection"]] == [1, 2, 3]
    assert model.metadata["training_groups"] == []  # the heads stayed on the cluster
    # With --rank, the model of the in-memory command on the same table.
    assert main(["fit", pattern, *common, *on_cluster, "--rank", "2",
                 "--out", str(tmp_path / "ours.npz")]) == 0
    assert main(["fit", str(tmp_path / "whole.csv"), *common, "--rank", "2",
                 "--out", str(tmp_path / "theirs.npz")]) == 0
    ours, theirs = metasp.load(tmp_path / "ours.npz"), metasp.load(tmp_path / "theirs.npz")
    assert projector_gap(ours.B, theirs.B) < 1e-8
    for key in ("mean", "scale"):
        np.testing.assert_allclose(ours.metadata["preprocessing"]["standardize"][key],
                                   theirs.metadata["preprocessing"]["standardize"][key],
                                   rtol=1e-12)
    # predict reads the model the cluster wrote.
    assert main(["predict", str(chosen), str(tmp_path / "new.csv"), "--shots", "5",
                 "--out", str(tmp_path / "pred.csv")]) == 0
    assert np.isfinite(pd.read_csv(tmp_path / "pred.csv")["prediction"]).all()
    # Unless the cluster is the caller's, the client is closed and the cluster keeps running.
    assert client.status == "running" and len(client.scheduler_info()["workers"]) == 2


def test_cli_names_the_file_with_missing_values_and_drops_them_with_dropna(client, tmp_path,
                                                                         capsys):
    from metasp._cli import main

    pattern = cli_files(tmp_path)
    part = pd.read_csv(tmp_path / "part-1.csv")
    part.loc[3, "f2"] = np.nan
    part.to_csv(tmp_path / "part-1.csv", index=False)
    argv = ["fit", pattern, "--group", "station", "--target", "y", "--rank", "2",
            "--dask-scheduler", client.scheduler.address, "--out", str(tmp_path / "m.npz")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "part-1.csv" in err and "['f2'] hold NaN" in err
    assert not (tmp_path / "m.npz").exists()
    assert main([*argv, "--dropna"]) == 0
    assert "warning: dropped 1 of 1000 rows" in capsys.readouterr().err
    assert metasp.load(tmp_path / "m.npz").rank == 2


@pytest.mark.parametrize("extra, code, message", [
    (["--dask-scheduler", "tcp://127.0.0.1:1", "--dask-workers", "2"], 2, "not allowed with"),
    (["--dask-workers", "0"], 2, "--dask-workers must be at least 1"),
    (["--dask-workers", "2", "--min-samples", "3"], 2, "--min-samples needs the table in memory"),
    (["--dask-workers", "2", "--rank-holdout", "samples"], 2, "--rank-holdout samples is not "
                                                               "distributed"),
    (["--dask-workers", "2", "--rank", "2"], 1, "no file matches"),
])
def test_cli_dask_options_are_checked_before_any_cluster_starts(tmp_path, capsys, extra, code,
                                                                message):
    from metasp._cli import main

    argv = ["fit", str(tmp_path / "absent-*.csv"), "--group", "g", "--target", "y",
            "--out", str(tmp_path / "m.npz"), *extra]
    try:
        status = main(argv)
    except SystemExit as exit:  # argparse's own checks exit with status 2
        status = exit.code
    assert status == code
    assert message in capsys.readouterr().err


def test_cli_without_dask_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    import sys

    from metasp._cli import main

    monkeypatch.setitem(sys.modules, "distributed", None)
    monkeypatch.delitem(sys.modules, "metasp.dask")
    assert main(["fit", str(tmp_path / "*.csv"), "--group", "g", "--target", "y",
                 "--dask-workers", "2", "--rank", "1", "--out", str(tmp_path / "m.npz")]) == 1
    assert 'need dask.distributed: pip install "metasp[dask]"' in capsys.readouterr().err


def test_import_metasp_does_not_import_dask():
    import subprocess
    import sys

    code = "import sys, metasp; print(any(m.split('.')[0] in ('dask', 'distributed') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
