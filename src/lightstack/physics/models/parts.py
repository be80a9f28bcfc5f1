"""What the surrogate family's models share: the encoder and decoder built from a
``SurrogateConfig``, and per-channel normalisation statistics kept as buffers (so a plain
``state_dict`` reproduces a trained model with no data set at hand)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lightstack.physics.config import SurrogateConfig
from lightstack.physics.models.decoder import PointDecoder
from lightstack.physics.models.encoder import PatchEncoder


def block_settings(cfg: SurrogateConfig) -> dict[str, Any]:
    """The transformer settings every part of a model takes from ``cfg``."""
    return dict(width=cfg.width, heads=cfg.heads, mlp_ratio=cfg.mlp_ratio, dropout=cfg.dropout)


def patch_encoder(cfg: SurrogateConfig, channels: int) -> PatchEncoder:
    """The encoder of a field of ``channels`` channels on ``cfg``'s grid into latent tokens."""
    return PatchEncoder(
        channels,
        len(cfg.spatial_shape),
        patch=cfg.patch_size,
        depth=cfg.encoder_depth,
        octaves=cfg.octaves,
        **block_settings(cfg),
    )


def point_decoder(cfg: SurrogateConfig) -> PointDecoder:
    """The decoder of latent tokens into ``cfg.channels`` field values at any point."""
    return PointDecoder(
        cfg.channels,
        len(cfg.spatial_shape),
        depth=cfg.decoder_depth,
        octaves=cfg.octaves,
        **block_settings(cfg),
    )


def register_statistics(module: nn.Module, channels: int, prefix: str = "") -> None:
    """Buffers ``<prefix>mean`` (zeros) and ``<prefix>std`` (ones) of ``channels`` channels."""
    module.register_buffer(f"{prefix}mean", torch.zeros(channels))
    module.register_buffer(f"{prefix}std", torch.ones(channels))


class HistoryModel(nn.Module):
    """A one-step model whose input is a history of ``initial_step`` snapshots of ``channels``
    channels stacked on channels (``models.history``), in physical units; ``mean`` and ``std``
    are the per-channel statistics of the field."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, channels: int, initial_step: int):
        super().__init__()
        self.initial_step = initial_step
        register_statistics(self, channels)

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean)
        self.std.copy_(std)

    def normalise_history(self, u: torch.Tensor) -> torch.Tensor:
        """A history (B, *S, K * C) in normalised units."""
        k = self.initial_step
        return (u - self.mean.repeat(k)) / self.std.repeat(k)
