"""Progress bars: tqdm when it is installed, otherwise a plain line on stderr."""

from __future__ import annotations

import sys


def progress(iterable, *, total=None, desc=None, enable=True):
    """Iterate over ``iterable`` and show progress on stderr.

    Parameters
    ----------
    iterable : iterable
        What to iterate over.
    total : int, optional
        Number of items, when ``len(iterable)`` does not work.
    desc : str, optional
        Label shown before the bar.
    enable : bool, default True
        ``False`` iterates silently.

    Returns
    -------
    iterator
        Yields the items of ``iterable``.
    """
    if not enable:
        return iter(iterable)
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _plain_progress(iterable, total, desc)
    return tqdm(iterable, total=total, desc=desc, file=sys.stderr)


def _plain_progress(iterable, total, desc):
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    label = f"{desc}: " if desc else ""
    done = 0
    for item in iterable:
        yield item
        done += 1
        print(f"\r{label}{done}/{total if total is not None else '?'}", end="", file=sys.stderr)
    print(file=sys.stderr)
