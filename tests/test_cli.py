"""`python -m metasp fit` and `predict`, end to end on small CSV and Parquet files."""

import sys

import numpy as np
import pytest

import metasp
from metasp._cli import main

pd = pytest.importorskip("pandas")

T_TRAIN, T_NEW, M, D = 50, 8, 20, 6


@pytest.fixture
def files(tmp_path):
    """Training and new tasks from one rank-2 model, features on shifted, different scales."""
    X3, y2, _, _ = metasp.datasets.make_hps(T=T_TRAIN + T_NEW, m=M, d=D, s=2, sigma=0.1,
                                            random_state=0)
    frame = pd.DataFrame(X3.reshape(-1, D) * np.arange(1, D + 1) + 3.0,
                         columns=[f"f{j}" for j in range(D)])
    frame["y"] = y2.reshape(-1)
    frame["station"] = np.repeat([f"s{t:02d}" for t in range(T_TRAIN + T_NEW)], M)
    frame["note"] = "text"
    train, new = tmp_path / "train.csv", tmp_path / "new.csv"
    frame.iloc[:T_TRAIN * M].to_csv(train, index=False)
    frame.iloc[T_TRAIN * M:].to_csv(new, index=False)
    return train, new


def fit_model(files, tmp_path, *extra):
    model = tmp_path / "model.npz"
    status = main(["fit", str(files[0]), "--group", "station", "--target", "y",
                   "--features", *[f"f{j}" for j in range(D)], "--out", str(model), *extra])
    assert status == 0
    return model


def model_design(model, frame):
    """The model's features for a frame, recomputed here from the saved preprocessing."""
    meta = model.metadata
    X = frame[meta["features"]].to_numpy()
    mean, scale = (np.array(meta["preprocessing"]["standardize"][key]) for key in ("mean",
                                                                                 "scale"))
    return np.column_stack([(X - mean) / scale, np.ones(len(X))])


def test_fit_chooses_the_rank_and_saves_what_predict_needs(files, tmp_path, capsys):
    model_path = tmp_path / "model.npz"
    assert main(["fit", str(files[0]), "--group", "station", "--target", "y", "--cv", "3",
                 "--max-rank", "5", "--tol", "1e-8", "--out", str(model_path)]) == 0
    out, err = capsys.readouterr()
    assert "warning: left out non-numeric columns ['note']" in err
    assert "50 tasks, 1000 rows, 6 features" in out and "<- best" in out
    model = metasp.load(model_path)
    meta = model.metadata
    assert model.rank == meta["rank"] == 2  # the true rank, found by select_rank
    assert [row["rank"] for row in meta["rank_selection"]] == [1, 2, 3, 4, 5]
    assert meta["fit_options"] == {"max_iter": 1000, "tol": 1e-8, "random_state": 0}
    assert meta["group"] == "station" and meta["target"] == "y"
    assert meta["features"] == [f"f{j}" for j in range(D)]
    assert meta["model_features"][-1] == "(intercept)" and model.n_features == D + 1
    assert meta["training_groups"] == [f"s{t:02d}" for t in range(T_TRAIN)]
    train = pd.read_csv(files[0])
    np.testing.assert_allclose(meta["preprocessing"]["standardize"]["mean"],
                               train[meta["features"]].mean(), rtol=1e-12)


@pytest.mark.parametrize("holdout", ["samples", "tasks"])
def test_fit_rank_holdout_reaches_select_rank(files, tmp_path, holdout, monkeypatch):
    from metasp import _select_rank

    seen = {}
    original = _select_rank.select_rank

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(_select_rank, "select_rank", spy)
    model = metasp.load(fit_model(files, tmp_path, "--cv", "3", "--max-rank", "4",
                                  "--rank-holdout", holdout))
    assert seen["holdout"] == holdout
    assert model.rank == 2  # the true rank either way


