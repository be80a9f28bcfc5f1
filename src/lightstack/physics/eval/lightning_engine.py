"""The ``lightning`` evaluation engine: ``Trainer.predict`` over the per-trajectory metrics.

It gives the same numbers as the plain PyTorch loop (``rollout.evaluate_model``) and, like it,
hands each batch's predictions to a sink instead of keeping them in memory.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import nn
from torch.utils.data import DataLoader

from lightstack.core.trainer import quiet_lightning
from lightstack.physics.eval.rollout import (
    BatchResult,
    EvaluationTotals,
    PredictionSink,
    evaluate_batch,
)


class RolloutPredictor(L.LightningModule):
    """``Trainer.predict`` wrapper: one ``BatchResult`` per batch of whole trajectories."""

    def __init__(self, model: nn.Module, thresholds: list[float]):
        super().__init__()
        self.model = model
        self.thresholds = thresholds

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> BatchResult:
        return evaluate_batch(self.model, batch, self.thresholds)


class CollectResults(BasePredictionWriter):
    """Adds each batch's result to the totals and hands it to the sink, as the torch loop does,
    so no prediction is kept in memory."""

    def __init__(self, totals: EvaluationTotals, sink: PredictionSink | None):
        super().__init__(write_interval="batch")
        self.totals = totals
        self.sink = sink

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self.totals.add(prediction)
        if self.sink is not None:
            self.sink(prediction, batch)


def lightning_metrics(
    model: nn.Module,
    loader: DataLoader,
    task_names: list[str],
    horizons: list[int],
    thresholds: list[float],
    device: str = "cpu",
    sink: PredictionSink | None = None,
) -> dict[str, Any]:
    target = torch.device(device)
    totals = EvaluationTotals(task_names)
    quiet_lightning()
    trainer = L.Trainer(
        accelerator="cpu" if target.type == "cpu" else "gpu",
        devices=[target.index or 0] if target.type == "cuda" else 1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[CollectResults(totals, sink)],
    )
    trainer.predict(
        RolloutPredictor(model, thresholds), dataloaders=loader, return_predictions=False
    )
    return totals.results(horizons)
