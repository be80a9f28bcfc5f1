"""Encoder: a field on a regular grid -> a fixed number of latent tokens (one per patch)."""

from __future__ import annotations

import math

import torch
from torch import nn

from lightstack.physics.models.layers import Block, FourierFeatures


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """``(B, *S, C)`` -> ``(B, prod(S / patch), patch^d * C)``, patches in row-major order."""
    b, *spatial, c = x.shape
    d = len(spatial)
    split = [b]
    for n in spatial:
        split += [n // patch, patch]
    x = x.reshape(*split, c)
    outer = [1 + 2 * i for i in range(d)]
    inner = [2 + 2 * i for i in range(d)]
    x = x.permute(0, *outer, *inner, 2 * d + 1)
    return x.reshape(b, math.prod(n // patch for n in spatial), patch**d * c)


def patch_centres(grid: torch.Tensor, patch: int) -> torch.Tensor:
    """Coordinates ``(B, *S, d)`` -> the centre of every patch ``(B, N, d)``."""
    return patchify(grid, patch).unflatten(-1, (-1, grid.shape[-1])).mean(dim=2)


class PatchEncoder(nn.Module):
    """Linear patch embedding + Fourier position of the patch centre + transformer blocks."""

    def __init__(
        self,
        channels: int,
        dims: int,
        width: int,
        heads: int,
        patch: int,
        depth: int,
        mlp_ratio: float,
        dropout: float,
        octaves: int,
    ):
        super().__init__()
        self.patch = patch
        self.embed = nn.Linear(patch**dims * channels, width)
        self.position = FourierFeatures(dims, octaves)
        self.pos_proj = nn.Linear(self.position.out_dim, width)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width)

    def forward(self, u: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """``u`` (B, *S, C) normalised field, ``grid`` (B, *S, d) -> tokens (B, N, width)."""
        centres = patch_centres(grid, self.patch)
        z = self.embed(patchify(u, self.patch)) + self.pos_proj(self.position(centres))
        for block in self.blocks:
            z = block(z)
        return self.norm(z)
