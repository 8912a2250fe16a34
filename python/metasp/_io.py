"""Saving and loading fitted models: one ``.npz`` file of arrays plus a JSON header, no pickle.

Layout (format version 1): every array field of :class:`MetaSPResult` is a member named after
the field (``B``, ``W``, ``Theta``, ``singular_values``, ...), every history entry a member
``history/<key>``, and the member ``__metasp__`` holds a JSON object with the format name and
version, the metasp version that wrote it, the scalar fields (``n_iter``, ``status``), the shape
of every array and the free-form ``metadata``. Loading uses ``allow_pickle=False``: a model file
can only ever produce numbers and strings. The zip CRC of every member is checked on reading.
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ._result import MetaSPResult

__all__ = ["FORMAT", "FORMAT_VERSION", "load", "save"]

FORMAT = "metasp.MetaSPResult"
FORMAT_VERSION = 1
_HEADER = "__metasp__"
_HISTORY = "history/"


def _json_default(value):
    # NumPy scalars and arrays in metadata are stored as plain numbers and lists.
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def save(result: MetaSPResult, path) -> Path:
    """Write ``result`` to ``path`` as one ``.npz`` file (see :meth:`MetaSPResult.save`)."""
    from . import __version__

    if not isinstance(result, MetaSPResult):
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
        if array.dtype.kind not in "biufU":
            raise TypeError(f"cannot save {name!r}: dtype {array.dtype} would need pickle")
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
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"result.metadata must be JSON-serialisable (str, numbers, lists, dicts; no NaN or "
            f"inf): {error}"
        ) from None
    arrays[_HEADER] = np.array(text)

    path = Path(os.fspath(path))
    # Write next to the target and rename, so an interrupted save never leaves half a model.
    # open(..., "xb") rather than mkstemp: the file gets the usual umask permissions, not 0600.
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "xb") as file:
            np.savez(file, **arrays)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def _not_a_model(path, reason: str) -> ValueError:
    return ValueError(f"{os.fspath(path)} is not a readable metasp model file: {reason}")


def _read_members(path) -> tuple[dict, dict]:
    """The JSON header and the arrays; any damage to the file becomes a ValueError."""
    # Our own file handle: np.load leaks its handle when given a path to a damaged archive.
    with open(path, "rb") as file:
        try:
            npz = np.load(file, allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError) as error:
            raise _not_a_model(path, f"it is neither an .npz archive nor an array ({error})"
                               ) from None
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise _not_a_model(path, "it holds a single array, not an .npz archive")
        with npz:
            if _HEADER not in npz.files:
                raise _not_a_model(path, f"the {_HEADER!r} header is missing (an .npz file, but "
                                         "not one written by MetaSPResult.save)")
            try:
                members = {name: npz[name] for name in npz.files}
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error,
                    NotImplementedError) as error:
                raise _not_a_model(path, f"the file is corrupt or truncated ({error})") from None
    header = members.pop(_HEADER)
    if header.dtype.kind != "U" or header.ndim != 0:
        raise _not_a_model(path, "the header is not a JSON string")
    try:
        header = json.loads(header.item())
    except json.JSONDecodeError as error:
        raise _not_a_model(path, f"the header is not valid JSON ({error})") from None
    if not isinstance(header, dict):
        raise _not_a_model(path, "the header is not a JSON object")
    return header, members


def load(path) -> MetaSPResult:
    """Read a model written by :meth:`MetaSPResult.save`.

    The file is read with ``allow_pickle=False``, so loading a model cannot run code.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npz`` file.

    Returns
    -------
    MetaSPResult
        The saved result, with its ``metadata``.

    Raises
    ------
    ValueError
        When the file is corrupt or truncated, is not a metasp model, or was written by a newer
        metasp in a format version this one cannot read.
    FileNotFoundError
        When there is no file at ``path``.

    Examples
    --------
    >>> import os, tempfile
    >>> import metasp
    >>> X, y, B, W = metasp.datasets.make_hps(T=50, m=10, d=8, s=2, random_state=0)
    >>> result = metasp.fit(X, y, 2, random_state=0)
    >>> result.metadata["note"] = "simulated"
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = result.save(os.path.join(folder, "model.npz"))
    ...     loaded = metasp.load(path)
    >>> bool((loaded.B == result.B).all()), loaded.status, loaded.metadata
    (True, 'converged', {'note': 'simulated'})
    """
    header, members = _read_members(path)
    if header.get("format") != FORMAT:
        raise _not_a_model(path, f"its format is {header.get('format')!r}, not {FORMAT!r}")
    version = header.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _not_a_model(path, f"invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{os.fspath(path)} was written by metasp {header.get('metasp_version', '?')} in "
            f"format version {version}; this metasp reads versions up to {FORMAT_VERSION}. "
            "Upgrade metasp (pip install -U metasp) to read it."
        )
    shapes = header.get("shapes")
    if not isinstance(shapes, dict) or set(shapes) != set(members):
        raise _not_a_model(path, "its arrays do not match the list in its header")
    for name, array in members.items():
        if list(array.shape) != shapes[name]:
            raise _not_a_model(path, f"array {name!r} has shape {array.shape}, the header says "
                                     f"{tuple(shapes[name])}")

    known = {field.name for field in dataclasses.fields(MetaSPResult)}
    history = {name[len(_HISTORY):]: array for name, array in members.items()
               if name.startswith(_HISTORY)}
    arrays = {name: array for name, array in members.items() if not name.startswith(_HISTORY)}
    fields = header.get("fields")
    metadata = header.get("metadata")
    if not isinstance(fields, dict) or not isinstance(metadata, dict):
        raise _not_a_model(path, "the header lacks its 'fields' or 'metadata' object")
    values = {**fields, **arrays, "history": history, "metadata": metadata}
    unknown = sorted(set(values) - known)
    if unknown:
        raise _not_a_model(path, f"unknown fields {unknown} (written by a different metasp?)")
    missing = sorted(name for name in known if name not in values and _required(name))
    if missing:
        raise _not_a_model(path, f"fields {missing} are missing")
    result = MetaSPResult(**values)
    _check_consistent(result, path)
    return result


def _required(name: str) -> bool:
    field = MetaSPResult.__dataclass_fields__[name]
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _check_consistent(result: MetaSPResult, path) -> None:
    B, W, Theta, sv = result.B, result.W, result.Theta, result.singular_values
    for name in ("B", "W", "Theta", "singular_values"):
        array = getattr(result, name)
        if array.dtype.kind != "f" or not np.isfinite(array).all():
            raise _not_a_model(path, f"{name} is not a finite float array")
    if B.ndim != 2 or W.ndim != 2 or Theta.shape != (W.shape[0], B.shape[1]) \
            or W.shape[1] != B.shape[0] or sv.shape != (B.shape[0],):
        raise _not_a_model(path, f"inconsistent shapes B {B.shape}, W {W.shape}, Theta "
                                 f"{Theta.shape}, singular_values {sv.shape}")
    if not isinstance(result.n_iter, int) or not isinstance(result.status, str):
        raise _not_a_model(path, "n_iter must be an integer and status a string")
