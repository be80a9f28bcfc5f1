"""Non-finite training values: skip the step or stop the run, and never keep a NaN as "best".

``NaNGuard`` looks at every micro-batch loss and, before each optimizer step, at the gradients.
When one is NaN/Inf it either skips the step (``action="skip"``: the gradients are dropped so
the optimizer leaves weights and moments untouched; counted in ``train/nan_skipped_steps``,
at most ``max_skips`` times) or stops the run with ``NonFiniteError`` naming the global step,
the epoch, the batch index and the value (``train/loss`` or the parameter whose gradient is
bad). The weights are still finite at that point, so the last checkpoint is usable.

With ``16-mixed`` precision the gradient scaler already skips steps whose scaled gradients
overflow (and lowers the scale), so only the loss is checked there.

``FiniteModelCheckpoint`` is Lightning's ``ModelCheckpoint`` that never ranks a NaN/Inf
monitored value among its top-k (Lightning would store a first NaN score as "best").
"""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor

Action = Literal["skip", "stop"]


class NonFiniteError(FloatingPointError, ValueError):
    """Training produced a NaN/Inf loss or gradient and the guard stopped the run."""


class NaNGuard(Callback):
    """Skip (``action="skip"``, up to ``max_skips`` steps) or stop on a non-finite loss/gradient."""

    def __init__(self, action: Action = "stop", max_skips: int = 10):
        if action not in ("skip", "stop"):
            raise ValueError(f"NaNGuard action must be 'skip' or 'stop', got {action!r}")
        self.action = action
        self.max_skips = max_skips
        self.skipped = 0
        self._losses: list[Tensor] = []
        self._batch_idx = -1

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_idx = batch_idx

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor
    ) -> None:
        self._losses.append(loss.detach())

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        losses, self._losses = self._losses, []
        params = [p for group in optimizer.param_groups for p in group["params"]]
        grads = [p.grad for p in params if p.grad is not None]
        check_grads = bool(grads) and str(trainer.precision) != "16-mixed"
        flags = [torch.stack([loss.float() for loss in losses]).isfinite().all()] if losses else []
        if check_grads:
            flags.append(torch.nn.utils.get_total_norm(grads).isfinite())
        if not flags:
            return
        bad = not bool(torch.stack([f.to(flags[0].device) for f in flags]).all())
        if trainer.world_size > 1:  # every process must take the same decision
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return
        what = self._culprit(pl_module, losses, check_grads)
        where = (
            f"global step {trainer.global_step} (epoch {trainer.current_epoch}, batch "
            f"{self._batch_idx})"
        )
        if self.action == "stop":
            raise NonFiniteError(
                f"{what} is NaN/Inf at {where}; stopping (training.nan_guard.action=stop). "
                "Weights are still finite: the last checkpoint is usable. Lower the learning "
                "rate, clip gradients (trainer.gradient_clip_val) or check the data."
            )
        self.skipped += 1
        if self.skipped > self.max_skips:
            raise NonFiniteError(
                f"{what} is NaN/Inf at {where}: {self.skipped} optimizer steps skipped, more "
                f"than training.nan_guard.max_skips={self.max_skips}; stopping"
            )
        for p in params:
            p.grad = None  # the optimizer leaves parameters without gradients untouched
        rank_zero_warn(
            f"{what} is NaN/Inf at {where}: optimizer step skipped "
            f"({self.skipped} of at most {self.max_skips})"
        )
        pl_module.log(
            "train/nan_skipped_steps",
            float(self.skipped),
            on_step=True,
            on_epoch=False,
            rank_zero_only=True,
        )

    @staticmethod
    def _culprit(pl_module: L.LightningModule, losses: list[Tensor], grads_checked: bool) -> str:
        """Name the first non-finite value: the loss, else the gradient of a named parameter."""
        if any(not bool(torch.isfinite(loss).all()) for loss in losses):
            return "train/loss"
        if grads_checked:
            for name, p in pl_module.named_parameters():
                if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
                    return f"the gradient of {name}"
        return "a gradient on another process"


class FiniteModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that never ranks a NaN/Inf monitored value among the top-k."""

    def check_monitor_top_k(self, trainer: L.Trainer, current: Tensor | None = None) -> bool:
        if current is not None and not bool(torch.isfinite(current).all()):
            rank_zero_warn(
                f"{self.monitor}={float(current)} at global step {trainer.global_step} is not "
                "finite: not saved as a best checkpoint"
            )
            return False
        return super().check_monitor_top_k(trainer, current)
