"""Non-finite training values: skip the step or stop the run, and never keep a NaN as "best".

``NaNGuard`` looks at every micro-batch loss and, before each optimizer step, at the gradients.
When one is NaN/Inf it either skips the step (``action="skip"``: the optimizer leaves weights
and moments untouched; counted in ``train/nan_skipped_steps``, at most ``max_skips`` times) or
stops the run with ``NonFiniteError`` naming the global step, the epoch, the batch index and the
value (``train/loss`` or the parameter whose gradient is bad). Its message says whether the
model's weights, checked at that point, are finite (then the last checkpoint is usable) or which
weight already holds NaN/Inf.

Reading a verdict on the host waits for the device to finish the step. With a fused Adam/AdamW
(lightstack's default on CUDA) in a single process the guard does not wait: it hands the
verdict to the optimizer as ``found_inf``, and the fused kernel skips a bad step on the device,
as it does for the gradient scaler. The host copy of the verdict arrives asynchronously and is
acted on a step or two later (and at the end of every epoch), naming the step it came from;
the step itself was skipped either way. Elsewhere (other optimizers, several processes, which
must agree) the guard decides before the step, which costs one sync per step.

With ``16-mixed`` precision the gradient scaler already skips steps whose scaled gradients
overflow (and lowers the scale), so only the loss is checked there.

``FiniteModelCheckpoint`` is Lightning's ``ModelCheckpoint`` that never ranks a NaN/Inf
monitored value among its top-k (Lightning would store a first NaN score as "best").
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor

from lightstack.core.checkpoints import non_finite_weights

Action = Literal["skip", "stop"]


def _weights_verdict(pl_module: L.LightningModule | None) -> str:
    """What a check of the model's weights found, for the message of a stopped run."""
    if pl_module is None:
        return ""
    bad = non_finite_weights(pl_module.state_dict())
    if bad is None:
        return "The model's weights were checked and are finite: the last checkpoint is usable."
    return (
        f"The model's weight {bad} already holds NaN/Inf (the run started from bad weights or "
        "diverged earlier); resume from an earlier checkpoint."
    )


class NonFiniteError(FloatingPointError, ValueError):
    """Training produced a NaN/Inf loss or gradient and the guard stopped the run."""


@dataclass
class _Verdict:
    """Finite flags ``[losses, gradients]`` of one step, copied to the host asynchronously."""

    where: str
    flags: Tensor
    ready: torch.cuda.Event | None
    losses: list[Tensor]
    params: list[Tensor]
    norms: Tensor | None


def fused_adam(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` is a fused Adam/AdamW, which can skip a step on the device."""
    return isinstance(optimizer, torch.optim.Adam) and bool(optimizer.defaults.get("fused"))


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
        self._pending: deque[_Verdict] = deque()

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
        with_grad = [p for p in params if p.grad is not None]
        check_grads = bool(with_grad) and str(trainer.precision) != "16-mixed"
        where = (
            f"global step {trainer.global_step} (epoch {trainer.current_epoch}, batch "
            f"{self._batch_idx})"
        )
        deferred = fused_adam(optimizer) and trainer.world_size == 1 and check_grads
        if deferred:
            self._defer(optimizer, where, losses, with_grad)
            self._settle(pl_module, wait=False, on_step=True)
            return
        _clear_found_inf(optimizer)
        flags = [torch.stack([loss.float() for loss in losses]).isfinite().all()] if losses else []
        if check_grads:
            flags.append(torch.nn.utils.get_total_norm([p.grad for p in with_grad]).isfinite())
        if not flags:
            return
        bad = not bool(torch.stack([f.to(flags[0].device) for f in flags]).all())
        if trainer.world_size > 1:  # every process must take the same decision
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return
        self._act(pl_module, self._culprit(pl_module, losses, check_grads), where, on_step=True)
        for p in params:
            p.grad = None  # the optimizer leaves parameters without gradients untouched

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._settle(pl_module, wait=True, on_step=False)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._settle(None, wait=True, on_step=False)
        for optimizer in trainer.optimizers:
            _clear_found_inf(optimizer)

    # --- deferred verdicts (fused Adam) ------------------------------------------------------
    def _defer(
        self,
        optimizer: torch.optim.Optimizer,
        where: str,
        losses: list[Tensor],
        params: list[Tensor],
    ) -> None:
        norms = torch.stack(torch._foreach_norm([p.grad for p in params]))
        device = norms.device
        finite_losses = (
            torch.stack([loss.float().to(device) for loss in losses]).isfinite().all()
            if losses
            else torch.ones((), dtype=torch.bool, device=device)
        )
        flags = torch.stack([finite_losses, norms.isfinite().all()])
        optimizer.found_inf = (~flags.all()).float()  # read by the fused kernel in this step
        ready = None
        if flags.is_cuda:
            host = torch.empty(2, dtype=torch.bool, pin_memory=True)
            flags = host.copy_(flags, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record()
        self._pending.append(_Verdict(where, flags, ready, losses, params, norms))

    def _settle(self, pl_module: L.LightningModule | None, wait: bool, on_step: bool) -> None:
        """Act on the verdicts that reached the host (all of them with ``wait``)."""
        while self._pending:
            verdict = self._pending[0]
            if verdict.ready is not None and not verdict.ready.query():
                if not wait:
                    return
                verdict.ready.synchronize()
            self._pending.popleft()
            losses_ok, grads_ok = (bool(f) for f in verdict.flags)
            if losses_ok and grads_ok:
                continue
            what = "train/loss" if not losses_ok else self._bad_gradient(pl_module, verdict)
            self._act(pl_module, what, verdict.where, on_step)

    @staticmethod
    def _bad_gradient(pl_module: L.LightningModule | None, verdict: _Verdict) -> str:
        index = int((~verdict.norms.isfinite()).nonzero()[0, 0])
        param = verdict.params[index]
        names = {id(p): n for n, p in pl_module.named_parameters()} if pl_module else {}
        return f"the gradient of {names[id(param)]}" if id(param) in names else "a gradient"

    # --- both paths --------------------------------------------------------------------------
    def _act(
        self, pl_module: L.LightningModule | None, what: str, where: str, on_step: bool
    ) -> None:
        """Stop, or count the skipped step (the caller or the fused optimizer skips it)."""
        if self.action == "stop":
            raise NonFiniteError(
                f"{what} is NaN/Inf at {where}; stopping (training.nan_guard.action=stop). "
                f"{_weights_verdict(pl_module)} Lower the learning rate, clip gradients "
                "(trainer.gradient_clip_val) or check the data."
            )
        self.skipped += 1
        if self.skipped > self.max_skips:
            raise NonFiniteError(
                f"{what} is NaN/Inf at {where}: {self.skipped} optimizer steps skipped, more "
                f"than training.nan_guard.max_skips={self.max_skips}; stopping"
            )
        rank_zero_warn(
            f"{what} is NaN/Inf at {where}: optimizer step skipped "
            f"({self.skipped} of at most {self.max_skips})"
        )
        if pl_module is not None:  # Lightning allows no logging from on_train_end
            pl_module.log(
                "train/nan_skipped_steps",
                float(self.skipped),
                on_step=on_step,
                on_epoch=not on_step,
                reduce_fx="max",
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


def _clear_found_inf(optimizer: torch.optim.Optimizer) -> None:
    """Drop a verdict left on the optimizer, so no later step reads a stale one."""
    if hasattr(optimizer, "found_inf"):
        del optimizer.found_inf


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
