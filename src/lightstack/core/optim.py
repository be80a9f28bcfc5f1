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
    """Several optimizers over disjoint parameters, stepped as one optimizer.

    ``param_groups`` and ``state`` are live views of the children's, so LR schedulers, the LR
    monitor, gradient clipping and ``_optimizer_to_device`` act on the real groups and states.
    Param groups added later (``BaseFinetuning``, the freezing callbacks) go to the first child:
    ``build_optimizer`` puts AdamW there, which takes parameters of any shape, and its group 0 is
    the base LR those callbacks scale.
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        if not optimizers:
            raise ValueError("HybridOptimizer needs at least one optimizer")
        seen: set[int] = set()
        for opt in optimizers:
            ids = {id(p) for group in opt.param_groups for p in group["params"]}
            if ids & seen:
                raise ValueError("HybridOptimizer: a parameter is given to two optimizers")
            seen |= ids
        self.optimizers = list(optimizers)
        self._adopting = True  # Optimizer.__init__ re-adds the groups: they are the children's
        super().__init__(self.param_groups, defaults={})
        self._adopting = False

    @property  # type: ignore[override]
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for opt in self.optimizers for g in opt.param_groups]

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        # Optimizer.__init__ assigns an empty list before adding groups; the groups stay the
        # children's, so only that assignment is accepted.
        if value:
            raise AttributeError(
                "HybridOptimizer.param_groups is a view of its optimizers' groups; "
                "use add_param_group"
            )

    @property  # type: ignore[override]
    def state(self) -> dict[torch.Tensor, Any]:
        return {p: s for opt in self.optimizers for p, s in opt.state.items()}

    @state.setter
    def state(self, value: dict[torch.Tensor, Any]) -> None:
        if value:
            raise AttributeError("HybridOptimizer.state is a view of its optimizers' states")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if self._adopting:
            return
        self.optimizers[0].add_param_group(param_group)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.optimizers:
            opt.step()
        return loss

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        saved = state_dict.get("optimizers")
        if not isinstance(saved, list) or len(saved) != len(self.optimizers):
            names = ", ".join(type(opt).__name__ for opt in self.optimizers)
            found = len(saved) if isinstance(saved, list) else "no"
            raise ValueError(
                f"optimizer state holds {found} optimizers but this HybridOptimizer has "
                f"{len(self.optimizers)} ({names}); was it saved with another optimizer.name?"
            )
        for opt, sd in zip(self.optimizers, saved, strict=True):
            opt.load_state_dict(sd)

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__.copy()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"HybridOptimizer({', '.join(type(opt).__name__ for opt in self.optimizers)})"


def is_muon_param(name: str, param: nn.Parameter) -> bool:
    """Hidden 2-D weight matrices go to Muon; embeddings, heads, norms and biases do not."""
    lowered = name.lower()
    excluded = ("embed", "head", "norm", "pos", "token", "query", "cls")
    return param.ndim == 2 and not any(word in lowered for word in excluded)


def _trainable(named: Iterable[tuple[str, nn.Parameter]]) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in named if p.requires_grad]


def build_optimizer(
    cfg: OptimizerConfig, module: nn.Module, fused: bool = True
) -> torch.optim.Optimizer:
    """AdamW or the Muon hybrid over the trainable parameters of ``module``.

    AdamW is fused on CUDA unless ``fused=False``: Lightning refuses gradient clipping with a
    fused optimizer under mixed precision, so callers pass ``fused=not clipping``.
    """
    named = _trainable(module.named_parameters())
    fused = fused and bool(named) and all(p.is_cuda for _, p in named)
    adamw_kwargs = dict(lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
    if cfg.name == "adamw":
        return torch.optim.AdamW([p for _, p in named], fused=fused or None, **adamw_kwargs)
    muon = [p for n, p in named if is_muon_param(n, p)]
    rest = [p for n, p in named if not is_muon_param(n, p)]
    optimizers: list[torch.optim.Optimizer] = []
    if rest:  # first: new param groups (unfreezing) join AdamW
        optimizers.append(torch.optim.AdamW(rest, fused=fused or None, **adamw_kwargs))
    if muon:
        optimizers.append(torch.optim.Muon(muon, lr=cfg.muon_lr, weight_decay=cfg.weight_decay))
    if len(optimizers) == 1:
        return optimizers[0]
    return HybridOptimizer(optimizers)


class WarmupCosine:
    """LR multiplier: linear warm-up, then cosine decay to ``min_lr_ratio`` (or constant).

    An object rather than a closure: ``total_steps`` can be set below ``planned_steps`` while
    training runs (``TimeBudgetSchedule`` does so when ``trainer.max_time`` ends the run before
    the step budget), and ``LambdaLR.state_dict`` saves it, so a resumed run keeps that horizon.
    """

    def __init__(self, cfg: SchedulerConfig, total_steps: int):
        self.name = cfg.name
        self.warmup_steps = cfg.warmup_steps
        self.min_lr_ratio = cfg.min_lr_ratio
        self.planned_steps = max(1, total_steps)
        self.total_steps = self.planned_steps

    def __call__(self, step: int) -> float:
        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.name == "constant" or self.total_steps <= self.warmup_steps:
            return 1.0
        decay_steps = self.total_steps - self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine


def build_optimization(
    cfg: OptimizerConfig, module: nn.Module, total_steps: int, fused: bool = True
) -> dict[str, Any]:
    """``configure_optimizers`` return value: optimizer plus (per step) LR schedule."""
    optimizer = build_optimizer(cfg, module, fused)
    if cfg.scheduler.name == "none":
        return {"optimizer": optimizer}
    scheduler = LambdaLR(optimizer, WarmupCosine(cfg.scheduler, total_steps))
    return {
        "optimizer": optimizer,
        "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"},
    }
