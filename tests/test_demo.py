"""`python -m metasp demo`: the whole path, on the built-in data, with small settings."""

import os

import pytest

from metasp import _demo, evaluate
from metasp._cli import main
from metasp._demo import FAST_BASELINES


def test_demo_prints_the_table_and_writes_csv_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    plot, table = tmp_path / "demo.png", tmp_path / "demo.csv"
    status = main(["demo", "--shots", "3", "5", "--repeats", "1", "--max-rank", "2", "--cv", "2",
                   "--max-iter", "20", "--plot", str(plot), "--csv", str(table),
                   "--baselines", "none"])
    assert status == 0
    out = capsys.readouterr().out
    assert "1571 days x 24 hours" in out and "CC BY 4.0" in out
    for name in ("metasp", "ridge_tuned", "pooled_intercept"):
        assert name in out
    assert "k = 3:" in out and "k = 5:" in out
    assert plot.stat().st_size > 1000
    lines = table.read_text().splitlines()
    assert lines[0].startswith("method,shots,mean_mse")
    assert len(lines) == 1 + 6 * 2


@pytest.mark.filterwarnings("ignore::metasp.DivergenceWarning")
def test_demo_can_skip_the_plot_and_runs_the_fast_baselines(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["demo", "--shots", "3", "--repeats", "1", "--max-rank", "1", "--cv", "2",
          "--max-iter", "5", "--plot", "none"])
    out = capsys.readouterr().out
    assert "plot written" not in out
    assert not list(tmp_path.iterdir())
    for name in evaluate.available_methods():
        if name in FAST_BASELINES:
            assert f"\n{name} " in out


def interrupt_replacing(monkeypatch, target):
    """Ctrl-C at the moment the complete output would replace ``target``."""
    replace = os.replace

    def interrupted(source, destination):
        if os.fspath(destination) == os.fspath(target):
            raise KeyboardInterrupt
        replace(source, destination)

    monkeypatch.setattr(os, "replace", interrupted)


@pytest.mark.parametrize("writer, name", [("_write_csv", "table.csv"), ("_plot", "plot.png"),
                                          ("_plot", "plot.svg")])
def test_interrupted_demo_outputs_leave_the_old_file(tmp_path, monkeypatch, writer, name):
    if writer == "_plot":
        pytest.importorskip("matplotlib")
    table = [{"method": method, "shots": k, "mean_mse": 1.0 + k, "std_mse": 0.1,
              "n_repeats": 1, "mse": [1.0], "ranks": [2]}
             for method in ("metasp", "ridge") for k in (3, 5)]
    target = tmp_path / name
    target.write_bytes(b"old")
    interrupt_replacing(monkeypatch, target)
    with pytest.raises(KeyboardInterrupt):
        getattr(_demo, writer)(table, str(target))
    assert os.listdir(tmp_path) == [name] and target.read_bytes() == b"old"
    monkeypatch.undo()
    getattr(_demo, writer)(table, str(target))
    assert os.listdir(tmp_path) == [name] and target.stat().st_size > 100
    if name.endswith(".svg"):
        assert b"<svg" in target.read_bytes()[:1000]
