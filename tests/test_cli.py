"""`python -m metasp fit` and `predict`, end to end on small CSV and Parquet files."""

import argparse
import os
import re
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

    assert f"{files[0]} has no column 'site' (--group); its columns are" in error(
        ["fit", str(files[0]), "--group", "site", "--target", "y", "--out", out])
    assert "--rank 9 is too large for these data: the rank is at most min(tasks, model " \
           "features) = 7 (50 tasks, 7 model features with the intercept); give --rank 7" in error(
        ["fit", str(files[0]), "--group", "station", "--target", "y", "--rank", "9",
         "--out", out])
    assert "No such file" in error(["fit", str(tmp_path / "absent.csv"), "--group", "station",
                                    "--target", "y", "--out", out])
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
    assert not (tmp_path / "out.csv").exists()


def test_predict_help_explains_the_support_rows(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "support rows" in out and "first K" in out and "fitted head" in out


# ---------------------------------------------------------------------------------------------
# Bad arguments: every command checks them before any work, and says what is wrong in one
# line with exit status 2.


def no_work(monkeypatch):
    """Make every expensive step fail the test if it starts."""
    from metasp import _select_rank, evaluate, experiments

    def started(*args, **kwargs):
        raise AssertionError("the work started before the arguments were checked")

    monkeypatch.setattr(metasp, "fit", started)
    monkeypatch.setattr(metasp, "load", started)
    monkeypatch.setattr(_select_rank, "select_rank", started)
    monkeypatch.setattr(evaluate, "few_shot", started)
    monkeypatch.setattr(experiments, "run", started)


def usage_cases():
    fit = ["fit", "{train}", "--group", "station", "--target", "y", "--out", "{folder}/m.npz"]
    predict = ["predict", "{model}", "{new}", "--out", "{folder}/p.csv"]
    demo = ["demo", "--shots", "3", "--repeats", "1", "--plot", "none"]
    return [
        (["experiment", "nosuch"], "unknown experiment 'nosuch'; choose one of: rip, rank"),
        (["experiment"], "give an experiment NAME, or --list"),
        (["experiment", "rip", "--seeds", "0"], "--seeds must be at least 1; got 0"),
        (["experiment", "rip", "--out", "{train}"], "is a file, not a folder"),
        (["experiment", "rip", "--out", "{train}/deeper"], "is a file, not a folder"),
        ([*demo, "--repeats", "0"], "--repeats must be at least 1; got 0"),
        ([*demo, "--shots", "0"], "--shots must be at least 1; got 0"),
        ([*demo, "--shots", "3", "3"], r"--shots lists \[3\] more than once"),
        ([*demo, "--shots", "24"], "--shots 24 leaves no hour of a day to score"),
        ([*demo, "--cv", "1"], "--cv must be at least 2; got 1"),
        ([*demo, "--max-rank", "0"], "--max-rank must be at least 1"),
        ([*demo, "--max-iter", "0"], "--max-iter must be at least 1"),
        ([*demo, "--random-state", "-1"], "--random-state must be at least 0"),
        ([*demo, "--test-fraction", "1.5"], "--test-fraction must lie strictly between 0 and 1"),
        ([*demo, "--plot", "{folder}/absent/demo.png"], "the folder .*absent does not exist"),
        ([*demo, "--plot", "{train}/demo.png"], "train.csv is not a folder"),
        ([*demo, "--plot", "{folder}"], "is a folder; give a file name in it"),
        ([*demo, "--plot", "{folder}/demo.unknown"], "the suffix says no image format"),
        ([*demo, "--csv", "{folder}/absent/table.csv"], "--csv .*the folder .*absent does not"),
        ([*fit, "--rank", "0"], "--rank must be at least 1; got 0"),
        ([*fit, "--max-rank", "0"], "--max-rank must be at least 1; got 0"),
        ([*fit, "--cv", "1"], r"--cv must be at least 2 \(folds\); got 1"),
        ([*fit, "--min-samples", "0"], "--min-samples must be at least 1"),
        ([*fit, "--max-iter", "0"], "--max-iter must be at least 1"),
        ([*fit, "--random-state", "-3"], "--random-state must be at least 0"),
        ([*fit, "--tol", "-1"], "--tol must be a non-negative number; got -1.0"),
        ([*fit, "--tol", "nan"], "--tol must be a non-negative number; got nan"),
        ([*fit, "--features", "f0", "y"], "--features lists the --target column 'y'"),
        ([*fit, "--features", "f0", "station"], "--features lists the --group column"),
        ([*fit, "--features", "f0", "f1", "f0"], r"--features lists \['f0'\] more than once"),
        ([*fit[:3], "y", *fit[4:]], "--group and --target are the same column 'y'"),
        ([*fit[:-1], "{folder}/absent/m.npz"], "--out .*the folder .*absent does not exist"),
        ([*fit[:-1], "{folder}"], "is a folder; give a file name in it"),
        ([*predict, "--shots", "0"], "--shots must be at least 1; got 0"),
        ([*predict, "--ridge", "-1"], "--ridge must be a non-negative number; got -1.0"),
        ([*predict, "--ridge", "inf"], "--ridge must be a non-negative number; got inf"),
        ([*predict, "--prior", "ridge"], "--prior ridge needs a strength: add --ridge R"),
        ([*predict, "--prior", "none", "--ridge", "1"],
         "--ridge only applies with --prior ridge; got --prior none"),
        ([*predict[:-1], "{folder}/absent/p.csv"], "--out .*the folder .*absent does not exist"),
    ]


@pytest.mark.parametrize("argv, match", usage_cases(), ids=lambda case: " ".join(case)[:60]
                         if isinstance(case, list) else None)
def test_bad_arguments_are_one_line_usage_errors(files, tmp_path, capsys, monkeypatch, argv,
                                                 match):
    folder = tmp_path / "outputs"
    folder.mkdir()
    model = tmp_path / "model.npz"
    model.write_bytes(b"never read")
    names = {"train": files[0], "new": files[1], "model": model, "folder": folder}
    argv = [arg.format(**names) for arg in argv]
    no_work(monkeypatch)
    capsys.readouterr()
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"python -m metasp {argv[0]}: error: ") and err.count("\n") == 1
    assert re.search(match, err), err
    assert "Traceback" not in err and "=" not in err.split(": error: ")[1]  # no Python syntax
    assert not out  # nothing started, not even the data description
    assert not list(folder.iterdir())


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into read-only folders")
@pytest.mark.parametrize("command", ["fit", "predict", "demo-plot", "demo-csv", "experiment"])
def test_an_unwritable_output_folder_is_a_usage_error(files, tmp_path, capsys, monkeypatch,
                                                      command):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        argv = {
            "fit": ["fit", str(files[0]), "--group", "station", "--target", "y",
                    "--out", str(locked / "m.npz")],
            "predict": ["predict", str(files[0]), str(files[1]), "--out",
                        str(locked / "p.csv")],
            "demo-plot": ["demo", "--plot", str(locked / "d.png")],
            "demo-csv": ["demo", "--plot", "none", "--csv", str(locked / "d.csv")],
            "experiment": ["experiment", "rip", "--out", str(locked / "results")],
        }[command]
        no_work(monkeypatch)
        assert main(argv) == 2
        assert "cannot write in the folder" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


