"""The unfreezing strategies: progressive, adaptive and gradient-guided, and the factory."""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning_utilities.core.apply_func import apply_to_collection
from torch import Tensor

from lightstack.core.callbacks.freezing.blocks import BlockFreezing, block_parameters
from lightstack.core.callbacks.freezing.config import FreezingConfig


class ProgressiveFreezing(BlockFreezing):
    """Unfreeze ``top_k`` blocks from the top at ``start_epoch`` and every ``every_n_epochs``."""

    def __init__(
        self,
        frozen_blocks: int | None = None,
        start_epoch: int = 1,
        every_n_epochs: int = 1,
        top_k: int = 1,
        unfreeze_lr_factor: float = 0.1,
    ):
        super().__init__(frozen_blocks, start_epoch, top_k, unfreeze_lr_factor)
        self.every_n_epochs = every_n_epochs

    def _triggered(self, epoch: int) -> bool:
        return epoch >= self.start_epoch and (epoch - self.start_epoch) % self.every_n_epochs == 0

    def _select(self, trainer: Trainer, pl_module: LightningModule, epoch: int) -> list[int]:
        return self._top_blocks() if self._triggered(epoch) else []


class AdaptiveFreezing(BlockFreezing):
    """Unfreeze ``top_k`` blocks from the top once ``monitor`` stalled for ``patience`` checks."""

    def __init__(
        self,
        frozen_blocks: int | None = None,
        monitor: str = "val/loss",
        mode: Literal["min", "max"] = "min",
        patience: int = 2,
        min_delta: float = 0.0,
        start_epoch: int = 1,
        top_k: int = 1,
        unfreeze_lr_factor: float = 0.1,
    ):
        super().__init__(frozen_blocks, start_epoch, top_k, unfreeze_lr_factor)
        self.monitor = monitor
        self.mode = mode
        self.patience = patience
        self.min_delta = min_delta
        self.best: float | None = None
        self.wait = 0
        self._due = False

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best": self.best, "wait": self.wait, "due": self._due}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best")
        self.wait = int(state_dict.get("wait", 0))
        self._due = bool(state_dict.get("due", False))
        super().load_state_dict(state_dict)

    def _check(self, trainer: Trainer) -> None:
        if trainer.sanity_checking:
            return
        if self.monitor not in trainer.callback_metrics:
            raise RuntimeError(
                f"freezing.monitor={self.monitor!r} was not logged; available: "
                f"{sorted(trainer.callback_metrics)}"
            )
        value = float(trainer.callback_metrics[self.monitor])
        sign = 1.0 if self.mode == "min" else -1.0
        if self.best is None or sign * (self.best - value) > self.min_delta:
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self._due, self.wait = True, 0

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.monitor.startswith("train/"):
            self._check(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.monitor.startswith("train/"):
            self._check(trainer)

    def _select(self, trainer: Trainer, pl_module: LightningModule, epoch: int) -> list[int]:
        if not self._due:
            return []
        self._due = False
        return self._top_blocks()


class GradientGuidedFreezing(ProgressiveFreezing):
    """At each trigger epoch unfreeze the ``top_k`` frozen blocks with the largest gradient norm.

    The probe batch is the first training batch of the previous epoch (kept on the CPU); the
    probe runs in eval mode (no dropout, no batch-norm statistics update) and uses
    ``torch.autograd.grad``, so no ``.grad`` of the model is touched.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._probe_batch: Any = None
        self.last_norms: dict[int, float] = {}

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        if batch_idx == 0 and self.frozen_indices():
            self._probe_batch = apply_to_collection(batch, Tensor, lambda t: t.detach().cpu())

    def block_grad_norms(self, trainer: Trainer, pl_module: LightningModule) -> dict[int, float]:
        """L2 norm of the probe-loss gradient of every frozen block."""
        if self._probe_batch is None:
            raise RuntimeError("gradient-guided freezing has no probe batch yet")
        params = {i: block_parameters(self._blocks[i]) for i in self.frozen_indices()}
        flat = [p for ps in params.values() for p in ps]
        batch = apply_to_collection(self._probe_batch, Tensor, lambda t: t.to(pl_module.device))
        modes = {m: m.training for m in pl_module.modules()}
        pl_module.eval()
        try:
            for p in flat:
                p.requires_grad_(True)
            with torch.enable_grad(), trainer.precision_plugin.forward_context():
                loss = self._probe_loss(pl_module, batch)
            grads = (
                torch.autograd.grad(loss.float(), flat, allow_unused=True)
                if loss.requires_grad
                else [None] * len(flat)
            )
        finally:
            for p in flat:
                p.requires_grad_(False)
            for m, training in modes.items():
                m.training = training
        by_param = {id(p): g for p, g in zip(flat, grads, strict=True)}
        norms = {}
        for i, ps in params.items():
            sq = [by_param[id(p)].float().pow(2).sum() for p in ps if by_param[id(p)] is not None]
            norms[i] = float(torch.stack(sq).sum().sqrt()) if sq else 0.0
        return norms

    @staticmethod
    def _probe_loss(pl_module: LightningModule, batch: Any) -> Tensor:
        probe = getattr(pl_module, "probe_loss", None)
        out = probe(batch) if callable(probe) else pl_module.training_step(batch, 0)
        loss = out["loss"] if isinstance(out, dict) else out
        if not isinstance(loss, Tensor) or loss.ndim != 0:
            raise TypeError(
                f"{type(pl_module).__name__}: probe_loss/training_step must return a scalar loss "
                f"tensor (or a dict with 'loss'), got {type(loss).__name__}"
            )
        return loss

    def _select(self, trainer: Trainer, pl_module: LightningModule, epoch: int) -> list[int]:
        if not self._triggered(epoch) or self._probe_batch is None:
            return []
        self.last_norms = self.block_grad_norms(trainer, pl_module)
        ranked = sorted(self.last_norms, key=lambda i: self.last_norms[i], reverse=True)
        return ranked[: self.top_k]


def build_freezing_callback(cfg: FreezingConfig) -> Callback | None:
    """The callback for ``cfg.strategy`` (``None`` for ``"none"``)."""
    if cfg.strategy == "none":
        return None
    common = {
        "frozen_blocks": cfg.frozen_blocks,
        "top_k": cfg.top_k,
        "unfreeze_lr_factor": cfg.unfreeze_lr_factor,
        "start_epoch": cfg.start_epoch,
    }
    if cfg.strategy == "progressive":
        return ProgressiveFreezing(every_n_epochs=cfg.every_n_epochs, **common)
    if cfg.strategy == "gradient_guided":
        return GradientGuidedFreezing(every_n_epochs=cfg.every_n_epochs, **common)
    if cfg.strategy == "adaptive":
        return AdaptiveFreezing(
            monitor=cfg.monitor,
            mode=cfg.mode,
            patience=cfg.patience,
            min_delta=cfg.min_delta,
            **common,
        )
    raise ValueError(f"unknown freezing strategy {cfg.strategy!r}")
