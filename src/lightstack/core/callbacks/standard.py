"""The callbacks every training run gets, from its config (``build_callbacks``)."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import Callback, EarlyStopping, LearningRateMonitor, Timer

from lightstack.core.callbacks.history import TrainingHistory
from lightstack.core.callbacks.memory import MemoryCleanup
from lightstack.core.callbacks.nan_guard import FiniteModelCheckpoint, NaNGuard
from lightstack.core.callbacks.preemption import Preemption, StepCheckpoint
from lightstack.core.callbacks.process_group import ProcessGroupShutdown
from lightstack.core.callbacks.progress import (
    ParameterSummary,
    ThrottledRichProgressBar,
    ThrottledTQDMProgressBar,
)
from lightstack.core.callbacks.throughput import ThroughputMonitor
from lightstack.core.callbacks.time_budget import TimeBudgetSchedule
from lightstack.core.config import RunConfig
from lightstack.core.resume import RestoreRNG


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
        return [ThrottledRichProgressBar(leave=True)]
    if kind == "tqdm":
        return [ThrottledTQDMProgressBar()]
    return []


def build_callbacks(cfg: RunConfig, run_dir: Path, default_monitor: str) -> list[Callback]:
    """The standard callbacks. Checkpoints: ``best`` (top-k of the monitor, judged on fresh
    validation metrics only) and ``last`` at every validation, plus ``last.ckpt`` every
    ``checkpoint.every_n_train_steps`` steps and when a signal asks the run to stop."""
    monitor, mode = resolve_monitor(cfg, default_monitor)
    ckpt = cfg.checkpoint
    ckpt_dir = run_dir / "checkpoints"
    callbacks: list[Callback] = [
        FiniteModelCheckpoint(
            dirpath=ckpt_dir,
            filename="best",
            monitor=monitor,
            mode=mode,
            save_top_k=ckpt.save_top_k,
            save_last=ckpt.save_last,
            every_n_epochs=ckpt.every_n_epochs,
            auto_insert_metric_name=False,
        ),
        Preemption(ckpt_dir),
        RestoreRNG(),
        ProcessGroupShutdown(),
        TrainingHistory(run_dir),
        ThroughputMonitor(),
        Timer(duration=cfg.trainer.max_time, interval="step"),
        ParameterSummary(),
        *_progress_bar(cfg.logging.progress_bar),
    ]
    if cfg.trainer.max_time:
        callbacks.append(TimeBudgetSchedule())
    if cfg.logging.loggers:  # the LR monitor needs a logger
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    es = cfg.training.early_stopping
    if es.enabled:
        callbacks.append(
            EarlyStopping(monitor=monitor, mode=mode, patience=es.patience, min_delta=es.min_delta)
        )
    if ckpt.every_n_train_steps:
        callbacks.append(StepCheckpoint(ckpt_dir, ckpt.every_n_train_steps))
    guard = cfg.training.nan_guard
    if guard.enabled:
        callbacks.append(NaNGuard(guard.action, guard.max_skips))
    mem = cfg.training.memory_cleanup
    if mem.enabled:
        callbacks.append(MemoryCleanup(mem.points, mem.every_n_train_steps))
    return callbacks
