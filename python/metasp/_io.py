"""Saving and loading fitted models: one ``.npz`` file of arrays plus a JSON header, no pickle.

Layout (format version 1): every array field of :class:`MetaSPResult` is a member named after
the field (``B``, ``W``, ``Theta``, ``singular_values``, ...), every history entry a member
``history/<key>``, and the member ``__metasp__`` holds a JSON object with the format name and
version, the metasp version that wrote it, the scalar fields (``n_iter``, ``status``), the shape
of every array and the free-form ``metadata``.

Loading never runs code and never trusts a size it has not checked: the archive's directory,
each member's ``.npy`` header and the JSON header must agree on every member's shape and size,
and the members together may not unpack to much more than the file holds, before any array is
read; each member is then streamed into an array of exactly its declared size, with the zip CRC
checked. Object (pickled) members are refused. Every field is validated (type, shape,
finiteness, sign), so a file that loads is a model that works.

The result type itself is defined in :mod:`metasp._result`, whose ``save`` and ``load`` call
this module; :func:`load` is handed the type to build, so that this module does not import it.

Writing goes to a temporary file in the target's folder, which is flushed to disk and then
renamed over the target (:func:`atomic_write`): an interrupted save leaves either the old file
or the new one, never a truncated one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import struct
import uuid
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ._arrays import is_integer, is_real
from ._version import __version__

__all__ = ["FORMAT", "FORMAT_VERSION", "atomic_write", "load", "save"]

FORMAT = "metasp.MetaSPResult"
FORMAT_VERSION = 1
_HEADER = "__metasp__"
_HISTORY = "history/"

# Sanity bounds on what a model file may ask the reader to allocate. np.savez stores members
# uncompressed, and even compressed float arrays shrink by a few times at most, so members
# that claim to unpack to far more than the file holds are a zip bomb, not a model.
_MAX_MEMBERS = 10_000
_INFLATION = 64  # bytes of members per byte of file
_ALLOWANCE = 16 * 2**20  # small files may always unpack to this much
_MAX_DEPTH = 100  # nesting of the JSON header; the files metasp writes use about 5
_CHUNK = 2**24  # bytes decompressed at a time
_ARRAY_KINDS = "biufU"  # what save writes; no objects, no raw bytes
# Anything that the zip and npy readers raise on a damaged file.
_DAMAGE = (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, NotImplementedError,
           RuntimeError, struct.error, OverflowError, KeyError, IndexError)

# Fields stored as array members (None when absent); the others are JSON scalars in the header.
_ARRAY_FIELDS = ("B", "W", "Theta", "singular_values", "head_mean", "head_cov")
_SCALAR_FIELDS = ("n_iter", "status", "noise_variance")


class _NotAModel(ValueError):
    """A file that is not a readable model; raised with the reason, never re-wrapped."""


def _not_a_model(path, reason: str) -> ValueError:
    return _NotAModel(f"{os.fspath(path)} is not a readable metasp model file: {reason}")


@contextlib.contextmanager
def atomic_write(path, mode="wb", **options):
    """Open a file that replaces ``path`` only once it is complete and on disk.

    The data go to a new temporary file in the folder of ``path``; when the ``with`` block
    ends without an error, the file is flushed, synced to disk (``os.fsync``) and renamed over
    ``path`` (``os.replace``, atomic on POSIX and Windows). On any error, including
    ``KeyboardInterrupt``, the temporary file is removed and ``path`` is left as it was.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write.
    mode : {"wb", "w"}, default "wb"
        Binary or text.
    **options
        Passed to :func:`open` (for example ``newline=""`` or ``encoding``).

    Returns
    -------
    context manager
        Yields the open temporary file.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb'; got {mode!r}")
    path = Path(os.fspath(path))
    # "x" rather than mkstemp: the file gets the usual umask permissions, not 0600.
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, mode.replace("w", "x"), **options) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable; not possible (nor needed) on every platform."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _json_default(value):
    # NumPy scalars and arrays in metadata are stored as plain numbers and lists.
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _storable(result) -> bool:
    """Whether ``result`` is an instance of a result dataclass this format has a rule for
    every field of."""
    if not dataclasses.is_dataclass(result) or isinstance(result, type):
        return False
    names = {field.name for field in dataclasses.fields(result)}
    return names == set(_ARRAY_FIELDS) | set(_SCALAR_FIELDS) | {"history", "metadata",
                                                                "diagnostics"}


