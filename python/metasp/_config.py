"""metasp.show_config: how this metasp was built and what it runs on."""

from __future__ import annotations

import platform
import sys

from . import _core
from ._version import __version__

_MODES = ("stdout", "dicts")


def _numpy_info() -> dict:
    import numpy as np

    info: dict = {"version": np.__version__}
    try:  # NumPy >= 1.25 describes its build as a dict.
        build = np.show_config(mode="dicts")
    except TypeError:
        return info
    dependencies = build.get("Build Dependencies", {})
    for library in ("blas", "lapack"):
        if library in dependencies:
            entry = dependencies[library]
            info[library] = f"{entry.get('name', '?')} {entry.get('version', '')}".strip()
    return info


def _config() -> dict:
    build = dict(_core.build_info())
    isa: dict = {
        "module": _core.module_name,
        "instruction set": build.pop("isa"),
        "Eigen SIMD": build.pop("simd"),
    }
    if _core.isa_levels_built:
        isa["level"] = _core.isa_level
        isa["levels built"] = list(_core.isa_levels_built)
        isa["levels this CPU runs"] = list(_core.isa_levels_supported)
    build.pop("module")
    openmp = build.pop("openmp")
    return {
        "metasp": {"version": __version__},
        "Compiled core": isa,
        "Build": {**build, "OpenMP": None if openmp is None else str(openmp)},
        "Runtime": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "machine": platform.machine(),
            "OpenMP threads": _core.max_threads(),
        },
        "NumPy": _numpy_info(),
    }


def show_config(mode: str = "stdout") -> dict | None:
    """Show how metasp was built and which compiled core it runs.

    Reports metasp's version; the compiled core in use (on x86-64, the ISA level chosen for
    this CPU, the levels this build has and the levels the CPU runs; see ``METASP_ISA`` in
    the installation notes); the compiler, Eigen, pybind11 and OpenMP versions it was built
    with; the number of OpenMP threads it uses by default; and NumPy's version and BLAS.
    Include it in bug reports.

    Parameters
    ----------
    mode : {"stdout", "dicts"}, default "stdout"
        ``"stdout"`` prints the report; ``"dicts"`` returns it as a dict of sections, each a
        dict of entries, and prints nothing.

    Returns
    -------
    dict or None
        The report with ``mode="dicts"``, else None.

    Examples
    --------
    >>> import metasp
    >>> metasp.show_config(mode="dicts")["Compiled core"]["module"]  # doctest: +SKIP
    '_core_x86_64_v4'
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be 'stdout' or 'dicts'; got {mode!r}")
    config = _config()
    if mode == "dicts":
        return config
    for section, entries in config.items():
        print(f"{section}:")
        for name, value in entries.items():
            if isinstance(value, list):
                value = ", ".join(value) if value else "none"
            print(f"  {name}: {value}")
    return None
