"""Command-line argument errors and output-path checks shared by the commands of ``python -m
metasp`` (the main command line and the demo)."""

from __future__ import annotations

import uuid
from pathlib import Path


class UsageError(ValueError):
    """A bad command-line argument: exit status 2, as for argparse's own errors."""


def check_output(path, option: str) -> None:
    """Fail now, not after the work, when ``path`` cannot be written: a missing folder, a
    folder in the way, or a folder without write permission."""
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder; give a file name in it")
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise UsageError(f"{option} {path}: the folder {folder} {what}; create it first or "
                         "choose another path")
    _probe(folder, option, path)


def check_output_folder(path, option: str) -> None:
    """Like :func:`check_output` for a folder that is created when missing."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{option} {path}: {existing} is a file, not a folder; choose another "
                         "folder")
    _probe(existing, option, path)


def _probe(folder: Path, option: str, path: Path) -> None:
    # Creating a file is the test that cannot disagree with the real write later (os.access
    # answers for the real user id, and yes for root whatever the permissions).
    probe = folder / f".metasp-write-test-{uuid.uuid4().hex}"
    try:
        open(probe, "xb").close()
        probe.unlink()
    except OSError as error:
        raise UsageError(f"{option} {path}: cannot write in the folder {folder} "
                         f"({error.strerror or error}); choose another path") from None
