"""Bad checkpoints: a pickle that would run code is refused without running it; truncated,
foreign, other-workload, other-architecture and weights-only files get one clear error naming
the file, before training starts and without touching the run's checkpoints."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lightstack.cli import app
from lightstack.core.checkpoints import (
    META_KEY,
    AtomicCheckpointIO,
    CheckpointError,
    convert_checkpoint,
    load_checkpoint,
)
from lightstack.physics.evaluate import evaluate_checkpoint
from lightstack.physics.stages import build_datamodule, build_stage
from lightstack.physics.train import train


class Payload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def trained(tiny_config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``last.ckpt`` of one epoch of the tiny physics run."""
    return train(
        tiny_config("trainer.max_epochs=1"), tmp_path_factory.mktemp("run")
    ).last_checkpoint


def squash(text: str) -> str:
    """``text`` without whitespace: rich wraps long lines (and paths) anywhere."""
    return "".join(text.split())


def resume_with(tiny_yaml: Path, run_dir: Path, checkpoint: Path | str, *overrides: str):
    args = ["physics", "train", "--config", tiny_yaml, "--run-dir", run_dir]
    result = CliRunner().invoke(app, [*map(str, args), "--resume", str(checkpoint), *overrides])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert not (run_dir / "checkpoints").exists()  # refused before any training
    assert not (run_dir / "config.yaml").exists()  # the folder does not describe it
    return squash(result.output)


def test_a_pickle_that_runs_code_is_refused_and_not_run(tiny_yaml, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, META_KEY: Payload(marker)}, evil)
    torch.load(evil, weights_only=False)  # control: unpickling it unsafely does run the payload
    assert marker.exists()
    marker.unlink()
    with pytest.raises(CheckpointError, match=r"evil\.ckpt could not be loaded safely"):
        load_checkpoint(evil)
    with pytest.raises(CheckpointError, match=r"evil\.ckpt could not be loaded safely"):
        AtomicCheckpointIO().load_checkpoint(evil)  # what Lightning's restore goes through
    with pytest.raises(CheckpointError):
        convert_checkpoint(evil, tmp_path / "out.safetensors")
    output = resume_with(tiny_yaml, tmp_path / "run", evil)
    assert squash("evil.ckpt could not be loaded safely") in output
    assert not marker.exists()


def test_truncated_last_checkpoint_is_named(trained, tiny_yaml, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    data = trained.read_bytes()
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(data[: len(data) // 2])
    args = ["physics", "train", "--config", tiny_yaml, "--run-dir", run_dir]
    result = CliRunner().invoke(app, list(map(str, args)))  # --resume auto finds last.ckpt
    assert result.exit_code == 1
    output = squash(result.output)
    assert (
        squash("last.ckpt could not be loaded safely (not a lightstack checkpoint, truncated")
        in output
    )
    assert squash("no other readable checkpoint") in output and "--resumenever" in output
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == data[: len(data) // 2]


@pytest.mark.parametrize("damage", ["truncated", "nan"])
def test_a_damaged_last_checkpoint_gives_way_to_the_newest_readable_one(
    damage, trained, tiny_config, tmp_path
):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(trained, run_dir / "checkpoints" / "best.ckpt")  # epoch 1, step 10
    last = run_dir / "checkpoints" / "last.ckpt"
    if damage == "truncated":
        last.write_bytes(trained.read_bytes()[:1000])
    else:
        with_nan_weight(trained, last)
    with pytest.warns(UserWarning, match=r"resuming from .*best\.ckpt instead \(global step 10\)"):
        train(tiny_config("trainer.max_epochs=2"), run_dir)
    assert load_checkpoint(last)["global_step"] == 20  # trained on, not started over


def with_nan_weight(source: Path, target: Path) -> str:
    """Copy checkpoint ``source`` to ``target`` with one weight overwritten by NaN; its name."""
    ckpt = torch.load(source, weights_only=True)
    name = sorted(ckpt["state_dict"])[1]
    ckpt["state_dict"][name] = torch.full_like(ckpt["state_dict"][name], float("nan"))
    torch.save(ckpt, target)
    return name


def test_nan_weights_are_refused_by_every_loader(trained, tiny_yaml, tiny_config, tmp_path):
    bad = tmp_path / "nan.ckpt"
    name = with_nan_weight(trained, bad)
    message = f"checkpoint {bad}: weight {name!r} holds NaN/Inf"
    with pytest.raises(CheckpointError, match=re.escape(message)):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        evaluate_checkpoint(bad, tmp_path / "eval")
    assert not (tmp_path / "eval").exists()
    handoff = tiny_config("stage=diff_residual", f"init_from={bad}")
    with pytest.raises(CheckpointError, match=re.escape(message)):
        build_stage(handoff, build_datamodule(handoff))
    converted = CliRunner().invoke(app, ["ckpt", "convert", str(bad), str(tmp_path / "w.pt")])
    assert converted.exit_code == 1 and squash(message) in squash(converted.output)
    assert not (tmp_path / "w.pt").exists()
    assert squash(message) in resume_with(tiny_yaml, tmp_path / "run", bad)


def test_a_file_that_is_not_a_lightstack_checkpoint_is_named(tiny_yaml, tmp_path):
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1)}}, plain)
    assert squash("plain.ckpt is not a lightstack checkpoint") in resume_with(
        tiny_yaml, tmp_path / "run", plain
    )
    text = tmp_path / "notes.ckpt"
    text.write_text("hello")
    assert squash("notes.ckpt could not be loaded safely") in resume_with(
        tiny_yaml, tmp_path / "r2", text
    )


def test_a_checkpoint_of_the_other_workload_is_refused(trained, tiny_yaml, tmp_path):
    ckpt = torch.load(trained, weights_only=True)
    ckpt[META_KEY] = {**ckpt[META_KEY], "family": "video"}
    video = tmp_path / "video.ckpt"
    torch.save(ckpt, video)
    output = resume_with(tiny_yaml, tmp_path / "run", video)
    expected = "video.ckpt was written by the 'video' workload; expected a 'physics' checkpoint"
    assert squash(expected) in output


def test_a_checkpoint_of_another_model_config_is_refused(trained, tiny_yaml, tmp_path):
    output = resume_with(tiny_yaml, tmp_path / "run", trained, "model.width=32")
    assert squash("last.ckpt holds another architecture") in output
    assert squash("resume with the config the checkpoint was trained with") in output


def test_a_weights_only_checkpoint_cannot_be_resumed(trained, tiny_yaml, tmp_path):
    converted = convert_checkpoint(trained, tmp_path / "weights.ckpt")
    output = resume_with(tiny_yaml, tmp_path / "run", converted)
    assert squash("weights.ckpt holds weights only (no optimizer and loop state)") in output


def test_a_missing_resume_checkpoint_is_named(tiny_yaml, tmp_path):
    output = resume_with(tiny_yaml, tmp_path / "run", tmp_path / "nope.ckpt")
    assert squash("nope.ckpt: no such checkpoint") in output


def test_resume_auto_with_a_stale_temporary_beside_last(trained, tiny_config, tmp_path):
    # A kill during a save leaves ".last.ckpt.<random>.tmp"; it is ignored.
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(trained, run_dir / "checkpoints" / "last.ckpt")
    (run_dir / "checkpoints" / ".last.ckpt.x1y2.tmp").write_bytes(b"PK\x03\x04torn")
    result = train(tiny_config("trainer.max_epochs=2"), run_dir)
    assert load_checkpoint(result.last_checkpoint)["global_step"] == 20
