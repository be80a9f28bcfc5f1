"""``lightstack physics eval`` through the real command: every stage kind it evaluates, the
predictions file scored without lightstack, the report, and a NaN checkpoint."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lightstack.cli import app
from lightstack.physics.train import train

torch.set_num_threads(1)


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def squash(text: str) -> str:
    """``text`` without whitespace: rich wraps long lines (and paths) anywhere."""
    return "".join(text.split())


@pytest.fixture(scope="module")
def operator_run(tmp_path_factory, tiny_config):
    """A tiny operator trained for 2 epochs with every step logged; 6 test trajectories."""
    cfg = tiny_config(
        "data.max_samples=24",
        "data.test_fraction=0.25",
        "eval.batch_size=4",
        "trainer.max_epochs=2",
        "trainer.log_every_n_steps=1",
    )
    return train(cfg, tmp_path_factory.mktemp("runs") / "op")


def pdebench_nrmse(pred: np.ndarray, true: np.ndarray, initial_step: int) -> float:
    """PDEBench's nRMSE from the arrays alone: per sample, channel and step over space, then
    the mean over the steps after the given ones, the channels and the samples."""
    p, t = pred[:, initial_step:], true[:, initial_step:]
    axes = tuple(range(2, p.ndim - 1))
    err = np.sqrt(((p - t) ** 2).mean(axis=axes))
    return float((err / np.sqrt((t**2).mean(axis=axes))).mean())


def test_operator_eval_writes_predictions_an_outside_tool_can_score(operator_run, tmp_path):
    out = tmp_path / "eval"
    result = invoke("physics", "eval", "--ckpt", operator_run.best_checkpoint, "--run-dir", out)
    assert result.exit_code == 0, result.output
    assert "rollout nRMSE" in result.output and "6 trajectories" in result.output
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]["all"]
    with h5py.File(out / "predictions.hdf5", "r") as h5:
        pred, true = h5["pred"][()], h5["true"][()]
        x, t = h5["x-coordinate"][()], h5["t-coordinate"][()]
        initial_step = int(h5.attrs["initial_step"])
    assert pred.shape == true.shape == (6, 21, 64, 1)  # (N, T, X, C), channels last
    assert x.shape == (64,) and t.shape == (21,) and np.all(np.diff(t) > 0)
    np.testing.assert_array_equal(pred[:, :initial_step], true[:, :initial_step])
    assert not np.array_equal(pred, true)
    assert pdebench_nrmse(pred, true, initial_step) == pytest.approx(
        metrics["rollout_nrmse"], abs=1e-5
    )
    for name in ("rmse", "max_error", "crmse", "brmse", "frmse_low", "frmse_mid", "frmse_high"):
        assert math.isfinite(metrics[name]) and metrics[name] > 0, name
    assert metrics["nonfinite_predictions"] == 0

    html = (out / "report.html").read_text()
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', html)
    assert images == [
        "Rollout error against horizon",
        "Truth, prediction and error of test trajectories",
        "Training curves",
    ]
    assert "autoregressive rollout nRMSE" in html and "mean over steps, channels" in html
    assert "as one batch" in html  # max error, cRMSE and fRMSE say how they reduce


def test_report_curves_have_a_point_per_logged_step(operator_run):
    from lightstack.physics.eval.report import _series, read_step_log

    rows = read_step_log(operator_run.run_dir / "logs" / "metrics.csv")
    losses = _series(rows, "step")["train/loss"]
    epochs = {row["epoch"] for row in rows if "epoch" in row}
    assert len(epochs) == 2 and len(losses) > 2 * len(epochs)  # per step, not per epoch


def test_nonfinite_predictions_fail_with_one_line_naming_the_checkpoint(operator_run, tmp_path):
    """Finite weights so large that the predictions overflow: loading accepts them (a NaN
    weight is refused at load, tests/reliability), evaluation must not call the model good."""
    ckpt = torch.load(operator_run.best_checkpoint, weights_only=True)
    ckpt["state_dict"] = {
        k: torch.full_like(v, 1e20) if v.is_floating_point() else v
        for k, v in ckpt["state_dict"].items()
    }
    bad = tmp_path / "huge.ckpt"
    torch.save(ckpt, bad)
    board = tmp_path / "board.csv"
    out = tmp_path / "eval"
    result = invoke(
        "physics", "eval", "--ckpt", bad, "--run-dir", out, f"champion.leaderboard={board}"
    )
    assert result.exit_code == 3, result.output
    output = squash(result.output)
    lines = output.split("error:")[1:]
    assert len(lines) == 1
    assert squash(f"checkpoint {bad}: its predictions hold NaN or Inf in 6 of 6") in lines[0]
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]["all"]
    assert math.isnan(metrics["rollout_nrmse"]) and math.isnan(metrics["max_error"])
    assert metrics["correlation_time@0.8"] == 0 and metrics["nonfinite_predictions"] == 6
    summary = json.loads((out / "summary.json").read_text())
    assert not summary["gates_passed"] and "nonfinite_predictions" in summary["failed_gates"]
    assert [row["gates_passed"] for row in csv.DictReader(board.open())] == ["false"]


@pytest.fixture(scope="module")
def darcy_file(tmp_path_factory) -> Path:
    from lightstack.physics.data.generate import generate

    out = tmp_path_factory.mktemp("darcy") / "darcy.hdf5"
    return generate("darcy2d", out, samples=24, seed=0, nx=16)


def test_steady_prior_checkpoint_evaluates_through_the_cli(tiny_config, darcy_file, tmp_path):
    cfg = tiny_config(
        "stage=steady_prior",
        "data.reduced_resolution=1",
        "trainer.max_epochs=1",
        "steady.depth=1",
        files=[darcy_file],
    )
    run = train(cfg, tmp_path / "run")
    out = tmp_path / "eval"
    result = invoke("physics", "eval", "--ckpt", run.best_checkpoint, "--run-dir", out)
    assert result.exit_code == 0, result.output
    written = json.loads((out / "metrics.json").read_text())
    overall = written["metrics"]["all"]
    assert written["stage"] == "steady_prior"
    assert f"nRMSE {overall['nrmse']:.4f}" in result.output
    for name in ("nrmse", "rmse", "max_error", "crmse", "brmse", "frmse_low"):
        assert math.isfinite(overall[name]) and overall[name] > 0, name
    assert json.loads((out / "summary.json").read_text())["gates_passed"]
    assert "Training curves" in (out / "report.html").read_text()
