"""MetaSPResult.save / metasp.load: exact round trips, and a clear error on any bad file."""

import dataclasses
import io
import json
import math
import os
import tracemalloc
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
    with pytest.raises(ValueError, match="not an .npz archive") as error:
        metasp.load(text)
    assert "pickle" not in str(error.value)  # no advice to load it unsafely
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
    with pytest.raises(ValueError, match="'B.npy' holds pickled Python objects") as error:
        metasp.load(path)
    assert "allow_pickle" not in str(error.value)


# ---------------------------------------------------------------------------------------------
# Hostile files: every size is checked before memory is allocated for it.


def npy_bytes(array):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=False)
    return buffer.getvalue()


def npy_claiming(shape, dtype="<f8", payload=b"\0" * 64):
    """A .npy member whose header declares ``shape`` but that holds only ``payload``."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    return buffer.getvalue() + payload


def members_of(path):
    """The raw .npy bytes of every member of a saved model, and its parsed JSON header."""
    with zipfile.ZipFile(path) as archive:
        raw = {info.filename[:-4]: archive.read(info) for info in archive.infolist()}
    with np.load(path, allow_pickle=False) as npz:
        header = json.loads(npz["__metasp__"].item())
    return raw, header


def write_model(path, raw, header=None, compression=zipfile.ZIP_STORED, big=None):
    """Write raw .npy members (name -> bytes) and a JSON header (dict or text) as a zip;
    ``big=(name, size, byte)`` adds a member of ``size`` bytes of ``byte`` after a .npy
    header of matching shape, streamed so the test itself stays small in memory."""
    if header is not None:
        text = header if isinstance(header, str) else json.dumps(header)
        raw = {**raw, "__metasp__": npy_bytes(np.array(text))}
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in raw.items():
            archive.writestr(name + ".npy", data)
        if big is not None:
            name, size, byte = big
            with archive.open(name + ".npy", "w", force_zip64=True) as member:
                member.write(npy_claiming((size // 8,), payload=b""))
                chunk = byte * 2**20
                for _ in range(size // len(chunk)):
                    member.write(chunk)


def assert_refused_cheaply(path, match):
    """load raises ValueError (not MemoryError) without allocating more than a few MB."""
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=match):
            metasp.load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"load allocated {peak / 2**20:.0f} MB before refusing"


@pytest.mark.parametrize("member", ["Theta", "history/loss", "__metasp__"])
def test_a_zip_bomb_is_refused_before_it_is_inflated(tiny, tmp_path, member):
    """A small deflated file whose member unpacks to 64 MB: refused from the sizes in the
    zip directory alone, whichever member it is."""
    _, path = tiny
    raw, header = members_of(path)
    raw.pop(member, None)
    if member != "__metasp__":
        header["shapes"][member] = [2**26 // 8]
    bomb = tmp_path / "bomb.npz"
    write_model(bomb, raw, None if member == "__metasp__" else header, zipfile.ZIP_DEFLATED,
                big=(member, 2**26, b"\0"))
    assert bomb.stat().st_size < 2**18
    assert_refused_cheaply(bomb, "would unpack to 67,1[0-9,]+ bytes from a .*-byte file.*zip bomb")


@pytest.mark.parametrize("shape", [(10**12,), (10**6, 10**6), (2**40, 0, 2**40)])
def test_a_member_declaring_more_than_it_holds_is_a_value_error(tiny, tmp_path, shape):
    """An 8 KB file whose .npy header declares 10^12 elements: the size it declares is checked
    against the size the archive lists for it, before anything is allocated."""
    _, path = tiny
    raw, header = members_of(path)
    raw["history/loss"] = npy_claiming(shape)
    header["shapes"]["history/loss"] = list(shape)
    liar = tmp_path / "liar.npz"
    write_model(liar, raw, header)
    assert liar.stat().st_size < 8192
    if math.prod(shape) == 0:  # no elements, and so no bytes: the 64 stray bytes are the lie
        assert_refused_cheaply(liar, r"declares shape .* \(0 bytes\), but the archive lists 64")
    else:
        assert_refused_cheaply(liar, r"declares shape .*, but the archive lists 64 bytes")


def test_a_huge_member_consistent_with_its_header_is_refused_by_the_bound(tiny, tmp_path):
    """Even when the .npy header, the JSON header and the zip directory agree, members may not
    unpack to far more than the file holds: patch the directory's size of a stored member."""
    _, path = tiny
    raw, header = members_of(path)
    shape = (100_000, 4000)  # 3.2 GB: under the 4 GB of a plain zip entry
    raw["Theta"] = npy_claiming(shape, payload=b"")
    header["shapes"]["Theta"] = list(shape)
    liar = tmp_path / "liar.npz"
    write_model(liar, raw, header)
    data = bytearray(liar.read_bytes())
    declared = len(raw["Theta"]) + 8 * math.prod(shape)
    entry = data.index(b"PK\x01\x02" + data[data.index(b"PK\x01\x02") + 4:][:0])
    while data[entry + 46:entry + 46 + len("Theta.npy")] != b"Theta.npy":
        entry = data.index(b"PK\x01\x02", entry + 4)
    data[entry + 24:entry + 28] = declared.to_bytes(4, "little")
    liar.write_bytes(bytes(data))
    assert_refused_cheaply(liar, r"would unpack to 3,200,.* bytes.*nothing was unpacked")


