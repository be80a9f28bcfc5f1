"""Memory cleanup: collect garbage and empty the CUDA cache at chosen points of training.

PyTorch's caching allocator keeps freed blocks reserved for reuse; fragmentation after
validation (different shapes) or between epochs can leave a later allocation without a large
enough block. Emptying the cache hands those blocks back to the driver. It costs a sync and
re-allocation, so it runs at epoch/validation boundaries or every N steps, not every step.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from lightstack.core.callbacks.steps import EveryNOptimizerSteps

Point = Literal["train_epoch_end", "validation_end"]
GB = 1e9


def reserved_bytes(device: torch.device) -> int:
    """Bytes the CUDA caching allocator holds on ``device`` (0 off CUDA)."""
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.memory_reserved(device)
    return 0


def free_memory() -> int:
    """Collect garbage and return cached CUDA blocks to the driver; returns objects collected."""
    collected = gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return collected


class MemoryCleanup(Callback):
    """Free memory at ``points`` and every ``every_n_train_steps``; log what it freed.

    Logs ``mem/freed_gb`` (CUDA memory reserved before minus after), ``mem/reserved_gb`` (after)
    and ``mem/gc_collected`` to the trainer's loggers at the current global step.
    """

    def __init__(
        self, points: Iterable[Point] = ("train_epoch_end",), every_n_train_steps: int | None = None
    ):
        self.points = set(points)
        self.every_n_train_steps = every_n_train_steps
        self.history: list[dict[str, Any]] = []
        self._every = EveryNOptimizerSteps(every_n_train_steps)

    def cleanup(self, trainer: L.Trainer, pl_module: L.LightningModule, point: str) -> float:
        """Free memory now; returns the GB of CUDA cache released."""
        before = reserved_bytes(pl_module.device)
        collected = free_memory()
        after = reserved_bytes(pl_module.device)
        freed = max(0, before - after) / GB
        metrics = {
            "mem/freed_gb": freed,
            "mem/reserved_gb": after / GB,
            "mem/gc_collected": float(collected),
        }
        self.history.append({"step": trainer.global_step, "point": point, **metrics})
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)
        return freed

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self._every.due(trainer.global_step):
            self.cleanup(trainer, pl_module, "train_step")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if "train_epoch_end" in self.points:
            self.cleanup(trainer, pl_module, "train_epoch_end")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if "validation_end" in self.points and not trainer.sanity_checking:
            self.cleanup(trainer, pl_module, "validation_end")