def save(result, path) -> Path:
    """Write ``result`` to ``path`` as one ``.npz`` file (see :meth:`MetaSPResult.save`).

    Parameters
    ----------
    result : MetaSPResult
        The model; its fields are checked as :func:`load` checks them, so that every saved
        file loads.
    path : str or os.PathLike
        Where to write, atomically (see :func:`atomic_write`).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    if not _storable(result):
        raise TypeError(f"only a MetaSPResult can be saved; got {type(result).__name__}")
    arrays, scalars = {}, {}
    for field in dataclasses.fields(result):
        value = getattr(result, field.name)
        if field.name in ("metadata", "diagnostics"):  # diagnostics describe the fit, not the model
            continue
        if field.name == "history":
            for key, entry in value.items():
                arrays[_HISTORY + str(key)] = np.asarray(entry)
        elif isinstance(value, np.ndarray):
            arrays[field.name] = value
        elif value is None or isinstance(value, (bool, int, float, str, np.generic)):
            scalars[field.name] = value
        else:
            raise TypeError(f"cannot save field {field.name!r} of type {type(value).__name__}")
    for name, array in arrays.items():
        if array.dtype.kind not in _ARRAY_KINDS:
            raise TypeError(f"cannot save {name!r}: dtype {array.dtype} would need pickle")
    problem = _problem(result)
    if problem:
        raise ValueError(f"cannot save this result, it would not load: {problem}")
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "metasp_version": __version__,
        "fields": scalars,
        "shapes": {name: list(array.shape) for name, array in arrays.items()},
        "metadata": result.metadata,
    }
    try:
        text = json.dumps(header, default=_json_default, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as error:
        raise TypeError(
            f"result.metadata must be JSON-serialisable (str, numbers, lists, dicts; no NaN or "
            f"inf): {error}"
        ) from None
    if _depth(json.loads(text)) > _MAX_DEPTH:
        raise TypeError(f"result.metadata is nested more than {_MAX_DEPTH - 2} levels deep; "
                        "flatten it")
    arrays[_HEADER] = np.array(text)

    path = Path(os.fspath(path))
    with atomic_write(path) as file:
        np.savez(file, **arrays)
    return path


def load(path, result_type):
    """Read a model written by :func:`save` as a ``result_type`` (:class:`MetaSPResult`); see
    :func:`metasp.load`."""
    header, members = _read_members(path, result_type)
    history = {name[len(_HISTORY):]: array for name, array in members.items()
               if name.startswith(_HISTORY)}
    arrays = {name: array for name, array in members.items() if not name.startswith(_HISTORY)}
    fields = header["fields"]
    values = {**fields, **arrays, "history": history, "metadata": header["metadata"]}
    result = result_type(**values)
    problem = _problem(result)
    if problem:
        raise _not_a_model(path, problem)
    return result


def _read_members(path, result_type) -> tuple[dict, dict]:
    """The checked JSON header and the arrays; any damage to the file becomes a ValueError."""
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if file.read(6) == b"\x93NUMPY":
            raise _not_a_model(path, "it holds a single array (.npy), not an .npz archive")
        file.seek(0)
        try:
            archive = zipfile.ZipFile(file)
        except _DAMAGE:
            raise _not_a_model(
                path, "it is not an .npz archive (a zip file) at all; model files are written "
                      "by MetaSPResult.save or `python -m metasp fit`") from None
        try:
            with archive:
                return _read_archive(archive, size, path, result_type)
        except _NotAModel:
            raise
        except _DAMAGE as error:
            raise _not_a_model(path, f"the file is corrupt or truncated ({error})") from None


def _read_archive(archive, size: int, path, result_type) -> tuple[dict, dict]:
    infos = {}
    entries = archive.infolist()
    if len(entries) > _MAX_MEMBERS:
        raise _not_a_model(path, f"it has {len(entries)} members; a model has a few dozen")
    if _HEADER + ".npy" not in {info.filename for info in entries}:
        raise _not_a_model(path, f"the {_HEADER!r} header is missing (a zip or .npz file, but "
                                 "not one written by MetaSPResult.save)")
    for info in entries:
        if not info.filename.endswith(".npy"):
            raise _not_a_model(path, f"member {info.filename!r} is not a .npy array")
        name = info.filename[:-len(".npy")]
        if name in infos:
            raise _not_a_model(path, f"member {info.filename!r} appears twice")
        if info.flag_bits & 0x1:
            raise _not_a_model(path, f"member {info.filename!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _not_a_model(path, f"member {info.filename!r} uses zip compression method "
                                     f"{info.compress_type}; model files are stored or deflated")
        infos[name] = info
    declared = sum(info.file_size for info in entries)
    if declared > _ALLOWANCE + _INFLATION * size:
        raise _not_a_model(path, f"its members would unpack to {declared:,} bytes from a "
                                 f"{size:,}-byte file, far more than a model holds (a zip bomb?); "
                                 "nothing was unpacked")

    # The JSON header first: it says what the other members must be.
    header_info = infos.pop(_HEADER)
    shape, dtype, _ = _member_layout(archive, header_info, path)
    if dtype.kind != "U" or shape != ():
        raise _not_a_model(path, "the header is not a JSON string")
    header = _parse_header(_read_member(archive, header_info, path).item(), path)
    shapes = header["shapes"]
    if set(shapes) != set(infos):
        raise _not_a_model(path, "its arrays do not match the list in its header")
    # Every member's own (.npy) header against the JSON header and the zip directory, and
    # the shapes against each other, before any array is allocated.
    for name, info in infos.items():
        shape, dtype, _ = _member_layout(archive, info, path)
        if list(shape) != shapes[name]:
            raise _not_a_model(path, f"array {name!r} has shape {shape}, the header says "
                                     f"{tuple(shapes[name])}")
    _check_fields(header["fields"], shapes, path, result_type)
    _check_layout(shapes, path)
    members = {name: _read_member(archive, info, path) for name, info in infos.items()}
    return header, members


def _member_layout(archive, info, path):
    """(shape, dtype, fortran_order) from a member's .npy header, checked against its size."""
    with archive.open(info) as stream:
        return _npy_header(stream, info, path)[:3]


