"""A test callback that records a model's weights and its optimizer's whole state around one
training batch, to prove that a skipped step changed nothing."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class Snapshot(Callback):
    """Weights and the whole state of the first optimizer just before and just after batch
    ``index``."""

    def __init__(self, index: int):
        self.index = index
        self.before: list[torch.Tensor] = []
        self.after: list[torch.Tensor] = []

    @staticmethod
    def _state(trainer: L.Trainer, module: L.LightningModule) -> list[torch.Tensor]:
        states = trainer.optimizers[0].state.values()
        return [p.detach().clone() for p in module.parameters()] + [
            v.clone() for s in states for v in s.values()
        ]

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == self.index:
            self.before = self._state(trainer, module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if batch_idx == self.index:
            self.after = self._state(trainer, module)
