"""``BlockFreezing``: the freeze / unfreeze mechanics every strategy shares.

Freezing the blocks before training, adding unfrozen parameters to the first optimizer as a new
param group, extending ``LambdaLR``-style schedulers to it, keeping frozen batch norms in eval
mode and re-wrapping DDP; a strategy only decides which blocks to unfreeze (``_select``).
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BaseFinetuning
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer


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


def block_parameters(block: nn.Module) -> list[nn.Parameter]:
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
        new = [
            p for b in chosen for p in block_parameters(b) if p.requires_grad and id(p) not in known
        ]
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