@pytest.mark.parametrize("depth", [150, 100_000])
def test_a_deeply_nested_header_is_a_value_error(tiny, tmp_path, depth):
    _, path = tiny
    raw, header = members_of(path)
    text = json.dumps(header)[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}"
    nested = tmp_path / "nested.npz"
    write_model(nested, raw, text)
    with pytest.raises(ValueError, match="nested"):
        metasp.load(nested)


def test_deeply_nested_metadata_is_not_saved(result, tmp_path):
    deep = []
    for _ in range(200):
        deep = [deep]
    result.metadata = {"deep": deep}
    with pytest.raises(TypeError, match="nested more than"):
        result.save(tmp_path / "model.npz")
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_in_the_header_are_refused(tiny, tmp_path, constant):
    _, path = tiny
    raw, header = members_of(path)
    text = json.dumps(header)[:-1] + f', "x": {constant}}}'
    odd = tmp_path / "odd.npz"
    write_model(odd, raw, text)
    with pytest.raises(ValueError, match=f"{constant} is not a number a model file can hold"):
        metasp.load(odd)


@pytest.mark.parametrize("dtype", ["|S4", "|V8", "<c16", "[('a', '<f8')]"])
def test_members_of_foreign_dtypes_are_refused(tiny, tmp_path, dtype):
    _, path = tiny
    raw, header = members_of(path)
    descr = eval(dtype) if dtype.startswith("[") else dtype  # a structured descr is a list
    itemsize = np.dtype(descr).itemsize
    raw["history/loss"] = npy_claiming((2,), descr, b"\0" * (2 * itemsize))
    header["shapes"]["history/loss"] = [2]
    odd = tmp_path / "odd.npz"
    write_model(odd, raw, header)
    with pytest.raises(ValueError, match="has dtype .* which a model file never contains"):
        metasp.load(odd)


def test_other_compression_methods_are_refused(tiny, tmp_path):
    """bzip2 and lzma are not streamed with a cap by zipfile; model files never use them."""
    _, path = tiny
    raw, header = members_of(path)
    odd = tmp_path / "odd.npz"
    write_model(odd, raw, header, zipfile.ZIP_BZIP2)
    with pytest.raises(ValueError, match="compression method 12"):
        metasp.load(odd)


