"""Train the multi-view foul model: config -> datamodule -> VideoModule -> Trainer -> checkpoints,
then (``eval.after_fit``) predict and score the test split with the best checkpoint."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, WeightAveraging
from torch.optim.swa_utils import get_ema_multi_avg_fn

from lightstack.core.callbacks.freezing import build_freezing_callback
from lightstack.core.run import claim_run_dir
from lightstack.core.trainer import FitResult, run_fit
from lightstack.video.config import DEFAULT_MONITOR, VideoConfig
from lightstack.video.data.mvfoul import MVFoulDataModule
from lightstack.video.inference import predict_split, score_predictions
from lightstack.video.module import VideoModule


@dataclass
class VideoTrainResult(FitResult):
    """``FitResult`` plus the test-split predictions and scores (``eval.after_fit``)."""

    test: dict[str, Any] | None = field(default=None)


class EMAWeights(WeightAveraging):
    """Lightning's weight averaging with an EMA of parameters and buffers, updated every step.

    Validation runs on the EMA weights; checkpoints hold them in ``state_dict`` and the raw
    weights in ``current_model_state``. The average lives on the training device (Lightning's
    default would be wherever the module sits at ``setup``, which is the CPU).
    """

    def __init__(self, decay: float):
        super().__init__(use_buffers=True, multi_avg_fn=get_ema_multi_avg_fn(decay))
        self.decay = decay

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._device is None:
            self._device = trainer.strategy.root_device
        super().setup(trainer, pl_module, stage)


def build_callbacks(cfg: VideoConfig) -> list[Callback]:
    callbacks: list[Callback] = []
    freezing = build_freezing_callback(cfg.freezing)
    if freezing is not None:
        callbacks.append(freezing)
    if cfg.model.ema:
        callbacks.append(EMAWeights(cfg.model.ema_decay))
    return callbacks


def evaluate_test_split(cfg: VideoConfig, checkpoint: Path, out_dir: Path) -> dict[str, Any]:
    """Predict the test split with ``checkpoint`` into ``out_dir``; score it if it is labelled."""
    split_dir = cfg.data.root / cfg.data.test_split
    pred_path = out_dir / "predictions.json"
    summary = predict_split(checkpoint, split_dir, pred_path)
    labels = split_dir / "annotations.json"
    if labels.is_file():
        summary["metrics"] = score_predictions(
            pred_path, labels, out_dir, plots=cfg.eval.confusion_matrices
        )
    return summary


def train(
    cfg: VideoConfig, run_dir: str | Path | None = None, resume: str = "auto"
) -> VideoTrainResult:
    """Fit (or resume, as in ``core.run.resume_checkpoint``), then score the test split."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    with claim_run_dir(run_dir, cfg.name) as path:
        return _fit_and_score(cfg, path, resume)


def _fit_and_score(cfg: VideoConfig, path: Path, resume: str) -> VideoTrainResult:
    dm = MVFoulDataModule(cfg.data)
    counts = dm.class_counts() if cfg.loss.class_weights != "none" else None
    module = VideoModule(cfg, counts)
    with warnings.catch_warnings():
        # Lightning notes that the module's on_after_batch_transfer (augmentation on the
        # device) is used with a datamodule: that is the intent.
        warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`")
        result = run_fit(cfg, path, module, dm, DEFAULT_MONITOR, resume, build_callbacks(cfg))
    test = None
    checkpoint = result.best_checkpoint or result.last_checkpoint
    test_dir = cfg.data.root / cfg.data.test_split
    wanted = cfg.eval.after_fit and checkpoint is not None and test_dir.is_dir()
    if wanted and result.is_global_zero:
        test = evaluate_test_split(cfg, checkpoint, path / "test")
    return VideoTrainResult(**vars(result), test=test)