def _npy_header(stream, info, path):
    name = info.filename
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        raise _not_a_model(path, f"member {name!r} is in .npy format version {version}, which "
                                 "model files do not use")
    if dtype.hasobject:
        raise _not_a_model(path, f"member {name!r} holds pickled Python objects, which a model "
                                 "file never contains (loading them could run code)")
    if dtype.kind not in _ARRAY_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise _not_a_model(path, f"member {name!r} has dtype {dtype}, which a model file never "
                                 "contains")
    nbytes = math.prod(shape) * dtype.itemsize
    offset = stream.tell()
    if info.file_size != offset + nbytes:
        raise _not_a_model(path, f"member {name!r} declares shape {shape} of {dtype} "
                                 f"({nbytes:,} bytes), but the archive lists "
                                 f"{info.file_size - offset:,} bytes for it")
    return shape, dtype, fortran, nbytes


def _read_member(archive, info, path) -> np.ndarray:
    """One member, streamed into an array of exactly its checked size; the CRC is verified."""
    with archive.open(info) as stream:
        shape, dtype, fortran, nbytes = _npy_header(stream, info, path)
        array = np.empty(shape[::-1] if fortran else shape, dtype=dtype)
        buffer = memoryview(array.reshape(-1).view(np.uint8))
        position = 0
        while position < nbytes:
            count = stream.readinto(buffer[position:position + _CHUNK])
            if not count:
                raise _not_a_model(path, f"member {info.filename!r} is truncated")
            position += count
        if stream.read(1):  # also completes the CRC check
            raise _not_a_model(path, f"member {info.filename!r} is longer than its header says")
    return array.T if fortran else array


def _reject_constant(name):
    raise ValueError(f"{name} is not a number a model file can hold")


def _depth(value) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > _MAX_DEPTH:
            break
        children = value.values() if isinstance(value, dict) else (
            value if isinstance(value, list) else ())
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _parse_header(text: str, path) -> dict:
    try:
        header = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise _not_a_model(path, "the header is nested too deeply to be one written by "
                                 "metasp") from None
    except ValueError as error:
        raise _not_a_model(path, f"the header is not valid JSON ({error})") from None
    if not isinstance(header, dict):
        raise _not_a_model(path, "the header is not a JSON object")
    if _depth(header) > _MAX_DEPTH:
        raise _not_a_model(path, f"the header is nested more than {_MAX_DEPTH} levels deep, "
                                 "which metasp never writes")
    if header.get("format") != FORMAT:
        raise _not_a_model(path, f"its format is {header.get('format')!r}, not {FORMAT!r}")
    version = header.get("format_version")
    if not is_integer(version) or version < 1:
        raise _not_a_model(path, f"invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{os.fspath(path)} was written by metasp {header.get('metasp_version', '?')} in "
            f"format version {version}; this metasp reads versions up to {FORMAT_VERSION}. "
            "Upgrade metasp (pip install -U metasp) to read it."
        )
    shapes = header.get("shapes")
    if not isinstance(shapes, dict) or not all(
            isinstance(shape, list) and len(shape) <= 32
            and all(is_integer(n) and n >= 0 for n in shape) for shape in shapes.values()):
        raise _not_a_model(path, "its 'shapes' are not lists of non-negative integers")
    if not isinstance(header.get("fields"), dict) or not isinstance(header.get("metadata"), dict):
        raise _not_a_model(path, "the header lacks its 'fields' or 'metadata' object")
    return header


