"""Losses for the two video tasks (action type, offence/severity): cross-entropy, class-weighted
cross-entropy and multi-class focal loss, with class weights from training-set counts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from lightstack.core.config import Section

WeightScheme = Literal["none", "inverse", "effective_number"]


class TaskWeights(Section):
    action: float = Field(1.0, ge=0.0)
    offence: float = Field(1.0, ge=0.0)


class LossConfig(Section):
    """``loss:`` section of a video run."""

    kind: Literal["ce", "weighted_ce", "focal"] = "ce"
    class_weights: WeightScheme = "none"
    effective_beta: float = Field(0.999, ge=0.0, lt=1.0)
    focal_gamma: float = Field(2.0, ge=0.0)
    focal_alpha: float | list[float] | None = Field(
        None, description="focal class factor: one number for all classes or one per class"
    )
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    task_weights: TaskWeights = TaskWeights()

    @model_validator(mode="after")
    def _consistent(self) -> LossConfig:
        if self.kind == "weighted_ce" and self.class_weights == "none":
            raise ValueError(
                "kind 'weighted_ce' needs class_weights 'inverse' or 'effective_number'"
            )
        if self.kind == "ce" and self.class_weights != "none":
            raise ValueError(
                f"kind 'ce' takes no class weights (got class_weights={self.class_weights!r}); "
                "use kind 'weighted_ce'"
            )
        if self.kind != "focal" and self.focal_alpha is not None:
            raise ValueError("focal_alpha is only used by kind 'focal'")
        return self


def class_weights_from_counts(
    counts: Sequence[int] | Tensor, scheme: WeightScheme, beta: float = 0.999
) -> Tensor | None:
    """Per-class weights normalised to mean 1 (``None`` for scheme ``"none"``).

    ``inverse``: ``1 / n_c``. ``effective_number`` (Cui et al. 2019, "Class-Balanced Loss Based on
    Effective Number of Samples"): ``(1 - beta) / (1 - beta ** n_c)``. Classes with no samples are
    counted as one sample so their weight stays finite.
    """
    if scheme == "none":
        return None
    n = torch.as_tensor(counts, dtype=torch.float64)
    if n.ndim != 1 or n.numel() < 2 or bool((n < 0).any()):
        raise ValueError(
            f"class counts must be a 1-D list of >= 2 non-negative numbers, got {counts}"
        )
    n = n.clamp_min(1.0)
    if scheme == "inverse":
        w = 1.0 / n
    elif scheme == "effective_number":
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"effective_beta must be in [0, 1), got {beta}")
        w = (1.0 - beta) / (1.0 - torch.pow(beta, n))
    else:
        raise ValueError(f"unknown class weight scheme {scheme!r}")
    return (w * (len(w) / w.sum())).float()


class FocalLoss(nn.Module):
    """Multi-class softmax focal loss (Lin et al. 2017).

    Per sample: ``-sum_c q_c * alpha_c * w_c * (1 - p_c) ** gamma * log p_c`` with ``q`` the
    (optionally label-smoothed) one-hot target, ``alpha`` the focal class factor and ``w`` the
    class weights. The mean is normalised by ``sum_i w_{y_i}`` exactly as
    ``F.cross_entropy(weight=w)`` does, so ``gamma=0`` without ``alpha`` is cross-entropy.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | None = None,
        weight: Tensor | None = None,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        self.gamma = gamma
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight).float())
        self.register_buffer("alpha", None if alpha is None else torch.as_tensor(alpha).float())

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        num_classes = logits.shape[-1]
        for name, vec in (("alpha", self.alpha), ("weight", self.weight)):
            if vec is not None and vec.ndim == 1 and vec.numel() != num_classes:
                raise ValueError(
                    f"focal {name} has {vec.numel()} entries but the logits have "
                    f"{num_classes} classes"
                )
        log_p = F.log_softmax(logits.float(), dim=-1)
        q = F.one_hot(target, num_classes).float()
        if self.label_smoothing:
            q = q * (1.0 - self.label_smoothing) + self.label_smoothing / num_classes
        per_class = -q * log_p
        if self.gamma:
            per_class = per_class * (1.0 - log_p.exp()).pow(self.gamma)
        if self.alpha is not None:
            per_class = per_class * self.alpha
        if self.weight is None:
            return per_class.sum(dim=-1).mean()
        return (per_class * self.weight).sum() / self.weight[target].sum()


def _criterion(cfg: LossConfig, counts: Sequence[int] | Tensor | None, task: str) -> nn.Module:
    weight = None
    if cfg.class_weights != "none":
        if counts is None:
            raise ValueError(
                f"loss.class_weights={cfg.class_weights!r} needs the {task} class counts of the "
                "training set"
            )
        weight = class_weights_from_counts(counts, cfg.class_weights, cfg.effective_beta)
    if cfg.kind == "focal":
        return FocalLoss(cfg.focal_gamma, cfg.focal_alpha, weight, cfg.label_smoothing)
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)


class MultiTaskLoss(nn.Module):
    """Weighted sum of the action and offence losses.

    ``forward(outputs, batch)`` reads ``outputs["action"]``/``outputs["offence"]`` logits and
    ``batch["action"]``/``batch["offence"]`` targets and returns
    ``(total, {"action": loss, "offence": loss})``.
    """

    tasks = ("action", "offence")

    def __init__(
        self,
        cfg: LossConfig,
        action_counts: Sequence[int] | Tensor | None = None,
        offence_counts: Sequence[int] | Tensor | None = None,
    ):
        super().__init__()
        self.cfg = cfg
        self.criteria = nn.ModuleDict(
            {
                "action": _criterion(cfg, action_counts, "action"),
                "offence": _criterion(cfg, offence_counts, "offence"),
            }
        )
        self.task_weights = {"action": cfg.task_weights.action, "offence": cfg.task_weights.offence}

    def forward(
        self, outputs: dict[str, Tensor], batch: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        parts = {
            task: self.criteria[task](outputs[task].float(), batch[task]) for task in self.tasks
        }
        total = sum(self.task_weights[t] * parts[t] for t in self.tasks)
        return total, parts
