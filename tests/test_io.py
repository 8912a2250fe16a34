"""MetaSPResult.save / metasp.load: exact round trips, and a clear error on any bad file."""

import dataclasses
import json
import os
import zipfile

import numpy as np
import pytest

import metasp
from metasp import _io


def assert_same_result(a, b):
    """Every field equal, whatever fields MetaSPResult has."""
    for field in dataclasses.fields(metasp.MetaSPResult):
        left, right = getattr(a, field.name), getattr(b, field.name)
        if isinstance(left, np.ndarray):
            np.testing.assert_array_equal(left, right)
            assert left.dtype == right.dtype
        elif field.name == "history":
            assert left.keys() == right.keys()
            for key in left:
                np.testing.assert_array_equal(left[key], right[key])
        else:
            assert left == right, field.name


@pytest.fixture
def result():
    X, y, B, _ = metasp.datasets.make_hps(T=40, m=10, d=12, s=3, sigma=0.1, random_state=0)
    result = metasp.fit(X, y, 3, random_state=0, reference_B=B)
    result.metadata = {"feature_names": [f"x{j}" for j in range(12)], "group": "station",
                       "options": {"rank": 3, "tol": 1e-10}, "note": "ünïcode"}
    return result


@pytest.fixture
def tiny(tmp_path):
    """A small saved model for byte-level damage."""
    X, y, _, _ = metasp.datasets.make_hps(T=6, m=8, d=4, s=2, random_state=1)
    result = metasp.fit(X, y, 2, max_iter=3, tol=0)
    result.metadata = {"feature_names": ["a", "b", "c", "d"]}
    return result, result.save(tmp_path / "tiny.npz")


def test_round_trip_is_exact(result, tmp_path):
    path = result.save(tmp_path / "model.npz")
    assert path == tmp_path / "model.npz"
    loaded = metasp.load(path)
    assert_same_result(result, loaded)
    assert "sin_angle" in loaded.history and loaded.history["loss"].size == result.n_iter
    X_new = np.random.default_rng(1).standard_normal((5, 12))
    y_new = X_new @ result.Theta[0]
    np.testing.assert_array_equal(loaded.adapt(X_new, y_new), result.adapt(X_new, y_new))


def test_round_trip_from_ragged_tasks_and_str_path(tmp_path):
    from conftest import ragged_tasks

    Xs, ys, _, _ = ragged_tasks(T=30, d=10)
    result = metasp.fit(Xs, ys, 3, random_state=0)
    loaded = metasp.load(str(result.save(str(tmp_path / "ragged.npz"))))
    assert_same_result(result, loaded)
    assert loaded.metadata == {}


def test_round_trip_of_a_hand_made_result_without_history(tmp_path):
    B = np.eye(2, 3)
    result = metasp.MetaSPResult(B=B, W=np.ones((4, 2)), Theta=np.ones((4, 2)) @ B,
                                 singular_values=np.array([2.0, 2.0]), n_iter=0, status="max_iter")
    assert_same_result(result, metasp.load(result.save(tmp_path / "m.npz")))


def test_path_is_used_as_given_and_replaced_whole(result, tmp_path):
    path = tmp_path / "model.metasp"
    result.save(path)
    assert os.listdir(tmp_path) == ["model.metasp"]  # no ".npz" added, no temporary left
    result.metadata = {"second": True}
    result.save(path)
    assert os.listdir(tmp_path) == ["model.metasp"]
    assert metasp.load(path).metadata == {"second": True}
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as any new file, not 0600


def test_save_into_a_missing_folder(result, tmp_path):
    with pytest.raises(FileNotFoundError):
        result.save(tmp_path / "absent" / "model.npz")


def test_header_records_format_and_versions(result, tmp_path):
    path = result.save(tmp_path / "model.npz")
    with np.load(path, allow_pickle=False) as npz:
        header = json.loads(npz["__metasp__"].item())
    assert header["format"] == "metasp.MetaSPResult"
    assert header["format_version"] == _io.FORMAT_VERSION == 1
    assert header["metasp_version"] == metasp.__version__
    assert header["fields"]["n_iter"] == result.n_iter
    assert header["fields"]["status"] == "converged"
    assert header["shapes"]["B"] == [3, 12] and header["shapes"]["W"] == [40, 3]


def test_numpy_values_in_metadata_become_plain_json(result, tmp_path):
    result.metadata = {"mean": np.arange(3.0), "rank": np.int64(3)}
    loaded = metasp.load(result.save(tmp_path / "model.npz"))
    assert loaded.metadata == {"mean": [0.0, 1.0, 2.0], "rank": 3}


@pytest.mark.parametrize("metadata", [{"f": lambda: 0}, {"x": float("nan")}, {"s": {1, 2}}])
def test_metadata_must_be_json(result, tmp_path, metadata):
    result.metadata = metadata
    with pytest.raises(TypeError, match="metadata must be JSON-serialisable"):
        result.save(tmp_path / "model.npz")
    assert not os.listdir(tmp_path)


def test_only_results_can_be_saved(tmp_path):
    with pytest.raises(TypeError, match="only a MetaSPResult"):
        _io.save({"B": np.eye(2)}, tmp_path / "x.npz")


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        metasp.load("/nonexistent/model.npz")


