"""The compiled core built per x86-64 ISA level: which one is imported, and that they agree.

On x86-64, metasp compiles its C++ core once per ISA level (baseline, v2, v3, v4) and imports
the highest level the CPU runs, unless ``METASP_ISA`` names one. Builds with a single core
(other CPUs, ``METASP_ISA_LEVELS=OFF``, ``METASP_NATIVE=ON``) skip the level tests.
"""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import metasp
from metasp import _core

LEVELS_BUILT = _core.isa_levels_built
needs_levels = pytest.mark.skipif(not LEVELS_BUILT, reason="this build has a single core")

# The vector instruction sets Eigen is compiled to use in each level's module.
SIMD_OF_LEVEL = {
    "baseline": "SSE2",
    "v2": "SSE2, SSE4.2",
    "v3": "SSE2, SSE4.2, AVX, AVX2, FMA",
    "v4": "SSE2, SSE4.2, AVX, AVX2, FMA, AVX512",
}


def run_python(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter, outside the source tree, with ``env`` added."""
    environment = {name: value for name, value in os.environ.items() if name != "METASP_ISA"}
    environment.update(OMP_NUM_THREADS="1", **env)
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=environment,
                          capture_output=True, text=True, timeout=300)


def test_core_reexports_the_compiled_functions():
    for name in ("solve", "polish", "SolveOptions", "task_gradient", "truncated_svd", "max_threads"):
        assert callable(getattr(_core, name)), name
    assert _core.build_info()["module"] == _core.module_name


@needs_levels
def test_the_highest_level_this_cpu_runs_is_chosen():
    usable = [level for level in LEVELS_BUILT if level in _core.isa_levels_supported]
    if os.environ.get("METASP_ISA"):
        pytest.skip("METASP_ISA chooses the level in this run")
    assert _core.isa_level == usable[-1]
    assert _core.module_name == _core.ISA_MODULES[usable[-1]]


@needs_levels
@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="needs Linux's /proc/cpuinfo")
def test_cpu_probe_agrees_with_the_kernel():
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    if "pni" in flags:  # the kernel's name for SSE3
        flags.add("sse3")
    assert _core.cpu_features() == {name: name in flags for name in _core.cpu_features()}


def test_supported_levels_stop_at_the_first_missing_feature():
    v3 = {name: True for level in ("v2", "v3") for name in _core.ISA_FEATURES[level]}
    assert _core.supported_levels(v3) == ["baseline", "v2", "v3"]
    assert _core.supported_levels({**v3, "sse4_2": False}) == ["baseline"]
    everything = {name: True for names in _core.ISA_FEATURES.values() for name in names}
    assert _core.supported_levels({**everything, "fma": False}) == ["baseline", "v2"]


@pytest.mark.parametrize("value, match", [
    ("v5", "METASP_ISA='v5' is not an ISA level metasp knows; set it to one of baseline, v2"),
    ("avx2", "METASP_ISA='avx2' is not an ISA level"),
])
def test_unknown_level_is_a_clear_error(monkeypatch, value, match):
    monkeypatch.setenv("METASP_ISA", value)
    with pytest.raises(ValueError, match=match):
        _core._choose_module()


@needs_levels
def test_a_level_this_cpu_lacks_is_a_clear_error(monkeypatch):
    no_avx512 = {name: name not in _core.ISA_FEATURES["v4"] for name in _core.cpu_features()}
    monkeypatch.setattr(_core, "cpu_features", lambda: no_avx512)
    monkeypatch.setenv("METASP_ISA", "v4")
    with pytest.raises(ValueError, match="x86-64-v4, which this CPU does not run .it runs "
                                         "baseline, v2, v3.; choose one of those"):
        _core._choose_module()
    monkeypatch.delenv("METASP_ISA")
    assert _core._choose_module()[1] == "v3"


def test_unknown_level_fails_the_import(tmp_path):
    done = run_python("import metasp", tmp_path, METASP_ISA="v9")
    assert done.returncode != 0
    assert "ValueError: METASP_ISA='v9' is not an ISA level metasp knows" in done.stderr


@pytest.mark.skipif(bool(LEVELS_BUILT), reason="this build has one core per ISA level")
def test_single_core_build_refuses_a_level(monkeypatch):
    monkeypatch.setenv("METASP_ISA", "v3")
    with pytest.raises(ValueError, match="this build of metasp has one compiled core"):
        _core._choose_module()


FIT_AT_LEVEL = """
import json, numpy as np, metasp
Xs, ys, _, _ = metasp.datasets.make_hps(T=300, m=12, d=40, s=4, sigma=0.1, random_state=3)
arrays, status = {}, {}
for heads in ("fixed", "random"):
    result = metasp.fit(Xs, ys, s=4, heads=heads)
    arrays[f"{heads}_projector"] = result.B.T @ result.B
    arrays[f"{heads}_singular_values"] = result.singular_values
    status[heads] = result.status
np.savez("fit.npz", **arrays)
config = metasp.show_config(mode="dicts")["Compiled core"]
print(json.dumps({"module": config["module"], "simd": config["Eigen SIMD"], "status": status}))
"""
# Relative agreement between levels: the fixed-heads fit ends with a least-squares polish that
# converges to machine precision; the random-heads fit stops when its marginal likelihood
# changes by less than tol, and the levels' rounding differences move where that happens
# (about 1e-8 measured).
AGREEMENT = {"fixed": 1e-10, "random": 1e-6}


@needs_levels
def test_levels_agree_to_rounding(tmp_path):
    """Every level this CPU runs fits the same subspace, equal up to rounding.

    The levels compile the same source; they differ only in vector width and fused
    multiply-adds, so sums are rounded in a different order. The fixed-heads fit agrees to
    1e-10 relative; the default random-heads fit to within what its stopping rule leaves.
    """
    levels = [level for level in LEVELS_BUILT if level in _core.isa_levels_supported]
    fits = {}
    for level in levels:
        folder = tmp_path / level
        folder.mkdir()
        done = run_python(FIT_AT_LEVEL, folder, METASP_ISA=level)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout.strip().splitlines()[-1])
        assert report["module"] == _core.ISA_MODULES[level]
        assert report["simd"] == SIMD_OF_LEVEL[level]
        assert report["status"] == {"fixed": "converged", "random": "converged"}
        with np.load(folder / "fit.npz") as arrays:
            fits[level] = {name: arrays[name] for name in arrays.files}
    baseline = fits[levels[0]]
    for level in levels[1:]:
        for heads, tolerance in AGREEMENT.items():
            for quantity in ("projector", "singular_values"):
                name = f"{heads}_{quantity}"
                difference = np.linalg.norm(fits[level][name] - baseline[name])
                assert difference <= tolerance * np.linalg.norm(baseline[name]), (
                    f"{level} vs {levels[0]}: {name} differs by {difference:.1e}")


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="ISA levels are built on x86-64 only")
def test_show_config_names_the_core_in_use():
    config = metasp.show_config(mode="dicts")
    assert config["Compiled core"]["module"] == _core.module_name
    if LEVELS_BUILT:
        assert config["Compiled core"]["level"] == _core.isa_level
        assert config["Compiled core"]["levels built"] == LEVELS_BUILT
