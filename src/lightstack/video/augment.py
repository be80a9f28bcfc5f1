"""Batch-level video augmentation with kornia, on whatever device the batch lives on.

Every clip gets one set of random parameters shared by all of its frames (kornia's
``VideoSequential(same_on_frame=True)``); views of one action are augmented independently.
With ``severity_aware`` the chance that a clip is augmented at all depends on its offence class,
so rare classes (red cards) see more variety than the majority class.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from lightstack.core.config import Section


class AugmentConfig(Section):
    """``augment:`` section of a video run (training batches only)."""

    enabled: bool = True
    p: float = Field(1.0, ge=0.0, le=1.0, description="probability that a clip is augmented")
    hflip_p: float = Field(0.5, ge=0.0, le=1.0)
    crop_p: float = Field(0.5, ge=0.0, le=1.0)
    crop_scale: tuple[float, float] = (0.6, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    jitter_p: float = Field(0.8, ge=0.0, le=1.0)
    brightness: float = Field(0.2, ge=0.0)
    contrast: float = Field(0.2, ge=0.0)
    saturation: float = Field(0.2, ge=0.0)
    hue: float = Field(0.02, ge=0.0, le=0.5)
    rotation_p: float = Field(0.3, ge=0.0, le=1.0)
    rotation_degrees: float = Field(5.0, ge=0.0, le=180.0)
    severity_aware: bool = False
    per_class_strength: list[float] = Field(
        [1.0, 1.0, 1.0, 1.0],
        description="per offence class multiplier of p (clip augmented with min(1, p * s))",
    )

    @model_validator(mode="after")
    def _ranges(self) -> AugmentConfig:
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        if not 0.0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must satisfy 0 < low <= high, got {self.crop_ratio}")
        if not self.per_class_strength or any(s < 0 for s in self.per_class_strength):
            raise ValueError(
                f"per_class_strength must be non-empty and >= 0, got {self.per_class_strength}"
            )
        return self


class VideoAugment(nn.Module):
    """Augment ``(B, V, C, T, H, W)`` clips in ``[0, 1]``; identity in eval mode or when disabled.

    ``forward(video, offence=None, view_mask=None)``: padded views (``view_mask`` False) are left
    untouched; ``offence`` ``(B,)`` is needed when ``severity_aware`` is on.
    """

    def __init__(self, cfg: AugmentConfig):
        super().__init__()
        self.cfg = cfg
        self._pipelines: dict[tuple[int, int], K.VideoSequential] = {}
        self.register_buffer(
            "strength", torch.tensor(cfg.per_class_strength, dtype=torch.float32), False
        )

    def _pipeline(self, size: tuple[int, int]) -> K.VideoSequential:
        """The crop resizes back to the input size, so one pipeline is built per frame size."""
        if size not in self._pipelines:
            c = self.cfg
            self._pipelines[size] = K.VideoSequential(
                K.RandomHorizontalFlip(p=c.hflip_p),
                K.RandomResizedCrop(size, scale=c.crop_scale, ratio=c.crop_ratio, p=c.crop_p),
                K.ColorJitter(c.brightness, c.contrast, c.saturation, c.hue, p=c.jitter_p),
                K.RandomRotation(c.rotation_degrees, p=c.rotation_p),
                data_format="BCTHW",
                same_on_frame=True,
            )
        return self._pipelines[size]

    def sample_probability(
        self, offence: Tensor | None, batch: int, device: torch.device
    ) -> Tensor:
        """Per-sample probability ``(B,)`` that a clip of that action is augmented."""
        base = torch.full((batch,), self.cfg.p, device=device)
        if not self.cfg.severity_aware:
            return base
        if offence is None:
            raise ValueError("augment.severity_aware needs the offence labels of the batch")
        if offence.numel() and int(offence.max()) >= self.strength.numel():
            raise ValueError(
                f"augment.per_class_strength has {self.strength.numel()} entries but the batch "
                f"has offence class {int(offence.max())}"
            )
        return (base * self.strength.to(device)[offence.long()]).clamp(0.0, 1.0)

    @torch.no_grad()
    def forward(
        self, video: Tensor, offence: Tensor | None = None, view_mask: Tensor | None = None
    ) -> Tensor:
        if not (self.cfg.enabled and self.training):
            return video
        if video.ndim != 6:
            raise ValueError(f"video must be (B, V, C, T, H, W), got {tuple(video.shape)}")
        b, v = video.shape[:2]
        chosen = torch.rand(b, device=video.device) < self.sample_probability(
            offence, b, video.device
        )
        select = chosen[:, None].expand(b, v)
        if view_mask is not None:
            select = select & view_mask.bool()
        if not bool(select.any()):
            return video
        out = video.clone()
        clips = video[select]
        out[select] = self._pipeline(tuple(video.shape[-2:]))(clips).clamp_(0.0, 1.0)
        return out
