"""``build_trainer``: one place that turns a run config into a ``lightning.Trainer``."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    RichProgressBar,
    TQDMProgressBar,
)

from lightstack.core.callbacks.history import TrainingHistory
from lightstack.core.callbacks.throughput import ThroughputMonitor
from lightstack.core.checkpoints import AtomicCheckpointIO
from lightstack.core.config import RunConfig
from lightstack.core.loggers import build_loggers


def resolve_monitor(cfg: RunConfig, default: str) -> tuple[str, str]:
    """The metric checkpoints and early stopping follow: config, else the family default.

    With Lightning validation switched off there is no ``val/*`` metric, so fall back to
    ``train/loss`` (minimised).
    """
    if cfg.training.skip_lightning_val:
        return "train/loss", "min"
    return cfg.checkpoint.monitor or default, cfg.checkpoint.mode


def _progress_bar(kind: str) -> list[Callback]:
    if kind == "rich":
        return [RichProgressBar(leave=True)]
    if kind == "tqdm":
        return [TQDMProgressBar()]
    return []


def build_callbacks(cfg: RunConfig, run_dir: Path, default_monitor: str) -> list[Callback]:
    monitor, mode = resolve_monitor(cfg, default_monitor)
    ckpt = cfg.checkpoint
    callbacks: list[Callback] = [
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="best",
            monitor=monitor,
            mode=mode,
            save_top_k=ckpt.save_top_k,
            save_last=ckpt.save_last,
            every_n_train_steps=ckpt.every_n_train_steps,
            every_n_epochs=ckpt.every_n_epochs,
            auto_insert_metric_name=False,
        ),
        TrainingHistory(run_dir),
        ThroughputMonitor(),
        *_progress_bar(cfg.logging.progress_bar),
    ]
    if cfg.optimizer.scheduler.name != "none":
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    es = cfg.training.early_stopping
    if es.enabled:
        callbacks.append(
            EarlyStopping(monitor=monitor, mode=mode, patience=es.patience, min_delta=es.min_delta)
        )
    return callbacks


def _accelerator(requested: str) -> str:
    if requested in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"trainer.accelerator={requested!r} but no CUDA device is visible; use 'cpu' or 'auto'"
        )
    return requested


def build_trainer(
    cfg: RunConfig,
    run_dir: Path,
    default_monitor: str,
    extra_callbacks: list[Callback] | None = None,
) -> L.Trainer:
    """Build the Trainer for ``cfg``, writing logs and checkpoints under ``run_dir``."""
    t = cfg.trainer
    run_dir = Path(run_dir)
    callbacks = build_callbacks(cfg, run_dir, default_monitor) + list(extra_callbacks or [])
    skip_val = cfg.training.skip_lightning_val
    return L.Trainer(
        accelerator=_accelerator(t.accelerator),
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        max_time=t.max_time,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=t.gradient_clip_val,
        gradient_clip_algorithm=t.gradient_clip_algorithm,
        deterministic=t.deterministic,
        sync_batchnorm=t.sync_batchnorm,
        check_val_every_n_epoch=t.check_val_every_n_epoch,
        val_check_interval=t.val_check_interval,
        limit_train_batches=t.limit_train_batches,
        limit_val_batches=0 if skip_val else t.limit_val_batches,
        num_sanity_val_steps=0 if skip_val else t.num_sanity_val_steps,
        log_every_n_steps=t.log_every_n_steps,
        logger=build_loggers(cfg, run_dir),
        callbacks=callbacks,
        enable_progress_bar=cfg.logging.progress_bar != "none",
        plugins=[AtomicCheckpointIO()],
        default_root_dir=run_dir,
        profiler=None if cfg.training.profile == "none" else cfg.training.profile,
    )