def _check_fields(fields: dict, shapes: dict, path, result_type) -> None:
    """Which fields the file has, and where: arrays as members, scalars in the header."""
    known = {field.name for field in dataclasses.fields(result_type)}
    arrays = {name for name in shapes if not name.startswith(_HISTORY)}
    unknown = sorted((set(fields) | arrays) - known)
    if unknown:
        raise _not_a_model(path, f"unknown fields {unknown} (written by a different metasp?)")
    misplaced = sorted(name for name in fields
                       if name not in _SCALAR_FIELDS
                       and not (name in _ARRAY_FIELDS and fields[name] is None))
    misplaced += sorted(arrays - set(_ARRAY_FIELDS))
    if misplaced:
        raise _not_a_model(path, f"fields {misplaced} are not stored the way metasp stores them")
    missing = sorted(name for name in known if name not in fields and name not in arrays
                     and _required(result_type, name))
    if missing:
        raise _not_a_model(path, f"fields {missing} are missing")


def _check_layout(shapes: dict, path) -> None:
    """The arrays' shapes fit together (from the header, before anything is read)."""
    B, W, Theta, sv = (tuple(shapes[name]) for name in ("B", "W", "Theta", "singular_values"))
    if len(B) != 2 or len(W) != 2 or Theta != (W[0], B[1]) or W[1] != B[0] or sv != (B[0],):
        raise _not_a_model(path, f"inconsistent shapes B {B}, W {W}, Theta {Theta}, "
                                 f"singular_values {sv}")
    s = B[0]
    for name, expected in (("head_mean", (s,)), ("head_cov", (s, s))):
        if name in shapes and tuple(shapes[name]) != expected:
            raise _not_a_model(path, f"{name} has shape {tuple(shapes[name])}; with rank s = "
                                     f"{s} it must be {expected}")
    for name, shape in shapes.items():
        if name.startswith(_HISTORY) and len(shape) > 1:
            raise _not_a_model(path, f"history entry {name[len(_HISTORY):]!r} has shape "
                                     f"{tuple(shape)}; history entries are 1-D")


def _required(result_type, name: str) -> bool:
    field = result_type.__dataclass_fields__[name]
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _problem(result):
    """What makes ``result`` unusable as a model (None when nothing does): every field's type,
    shape, finiteness and sign, as ``adapt`` and ``predict`` rely on them."""
    for name in ("B", "W", "Theta", "singular_values"):
        array = getattr(result, name)
        if not isinstance(array, np.ndarray) or array.dtype.kind != "f" \
                or not np.isfinite(array).all():
            return f"{name} is not a finite float array"
    B, W, Theta, sv = result.B, result.W, result.Theta, result.singular_values
    if B.ndim != 2 or W.ndim != 2 or Theta.shape != (W.shape[0], B.shape[1]) \
            or W.shape[1] != B.shape[0] or sv.shape != (B.shape[0],):
        return (f"inconsistent shapes B {B.shape}, W {W.shape}, Theta {Theta.shape}, "
                f"singular_values {sv.shape}")
    if not is_integer(result.n_iter) or result.n_iter < 0 or not isinstance(result.status, str):
        return "n_iter must be an integer and status a string"
    s = B.shape[0]
    for name, shape in (("head_mean", (s,)), ("head_cov", (s, s))):
        value = getattr(result, name)
        if value is None:
            continue
        if not isinstance(value, np.ndarray) or value.dtype.kind != "f" or value.shape != shape:
            return (f"{name} must be None or a float array of shape {shape}; got "
                    f"{_describe(value)}")
        if not np.isfinite(value).all():
            return f"{name} contains NaN or infinite values"
    if result.head_cov is not None:
        cov = result.head_cov
        if np.abs(cov - cov.T).max(initial=0) > 1e-8 * np.abs(cov).max(initial=0):
            return "head_cov is not symmetric"
        try:
            np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            return "head_cov is not positive definite (adapt inverts it)"
    noise = result.noise_variance
    if noise is not None and not (is_real(noise) and np.isfinite(noise) and noise > 0):
        return (f"noise_variance must be None or a positive finite number; got "
                f"{_describe(noise)}")
    if not isinstance(result.history, dict) or not isinstance(result.metadata, dict):
        return "history and metadata must be dicts"
    return None


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of dtype {value.dtype} and shape {value.shape}"
    text = repr(value)
    return text if len(text) <= 40 else f"a {type(value).__name__}"
