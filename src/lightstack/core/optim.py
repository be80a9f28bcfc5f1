"""Optimizers and LR schedules built from ``OptimizerConfig``.

``build_optimization`` returns what ``LightningModule.configure_optimizers`` returns. The Muon
hybrid puts 2-D weight matrices of hidden layers under ``torch.optim.Muon`` and everything else
(embeddings, heads, norms, biases) under AdamW, stepping both as one optimizer so Lightning's
automatic optimization, accumulation and clipping work unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from lightstack.core.config import OptimizerConfig, SchedulerConfig


class HybridOptimizer(torch.optim.Optimizer):
    """Several optimizers stepped together; ``param_groups`` is the union of theirs.

    Lightning (LR monitor, schedulers, ``BaseFinetuning``) sees one optimizer whose groups keep
    their own LR.
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        self.optimizers = optimizers
        self.defaults: dict[str, Any] = {}
        self.state = {}  # type: ignore[assignment]
        self._optimizer_step_pre_hooks = {}  # type: ignore[assignment]
        self._optimizer_step_post_hooks = {}  # type: ignore[assignment]

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return [g for opt in self.optimizers for g in opt.param_groups]

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.optimizers[-1].add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.optimizers:
            opt.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        for opt, sd in zip(self.optimizers, state_dict["optimizers"], strict=True):
            opt.load_state_dict(sd)


def is_muon_param(name: str, param: nn.Parameter) -> bool:
    """Hidden 2-D weight matrices go to Muon; embeddings, heads, norms and biases do not."""
    lowered = name.lower()
    excluded = ("embed", "head", "norm", "pos", "token", "query", "cls")
    return param.ndim == 2 and not any(word in lowered for word in excluded)


def _trainable(named: Iterable[tuple[str, nn.Parameter]]) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in named if p.requires_grad]


def build_optimizer(cfg: OptimizerConfig, module: nn.Module) -> torch.optim.Optimizer:
    named = _trainable(module.named_parameters())
    fused = bool(named) and all(p.is_cuda for _, p in named)
    adamw_kwargs = dict(lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
    if cfg.name == "adamw":
        return torch.optim.AdamW([p for _, p in named], fused=fused or None, **adamw_kwargs)
    muon = [p for n, p in named if is_muon_param(n, p)]
    rest = [p for n, p in named if not is_muon_param(n, p)]
    optimizers: list[torch.optim.Optimizer] = []
    if muon:
        optimizers.append(torch.optim.Muon(muon, lr=cfg.muon_lr, weight_decay=cfg.weight_decay))
    if rest:
        optimizers.append(torch.optim.AdamW(rest, fused=fused or None, **adamw_kwargs))
    return HybridOptimizer(optimizers)


def lr_lambda(cfg: SchedulerConfig, total_steps: int) -> Callable[[int], float]:
    """Linear warm-up then cosine decay to ``min_lr_ratio`` (or constant) as a multiplier."""

    def factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.name == "constant" or total_steps <= cfg.warmup_steps:
            return 1.0
        progress = min(1.0, (step - cfg.warmup_steps) / (total_steps - cfg.warmup_steps))
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cosine

    return factor


def build_optimization(cfg: OptimizerConfig, module: nn.Module, total_steps: int) -> dict[str, Any]:
    """``configure_optimizers`` return value: optimizer plus (per step) LR schedule."""
    optimizer = build_optimizer(cfg, module)
    if cfg.scheduler.name == "none":
        return {"optimizer": optimizer}
    scheduler = LambdaLR(optimizer, lr_lambda(cfg.scheduler, max(1, total_steps)))
    return {
        "optimizer": optimizer,
        "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"},
    }
