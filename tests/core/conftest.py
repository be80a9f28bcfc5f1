"""A toy run for the training-infrastructure tests: regression MLP, fixed data, typed config."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightstack.core.checkpoints import META_KEY, make_metadata
from lightstack.core.config import (
    DataLoaderConfig,
    RunConfig,
    merge_overrides,
    to_dict,
    validate,
)
from lightstack.core.optim import build_optimization
from lightstack.core.trainer import build_trainer

torch.set_num_threads(1)

BASE: dict[str, Any] = {
    "family": "toy",
    "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1, "log_every_n_steps": 1},
    "logging": {"loggers": [], "progress_bar": "none"},
    "optimizer": {"lr": 0.01, "scheduler": {"name": "none"}},
    "checkpoint": {"save_last": False},
    "data": {"batch_size": 8},
}


class ToyConfig(RunConfig):
    data: DataLoaderConfig = DataLoaderConfig()


def toy_config(*overrides: str) -> ToyConfig:
    return validate(ToyConfig, merge_overrides(BASE, list(overrides), "toy"), "toy")


class ToyModule(L.LightningModule):
    """y = MLP(x); the hidden 2-D weight goes to Muon, ``embed``/``head`` to AdamW."""

    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.cfg = cfg
        torch.manual_seed(0)
        self.model = nn.Sequential(
            OrderedDict(
                embed=nn.Linear(4, 16),
                act=nn.Tanh(),
                hidden=nn.Linear(16, 16),
                act2=nn.Tanh(),
                head=nn.Linear(16, 1),
            )
        )

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> Any:
        x, y = batch
        loss = F.mse_loss(self.model(x), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        steps = int(self.trainer.estimated_stepping_batches)
        return build_optimization(self.cfg.optimizer, self.model, steps)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[META_KEY] = make_metadata("toy", "toy", to_dict(self.cfg), self.model)

    def fsdp_wrap_modules(self) -> set[type[nn.Module]]:
        return {nn.Linear}


class ToyData(L.LightningDataModule):
    """``n`` fixed samples in order (no shuffling, so batches are reproducible)."""

    def __init__(self, n: int = 32, batch_size: int = 8):
        super().__init__()
        self.batch_size = batch_size
        gen = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 4, generator=gen)
        self.y = self.x.sum(dim=1, keepdim=True).sin()

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x, self.y), batch_size=self.batch_size)


def fit(
    cfg: ToyConfig,
    run_dir: Path,
    module: ToyModule | None = None,
    data: ToyData | None = None,
    callbacks: list[L.Callback] | None = None,
    ckpt_path: Path | None = None,
) -> tuple[L.Trainer, ToyModule]:
    module = module or ToyModule(cfg)
    data = data or ToyData(batch_size=cfg.data.batch_size)
    trainer = build_trainer(cfg, run_dir, "train/loss", callbacks, module)
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return trainer, module


@pytest.fixture
def toy() -> SimpleNamespace:
    """``toy.config(*overrides)``, ``toy.Module``, ``toy.Data`` and ``toy.fit(cfg, run_dir)``."""
    return SimpleNamespace(config=toy_config, Module=ToyModule, Data=ToyData, fit=fit)
