"""The physics commands end to end through the CLI, on tiny generated data."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from lightstack.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_generate_then_inspect(tmp_path):
    out = tmp_path / "adv.h5"
    result = invoke("physics", "generate", "advection1d", "--out", out, "--samples", 3, "--nx", 32)
    assert result.exit_code == 0, result.output
    with h5py.File(out) as f:
        assert f["tensor"].shape == (3, 201, 32)
    result = invoke("physics", "inspect", out)
    assert result.exit_code == 0
    assert "layout: 1d_tensor" in result.output and "samples: 3" in result.output
    assert "tensor: shape (3, 201, 32)" in result.output


def test_generate_takes_nx_for_every_equation_and_names_files_for_pdebench(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("physics", "generate", "darcy2d", "--samples", 2, "--nx", 16)
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "data" / "darcy2d.hdf5") as f:
        assert f["tensor"].shape == (2, 1, 16, 16) and f["nu"].shape == (2, 16, 16)
    args = ("--samples", 1, "--nx", 16, "--param", "t_end=1.0", "--param", "dt_save=0.5")
    result = invoke("physics", "generate", "ns2d", *args)
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "data" / "ns2d.h5") as f:
        assert f["0000/data"].shape == (3, 16, 16, 3)
    assert "note:" not in result.output
    result = invoke("physics", "generate", "advection1d", "--out", "adv.h5", "--nx", 16)
    assert result.exit_code == 0 and "expect *.hdf5" in result.output


def test_generate_errors_name_the_parameter_and_the_accepted_ones(tmp_path):
    out = tmp_path / "x.hdf5"
    result = invoke("physics", "generate", "darcy2d", "--out", out, "--param", "n=16")
    assert result.exit_code == 1
    assert "darcy2d: unknown parameter(s) ['n']" in result.output and "'nx'" in result.output
    result = invoke("physics", "generate", "ns2d", "--out", out, "--param", "nu=fast")
    assert result.exit_code == 1
    assert "ns2d: parameter 'nu' must be a number (default 0.001), got 'fast'" in result.output
    result = invoke("physics", "generate", "burgers1d", "--out", out, "--param", "nx=64.5")
    assert "parameter 'nx' must be an integer" in result.output
    assert not out.exists()


def test_inspect_reports_nan_and_exits_nonzero(tmp_path, advection_file):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(advection_file.read_bytes())
    with h5py.File(bad, "r+") as f:
        f["tensor"][0, 3, 5] = np.nan
    result = invoke("physics", "inspect", bad)
    assert result.exit_code == 1
    assert "bad.h5" in result.output and "NaN" in result.output


def test_inspect_of_a_non_hdf5_file(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("hello")
    result = invoke("physics", "inspect", path)
    assert result.exit_code == 1 and "notes.h5" in result.output


def test_generate_rejects_unknown_equation(tmp_path):
    result = invoke("physics", "generate", "heat9d", "--out", tmp_path / "x.h5")
    assert result.exit_code == 1 and "heat9d" in result.output


def test_config_validate_lists_every_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("family: physics\nmodel: {widht: 3}\ntrainer: {precision: fp8}\n")
    result = invoke("config", "validate", "--config", cfg, "optimizer.lr=-1")
    assert result.exit_code == 1
    for path in ("model.widht", "trainer.precision", "optimizer.lr"):
        assert path in result.output
    good = tmp_path / "g.yaml"
    good.write_text("family: physics\n")
    assert invoke("config", "validate", "--config", good).exit_code == 0


def test_config_validate_unknown_family(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("family: chemistry\n")
    result = invoke("config", "validate", "--config", cfg)
    assert result.exit_code == 1 and "family" in result.output


@pytest.mark.slow
def test_train_beats_persistence_then_eval(tmp_path):
    """A minute of CPU training on a smaller set beats persistence at least 3x one step ahead.

    The quickstart's model and recipe on 128 samples (instead of 200), generated and reduced as
    the quickstart's (1024 cells -> 256 points, every 10th snapshot), for 1000 steps instead of
    3.5 minutes. Measured 6.4x (one thread, two runs side by side on 2 cores).
    """
    data = tmp_path / "burgers.h5"
    result = invoke(
        "physics", "generate", "burgers1d", "--out", data, "--samples", 128, "--seed", 0
    )
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    result = invoke(
        "physics",
        "train",
        "--config",
        ROOT / "configs" / "physics" / "quickstart.yaml",
        "--data",
        data,
        "--run-dir",
        run,
        "trainer.max_time=null",
        "trainer.max_steps=1000",
        "logging.progress_bar=none",
    )
    assert result.exit_code == 0, result.output
    ckpt = run / "checkpoints" / "best.ckpt"
    result = invoke("physics", "eval", "--ckpt", ckpt, "--run-dir", tmp_path / "eval")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]["all"]
    assert metrics["persistence_onestep_nrmse"] >= 3.0 * metrics["onestep_nrmse"], metrics
