"""The physics commands end to end through the CLI, on tiny generated data."""

import json

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from lightstack.cli import app

runner = CliRunner()


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
def test_train_beats_persistence_then_eval(tmp_path, burgers_file):
    """Half a minute of CPU training on a small Burgers set beats persistence clearly.

    Measured 1.8x (64 samples, 64 points, 1200 steps); the 3x the roadmap asks of a one-minute
    CPU run is not reached yet, so this guards the 1.5x the model does reach.
    """
    cfg = tmp_path / "small.yaml"
    cfg.write_text(
        "family: physics\nname: small\n"
        "data: {reduced_resolution: 4, reduced_resolution_t: 10, loader: {batch_size: 16}}\n"
        "model: {width: 48, heads: 4, patch_size: 4, operator_depth: 2}\n"
        "loss: {rollout_horizon: 2, query_points: 32}\n"
        "optimizer: {lr: 2.0e-3, scheduler: {name: cosine, warmup_steps: 100}}\n"
        "trainer: {accelerator: cpu, devices: 1, max_epochs: 100, max_steps: 1200}\n"
        "logging: {progress_bar: none, loggers: [csv]}\n"
    )
    run = tmp_path / "run"
    result = invoke("physics", "train", "--config", cfg, "--data", burgers_file, "--run-dir", run)
    assert result.exit_code == 0, result.output
    ckpt = run / "checkpoints" / "best.ckpt"
    result = invoke("physics", "eval", "--ckpt", ckpt, "--run-dir", tmp_path / "eval")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]["all"]
    assert metrics["persistence_onestep_nrmse"] >= 1.5 * metrics["onestep_nrmse"], metrics
