"""Loggers: CSV and TensorBoard by default, Weights & Biases (offline allowed) on request."""

from __future__ import annotations

import os
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

from lightstack.core.config import RunConfig


def build_loggers(cfg: RunConfig, run_dir: Path) -> list[Logger]:
    loggers: list[Logger] = []
    for kind in cfg.logging.loggers:
        if kind == "csv":
            loggers.append(CSVLogger(run_dir, name="logs", version=""))
        elif kind == "tensorboard":
            loggers.append(TensorBoardLogger(run_dir, name="tensorboard", version=""))
        elif kind == "wandb":
            loggers.append(_wandb_logger(cfg, run_dir))
    return loggers


def _wandb_logger(cfg: RunConfig, run_dir: Path) -> Logger:
    try:
        import wandb  # noqa: F401
        from lightning.pytorch.loggers import WandbLogger
    except ImportError as exc:
        raise ImportError(
            "logging.loggers includes 'wandb' but wandb is not installed: "
            "pip install 'lightstack[wandb]'"
        ) from exc
    if cfg.logging.wandb_offline:
        os.environ.setdefault("WANDB_MODE", "offline")
    return WandbLogger(project=cfg.logging.wandb_project, name=cfg.name, save_dir=str(run_dir))
