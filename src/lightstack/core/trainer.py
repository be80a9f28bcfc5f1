"""``build_trainer``: one place that turns a run config into a ``lightning.Trainer``.

Devices, nodes, strategy (DDP, FSDP with the model's blocks as units: ``core.devices``),
precision, accumulation, clipping, profiling and the standard callbacks
(``core.callbacks.standard``) all come from the config; ``fit`` adds the out-of-memory recovery
of ``training.oom_recovery`` and ``run_fit`` tunes, fits or resumes and collects the results.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, Timer
from lightning.pytorch.profilers import (
    AdvancedProfiler,
    Profiler,
    PyTorchProfiler,
    SimpleProfiler,
)
from torch import nn

from lightstack.core.callbacks.oom_recovery import BuildTrainer, fit_with_oom_recovery
from lightstack.core.callbacks.standard import build_callbacks
from lightstack.core.checkpoints import AtomicCheckpointIO
from lightstack.core.config import C, RunConfig, apply_updates, loader_section, save_config
from lightstack.core.devices import (
    build_strategy,
    check_accelerator,
    check_precision,
    set_cpu_threads,
)
from lightstack.core.io import atomic_write_json
from lightstack.core.loggers import build_loggers
from lightstack.core.resume import verify_resume_checkpoint
from lightstack.core.run import resume_checkpoint, write_run_config


class _NoAdvertisements(logging.Filter):
    """Drops Lightning's install tips ("💡 Tip: ... try installing litlogger / litmodels")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def quiet_lightning() -> None:
    """Keep messages a lightstack user cannot act on out of the run's output.

    - The install tips Lightning 2.6 logs for LitLogger and LitModelCheckpoint at every fit.
    - The ``LeafSpec`` FutureWarning torch raises from Lightning's own ``utilities/_pytree.py``
      (Lightning's code to change, not ours).
    - The model summary's "Total FLOPs: 0" is ``ParameterSummary``'s job (see progress.py).
    """
    rank_zero_log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoAdvertisements) for f in rank_zero_log.filters):
        rank_zero_log.addFilter(_NoAdvertisements())
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
    )


def build_profiler(cfg: RunConfig, run_dir: Path) -> Profiler | None:
    """``training.profile``: reports go to ``run_dir/profiler``."""
    kind = cfg.training.profile
    out = Path(run_dir) / "profiler"
    if kind == "simple":
        return SimpleProfiler(dirpath=out, filename="profile", extended=True)
    if kind == "advanced":
        return AdvancedProfiler(dirpath=out, filename="profile")
    if kind == "pytorch":
        s = cfg.training.profile_schedule
        return PyTorchProfiler(
            dirpath=out,
            filename="profile",
            schedule=torch.profiler.schedule(
                wait=s.wait, warmup=s.warmup, active=s.active, repeat=s.repeat
            ),
            export_to_chrome=True,
            profile_memory=True,
        )
    return None


def build_trainer(
    cfg: RunConfig,
    run_dir: Path,
    default_monitor: str,
    extra_callbacks: list[Callback] | None = None,
    module: nn.Module | None = None,
) -> L.Trainer:
    """Build the Trainer for ``cfg``, writing logs and checkpoints under ``run_dir``.

    ``module`` (the LightningModule to train) is needed by ``strategy: fsdp`` to find the
    blocks to wrap; other strategies ignore it.
    """
    t = cfg.trainer
    run_dir = Path(run_dir)
    check_precision(cfg)
    set_cpu_threads(t.cpu_threads)
    quiet_lightning()
    callbacks = build_callbacks(cfg, run_dir, default_monitor) + list(extra_callbacks or [])
    skip_val = cfg.training.skip_lightning_val
    return L.Trainer(
        accelerator=check_accelerator(t.accelerator),
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=build_strategy(cfg, module),
        precision=t.precision,
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
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
        enable_model_summary=False,  # ParameterSummary (in the callbacks) replaces Lightning's
        plugins=[AtomicCheckpointIO()],
        default_root_dir=run_dir,
        profiler=build_profiler(cfg, run_dir),
    )


def trainer_factory(
    cfg: RunConfig,
    run_dir: Path,
    default_monitor: str,
    module: nn.Module | None = None,
    extra_callbacks: list[Callback] | None = None,
) -> BuildTrainer:
    """``(accumulate_grad_batches, callbacks) -> Trainer`` for ``fit_with_oom_recovery``."""

    def build(accumulate: int, callbacks: list[Callback]) -> L.Trainer:
        run_cfg = apply_updates(cfg, {"trainer.accumulate_grad_batches": accumulate})
        extra = list(extra_callbacks or []) + list(callbacks)
        return build_trainer(run_cfg, run_dir, default_monitor, extra, module)

    return build


