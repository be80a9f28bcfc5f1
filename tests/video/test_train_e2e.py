"""End to end on synthetic MVFoul data: train r3d_18 from scratch on the CPU, predict, score."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from lightstack.core.checkpoints import META_KEY, architecture_fingerprint, load_checkpoint
from lightstack.core.config import validate
from lightstack.video.config import VideoConfig
from lightstack.video.data.synthetic import synthesize
from lightstack.video.inference import load_video_model, predict_dataset, split_dataset
from lightstack.video.labels import load_annotations
from lightstack.video.predict import evaluate, prediction_entry
from lightstack.video.train import VideoTrainResult, train

FRAMES, SIZE = 8, 32


def video_config(root: Path, **sections: Any) -> VideoConfig:
    base: dict[str, Any] = {
        "family": "video",
        "name": "e2e",
        "seed": 0,
        "data": {
            "root": str(root),
            "frames": FRAMES,
            "start": 0,
            "end": FRAMES,
            "fps": 25,
            "size": [SIZE, SIZE],
            "batch_size": 4,
        },
        "model": {"backbone": "r3d_18"},
        "loss": {"kind": "weighted_ce", "class_weights": "effective_number"},
        "augment": {"hflip_p": 0.0, "hue": 0.0, "saturation": 0.1, "crop_scale": [0.8, 1.0]},
        "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 5, "log_every_n_steps": 5},
        "optimizer": {"lr": 1e-3, "scheduler": {"name": "cosine", "warmup_steps": 5}},
        "checkpoint": {"save_last": False},
        "logging": {"progress_bar": "none", "loggers": ["csv"]},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values} if isinstance(values, dict) else values
    return validate(VideoConfig, base, "test")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[VideoConfig, VideoTrainResult]:
    """80 actions (48 train), 2-3 views of 8 frames at 32x32; five epochs from scratch."""
    root = tmp_path_factory.mktemp("synth")
    synthesize(root, actions=80, views=(2, 3), frames=FRAMES, size=(SIZE, SIZE), seed=0)
    cfg = video_config(root, loss={"effective_beta": 0.99})
    return cfg, train(cfg, tmp_path_factory.mktemp("run"))


@pytest.mark.slow
def test_training_from_scratch_beats_chance_by_far(trained):
    _, result = trained
    # Chance: a constant prediction scores 1/8 and 1/4 balanced accuracy, leaderboard 0.19.
    assert result.metrics["val/leaderboard"] > 0.4
    test = result.test["metrics"]
    assert test["leaderboard_value"] > 0.4
    assert test["leaderboard_value"] == pytest.approx(
        (test["balanced_accuracy_action"] + test["balanced_accuracy_offence_severity"]) / 2
    )
    run = result.run_dir
    for name in ("config.yaml", "history.json", "train_metrics.json", "test/predictions.json"):
        assert (run / name).is_file(), name
    for name in ("test/metrics.json", "test/confusion_action.png", "test/confusion_offence.png"):
        assert (run / name).stat().st_size > 0, name
    assert result.best_checkpoint == run / "checkpoints" / "best.ckpt"
    history = json.loads((run / "history.json").read_text())
    assert len(history) == 5
    assert history[-1]["train/loss_epoch"] < history[0]["train/loss_epoch"]


@pytest.mark.slow
def test_predictions_file_is_scored_by_the_official_rules(trained, tmp_path):
    cfg, result = trained
    metrics = json.loads((result.run_dir / "test" / "metrics.json").read_text())
    split = cfg.data.root / cfg.data.test_split
    scored_ids = {record.id for record in load_annotations(split / "annotations.json")}
    predictions = json.loads((result.run_dir / "test" / "predictions.json").read_text())
    assert set(predictions["Actions"]) == scored_ids  # rows the rules skip are not read
    entry = next(iter(predictions["Actions"].values()))
    assert set(entry) == {"Action class", "Offence", "Severity"}
    scored = evaluate(result.run_dir / "test" / "predictions.json", split / "annotations.json")
    assert scored["leaderboard_value"] == metrics["leaderboard_value"]
    assert scored["missing_predictions"] == []
    confusion = torch.tensor(metrics["confusion_action"])
    assert int(confusion.sum()) == scored["n_scored"]
    assert int(confusion.trace()) == round(scored["accuracy_action"] * scored["n_scored"])


@pytest.mark.slow
def test_checkpoint_metadata_and_reload_give_the_same_predictions(trained):
    cfg, result = trained
    ckpt = load_checkpoint(result.best_checkpoint)
    meta = ckpt[META_KEY]
    assert meta["family"] == "video" and meta["stage"] == "train"
    assert VideoConfig.model_validate(meta["config"]) == cfg
    assert meta["classes"]["offence"][3] == "Offence + Red card"

    model, loaded_cfg, _ = load_video_model(result.best_checkpoint)
    assert architecture_fingerprint(model) == meta["fingerprint"]
    dataset = split_dataset(loaded_cfg, cfg.data.root / cfg.data.test_split)
    reloaded = predict_dataset(model, dataset, torch.device("cpu"), batch_size=3)
    written = json.loads((result.run_dir / "test" / "predictions.json").read_text())["Actions"]
    assert {k: prediction_entry(*v) for k, v in reloaded.items()} == written


@pytest.mark.parametrize("probe", [True, False])
def test_corrupt_clip_is_skipped_during_training(probe, tree_copy, tmp_path):
    """Checked clips are skipped when the dataset is built; unchecked ones when read."""
    bad = tree_copy / "train" / "action_0" / "clip_1.mp4"
    bad.write_bytes(b"\x00not an mp4\xff" * 64)
    cfg = video_config(
        tree_copy,
        # one batch holding every training action with all its views, read at 4x16x16
        data={
            "probe_clips": probe,
            "views_per_sample_train": 3,
            "batch_size": 32,
            "frames": 4,
            "size": [16, 16],
        },
        trainer={"max_epochs": 1, "limit_val_batches": 1},
        eval={"after_fit": False},
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(cfg, tmp_path / "run")
    messages = [str(w.message) for w in caught]
    assert any("skipping" in m and str(bad) in m for m in messages), messages
    assert result.best_checkpoint is not None and result.best_checkpoint.is_file()
    assert torch.isfinite(torch.tensor(result.metrics["train/loss_epoch"]))