def test_a_deflated_model_still_loads(result, tmp_path):
    """np.savez_compressed of the same members: streamed, capped, and equal."""
    path = result.save(tmp_path / "model.npz")
    raw, header = members_of(path)
    packed = tmp_path / "packed.npz"
    write_model(packed, raw, compression=zipfile.ZIP_DEFLATED)
    assert_same_result(result, metasp.load(packed))


def test_fortran_ordered_members_load_as_saved(result, tmp_path):
    result.W = np.asfortranarray(result.W)
    result.head_cov = np.asfortranarray(result.head_cov)
    loaded = metasp.load(result.save(tmp_path / "model.npz"))
    assert_same_result(result, loaded)


# ---------------------------------------------------------------------------------------------
# Every field is validated on load (and on save, so that every saved file loads).


def edit_field(path, name, value):
    """Rewrite a saved model with one field replaced: arrays as members, the rest in the
    header's fields (as a model written by hand or by a damaged writer would have it)."""
    raw, header = members_of(path)
    raw.pop(name, None)
    header["fields"].pop(name, None)
    header["shapes"].pop(name, None)
    if isinstance(value, np.ndarray):
        raw[name] = npy_bytes(value)
        header["shapes"][name] = list(value.shape)
    else:
        header["fields"][name] = value
    write_model(path, raw, header)


def bad_prior_fields():
    spd = np.array([[2.0, 0.5], [0.5, 1.0]])
    return [
        ("noise_variance", -0.1, "noise_variance must be None or a positive finite number; "
                                 "got -0.1"),
        ("noise_variance", 0.0, "noise_variance must be None or a positive finite number"),
        ("noise_variance", [0.1], r"noise_variance must be .*; got \[0.1\]"),
        ("noise_variance", "0.1", "noise_variance must be None or a positive finite number"),
        ("noise_variance", True, "noise_variance must be None or a positive finite number"),
        ("noise_variance", 1e400, "Infinity is not a number a model file can hold"),
        ("noise_variance", float("nan"), "NaN is not a number a model file can hold"),
        ("noise_variance", np.array([0.1]), "are not stored the way metasp stores them"),
        ("head_mean", np.array([0.0, np.inf]), "head_mean contains NaN or infinite values"),
        ("head_mean", np.array([0.0, np.nan]), "head_mean contains NaN or infinite values"),
        ("head_mean", np.zeros(3), r"head_mean has shape \(3,\); .* must be \(2,\)"),
        ("head_mean", np.array([1, 2]), "head_mean must be None or a float array"),
        ("head_mean", [0.0, 1.0], "are not stored the way metasp stores them"),
        ("head_cov", np.array([[np.nan, 0.0], [0.0, 1.0]]), "head_cov contains NaN"),
        ("head_cov", np.array([[1.0, np.inf], [np.inf, 1.0]]), "head_cov contains NaN"),
        ("head_cov", np.eye(3), r"head_cov has shape \(3, 3\)"),
        ("head_cov", np.array([[1.0, 0.9], [0.0, 1.0]]), "head_cov is not symmetric"),
        ("head_cov", -spd, "head_cov is not positive definite"),
        ("head_cov", np.zeros((2, 2)), "head_cov is not positive definite"),
        ("B", np.full((2, 4), np.inf), "B is not a finite float array"),
        ("B", [[1.0]], "are not stored the way metasp stores them"),
        ("n_iter", -1, "n_iter must be an integer"),
        ("n_iter", 2.5, "n_iter must be an integer"),
        ("status", None, "status a string"),
    ]


@pytest.mark.parametrize("name, value, match", bad_prior_fields(),
                         ids=lambda value: repr(value)[:30])
def test_invalid_fields_are_refused_on_load(tiny, name, value, match):
    result, path = tiny
    assert result.noise_variance is not None  # the fixture has a head prior to damage
    edit_field(path, name, value)
    with pytest.raises(ValueError, match=match):
        metasp.load(path)


