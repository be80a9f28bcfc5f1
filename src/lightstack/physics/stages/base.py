"""What every physics stage shares: per-sample validation metrics, optimisation, checkpoints."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric

from lightstack.core.checkpoints import META_KEY, make_metadata
from lightstack.core.compile import maybe_compile
from lightstack.core.config import to_dict
from lightstack.core.optim import build_optimization
from lightstack.physics.config import PhysicsConfig
from lightstack.physics.models.layers import Block, CrossBlock


class PhysicsStage(L.LightningModule):
    """A stage holds ``self.model`` and the loss; subclasses add ``training_step`` and
    ``evaluate_batch`` (per-sample values of ``metric_names``, ``"nrmse"`` among them).

    Validation and test average those values over samples (``torchmetrics.MeanMetric``, which
    also reduces across processes) and log them as ``val/<name>`` / ``test/<name>``, plus
    ``<task>/nrmse`` per task.
    """

    stage: str
    metric_names: tuple[str, ...] = ("nrmse",)

    def __init__(self, cfg: PhysicsConfig, task_names: list[str]):
        super().__init__()
        self.cfg = cfg
        self.task_names = list(task_names)
        # a list, not a ModuleDict: task names are file stems, which may hold dots
        self.val_metric_names = [*self.metric_names, *(f"{t}/nrmse" for t in self.task_names)]
        self.val_metrics = nn.ModuleList(MeanMetric() for _ in self.val_metric_names)

    def _val_metric(self, name: str) -> MeanMetric:
        return self.val_metrics[self.val_metric_names.index(name)]

    def evaluate_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def compile_targets(self) -> tuple[nn.Module, set[type[nn.Module]] | None]:
        """What ``model.compile`` compiles: a module and the block types compiled one by one
        inside it (None: the module as a whole). Default: every transformer block of the stage
        (the trainable network and any frozen ones it calls), since training and rollouts
        call several methods of a model, not only ``forward``."""
        return self, {Block, CrossBlock}

    def configure_model(self) -> None:
        """``model.compile`` through ``core.compile.maybe_compile``, for every stage: here the
        device is known and DDP/FSDP have not wrapped the model yet."""
        trainer = self._trainer
        module, regions = self.compile_targets()
        maybe_compile(
            module,
            self.cfg.model.compile,
            self.cfg.model.compile_mode,
            device=trainer.strategy.root_device if trainer is not None else self.device,
            force=self.cfg.training.force_compile,
            regions=regions,
        )

    def trainable_module(self) -> nn.Module:
        """The part of the model the optimizer steps (the whole model unless a stage says)."""
        return self.model

    # --- validation / test -------------------------------------------------------------------
    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._update_metrics(batch)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._update_metrics(batch)

    def _update_metrics(self, batch: dict[str, torch.Tensor]) -> None:
        values = self.evaluate_batch(batch)
        for name, per_sample in values.items():
            self._val_metric(name).update(per_sample)
        for index, task in enumerate(self.task_names):
            mask = batch["task"] == index
            if mask.any():
                self._val_metric(f"{task}/nrmse").update(values["nrmse"][mask])

    def _log_metrics(self, prefix: str) -> None:
        for name, metric in zip(self.val_metric_names, self.val_metrics, strict=True):
            if metric.update_count:
                self.log(f"{prefix}/{name}", metric.compute(), prog_bar=name == "nrmse")
            metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    # --- optimisation and checkpoints --------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        return build_optimization(
            self.cfg.optimizer,
            self.trainable_module(),
            int(self.trainer.estimated_stepping_batches),
            fused=self.cfg.trainer.gradient_clip_val is None,
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = make_metadata("physics", self.stage, to_dict(self.cfg), self.model)
        meta["tasks"] = self.task_names
        checkpoint[META_KEY] = meta