def test_a_failed_write_probe_is_a_usage_error(files, tmp_path, capsys, monkeypatch):
    """The output folder is tested by creating a file in it; any refusal is reported."""
    import builtins

    original = builtins.open

    def refuse(file, mode="r", *args, **kwargs):
        if "x" in mode:
            raise PermissionError(13, "Permission denied", str(file))
        return original(file, mode, *args, **kwargs)

    no_work(monkeypatch)
    monkeypatch.setattr(builtins, "open", refuse)
    assert main(["fit", str(files[0]), "--group", "station", "--target", "y",
                 "--out", str(tmp_path / "m.npz")]) == 2
    assert "cannot write in the folder" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["fit", "predict", "demo", "experiment"])
@pytest.mark.parametrize("error, status", [(ValueError("bad data"), 1), (OSError("disk full"), 1),
                                           (KeyboardInterrupt(), 130)])
def test_every_command_reports_errors_in_one_line(files, tmp_path, capsys, monkeypatch, command,
                                                  error, status):
    """The same wrapper for every command: data errors exit 1, Ctrl-C 130, no traceback."""
    from metasp import _cli, evaluate, experiments

    def fail(*args, **kwargs):
        raise error

    model = fit_model(files, tmp_path, "--rank", "2")
    monkeypatch.setattr(_cli, "_read_table", fail)
    monkeypatch.setattr(evaluate, "few_shot", fail)
    monkeypatch.setattr(experiments, "run", fail)
    argv = {
        "fit": ["fit", str(files[0]), "--group", "station", "--target", "y",
                "--out", str(tmp_path / "m.npz")],
        "predict": ["predict", str(model), str(files[1]), "--out", str(tmp_path / "p.csv")],
        "demo": ["demo", "--shots", "3", "--plot", "none"],
        "experiment": ["experiment", "rip", "--quick", "--out", str(tmp_path / "results")],
    }[command]
    capsys.readouterr()
    assert main(argv) == status
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"python -m metasp {command}: error: " in err
    assert "Traceback" not in err