@pytest.mark.parametrize("name, value, match", [
    case for case in bad_prior_fields()
    if isinstance(case[1], np.ndarray) or (isinstance(case[1], (int, float))
                                           and not isinstance(case[1], bool)
                                           and np.isfinite(case[1]))
], ids=lambda value: repr(value)[:30])
def test_invalid_fields_are_refused_on_save(tiny, tmp_path, name, value, match):
    result, _ = tiny
    setattr(result, name, value)
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(ValueError, match="cannot save this result, it would not load"):
        result.save(folder / "model.npz")
    assert not os.listdir(folder)


def test_a_loaded_prior_adapts_to_finite_heads(tiny):
    result, path = tiny
    loaded = metasp.load(path)
    X = np.random.default_rng(2).standard_normal((3, 4))
    assert np.isfinite(loaded.adapt(X, X @ result.Theta[0])).all()


def test_a_model_without_a_prior_still_round_trips(tiny, tmp_path):
    result, _ = tiny
    result.head_mean = result.head_cov = result.noise_variance = None
    assert_same_result(result, metasp.load(result.save(tmp_path / "m.npz")))


# ---------------------------------------------------------------------------------------------
# Atomic writes: a crash or Ctrl-C at any point leaves the old file or the new one.


def fail_at(monkeypatch, where, error=KeyboardInterrupt):
    """Make the step ``where`` of a write raise ``error``."""
    def boom(*args, **kwargs):
        raise error()

    if where == "writing":
        original = np.savez

        def partial(file, **arrays):
            file.write(b"PK\x03\x04 half a model")
            raise error()

        monkeypatch.setattr(np, "savez", partial)
        return original
    monkeypatch.setattr(os, {"syncing": "fsync", "renaming": "replace"}[where], boom)
    return None


@pytest.mark.parametrize("where", ["writing", "syncing", "renaming"])
@pytest.mark.parametrize("error", [KeyboardInterrupt, OSError])
def test_an_interrupted_save_leaves_the_old_model(result, tmp_path, monkeypatch, where, error):
    path = result.save(tmp_path / "model.npz")
    before = path.read_bytes()
    result.metadata = {"second": True}
    fail_at(monkeypatch, where, error)
    with pytest.raises(error):
        result.save(path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["model.npz"]  # no temporary left behind
    assert path.read_bytes() == before
    assert metasp.load(path).metadata != {"second": True}


@pytest.mark.parametrize("where", ["writing", "syncing", "renaming"])
def test_an_interrupted_first_save_leaves_nothing(result, tmp_path, monkeypatch, where):
    fail_at(monkeypatch, where)
    with pytest.raises(KeyboardInterrupt):
        result.save(tmp_path / "model.npz")
    monkeypatch.undo()
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("mode, content", [("wb", b"bytes\n"), ("w", "text\n")])
def test_atomic_write_syncs_the_data_before_renaming(tmp_path, monkeypatch, mode, content):
    calls = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), replace(a, b)))
    target = tmp_path / "out.txt"
    target.write_text("old\n")
    with _io.atomic_write(target, mode) as file:
        file.write(content)
        assert target.read_text() == "old\n"  # not replaced before the block ends
    assert calls[:2] == ["fsync", "replace"]
    assert target.read_bytes() == (content if mode == "wb" else content.encode())
    assert os.listdir(tmp_path) == ["out.txt"]


def test_atomic_write_modes():
    with pytest.raises(ValueError, match="mode must be 'w' or 'wb'"):
        with _io.atomic_write("x", "a"):
            pass


def test_every_result_field_has_a_storage_rule():
    """A field added to MetaSPResult needs a rule in _io (where it is stored, how it is
    checked); otherwise saving writes it and loading refuses it."""
    fields = {field.name for field in dataclasses.fields(metasp.MetaSPResult)}
    ruled = set(_io._ARRAY_FIELDS) | set(_io._SCALAR_FIELDS) | {"history", "metadata",
                                                                "diagnostics"}
    assert fields == ruled