def fit(
    cfg: RunConfig,
    run_dir: Path,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    default_monitor: str,
    extra_callbacks: list[Callback] | None = None,
    ckpt_path: str | Path | None = None,
) -> L.Trainer:
    """``trainer.fit``, through ``fit_with_oom_recovery`` when ``training.oom_recovery.enabled``.

    After a recovery the micro-batch and accumulation that finished are written into
    ``run_dir/config.yaml`` and the events into ``run_dir/oom_recovery.json``. A checkpoint to
    resume from (``ckpt_path``) must have been checked (``verify_resume_checkpoint``).
    """
    run_dir = Path(run_dir)
    oom = cfg.training.oom_recovery
    if not oom.enabled:
        trainer = build_trainer(cfg, run_dir, default_monitor, extra_callbacks, module)
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        return trainer
    result = fit_with_oom_recovery(
        trainer_factory(cfg, run_dir, default_monitor, module, extra_callbacks),
        module,
        datamodule,
        resume_dir=run_dir / "checkpoints",
        accumulate_grad_batches=cfg.trainer.accumulate_grad_batches,
        min_batch_size=oom.min_batch_size,
        max_retries=oom.max_retries,
        ckpt_path=ckpt_path,
    )
    if result.events and result.trainer.is_global_zero:
        updated = apply_updates(
            cfg,
            {
                f"{loader_section(cfg)}.batch_size": result.batch_size,
                "trainer.accumulate_grad_batches": result.accumulate_grad_batches,
            },
        )
        save_config(updated, run_dir / "config.yaml")
        atomic_write_json(run_dir / "oom_recovery.json", result.events)
    return result.trainer


@dataclass
class FitResult:
    """What a training command reports: where the checkpoints are and the final metrics."""

    run_dir: Path
    cfg: RunConfig
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    metrics: dict[str, float]
    is_global_zero: bool
    resumed_from: Path | None = None  # the checkpoint this fit continued, if it did


def run_fit(
    cfg: C,
    run_dir: Path,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    default_monitor: str,
    resume: str = "auto",
    extra_callbacks: list[Callback] | None = None,
) -> FitResult:
    """Tune (when ``training.tune`` asks, fresh runs only), fit or resume, collect results.

    ``resume`` as in ``core.run.resume_checkpoint``; the checkpoint is checked before
    ``run_dir/config.yaml`` is written. The config the module trained with (tuned values
    applied, also set on ``module.cfg``) is returned; the final metrics and timings are written
    to ``run_dir/train_metrics.json``.
    """
    ckpt_path = resume_checkpoint(run_dir, resume)
    if ckpt_path is not None:
        verify_resume_checkpoint(ckpt_path, cfg.family, module)
    write_run_config(cfg, run_dir)
    knobs = cfg.training.tune
    if (knobs.batch_size or knobs.lr) and ckpt_path is None:
        from lightstack.core.tuning import tune

        tuner_trainer = build_trainer(cfg, run_dir, default_monitor, extra_callbacks, module)
        updates = tune(tuner_trainer, module, datamodule, cfg, run_dir, knobs.batch_size, knobs.lr)
        cfg = apply_updates(cfg, updates)
        module.cfg = cfg
    trainer = fit(cfg, run_dir, module, datamodule, default_monitor, extra_callbacks, ckpt_path)
    ckpt_cb = trainer.checkpoint_callback
    best = Path(ckpt_cb.best_model_path) if ckpt_cb and ckpt_cb.best_model_path else None
    last = Path(ckpt_cb.last_model_path) if ckpt_cb and ckpt_cb.last_model_path else None
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()} | timings(trainer)
    metrics["train/optimizer_steps"] = float(trainer.global_step)
    if trainer.is_global_zero:
        atomic_write_json(Path(run_dir) / "train_metrics.json", metrics)
    resumed_from = Path(ckpt_path) if ckpt_path else None
    return FitResult(Path(run_dir), cfg, best, last, metrics, trainer.is_global_zero, resumed_from)


def timings(trainer: L.Trainer) -> dict[str, float]:
    """Seconds spent in training and validation, from the Timer callback."""
    timer = next((cb for cb in trainer.callbacks if isinstance(cb, Timer)), None)
    if timer is None:
        return {}
    return {f"time/{stage}_s": float(timer.time_elapsed(stage)) for stage in ("train", "validate")}


def trainer_overrides(
    devices_per_node: int | None = None,
    num_nodes: int | None = None,
    accumulate_grad_batches: int | None = None,
    sync_batchnorm: bool | None = None,
    tune_batch_size: bool | None = None,
    tune_lr: bool | None = None,
) -> list[str]:
    """Dotted overrides for the training CLI flags that were given (``None``: not given)."""
    given = {
        "trainer.devices": devices_per_node,
        "trainer.num_nodes": num_nodes,
        "trainer.accumulate_grad_batches": accumulate_grad_batches,
        "trainer.sync_batchnorm": sync_batchnorm,
        "training.tune.batch_size": tune_batch_size,
        "training.tune.lr": tune_lr,
    }
    return [f"{key}={json.dumps(value)}" for key, value in given.items() if value is not None]