def test_library_messages_are_translated_to_options():
    from metasp._cli import _speak_cli

    parser = argparse.ArgumentParser()
    parser.add_argument("--max-iter", type=int)
    parser.add_argument("--dropna", action="store_true")
    parser.add_argument("--no-standardize", dest="standardize", action="store_false")
    parser.add_argument("--prior")
    parser.add_argument("--ridge", type=float)
    parser.add_argument("--random-state", type=int)
    cases = {
        "stopped at max_iter=5; increase max_iter.": "stopped at --max-iter 5; increase --max-iter.",
        "pass dropna=True to drop those rows": "pass --dropna to drop those rows",
        "or standardize=False": "or --no-standardize",
        "prior='ridge' needs a strength: pass ridge=<non-negative float>":
            "--prior ridge needs a strength: pass --ridge <non-negative float>",
        "random_state must be non-negative": "--random-state must be non-negative",
        # Names inside paths, quotes and longer words stay as they are.
        "/data/max_iter/x.csv has no column 'max_iter'; my_ridge=3":
            "/data/max_iter/x.csv has no column 'max_iter'; my_ridge=3",
    }
    for message, expected in cases.items():
        assert _speak_cli(message, parser) == expected


def test_library_warnings_speak_cli(files, tmp_path, capsys):
    fit_model(files, tmp_path, "--rank", "2", "--max-iter", "1")
    err = capsys.readouterr().err
    assert "warning: Meta-SP stopped at --max-iter 1" in err and "increase --max-iter" in err
    assert "max_iter" not in err and "tol=" not in err


# ---------------------------------------------------------------------------------------------
# fit: overflowing scales, text cells, empty files.


