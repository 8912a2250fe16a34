"""One list of diagnostic codes and one registry of baselines, which every tool reads."""

import ast
from pathlib import Path

import metasp
from metasp import _demo, _diagnostics, baselines, evaluate, experiments

ROOT = Path(metasp.__file__).parent


def _emitted_codes() -> dict:
    """The code of every ``Diagnostic(<code>, ...)`` in the package's source, and where."""
    codes = {}
    for path in sorted(ROOT.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "Diagnostic" and node.args):
                code = node.args[0]
                assert isinstance(code, ast.Constant), \
                    f"{path.name}:{node.lineno}: a diagnostic code must be a literal string"
                codes.setdefault(code.value, []).append(f"{path.name}:{node.lineno}")
    return codes


def test_every_emitted_diagnostic_code_is_registered():
    emitted = _emitted_codes()
    assert "rank_too_small" in emitted and "prior_out_of_range" in emitted  # the scan works
    unregistered = {code: where for code, where in emitted.items()
                    if code not in _diagnostics.CODES}
    assert not unregistered, f"codes missing from metasp._diagnostics.CODES: {unregistered}"


def test_every_registered_diagnostic_code_is_emitted_and_documented():
    emitted = _emitted_codes()
    for code, meaning in _diagnostics.CODES.items():
        assert code in emitted, f"{code!r} is registered but never emitted"
        assert meaning and f"``{code}``" in metasp.Diagnostic.__doc__, code


def test_the_registry_holds_every_baseline_method():
    helpers = {"default_lambda", "noise_level"}
    methods = set(baselines.__all__) - helpers
    assert set(baselines.BASELINES) == methods
    for name, baseline in baselines.BASELINES.items():
        assert baseline.function is getattr(baselines, name)


def test_evaluate_demo_and_experiments_read_the_registry():
    on_real_data = [name for name, baseline in baselines.BASELINES.items()
                    if not baseline.needs_truth]
    available = evaluate.available_methods()
    assert [name for name in available if name in baselines.BASELINES] == on_real_data
    assert "oracle" in baselines.BASELINES and "oracle" not in available
    assert _demo.FAST_BASELINES == tuple(
        name for name, baseline in baselines.BASELINES.items() if baseline.fast)
    assert _demo.BASELINE_OPTIONS["anil"] == dict(baselines.BASELINES["anil"].real_data_options)
    simulated = set(experiments.ALL_METHODS) - {"meta_sp"}
    assert simulated <= set(baselines.BASELINES)


def test_seeded_baselines_take_a_random_state():
    seeded = {name for name, baseline in baselines.BASELINES.items() if baseline.seeded}
    assert "mom" not in seeded and "oracle" not in seeded
    assert {"anil", "altmin", "nuclear_norm", "single_task"} <= seeded
