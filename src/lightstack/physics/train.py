"""Train one physics stage: config -> datamodule -> LightningModule -> Trainer -> checkpoints."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from lightstack.core.run import claim_run_dir
from lightstack.core.trainer import FitResult, run_fit
from lightstack.physics import stages
from lightstack.physics.config import PhysicsConfig
from lightstack.physics.data.windows import PDEDataModule

DEFAULT_MONITOR = "val/nrmse"


def with_data_shapes(cfg: PhysicsConfig, dm: PDEDataModule) -> PhysicsConfig:
    """Fill the model fields that come from the data (channels, grid, number of parameters,
    input snapshots)."""
    model = cfg.model.model_copy(
        update={
            "channels": dm.channels,
            "spatial_shape": dm.spatial_shape,
            "n_params": dm.n_params,
            "initial_step": cfg.data.initial_step,
        }
    )
    data = cfg.data.model_copy(update={"task_names": dm.task_names})
    resolved = cfg.model_copy(update={"model": model, "data": data})
    return PhysicsConfig.model_validate(resolved.model_dump())


def train(cfg: PhysicsConfig, run_dir: str | Path | None = None, resume: str = "auto") -> FitResult:
    """Train ``cfg.stage``; ``resume`` as in ``core.run.resume_checkpoint``."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = stages.build_datamodule(cfg)
    cfg = with_data_shapes(cfg, dm)
    stage = stages.build_stage(cfg, dm)  # reads data and checkpoints: fail before any output
    with claim_run_dir(run_dir, cfg.name) as path:
        return run_fit(cfg, path, stage, dm, DEFAULT_MONITOR, resume)
