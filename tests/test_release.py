"""What a released metasp promises: one version, complete metadata, a light import."""

import importlib.metadata
import inspect
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import metasp

ROOT = Path(__file__).resolve().parents[1]
# Imported only when a feature needs them (tables, plots, the estimator, progress bars).
OPTIONAL_MODULES = ["pandas", "matplotlib", "sklearn", "tqdm", "scipy", "pyarrow"]


def test_version_is_the_installed_distributions():
    assert metasp.__version__ == importlib.metadata.version("metasp")
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.dev\d+)?", metasp.__version__)


def test_version_is_written_once():
    pyproject = ROOT / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip("pyproject.toml is not beside the tests")
    text = pyproject.read_text()
    assert 'dynamic = ["version"]' in text
    assert not re.search(r"^version\s*=", text, flags=re.M)


def test_metadata_names_the_project_and_supported_pythons():
    metadata = importlib.metadata.metadata("metasp")
    urls = dict(entry.split(", ", 1) for entry in metadata.get_all("Project-URL"))
    assert set(urls) >= {"Homepage", "Documentation", "Source", "Issues", "Changelog"}
    assert all(url.startswith("https://github.com/metasp/metasp") for url in urls.values())
    classifiers = metadata.get_all("Classifier")
    assert any(entry.startswith("Development Status ::") for entry in classifiers)
    floor = re.fullmatch(r">=3\.(\d+)", metadata["Requires-Python"]).group(1)
    versions = sorted(int(entry.rsplit(".", 1)[1]) for entry in classifiers
                      if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", entry))
    assert versions[0] == int(floor) and versions == list(range(versions[0], versions[-1] + 1))
    assert metadata["Keywords"]


def test_import_leaves_optional_dependencies_unloaded(tmp_path):
    code = ("import sys, metasp\n"
            f"print('loaded:', *(m for m in {OPTIONAL_MODULES!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # The last line: an editable install may report its rebuild first.
    assert done.stdout.strip().splitlines()[-1] == "loaded:"


def test_show_config_prints_and_returns_sections(capsys):
    assert metasp.show_config() is None
    printed = capsys.readouterr().out
    config = metasp.show_config(mode="dicts")
    assert capsys.readouterr().out == ""
    assert list(config) == ["metasp", "Compiled core", "Build", "Runtime", "NumPy"]
    assert config["metasp"]["version"] == metasp.__version__
    assert config["Runtime"]["OpenMP threads"] == metasp._core.max_threads()
    assert re.match(r"\d+\.\d+\.\d+$", config["Build"]["eigen"])
    for section in config:
        assert f"{section}:\n" in printed
    assert f"  version: {metasp.__version__}\n" in printed


def test_show_config_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match="mode must be 'stdout' or 'dicts'; got 'json'"):
        metasp.show_config(mode="json")


def test_show_config_is_documented():
    doc = inspect.getdoc(metasp.show_config)
    assert "Parameters\n----------\nmode" in doc and "Returns\n-------" in doc


def test_deprecations_inside_other_packages_do_not_fail_the_suite():
    # pyparsing deprecating something matplotlib calls: shown, not an error (pyproject.toml).
    with warnings.catch_warnings(record=True) as caught:
        warnings.warn_explicit("old API", DeprecationWarning, "pyparsing/core.py", 1,
                               module="pyparsing.core")
    assert [type(entry.message) for entry in caught] == [DeprecationWarning]


@pytest.mark.parametrize("category", [DeprecationWarning, PendingDeprecationWarning])
def test_deprecations_in_metasp_fail_the_suite(category):
    with pytest.raises(category, match="old API"):
        warnings.warn_explicit("old API", category, "metasp/_solver.py", 1,
                               module="metasp._solver")
