"""Recover from CUDA out-of-memory: smaller micro-batch, more accumulation, same effective batch.

Lightning cannot change a DataLoader's batch size in the middle of ``fit``, so recovery happens
around it: ``fit_with_oom_recovery`` catches the OOM that ``trainer.fit`` re-raises, frees
memory, divides the datamodule's ``batch_size`` (by 2, or by its smallest factor when odd),
multiplies ``accumulate_grad_batches`` by the same factor and runs ``fit`` again with a new
trainer from the last good state: the resume checkpoint ``OOMRecovery`` writes at every train
epoch end, or the initial weights when the OOM came in the first epoch. Resuming at an epoch
boundary keeps Lightning's loop counters exact (a mid-epoch checkpoint counts batches of the
old size), at the cost of redoing the interrupted epoch; OOMs mostly come in the first steps.

Single process only: under DDP/FSDP an OOM on one rank leaves the others waiting in a
collective, so the error propagates and the run ends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from lightstack.core.callbacks.memory import free_memory

RESUME_NAME = "oom-resume.ckpt"

BuildTrainer = Callable[[int, list[Callback]], L.Trainer]
"""``(accumulate_grad_batches, extra_callbacks) -> Trainer``."""


class OOMRecoveryError(RuntimeError):
    """Out of memory even at the smallest allowed micro-batch (or after too many retries)."""


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is a CUDA out-of-memory error (torch raises ``OutOfMemoryError``)."""
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "CUDA out of memory" in str(exc)
    )


def smallest_factor(n: int) -> int:
    """The smallest factor > 1 of ``n`` (2 for even ``n``; ``n`` itself when prime)."""
    return next(f for f in range(2, n + 1) if n % f == 0)


class OOMRecovery(Callback):
    """Write the resume checkpoint at every train epoch end (single process); drop it at the end.

    ``saved`` tells ``fit_with_oom_recovery`` whether there is a checkpoint to resume from.
    """

    def __init__(self, dirpath: str | Path):
        self.path = Path(dirpath) / RESUME_NAME
        self.saved = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.world_size > 1:
            rank_zero_warn(
                "training.oom_recovery works in single-process runs only; with "
                f"{trainer.world_size} processes an out-of-memory error ends the run"
            )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size == 1:
            trainer.save_checkpoint(self.path)
            self.saved = True

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.path.unlink(missing_ok=True)


@dataclass
class RecoveryResult:
    """The trainer that finished and the micro-batch/accumulation it finished with."""

    trainer: L.Trainer
    batch_size: int
    accumulate_grad_batches: int
    events: list[dict[str, Any]] = field(default_factory=list)


def _cpu_copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def shrink(batch: int, accumulate: int) -> tuple[int, int]:
    """Micro-batch and accumulation after an OOM: divided and multiplied by the same factor."""
    if batch == 1:
        return 0, accumulate
    factor = smallest_factor(batch)
    return batch // factor, accumulate * factor


def fit_with_oom_recovery(
    build_trainer: BuildTrainer,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    resume_dir: str | Path,
    accumulate_grad_batches: int = 1,
    min_batch_size: int = 1,
    max_retries: int = 4,
    ckpt_path: str | Path | None = None,
) -> RecoveryResult:
    """``trainer.fit`` that retries out-of-memory at a smaller micro-batch, same effective batch.

    ``datamodule.batch_size`` is the micro-batch its ``train_dataloader`` uses (changed in place
    on recovery); ``build_trainer(accumulate, callbacks)`` builds the trainer with that
    accumulation and the given callbacks added. Any other error propagates unchanged.
    """
    batch = getattr(datamodule, "batch_size", None)
    if not isinstance(batch, int):
        raise TypeError(
            f"{type(datamodule).__name__} has no integer batch_size attribute; OOM recovery "
            "changes it to shrink the micro-batch"
        )
    accumulate = accumulate_grad_batches
    initial = _cpu_copy(module) if ckpt_path is None else None
    resume = str(ckpt_path) if ckpt_path is not None else None
    events: list[dict[str, Any]] = []
    while True:
        callback = OOMRecovery(resume_dir)
        trainer = build_trainer(accumulate, [callback])
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
            return RecoveryResult(trainer, batch, accumulate, events)
        except BaseException as exc:
            if not is_oom(exc) or trainer.world_size > 1:
                raise
            if len(events) >= max_retries:
                raise OOMRecoveryError(
                    f"still out of memory after {max_retries} retries (micro-batch {batch}, "
                    f"x{accumulate} accumulation; training.oom_recovery.max_retries)"
                ) from exc
            smaller, more = shrink(batch, accumulate)
            if smaller < min_batch_size:
                raise OOMRecoveryError(
                    f"out of memory at micro-batch {batch} (x{accumulate} accumulation); a "
                    f"smaller micro-batch would be below training.oom_recovery.min_batch_size="
                    f"{min_batch_size}. Reduce the model or input size, or use precision "
                    "bf16-mixed, trainer.fsdp.activation_checkpointing or more GPUs."
                ) from exc
        # Outside the except block the traceback (and the activations its frames hold) is gone.
        free_memory()
        if callback.saved:
            resume = str(callback.path)
        elif resume is None and initial is not None:
            module.load_state_dict(initial)
        events.append(
            {
                "epoch": trainer.current_epoch,
                "global_step": trainer.global_step,
                "oom_batch_size": batch,
                "batch_size": smaller,
                "accumulate_grad_batches": more,
                "resume_from": resume,
            }
        )
        rank_zero_warn(
            f"CUDA out of memory at micro-batch {batch}: retrying with micro-batch {smaller} "
            f"x{more} accumulation (same effective batch) from {resume or 'the initial weights'}"
        )
        batch, accumulate = smaller, more
        datamodule.batch_size = batch  # type: ignore[attr-defined]
