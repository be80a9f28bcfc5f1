"""Train one physics stage: config -> datamodule -> LightningModule -> Trainer -> checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L

from lightstack.core.io import atomic_write_json
from lightstack.core.run import prepare_run_dir, resume_checkpoint
from lightstack.core.trainer import timings, tune_and_fit
from lightstack.physics import stages
from lightstack.physics.config import PhysicsConfig
from lightstack.physics.data.windows import PDEDataModule

DEFAULT_MONITOR = "val/nrmse"


@dataclass
class TrainResult:
    run_dir: Path
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    metrics: dict[str, float]


def with_data_shapes(cfg: PhysicsConfig, dm: PDEDataModule) -> PhysicsConfig:
    """Fill the model fields that come from the data (channels, grid, number of parameters)."""
    model = cfg.model.model_copy(
        update={"channels": dm.channels, "spatial_shape": dm.spatial_shape, "n_params": dm.n_params}
    )
    data = cfg.data.model_copy(update={"task_names": dm.task_names})
    resolved = cfg.model_copy(update={"model": model, "data": data})
    return PhysicsConfig.model_validate(resolved.model_dump())


def train(
    cfg: PhysicsConfig, run_dir: str | Path | None = None, resume: str = "auto"
) -> TrainResult:
    """Train ``cfg.stage``; ``resume`` as in ``core.run.resume_checkpoint``."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = stages.build_datamodule(cfg)
    cfg = with_data_shapes(cfg, dm)
    path = prepare_run_dir(cfg, run_dir, cfg.name)
    stage = stages.build_stage(cfg, dm)
    trainer, cfg = tune_and_fit(
        cfg, path, stage, dm, DEFAULT_MONITOR, ckpt_path=resume_checkpoint(path, resume)
    )
    ckpt_cb = trainer.checkpoint_callback
    best = Path(ckpt_cb.best_model_path) if ckpt_cb and ckpt_cb.best_model_path else None
    last = Path(ckpt_cb.last_model_path) if ckpt_cb and ckpt_cb.last_model_path else None
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()} | timings(trainer)
    if trainer.is_global_zero:
        atomic_write_json(path / "train_metrics.json", metrics)
    return TrainResult(path, best, last, metrics)
