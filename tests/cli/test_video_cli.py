"""``lightstack video synth/train/predict/eval`` through the CLI, on a tiny synthetic tree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from lightstack.core.config import load_config
from lightstack.video.cli import parse_size, parse_views, video_app
from lightstack.video.config import VideoConfig

torch.set_num_threads(1)
runner = CliRunner()
app = typer.Typer()
app.add_typer(video_app, name="video")
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "video"

TINY = """
family: video
name: cli-tiny
data: {frames: 4, start: 0, end: 8, fps: 25, size: [16, 16], batch_size: 8}
model: {backbone: r3d_18, hidden: 32}
trainer: {accelerator: cpu, devices: 1, max_epochs: 1, limit_val_batches: 1}
checkpoint: {save_last: false}
logging: {progress_bar: none, loggers: [csv]}
"""


def invoke(*args: object):
    return runner.invoke(app, ["video", *map(str, args)], catch_exceptions=False)


def text(result) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def test_synth_train_predict_eval(tmp_path):
    data = tmp_path / "synth"
    result = invoke(
        "synth", "--out", data, "--actions", 20, "--views", "2..3", "--frames", 8,
        "--size", "16x16", "--seed", 3,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "synthesising actions" in result.output and "20/20" in result.output
    assert (data / "train" / "annotations.json").is_file()
    assert json.loads((data / "synthetic.json").read_text())["seed"] == 3

    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    run = tmp_path / "run"
    result = invoke(
        "train", "--config", config, "--data", data, "--run-dir", run, "trainer.max_epochs=1"
    )
    assert result.exit_code == 0, result.output
    assert "val/leaderboard" in result.output and "test leaderboard" in result.output
    best = run / "checkpoints" / "best.ckpt"
    assert best.is_file() and (run / "test" / "metrics.json").is_file()
    assert load_config(run / "config.yaml", [], VideoConfig).data.root == data

    pred_run = tmp_path / "pred"
    result = invoke("predict", "--ckpt", best, "--data", data / "test", "--run-dir", pred_run)
    assert result.exit_code == 0, result.output
    assert "predicting batches" in result.output
    predictions = json.loads((pred_run / "predictions.json").read_text())
    assert predictions["Set"] == "test" and len(predictions["Actions"]) >= 1

    eval_run = tmp_path / "eval"
    labels = data / "test" / "annotations.json"
    result = invoke(
        "eval", "--pred", pred_run / "predictions.json", "--labels", labels, "--run-dir", eval_run
    )
    assert result.exit_code == 0, result.output
    assert "leaderboard_value" in result.output
    metrics = json.loads((eval_run / "metrics.json").read_text())
    assert metrics["n_scored"] == len(predictions["Actions"]) >= 1
    assert metrics["n_scored"] == sum(map(sum, metrics["confusion_offence"]))
    assert (eval_run / "confusion_action.png").stat().st_size > 0
    # what `video train` scored after fitting is what `video eval` scores
    after_fit = json.loads((run / "test" / "metrics.json").read_text())
    assert after_fit["accuracy_action"] == metrics["accuracy_action"]


@pytest.mark.slow
def test_prepare_writes_a_cache_that_train_reads(tmp_path):
    data, cache = tmp_path / "synth", tmp_path / "cache"
    result = invoke(
        "synth", "--out", data, "--actions", 20, "--views", 2, "--frames", 8, "--size", "16x16"
    )
    assert result.exit_code == 0, result.output
    args = ("prepare", "--data", data, "--out", cache, "--size", 16, "--start", 0, "--end", 8)
    result = invoke(*args, "--workers", 2)
    assert result.exit_code == 0, result.output
    assert "decoding clips" in result.output and "read it with data.root=" in text(result)
    assert (cache / "test" / "clip_cache.json").is_file()
    assert json.loads((cache / "prepare.json").read_text())["size"] == [16, 16]
    result = invoke(*args, "--workers", 0)  # nothing left to decode
    assert result.exit_code == 0 and "0 decoded" in text(result)
    (data / "train" / "action_0" / "clip_1.mp4").write_bytes(b"not a video")
    result = invoke(*args, "--workers", 0)
    assert result.exit_code == 1 and "clip_1.mp4: cannot decode" in text(result)
    result = invoke("prepare", "--data", data, "--out", cache, "--size", "16y16")
    assert result.exit_code == 2 and "224x398" in text(result)

    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    run = tmp_path / "run"
    result = invoke("train", "--config", config, "--data", cache, "--run-dir", run)
    assert result.exit_code == 0, result.output
    assert json.loads((run / "test" / "metrics.json").read_text())["n_scored"] >= 1


def test_bad_input_is_one_clear_message(tmp_path):
    result = invoke("synth", "--out", tmp_path / "x", "--views", "4..2")
    assert result.exit_code == 2 and "MIN <= MAX" in result.output
    result = invoke("synth", "--out", tmp_path / "x", "--size", "64")
    assert result.exit_code == 2 and "HxW" in result.output
    (tmp_path / "x" / "train").mkdir(parents=True)
    (tmp_path / "x" / "train" / "annotations.json").write_text("{}")
    result = invoke("synth", "--out", tmp_path / "x", "--actions", 20)
    assert result.exit_code == 1 and "exists and is not empty" in text(result)

    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    result = invoke("train", "--config", config, "model.widht=3", "data.frames=0")
    assert result.exit_code == 1
    assert "model.widht: unknown key" in text(result) and "data.frames" in text(result)

    result = invoke("predict", "--ckpt", tmp_path / "none.ckpt", "--data", tmp_path)
    assert result.exit_code == 1 and "none.ckpt does not exist" in text(result)
    assert "predicting" not in result.output

    pred = tmp_path / "p.json"
    pred.write_text('{"Actions": {}}')
    result = invoke("eval", "--pred", pred, "--labels", tmp_path / "annotations.json")
    assert result.exit_code == 1 and "annotations.json: file not found" in text(result)


def test_option_parsers():
    assert parse_views("2..4") == (2, 4) and parse_views("3") == (3, 3)
    assert parse_size("64x48") == (64, 48)
    with pytest.raises(typer.BadParameter):
        parse_views("0..2")


@pytest.mark.parametrize("name", ["quickstart.yaml", "mvfoul_r2plus1d.yaml", "vars_mvit.yaml"])
def test_shipped_configs_are_valid(name):
    cfg = load_config(CONFIGS / name, [], VideoConfig)
    assert cfg.checkpoint.monitor == "val/leaderboard" and cfg.checkpoint.mode == "max"