def test_every_truncation_is_a_value_error(tiny, tmp_path):
    _, path = tiny
    data = path.read_bytes()
    damaged = tmp_path / "damaged.npz"
    for length in range(0, len(data), 23):
        damaged.write_bytes(data[:length])
        with pytest.raises(ValueError, match="is not a readable metasp model file"):
            metasp.load(damaged)


def test_a_damaged_byte_never_loads_a_different_model(tiny, tmp_path):
    """Flip every 11th byte in turn: loading fails with ValueError or (for bytes zip ignores,
    such as timestamps) returns exactly the saved model. The zip CRCs make that so."""
    result, path = tiny
    data = bytearray(path.read_bytes())
    damaged = tmp_path / "damaged.npz"
    failures = tried = 0
    for position in range(0, len(data), 11):
        tried += 1
        flipped = data.copy()
        flipped[position] ^= 0xFF
        damaged.write_bytes(bytes(flipped))
        try:
            loaded = metasp.load(damaged)
        except ValueError as error:
            assert "metasp" in str(error)
            failures += 1
        else:
            assert_same_result(result, loaded)
    assert failures > 0.8 * tried


def rewrite(path, header_change=None, drop=(), add=None):
    """Copy a saved model with its JSON header and members edited."""
    with np.load(path, allow_pickle=False) as npz:
        members = {name: npz[name] for name in npz.files}
    header = json.loads(members.pop("__metasp__").item())
    if header_change:
        header_change(header)
    for name in drop:
        members.pop(name)
    members.update(add or {})
    members["__metasp__"] = np.array(json.dumps(header))
    np.savez(path, **members)


def test_newer_format_version(tiny):
    _, path = tiny

    def newer(header):
        header["format_version"] = 2
        header["metasp_version"] = "9.0"

    rewrite(path, newer)
    with pytest.raises(ValueError, match=r"written by metasp 9.0 in format version 2; this metasp "
                                         r"reads versions up to 1. Upgrade metasp"):
        metasp.load(path)


@pytest.mark.parametrize("change, match", [
    (lambda h: h.update(format="other.Model"), "format is 'other.Model'"),
    (lambda h: h.update(format_version="1"), "invalid format version '1'"),
    (lambda h: h.update(format_version=0), "invalid format version 0"),
    (lambda h: h["shapes"].update(B=[2, 5]), r"'B' has shape \(2, 4\), the header says \(2, 5\)"),
    (lambda h: h["shapes"].pop("W"), "arrays do not match the list in its header"),
    (lambda h: h["fields"].update(colour="red"), r"unknown fields \['colour'\]"),
    (lambda h: h["fields"].pop("status"), r"fields \['status'\] are missing"),
    (lambda h: h["fields"].update(n_iter="3"), "n_iter must be an integer"),
    (lambda h: h.pop("metadata"), "lacks its 'fields' or 'metadata'"),
])
def test_inconsistent_header(tiny, change, match):
    _, path = tiny
    rewrite(path, change)
    with pytest.raises(ValueError, match=match):
        metasp.load(path)


def test_inconsistent_arrays(tiny):
    _, path = tiny

    def shapes(header):
        header["shapes"]["W"] = [6, 3]

    rewrite(path, shapes, add={"W": np.ones((6, 3))})
    with pytest.raises(ValueError, match=r"inconsistent shapes B \(2, 4\), W \(6, 3\)"):
        metasp.load(path)

    def nan_B(header):
        header["shapes"]["W"] = [6, 2]

    rewrite(path, nan_B, add={"W": np.ones((6, 2)), "B": np.full((2, 4), np.nan)})
    with pytest.raises(ValueError, match="B is not a finite float array"):
        metasp.load(path)


def test_header_that_is_not_json(tiny):
    _, path = tiny
    with np.load(path, allow_pickle=False) as npz:
        members = {name: npz[name] for name in npz.files}
    members["__metasp__"] = np.array("{not json")
    np.savez(path, **members)
    with pytest.raises(ValueError, match="header is not valid JSON"):
        metasp.load(path)
    members["__metasp__"] = np.array([1.0, 2.0])
    np.savez(path, **members)
    with pytest.raises(ValueError, match="header is not a JSON string"):
        metasp.load(path)


def test_files_that_are_not_metasp_models(tmp_path):
    plain = tmp_path / "plain.npz"
    np.savez(plain, B=np.eye(2))
    with pytest.raises(ValueError, match="header is missing"):
        metasp.load(plain)
    single = tmp_path / "single.npy"
    np.save(single, np.eye(2))
    with pytest.raises(ValueError, match="single array"):
        metasp.load(single)
    text = tmp_path / "data.csv"
    text.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="neither an .npz archive"):
        metasp.load(text)
    other_zip = tmp_path / "other.zip"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="header is missing"):
        metasp.load(other_zip)


def test_pickled_members_are_refused_not_run(tiny):
    _, path = tiny
    with np.load(path, allow_pickle=False) as npz:
        members = {name: npz[name] for name in npz.files}
    members["B"] = np.array([object()], dtype=object)
    np.savez(path, **members)
    with pytest.raises(ValueError, match="corrupt or truncated.*pickle"):
        metasp.load(path)
