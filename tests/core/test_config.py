from pathlib import Path

import pytest

from lightstack.core.config import ConfigError, load_config
from lightstack.physics.config import PhysicsConfig


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_defaults_and_overrides(tmp_path):
    path = write(tmp_path, "family: physics\nmodel: {width: 32}\n")
    cfg = load_config(
        path, ["trainer.max_epochs=3", "model.heads=2", "data.loader.batch_size=7"], PhysicsConfig
    )
    assert cfg.trainer.max_epochs == 3
    assert cfg.model.width == 32 and cfg.model.heads == 2
    assert cfg.data.loader.batch_size == 7
    assert cfg.trainer.precision == "32-true"


def test_every_error_reported_with_its_path(tmp_path):
    path = write(
        tmp_path,
        "family: physics\ntrainer: {precision: fp8, max_epochs: many}\nmodel: {widht: 3}\n",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, [], PhysicsConfig)
    paths = {p for p, _ in info.value.errors}
    assert {"trainer.precision", "trainer.max_epochs", "model.widht"} <= paths
    message = str(info.value)
    assert "unknown key" in message and "'bf16-mixed'" in message and str(path) in message


def test_config_is_frozen(tmp_path):
    cfg = load_config(write(tmp_path, "family: physics\n"), [], PhysicsConfig)
    with pytest.raises(Exception, match="frozen"):
        cfg.trainer.max_epochs = 4  # type: ignore[misc]


def test_malformed_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_config(write(tmp_path, "family: [physics\n"), [], PhysicsConfig)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml", [], PhysicsConfig)


def test_bad_override_form(tmp_path):
    with pytest.raises(ConfigError, match=r"key\.path=value"):
        load_config(write(tmp_path, "family: physics\n"), ["trainer.max_epochs"], PhysicsConfig)


def test_fp16_on_cpu_is_refused(tmp_path):
    path = write(tmp_path, "family: physics\ntrainer: {accelerator: cpu, precision: 16-mixed}\n")
    with pytest.raises(ConfigError, match="16-mixed' needs a GPU"):
        load_config(path, [], PhysicsConfig)


def test_model_cross_field_checks(tmp_path):
    path = write(tmp_path, "family: physics\nmodel: {width: 30, heads: 4}\n")
    with pytest.raises(ConfigError, match="divisible by heads"):
        load_config(path, [], PhysicsConfig)


def test_shipped_configs_are_valid():
    root = Path(__file__).resolve().parents[2] / "configs" / "physics"
    files = sorted(root.glob("*.yaml"))
    assert files, "no physics configs shipped"
    for path in files:
        load_config(path, [], PhysicsConfig)


def test_unknown_key_suggests_the_close_field(tmp_path):
    path = write(tmp_path, "family: physics\ndata: {loader: {batchsize: 4}}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, ["trainer.max_epoch=3", "zzz=1"], PhysicsConfig)
    found = dict(err.value.errors)
    assert found["trainer.max_epoch"].endswith("did you mean max_epochs?")
    assert found["data.loader.batchsize"].endswith("did you mean batch_size?")
    assert "did you mean" not in found["zzz"]
