"""The video LightningModule: multi-view model, multi-task loss, GPU augmentation and metrics.

Training batches are augmented after they reach the device (``on_after_batch_transfer``), so
kornia runs on the GPU when there is one. Validation and test report micro accuracy, balanced
accuracy per task and the leaderboard value (mean of the two balanced accuracies); the confusion
matrices of the last test epoch stay in ``test_confusion`` for whoever writes reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
from torch import Tensor, nn

from lightstack.core.checkpoints import META_KEY, make_metadata
from lightstack.core.compile import maybe_compile
from lightstack.core.config import to_dict
from lightstack.core.optim import build_optimization
from lightstack.video.augment import VideoAugment
from lightstack.video.config import VideoConfig
from lightstack.video.labels import ACTION_CLASSES, OFFENCE_CLASSES
from lightstack.video.losses import MultiTaskLoss
from lightstack.video.metrics import VideoMetrics
from lightstack.video.models.multiview import MultiViewModel

TASKS = ("action", "offence")


class VideoModule(L.LightningModule):
    """``class_counts`` (``{"action": (8,), "offence": (4,)}`` training-set counts) is needed
    when the loss uses class weights."""

    stage = "train"

    def __init__(self, cfg: VideoConfig, class_counts: Mapping[str, Tensor] | None = None):
        super().__init__()
        self.cfg = cfg
        counts = class_counts or {}
        self.model = MultiViewModel(cfg.model)
        self.criterion = MultiTaskLoss(cfg.loss, counts.get("action"), counts.get("offence"))
        self.augment = VideoAugment(cfg.augment)
        n_actions, n_offence = cfg.model.num_actions, cfg.model.num_offence
        self.val_metrics = VideoMetrics(n_actions, n_offence)
        self.test_metrics = VideoMetrics(n_actions, n_offence)
        self.test_confusion: dict[str, Tensor] = {}

    def forward(
        self, video: Tensor, view_mask: Tensor | None = None, view_ids: Tensor | None = None
    ) -> dict[str, Tensor]:
        return self.model(video, view_mask, view_ids)

    def configure_model(self) -> None:
        """Compile the backbone once the device is known (``model.compile``).

        Only the backbone: it holds nearly all of the compute, and the view gather around it
        (``video[view_mask]``, a data-dependent shape) would split a whole-model graph.
        """
        trainer = self._trainer
        maybe_compile(
            self.model.backbone,
            self.cfg.model.compile,
            self.cfg.model.compile_mode,
            device=trainer.strategy.root_device if trainer is not None else self.device,
            force=self.cfg.training.force_compile,
        )

    # --- training ----------------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        if self._trainer is not None and self.trainer.training:
            batch = dict(batch)
            batch["video"] = self.augment(batch["video"], batch["offence"], batch["view_mask"])
        return batch

    def _loss(self, batch: dict[str, Any]) -> tuple[dict[str, Tensor], Tensor, dict[str, Tensor]]:
        out = self.model(batch["video"], batch["view_mask"], batch.get("view_ids"))
        total, parts = self.criterion(out, batch)
        return out, total, parts

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        _, total, parts = self._loss(batch)
        size = len(batch["id"])
        self.log("train/loss", total, on_step=True, on_epoch=True, batch_size=size)
        self.log_dict(
            {f"train/{task}/loss": value for task, value in parts.items()},
            on_step=False,
            on_epoch=True,
            batch_size=size,
        )
        return total

    def probe_loss(self, batch: dict[str, Any]) -> Tensor:
        """Loss of one batch, for gradient-guided freezing."""
        return self._loss(batch)[1]

    def freezable_blocks(self) -> list[nn.Module]:
        return self.model.backbone_blocks()

    # --- validation / test -------------------------------------------------------------------
    def _evaluate(self, batch: dict[str, Any], metrics: VideoMetrics, prefix: str) -> None:
        out, total, _ = self._loss(batch)
        metrics.update(out, batch)
        size = len(batch["id"])
        self.log(f"{prefix}/loss", total, on_epoch=True, batch_size=size, sync_dist=True)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics, "test")

    def _log_metrics(self, metrics: VideoMetrics, prefix: str) -> None:
        values = metrics.compute()  # synchronised across processes by torchmetrics
        leaderboard = values.pop("leaderboard")
        self.log_dict({f"{prefix}/{name}": value for name, value in values.items()})
        self.log(f"{prefix}/leaderboard", leaderboard, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._log_metrics(self.val_metrics, "val")
        self.val_metrics.reset()

    def on_test_epoch_end(self) -> None:
        self._log_metrics(self.test_metrics, "test")
        self.test_confusion = {t: self.test_metrics.confusion(t).cpu() for t in TASKS}
        self.test_metrics.reset()

    # --- optimisation and checkpoints --------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        # build_optimizer keeps only parameters with requires_grad (frozen blocks stay out).
        return build_optimization(
            self.cfg.optimizer,
            self.model,
            int(self.trainer.estimated_stepping_batches),
            fused=self.cfg.trainer.gradient_clip_val is None,
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = make_metadata("video", self.stage, to_dict(self.cfg), self.model)
        meta["classes"] = {"action": list(ACTION_CLASSES), "offence": list(OFFENCE_CLASSES)}
        meta["ema"] = "current_model_state" in checkpoint
        checkpoint[META_KEY] = meta
