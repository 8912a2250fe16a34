"""metasp's compiled core, the build that suits this CPU.

On x86-64 the C++ core is compiled once per ISA level of the x86-64 psABI (modules
``_core_x86_64``, ``_core_x86_64_v2``, ``_core_x86_64_v3``, ``_core_x86_64_v4``), so one wheel
runs on any x86-64 CPU and still uses AVX2/FMA or AVX-512 where the CPU has them. This module
imports the highest level the CPU runs and re-exports its functions, so ``from metasp import
_core`` works the same with every build. The environment variable ``METASP_ISA``
(``baseline``, ``v2``, ``v3`` or ``v4``) picks a level instead. Builds with one module (other
CPUs, ``METASP_NATIVE=ON``, ``METASP_ISA_LEVELS=OFF``) load that module.

The levels run the same algorithm; results differ only by floating-point rounding (wider
vectors and fused multiply-adds sum in a different order).
"""

from __future__ import annotations

import importlib
import importlib.util
import os

#: ``METASP_ISA`` values, lowest level first, and the module each names.
ISA_MODULES = {
    "baseline": "_core_x86_64",
    "v2": "_core_x86_64_v2",
    "v3": "_core_x86_64_v3",
    "v4": "_core_x86_64_v4",
}
#: The CPU features each level adds to the one below it (Linux's /proc/cpuinfo names).
ISA_FEATURES = {
    "baseline": (),
    "v2": ("cx16", "lahf_lm", "popcnt", "sse3", "sse4_1", "sse4_2", "ssse3"),
    "v3": ("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe"),
    "v4": ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"),
}
# Builds with a single module, in the order they are looked for.
_SINGLE_MODULES = ("_core_native", "_core_generic")


def _module_exists(name: str) -> bool:
    return importlib.util.find_spec(f"{__package__}.{name}") is not None


def built_levels() -> list[str]:
    """The ISA levels this build of metasp has a module for, lowest first (empty if none)."""
    return [level for level, module in ISA_MODULES.items() if _module_exists(module)]


def cpu_features() -> dict[str, bool]:
    """The x86-64 features the levels need, as this CPU and operating system report them."""
    probe = importlib.import_module(f"{__package__}._isa_probe")
    return dict(probe.cpu_features())


def supported_levels(features: dict[str, bool]) -> list[str]:
    """The ISA levels a CPU with these features runs, lowest first."""
    levels = []
    for level, needed in ISA_FEATURES.items():
        if not all(features.get(name, False) for name in needed):
            break
        levels.append(level)
    return levels


def _choose_module() -> tuple[str, str | None, list[str], list[str]]:
    """The module to load, its level (None for a single-module build), built and CPU levels."""
    requested = os.environ.get("METASP_ISA", "").strip().lower()
    if requested and requested not in ISA_MODULES:
        raise ValueError(
            f"METASP_ISA={os.environ['METASP_ISA']!r} is not an ISA level metasp knows; set it "
            f"to one of {', '.join(ISA_MODULES)} or unset it to use the best level this CPU runs"
        )
    built = built_levels()
    if not built:
        for module in _SINGLE_MODULES:
            if _module_exists(module):
                if requested:
                    raise ValueError(
                        f"METASP_ISA={requested} asks for an x86-64 ISA level, but this build "
                        f"of metasp has one compiled core ({module}); unset METASP_ISA, or "
                        "build metasp on x86-64 with METASP_ISA_LEVELS=ON"
                    )
                return module, None, [], []
        raise ImportError("metasp's compiled core is missing; reinstall metasp")
    supported = supported_levels(cpu_features())
    if requested:
        if requested not in supported:
            raise ValueError(
                f"METASP_ISA={requested} asks for x86-64-{requested}, which this CPU does not "
                f"run (it runs {', '.join(supported)}); choose one of those or unset METASP_ISA"
            )
        if requested not in built:
            raise ValueError(
                f"METASP_ISA={requested}: this build of metasp has no {requested} module (it "
                f"has {', '.join(built)}); choose one of those or unset METASP_ISA"
            )
        return ISA_MODULES[requested], requested, built, supported
    usable = [level for level in built if level in supported]
    if not usable:
        raise ImportError(
            f"this CPU runs none of the x86-64 levels this metasp build has ({', '.join(built)})"
        )
    return ISA_MODULES[usable[-1]], usable[-1], built, supported


_module_name, isa_level, isa_levels_built, isa_levels_supported = _choose_module()
_module = importlib.import_module(f"{__package__}.{_module_name}")
globals().update(
    {name: value for name, value in vars(_module).items() if not name.startswith("__")}
)
module_name = _module_name
