"""Block-wise freezing and unfreezing of a backbone during training.

Works on any LightningModule exposing ``freezable_blocks() -> list[nn.Module]`` ordered from the
input to the output; everything outside those blocks (heads, aggregators) always trains.
Blocks start frozen (all of them, or the ``frozen_blocks`` nearest the input) and are unfrozen
by a strategy:

- ``progressive``: ``top_k`` blocks from the top at ``start_epoch``, then every ``every_n_epochs``.
- ``adaptive``: ``top_k`` blocks from the top once ``monitor`` has not improved for ``patience``
  checks (validation ends, or train epoch ends for a ``train/`` metric).
- ``gradient_guided``: at the same epochs as ``progressive``, the ``top_k`` frozen blocks with the
  largest gradient norm on a probe batch (the first batch of the previous epoch), using the
  module's ``probe_loss(batch)`` if it has one, else ``training_step(batch, 0)``.

Newly unfrozen parameters join the first optimizer as a new param group with
``lr = current lr of group 0 * unfreeze_lr_factor``; ``LambdaLR``-style schedulers (such as
warmup + cosine) are extended so the new group follows the same schedule. Batch norms inside
frozen blocks stay in eval mode (running statistics untouched) whatever ``train()`` calls happen.
The module's ``configure_optimizers`` must only pass parameters with ``requires_grad`` (it is
called after the initial freeze).

Under DDP, PyTorch's ``DistributedDataParallel`` only reduces gradients of parameters that
required grad when it was built, so the model is re-wrapped after each unfreeze; decisions are
made on rank 0 and broadcast. FSDP and DeepSpeed are not supported.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BaseFinetuning, Callback
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from lightning_utilities.core.apply_func import apply_to_collection
from pydantic import Field
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer

from lightstack.core.config import Section

Strategy = Literal["none", "progressive", "adaptive", "gradient_guided"]


class FreezingConfig(Section):
    """``freezing:`` section: which backbone blocks train when."""

    strategy: Strategy = "none"
    frozen_blocks: int | None = Field(
        None, ge=0, description="blocks frozen at the start, counted from the input; None = all"
    )
    start_epoch: int = Field(1, ge=1, description="first epoch at which blocks may unfreeze")
    every_n_epochs: int = Field(1, ge=1)
    monitor: str = "val/loss"
    mode: Literal["min", "max"] = "min"
    patience: int = Field(2, ge=1)
    min_delta: float = Field(0.0, ge=0.0)
    top_k: int = Field(1, ge=1, description="blocks unfrozen per trigger")
    unfreeze_lr_factor: float = Field(0.1, gt=0.0)


def _freezable_blocks(pl_module: LightningModule) -> list[nn.Module]:
    fn = getattr(pl_module, "freezable_blocks", None)
    if not callable(fn):
        raise TypeError(
            f"{type(pl_module).__name__} has no freezable_blocks() method; the freezing callback "
            "needs it to return the backbone blocks ordered input -> output"
        )
    blocks = list(fn())
    if not blocks or not all(isinstance(b, nn.Module) for b in blocks):
        raise TypeError(
            f"{type(pl_module).__name__}.freezable_blocks() must return a non-empty list of "
            f"nn.Module, got {blocks!r}"
        )
    return blocks


def _params(block: nn.Module) -> list[nn.Parameter]:
    return [p for m in BaseFinetuning.flatten_modules(block) for p in m.parameters(recurse=False)]


def _batch_norms(block: nn.Module) -> list[_BatchNorm]:
    return [m for m in block.modules() if isinstance(m, _BatchNorm)]


class BlockFreezing(BaseFinetuning):
    """Base of the strategies; subclasses implement ``_select`` (block indices to unfreeze)."""

    def __init__(
        self, frozen_blocks: int | None, start_epoch: int, top_k: int, unfreeze_lr_factor: float
    ):
        super().__init__()
        self.frozen_blocks = frozen_blocks
        self.start_epoch = start_epoch
        self.top_k = top_k
        self.unfreeze_lr_factor = unfreeze_lr_factor
        self._blocks: list[nn.Module] = []
        self._frozen_bns: list[_BatchNorm] = []
        self._initial: list[int] = []
        self._unfrozen: list[int] = []
        self._pending: list[int] = []

    # -- state --------------------------------------------------------------------------------
    def frozen_indices(self) -> list[int]:
        return [i for i in self._initial if i not in self._unfrozen]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "unfrozen": list(self._unfrozen)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._unfrozen = list(state_dict.get("unfrozen", []))
        super().load_state_dict(state_dict)

    # -- Lightning hooks ----------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if isinstance(trainer.strategy, FSDPStrategy):
            raise NotImplementedError(
                f"{type(self).__name__} does not support {type(trainer.strategy).__name__}; "
                "use a single device or DDP"
            )
        super().setup(trainer, pl_module, stage)

    def freeze_before_training(self, pl_module: LightningModule) -> None:
        self._blocks = blocks = _freezable_blocks(pl_module)
        n = len(blocks) if self.frozen_blocks is None else min(self.frozen_blocks, len(blocks))
        self._initial = list(range(n))
        self.freeze([blocks[i] for i in self.frozen_indices()], train_bn=False)
        self._update_frozen_bns()

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)  # restores saved param groups when resuming
        if self._unfrozen:
            self.make_trainable([self._blocks[i] for i in self._unfrozen])
            for i in self._unfrozen:
                self._blocks[i].train(pl_module.training)
            self._update_frozen_bns()
            for optimizer in trainer.optimizers:
                _extend_schedulers(trainer, optimizer)
            self._rewrap_ddp(trainer)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        epoch = trainer.current_epoch
        pending: list[int] = []
        if self.frozen_indices() and epoch >= self.start_epoch:
            pending = self._select(trainer, pl_module, epoch)
        self._pending = trainer.strategy.broadcast(pending, src=0)
        super().on_train_epoch_start(trainer, pl_module)  # calls finetune_function per optimizer
        if self._pending:
            self._rewrap_ddp(trainer)
            self._pending = []
        self._bn_eval()
        self._report(pl_module, epoch)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # Cheap guard against a module that calls self.train() in its own epoch-start hook.
        self._bn_eval()

    def finetune_function(
        self, pl_module: LightningModule, epoch: int, optimizer: Optimizer
    ) -> None:
        if not self._pending or optimizer is not pl_module.trainer.optimizers[0]:
            return
        chosen = [self._blocks[i] for i in self._pending]
        self.make_trainable(chosen)
        for block in chosen:
            block.train(pl_module.training)
        self._unfrozen.extend(i for i in self._pending if i not in self._unfrozen)
        self._update_frozen_bns()
        # By identity: BaseFinetuning.filter_on_optimizer compares values (torch.equal), so it
        # would drop a parameter that merely equals one already optimised (e.g. fresh BN weights).
        known = {id(p) for group in optimizer.param_groups for p in group["params"]}
        new = [p for b in chosen for p in _params(b) if p.requires_grad and id(p) not in known]
        if not new:
            return
        first = optimizer.param_groups[0]
        group = {"params": new, "lr": first["lr"] * self.unfreeze_lr_factor}
        if "initial_lr" in first:
            group["initial_lr"] = first["initial_lr"] * self.unfreeze_lr_factor
        optimizer.add_param_group(group)
        _extend_schedulers(pl_module.trainer, optimizer)

    # -- strategy -----------------------------------------------------------------------------
    def _select(self, trainer: Trainer, pl_module: LightningModule, epoch: int) -> list[int]:
        raise NotImplementedError

    def _top_blocks(self) -> list[int]:
        """The ``top_k`` frozen blocks nearest the output."""
        return sorted(self.frozen_indices(), reverse=True)[: self.top_k]

    # -- helpers ------------------------------------------------------------------------------
    def _update_frozen_bns(self) -> None:
        # Applied at train epoch/batch start: Lightning warns about eval modules before that.
        self._frozen_bns = [
            bn for i in self.frozen_indices() for bn in _batch_norms(self._blocks[i])
        ]

    def _bn_eval(self) -> None:
        for bn in self._frozen_bns:
            bn.training = False

    def _report(self, pl_module: LightningModule, epoch: int) -> None:
        blocks = self._blocks
        frozen = set(self.frozen_indices())
        names = {id(m): name for name, m in pl_module.named_modules()}
        trainable = [names.get(id(b), f"block{i}") for i, b in enumerate(blocks) if i not in frozen]
        pl_module.log(
            "freeze/trainable_blocks", float(len(trainable)), on_step=False, on_epoch=True
        )
        rank_zero_info(
            f"epoch {epoch}: {len(trainable)}/{len(blocks)} backbone blocks trainable"
            + (f" ({', '.join(trainable)})" if trainable else "")
        )

    @staticmethod
    def _rewrap_ddp(trainer: Trainer) -> None:
        """DDP fixes the set of reduced parameters at construction: build it again."""
        strategy = trainer.strategy
        if isinstance(strategy, DDPStrategy) and isinstance(
            strategy.model, DistributedDataParallel
        ):
            strategy.model = strategy.lightning_module
            strategy.configure_ddp()


def _extend_schedulers(trainer: Trainer, optimizer: Optimizer) -> None:
    """Give LR schedulers of ``optimizer`` an entry for every param group it now has.

    ``LambdaLR`` (and schedulers like it) zip their ``base_lrs``/``lr_lambdas`` with the param
    groups, so a group added later would silently keep a constant LR; repeat group 0's lambda.
    """
    groups = optimizer.param_groups
    for config in trainer.lr_scheduler_configs:
        scheduler = config.scheduler
        if getattr(scheduler, "optimizer", None) is not optimizer:
            continue
        base_lrs = getattr(scheduler, "base_lrs", None)
        lambdas = getattr(scheduler, "lr_lambdas", None)
        if base_lrs is not None and len(base_lrs) >= len(groups):
            continue
        if base_lrs is None or lambdas is None:
            rank_zero_warn(
                f"{type(scheduler).__name__} cannot schedule param groups added by the freezing "
                "callback; they keep a constant learning rate"
            )
            continue
        while len(lambdas) < len(groups):
            lambdas.append(lambdas[0])
        base_lrs.extend(g.get("initial_lr", g["lr"]) for g in groups[len(base_lrs) :])


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
        params = {i: _params(self._blocks[i]) for i in self.frozen_indices()}
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