def test_predict_new_tasks_few_shot(files, tmp_path, capsys):
    model_path = fit_model(files, tmp_path, "--rank", "2")
    out_path = tmp_path / "pred.csv"
    assert main(["predict", str(model_path), str(files[1]), "--shots", "5",
                 "--out", str(out_path)]) == 0
    out = capsys.readouterr().out
    predicted = pd.read_csv(out_path)
    new = pd.read_csv(files[1])
    assert list(predicted.columns) == list(new.columns) + ["prediction", "support"]
    pd.testing.assert_frame_equal(predicted[new.columns], new)
    # Recompute: adapt each new task on its first 5 rows, predict all its rows.
    model = metasp.load(model_path)
    X, y = model_design(model, new), new["y"].to_numpy()
    expected = np.empty(len(new))
    for _, rows in new.groupby("station").indices.items():
        head = model.adapt(X[rows[:5]], y[rows[:5]])
        expected[rows] = model.predict(X[rows], head)
        assert predicted["support"].iloc[rows].tolist() == [True] * 5 + [False] * (M - 5)
    np.testing.assert_allclose(predicted["prediction"], expected, rtol=1e-9, atol=1e-12)
    query = ~predicted["support"].to_numpy()
    mse = np.mean((y[query] - expected[query]) ** 2)
    assert f"MSE on the {T_NEW * (M - 5)} rows with a target outside the support: {mse:.4g}" \
        in out
    assert "8 adapted on 40 support rows" in out
    assert mse < 0.1  # noise variance 0.01; var(y) is about 1


def test_predict_rows_without_target_and_training_tasks(files, tmp_path, capsys):
    model_path = fit_model(files, tmp_path, "--rank", "2")
    model = metasp.load(model_path)
    new = pd.read_csv(files[1])
    new.loc[new.index % 4 != 0, "y"] = np.nan  # 5 labelled rows per task, the rest to predict
    known = pd.read_csv(files[0]).iloc[:2 * M].drop(columns="y")  # two training tasks, no y
    mixed = pd.concat([known, new], ignore_index=True)
    mixed_path, out_path = tmp_path / "mixed.csv", tmp_path / "pred.csv"
    mixed.to_csv(mixed_path, index=False)
    assert main(["predict", str(model_path), str(mixed_path), "--out", str(out_path)]) == 0
    assert "8 adapted on 40 support rows, 2 with their training heads" in capsys.readouterr().out
    predicted = pd.read_csv(out_path)
    np.testing.assert_array_equal(predicted["support"], mixed["y"].notna())
    X = model_design(model, mixed)
    np.testing.assert_allclose(predicted["prediction"][:M], model.predict(X[:M], model.W[0]),
                               rtol=1e-9)
    np.testing.assert_allclose(predicted["prediction"][M:2 * M],
                               model.predict(X[M:2 * M], model.W[1]), rtol=1e-9)

    # A new task with no target value at all cannot be adapted.
    mixed.loc[mixed["station"] == "s55", "y"] = np.nan
    mixed.to_csv(mixed_path, index=False)
    assert main(["predict", str(model_path), str(mixed_path), "--out", str(out_path)]) == 1
    assert "1 groups have no target value to adapt on and were not training tasks " \
           "(for example 's55')" in capsys.readouterr().err


def test_prior_options_reach_adapt(files, tmp_path):
    model_path = fit_model(files, tmp_path, "--rank", "2")
    out_path = tmp_path / "pred.csv"
    assert main(["predict", str(model_path), str(files[1]), "--shots", "3", "--prior", "ridge",
                 "--ridge", "2.5", "--out", str(out_path)]) == 0
    model, new = metasp.load(model_path), pd.read_csv(files[1])
    X = model_design(model, new)
    head = model.adapt(X[:3], new["y"][:3], prior="ridge", ridge=2.5)
    np.testing.assert_allclose(pd.read_csv(out_path)["prediction"][:M],
                               model.predict(X[:M], head), rtol=1e-9)


