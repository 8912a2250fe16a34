"""metasp.experiments: every experiment's quick version runs and writes a complete CSV."""

import csv
import subprocess
import sys

import numpy as np
import pytest

from metasp import baselines, experiments
from metasp._cli import main
from metasp.metrics import sin_angle

# Rows of each quick run with one seed: settings x methods (rip: T x m x 2 directions).
QUICK_ROWS = {"rip": 4, "rank": 9, "meta_vs_anil": 5, "error_vs_T": 16, "error_vs_m": 8,
              "noise": 8, "non_gaussian": 8, "low_diversity": 8, "runtime": 10,
              "scarce_data": 18}
NUMBERS = ("sin_angle", "frobenius_error", "fewshot_mse", "wall_time")


def read(path):
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def test_every_experiment_has_a_quick_test():
    assert set(QUICK_ROWS) == set(experiments.EXPERIMENTS)


@pytest.mark.parametrize("name", list(QUICK_ROWS))
def test_quick_run_writes_complete_csv(name, tmp_path):
    paths = experiments.run(name, quick=True, out=tmp_path, progress=False, plot=False)
    assert paths == {"csv": tmp_path / f"{name}.csv"}
    columns, rows = read(paths["csv"])
    assert len(rows) == QUICK_ROWS[name]
    assert {row["experiment"] for row in rows} == {name}
    if name == "rip":
        assert columns == experiments.RIP_COLUMNS
        deltas = np.array([float(row["delta"]) for row in rows])
        assert np.all(np.isfinite(deltas)) and np.all(deltas >= 0)
        # With m < d, some direction inside one task is in the null space of X_t: delta >= 1.
        one_task = [float(row["delta"]) for row in rows if row["direction"] == "one_task"]
        assert min(one_task) >= 1.0
        return
    assert columns == (experiments.SCARCE_COLUMNS if name == "scarce_data"
                       else experiments.COLUMNS)
    for row in rows:
        values = np.array([float(row[key]) for key in NUMBERS])
        assert np.all(np.isfinite(values)) and np.all(values >= 0), row
        assert 0 <= float(row["sin_angle"]) <= 1
        assert row["status"] in ("converged", "max_iter", "diverged")
    oracle = [row for row in rows if row["method"] == "oracle"]
    assert all(float(row["sin_angle"]) < 1e-10 for row in oracle)


def test_scarce_data_runs_every_method_at_both_designs(tmp_path):
    pytest.importorskip("matplotlib")
    paths = experiments.run("scarce_data", quick=True, out=tmp_path, progress=False)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _, rows = read(paths["csv"])
    # The T design at m = 10 and the m design at the largest T share the point (60, 10).
    points = {(int(row["T"]), int(row["m"])) for row in rows}
    assert points == {(20, 10), (60, 10), (60, 5)}
    for point in points:
        methods = [row["method"] for row in rows if (int(row["T"]), int(row["m"])) == point]
        assert methods == list(experiments.SCARCE_METHODS)
    assert {row["sigma"] for row in rows} == {"1.0"}
    for row in rows:
        if row["method"] == "nuclear_norm_best":
            assert float(row["lambda_factor"]) in experiments.LAMBDA_FACTORS
        else:
            assert row["lambda_factor"] == ""
    # The oracle tuning is never further from the truth than the default weight.
    data = experiments._simulate(experiments._settings(
        [{**experiments._QUICK, "T": 20, "m": 10, "sigma": 1.0}])[0], 0)
    default = baselines.nuclear_norm(data["tasks"], None, 2, sigma=1.0, random_state=0)
    best = next(row for row in rows
                if row["method"] == "nuclear_norm_best" and row["T"] == "20")
    assert float(best["sin_angle"]) <= sin_angle(default.B, data["B"]) + 1e-12


def test_seeds_repeat_every_setting(tmp_path):
    paths = experiments.run("rank", quick=True, seeds=2, out=tmp_path, progress=False,
                            plot=False)
    _, rows = read(paths["csv"])
    assert len(rows) == 2 * QUICK_ROWS["rank"]
    assert {row["seed"] for row in rows} == {"0", "1"}
    first = [row["sin_angle"] for row in rows if row["seed"] == "0"]
    second = [row["sin_angle"] for row in rows if row["seed"] == "1"]
    assert first != second


def test_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    paths = experiments.run("error_vs_T", quick=True, out=tmp_path, progress=False)
    assert paths["png"] == tmp_path / "error_vs_T.png"
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_matplotlib_the_plot_is_skipped_with_advice(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    paths = experiments.run("rip", quick=True, out=tmp_path, progress=False)
    assert set(paths) == {"csv"}
    assert not (tmp_path / "rip.png").exists()
    assert 'pip install "metasp[plot]"' in capsys.readouterr().out


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown experiment 'nope'; choose one of: rip"):
        experiments.run("nope", out=tmp_path)
    with pytest.raises(ValueError, match="seeds must be a positive integer"):
        experiments.run("rip", seeds=0, out=tmp_path)


def test_command_line(tmp_path, capsys):
    assert main(["experiment", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in experiments.EXPERIMENTS)
    assert main(["experiment", "rip", "--quick", "--seeds", "2", "--out", str(tmp_path)]) == 0
    _, rows = read(tmp_path / "rip.csv")
    assert len(rows) == 2 * QUICK_ROWS["rip"]


def test_import_stays_light():
    code = ("import sys, metasp, metasp.experiments; "
            "print(sorted(m for m in ('matplotlib', 'tqdm', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"  # (an editable install may log a rebuild first)
