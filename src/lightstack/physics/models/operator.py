"""Latent operator: advances latent tokens by one time step with a residual update."""

from __future__ import annotations

import torch
from torch import nn

from lightstack.physics.models.layers import Block


class LatentOperator(nn.Module):
    """``z_{t+1} = z_t + F(z_t, c)``: adaLN-conditioned transformer blocks over latent tokens.

    The conditioning ``c`` is the time step and the PDE parameters, embedded by a small MLP.
    The output projection starts at zero, so an untrained operator is the identity
    (persistence) and learns the change from there.
    """

    def __init__(
        self, width: int, heads: int, depth: int, mlp_ratio: float, dropout: float, n_cond: int
    ):
        super().__init__()
        self.cond = nn.Sequential(nn.Linear(n_cond, width), nn.SiLU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList(
            Block(width, heads, mlp_ratio, dropout, cond_dim=width) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, width)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        c = self.cond(cond)
        h = z
        for block in self.blocks:
            h = block(h, c)
        return z + self.out(self.norm(h))
