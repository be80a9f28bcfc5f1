"""Bad configurations: one ``ConfigError`` naming the file and every bad field's dotted path,
raised before anything is written (the CLI exits 1 with the message, no run directory)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lightstack.cli import app
from lightstack.core.config import ConfigError, load_config
from lightstack.physics.config import PhysicsConfig
from lightstack.video.config import VideoConfig


def squash(text: str) -> str:
    return "".join(text.split())


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("family: physics\ntrainer: {max_epochs: 3\n", "malformed YAML"),
        ("family: physics\n\tname: tab\n", "malformed YAML"),
        ("- family\n- physics\n", "expected a mapping at top level, got list"),
        ("family: physics\nmodel: {widht: 3}\n", "model.widht: unknown key"),
        ("family: physics\ntrainer: {max_epochs: three}\n", "trainer.max_epochs: Input should be"),
        ("family: physics\ndata: {loader: {batch_size: 0}}\n", "data.loader.batch_size"),
        ("family: physics\ntraining: {nan_guard: {action: ignore}}\n", "training.nan_guard.action"),
        (
            "family: physics\ncheckpoint: {every_n_train_steps: 0}\n",
            "checkpoint.every_n_train_steps",
        ),
        ("family: physics\nname: ${nope}\n", "bad override or interpolation"),
    ],
)
def test_bad_file_is_one_error_naming_file_and_field(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, [], PhysicsConfig)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_every_bad_field_is_listed_at_once(tmp_path):
    path = write(tmp_path, "family: video\nmodel: {backbone: r9d}\ndata: {frames: -1}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, ["optimizer.lr=-1"], VideoConfig)
    paths = [p for p, _ in info.value.errors]
    assert {"model.backbone", "data.frames", "optimizer.lr"} <= set(paths)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epochs", "is not of the form key.path=value"),
        ("=3", "is not of the form key.path=value"),
        ("trainer.precision=fp8", "trainer.precision"),
        ("data.loader.num_workers=-2", "data.loader.num_workers"),
    ],
)
def test_bad_override_is_named(tmp_path, override, message):
    path = write(tmp_path, "family: physics\n")
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(path, [override], PhysicsConfig)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"(?s)nothere\.yaml.*file not found"):
        load_config(tmp_path / "nothere.yaml", [], PhysicsConfig)


def test_cli_reports_a_bad_config_without_writing_anything(tmp_path):
    path = write(tmp_path, "family: physics\nmodel: {widht: 3}\n")
    run_dir = tmp_path / "run"
    args = ["physics", "train", "--config", path, "--run-dir", run_dir, "trainer.max_epochs=x"]
    result = CliRunner().invoke(app, list(map(str, args)))
    assert result.exit_code == 1
    output = squash(result.output)
    assert squash(str(path)) in output and "model.widht" in output
    assert "trainer.max_epochs" in output and "Traceback" not in output
    assert not run_dir.exists()