def test_raw_features_without_intercept(files, tmp_path):
    model_path = fit_model(files, tmp_path, "--rank", "2", "--no-standardize",
                           "--no-intercept")
    model = metasp.load(model_path)
    assert model.n_features == D and model.metadata["preprocessing"] == {
        "standardize": None, "intercept": False}
    out_path = tmp_path / "pred.csv"
    assert main(["predict", str(model_path), str(files[1]), "--out", str(out_path)]) == 0
    new = pd.read_csv(files[1])
    X = new[[f"f{j}" for j in range(D)]].to_numpy()
    rows = np.flatnonzero(new["station"] == "s50")
    head = model.adapt(X[rows], new["y"][rows])
    np.testing.assert_allclose(pd.read_csv(out_path)["prediction"][rows],
                               model.predict(X[rows], head), rtol=1e-9)


def test_parquet(files, tmp_path):
    pytest.importorskip("pyarrow")
    parquet = tmp_path / "train.parquet"
    pd.read_csv(files[0]).to_parquet(parquet)
    model_path = tmp_path / "from_parquet.npz"
    assert main(["fit", str(parquet), "--group", "station", "--target", "y", "--rank", "2",
                 "--features", "f0", "f1", "f2", "f3", "f4", "f5", "--out", str(model_path)]) == 0
    np.testing.assert_allclose(metasp.load(model_path).B,
                               metasp.load(fit_model(files, tmp_path, "--rank", "2")).B,
                               rtol=1e-9, atol=1e-12)


def test_parquet_without_an_engine(files, tmp_path, monkeypatch, capsys):
    parquet = tmp_path / "train.parquet"
    parquet.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "fastparquet", None)
    assert main(["fit", str(parquet), "--group", "station", "--target", "y",
                 "--out", str(tmp_path / "m.npz")]) == 1
    assert 'reading Parquet needs pyarrow (pip install "metasp[parquet]")' in capsys.readouterr().err


def test_errors_are_one_line_and_exit_1(files, tmp_path, capsys):
    model_path = fit_model(files, tmp_path, "--rank", "2")
    out = str(tmp_path / "out.csv")
    capsys.readouterr()

    def error(argv):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count(": error: ") == 1 and "Traceback" not in err
        return err

    assert "the group column 'site' is not in df" in error(
        ["fit", str(files[0]), "--group", "site", "--target", "y", "--out", out])
    assert "rank s must satisfy 1 <= s <= min(T, d) = 7" in error(
        ["fit", str(files[0]), "--group", "station", "--target", "y", "--rank", "9",
         "--out", out])
    assert "No such file" in error(["fit", str(tmp_path / "absent.csv"), "--group", "station",
                                    "--target", "y", "--out", out])
    assert "--max-rank must be at least 1" in error(
        ["fit", str(files[0]), "--group", "station", "--target", "y", "--max-rank", "0",
         "--out", out])
    assert "--shots must be at least 1" in error(["predict", str(model_path), str(files[1]),
                                                  "--shots", "0", "--out", out])
    plain = tmp_path / "plain.npz"
    bare = metasp.load(model_path)
    bare.metadata = {}
    bare.save(plain)
    assert "was not written by `python -m metasp fit`" in error(
        ["predict", str(plain), str(files[1]), "--out", out])
    broken = tmp_path / "broken.npz"
    broken.write_bytes(model_path.read_bytes()[:100])
    assert "is not a readable metasp model file" in error(
        ["predict", str(broken), str(files[1]), "--out", out])
    new = pd.read_csv(files[1])
    new.loc[3, "f2"] = np.nan
    gap = tmp_path / "gap.csv"
    new.to_csv(gap, index=False)
    assert "missing group or feature values (count per column: {'f2': 1})" in error(
        ["predict", str(model_path), str(gap), "--out", out])
    new.assign(prediction=1.0).dropna().to_csv(gap, index=False)
    assert "already has a column 'prediction'" in error(
        ["predict", str(model_path), str(gap), "--out", out])


def test_predict_help_explains_the_support_rows(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "support rows" in out and "first K" in out and "fitted head" in out