@pytest.mark.parametrize("column, options, message", [
    ("f2", [], "column 'f2' has values near 1e300; standardisation overflows"),
    ("f2", ["--no-standardize"], "column 'f2' has values near 1e300; their squares overflow"),
    ("y", [], "column 'y' has values near 1e300; their squares overflow"),
])
@pytest.mark.parametrize("size", [1e300, 1e200])
def test_fit_names_the_column_whose_scale_overflows(files, tmp_path, capsys, column, options,
                                                    message, size):
    frame = pd.read_csv(files[0])
    frame[column] = size * (1 + 0.1 * np.tanh(frame[column]))  # all near size
    huge = tmp_path / "huge.csv"
    frame.to_csv(huge, index=False)
    out = tmp_path / "out" / "m.npz"
    out.parent.mkdir()
    for rank in (["--rank", "2"], ["--max-rank", "3", "--cv", "2"]):
        assert main(["fit", str(huge), "--group", "station", "--target", "y", *rank, *options,
                     "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert message.replace("1e300", f"{size:.0e}".replace("e+", "e")) in err, err
        assert "rescale the column" in err and "Traceback" not in err
        assert not list(out.parent.iterdir())


def test_a_diverged_fit_writes_no_model(files, tmp_path, capsys, monkeypatch):
    real_fit = metasp.fit

    def diverging(*args, **kwargs):
        result = real_fit(*args, **kwargs)
        result.status, result.history = "diverged", {"loss": np.array([])}
        return result

    monkeypatch.setattr(metasp, "fit", diverging)
    out = tmp_path / "out" / "m.npz"
    out.parent.mkdir()
    assert main(["fit", str(files[0]), "--group", "station", "--target", "y", "--rank", "2",
                 "--out", str(out)]) == 1
    assert "the fit diverged, so no model was written" in capsys.readouterr().err
    assert not list(out.parent.iterdir())


@pytest.mark.parametrize("column, features", [
    ("f2", None),  # found among the numeric columns
    ("f2", ["f0", "f1", "f2"]),  # listed
    ("y", None),  # the target
])
def test_a_text_cell_in_a_number_column_names_its_row_and_column(files, tmp_path, capsys,
                                                                 column, features):
    frame = pd.read_csv(files[0])
    frame[column] = frame[column].astype(object)
    frame.loc[6, column] = "oops"
    frame.loc[40, column] = "n/a?"
    text = tmp_path / "text.csv"
    frame.to_csv(text, index=False)
    out = tmp_path / "m.npz"
    argv = ["fit", str(text), "--group", "station", "--target", "y", "--rank", "2",
            *(["--features", *features] if features else []), "--out", str(out)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"{text}: column {column!r} must hold numbers but has 'oops' in data row 7 and 1 " \
           "more; fix those cells, or pass --drop-non-numeric to drop their rows" in err
    assert not out.exists()

    assert main([*argv, "--drop-non-numeric"]) == 0
    err = capsys.readouterr().err
    assert f"dropped 2 of 1000 rows of {text} with text in a number column (count per column: " \
           f"{{{column!r}: 2}}; --drop-non-numeric)" in err
    model = metasp.load(out)
    assert model.metadata["features"] == (features or [f"f{j}" for j in range(D)])
    assert "note" not in model.metadata["features"]  # a text column is still left out


def test_predict_names_text_cells_and_infinite_values(files, tmp_path, capsys):
    model = fit_model(files, tmp_path, "--rank", "2")
    out = tmp_path / "pred.csv"
    for column, value, message in [
            ("f3", "abc", "column 'f3' must hold numbers but has 'abc' in data row 5"),
            ("y", "abc", "column 'y' must hold numbers but has 'abc' in data row 5"),
            ("f3", np.inf, "column 'f3' has an infinite value in data row 5"),
            ("y", -np.inf, "column 'y' has an infinite value in data row 5")]:
        frame = pd.read_csv(files[1])
        frame[column] = frame[column].astype(object)
        frame.loc[4, column] = value
        bad = tmp_path / "bad.csv"
        frame.to_csv(bad, index=False)
        assert main(["predict", str(model), str(bad), "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert f"{bad}: {message}" in err and "could not convert" not in err
    assert not out.exists()


def test_fit_names_infinite_values_and_missing_values_in_cli_terms(files, tmp_path, capsys):
    frame = pd.read_csv(files[0])
    frame.loc[11, "f1"] = np.inf
    bad = tmp_path / "bad.csv"
    frame.to_csv(bad, index=False)
    argv = ["fit", str(bad), "--group", "station", "--target", "y", "--rank", "2",
            "--out", str(tmp_path / "m.npz")]
    assert main(argv) == 1
    assert f"{bad}: column 'f1' has an infinite value in data row 12" in capsys.readouterr().err
    frame.loc[11, "f1"] = np.nan
    frame.loc[20, "y"] = np.nan
    frame.to_csv(bad, index=False)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"2 of 1000 rows of {bad} have missing values (count per column: {{'y': 1, " \
           "'f1': 1}; first in data row 12); pass --dropna to drop those rows" in err
    assert "dropna=True" not in err
    assert main([*argv, "--dropna", "--min-samples", "20"]) == 0
    err = capsys.readouterr().err
    assert "dropped 2 of 1000 rows" in err and "--dropna" in err
    assert "dropped 2 of 50 tasks with fewer than --min-samples 20 rows" in err
    assert "min_samples" not in err


@pytest.mark.parametrize("command", ["fit", "predict"])
def test_empty_and_header_only_tables_say_so(files, tmp_path, capsys, command):
    model = fit_model(files, tmp_path, "--rank", "2")
    empty, header = tmp_path / "empty.csv", tmp_path / "header.csv"
    empty.write_text("")
    header.write_text("station,f0,f1,f2,f3,f4,f5,y\n")
    for table, message in [(empty, f"{empty} is empty"),
                           (header, f"{header} has no rows, only a header (8 columns)")]:
        argv = (["fit", str(table), "--group", "station", "--target", "y"]
                if command == "fit" else ["predict", str(model), str(table)])
        assert main([*argv, "--out", str(tmp_path / "out.file")]) == 1
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out.file").exists()


def test_files_in_the_wrong_place(files, tmp_path, capsys):
    model = fit_model(files, tmp_path, "--rank", "2")
    out = str(tmp_path / "p.csv")
    capsys.readouterr()
    # A table where the model belongs: no advice to unpickle it.
    assert main(["predict", str(files[1]), str(files[1]), "--out", out]) == 1
    err = capsys.readouterr().err
    assert "is not a readable metasp model file: it is not an .npz archive" in err
    assert "pickle" not in err
    # A model where the table belongs.
    assert main(["predict", str(model), str(model), "--out", out]) == 1
    assert f"cannot read {model} as a CSV table" in capsys.readouterr().err


def test_predict_checks_the_model_it_uses(files, tmp_path, capsys):
    model_path = fit_model(files, tmp_path, "--rank", "2")
    out = str(tmp_path / "p.csv")
    model = metasp.load(model_path)
    for damage in [lambda meta: meta.pop("features"),
                   lambda meta: meta.update(training_groups="s00"),
                   lambda meta: meta["preprocessing"].update(intercept=False),
                   lambda meta: meta["preprocessing"]["standardize"].update(scale=[1.0])]:
        damaged = metasp.load(model_path)
        damage(damaged.metadata)
        damaged.save(tmp_path / "damaged.npz")
        assert main(["predict", str(tmp_path / "damaged.npz"), str(files[1]),
                     "--out", out]) == 1
        assert "has damaged metadata" in capsys.readouterr().err
    model.head_mean = model.head_cov = model.noise_variance = None
    model.save(tmp_path / "no_prior.npz")
    assert main(["predict", str(tmp_path / "no_prior.npz"), str(files[1]), "--out", out]) == 1
    assert "has no head prior for --prior empirical; use --prior ridge --ridge R or --prior " \
           "none" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "no_prior.npz"), str(files[1]), "--ridge", "1",
                 "--out", out]) == 0


def test_fit_explains_the_best_rank(files, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "`<- best` is chosen by the one-standard-error rule: the smallest rank whose mean " \
           "held-out MSE is within one standard error" in help_text
    fit_model(files, tmp_path, "--cv", "3", "--max-rank", "4")
    out = capsys.readouterr().out
    assert "<- best: the smallest rank whose mean held-out MSE is within one standard error of " \
           "the lowest mean (rank " in out and "sd / sqrt(3 folds)" in out


# ---------------------------------------------------------------------------------------------
# Outputs are written atomically: an interrupted command leaves the old file or none.


def interrupt_replacing(monkeypatch, target):
    """Ctrl-C at the moment the complete output would replace ``target``."""
    replace = os.replace

    def interrupted(source, destination):
        if os.fspath(destination) == os.fspath(target):
            raise KeyboardInterrupt
        replace(source, destination)

    monkeypatch.setattr(os, "replace", interrupted)


@pytest.mark.parametrize("command", ["fit", "predict"])
def test_interrupted_commands_leave_the_old_output(files, tmp_path, capsys, monkeypatch,
                                                   command):
    model = fit_model(files, tmp_path, "--rank", "2")
    folder = tmp_path / "out"
    folder.mkdir()
    target = folder / ("m.npz" if command == "fit" else "p.csv")
    target.write_bytes(b"the previous output")
    argv = {"fit": ["fit", str(files[0]), "--group", "station", "--target", "y", "--rank", "2"],
            "predict": ["predict", str(model), str(files[1])]}[command]
    interrupt_replacing(monkeypatch, target)
    assert main([*argv, "--out", str(target)]) == 130
    assert "error: interrupted" in capsys.readouterr().err
    assert os.listdir(folder) == [target.name]
    assert target.read_bytes() == b"the previous output"
    monkeypatch.undo()
    assert main([*argv, "--out", str(target)]) == 0
    assert os.listdir(folder) == [target.name] and target.read_bytes() != b"the previous output"
