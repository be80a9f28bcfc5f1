"""Building blocks shared by the encoder, latent operator and decoder."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class FourierFeatures(nn.Module):
    """``[x, sin(2^k pi x), cos(2^k pi x)]`` for k < ``octaves``: coordinates -> smooth features."""

    def __init__(self, dims: int, octaves: int):
        super().__init__()
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(octaves), persistent=False)
        self.out_dim = dims * (1 + 2 * octaves)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = x.unsqueeze(-1) * self.freqs  # (..., d, octaves)
        feats = torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)
        return torch.cat([x, feats], dim=-1)


class Mlp(nn.Sequential):
    def __init__(self, width: int, ratio: float, dropout: float = 0.0, out: int | None = None):
        hidden = int(width * ratio)
        super().__init__(
            nn.Linear(width, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out or width),
        )


class Attention(nn.Module):
    """Multi-head attention on ``scaled_dot_product_attention`` (fused kernels where available)."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``bias`` (broadcastable to (B, heads, N_x, N_context)) is added to the logits."""
        context = x if context is None else context
        b, n, w = x.shape
        q = self.q(x).view(b, n, self.heads, -1).transpose(1, 2)
        k, v = self.kv(context).view(b, context.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=drop)
        return self.out(y.transpose(1, 2).reshape(b, n, w))


class Block(nn.Module):
    """Pre-norm transformer block; with ``cond_dim`` its norms are adaptive (adaLN-Zero).

    adaLN-Zero (DiT) regresses scale, shift and a residual gate from the conditioning vector;
    the gates start at zero so every block starts as the identity, which keeps long latent
    rollouts stable early in training.
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float, cond_dim: int = 0):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=cond_dim == 0)
        self.attn = Attention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=cond_dim == 0)
        self.mlp = Mlp(width, mlp_ratio, dropout)
        self.modulation = None
        if cond_dim:
            self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 6 * width))
            nn.init.zeros_(self.modulation[1].weight)
            nn.init.zeros_(self.modulation[1].bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if self.modulation is None:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        s1, b1, g1, s2, b2, g2 = self.modulation(cond).unsqueeze(1).chunk(6, dim=-1)
        x = x + g1 * self.attn(self.norm1(x) * (1 + s1) + b1)
        return x + g2 * self.mlp(self.norm2(x) * (1 + s2) + b2)


class CrossBlock(nn.Module):
    """Queries attend to a context (latent tokens), then a pre-norm MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.norm_q = nn.LayerNorm(width)
        self.norm_ctx = nn.LayerNorm(width)
        self.attn = Attention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = Mlp(width, mlp_ratio, dropout)

    def forward(
        self, q: torch.Tensor, context: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        q = q + self.attn(self.norm_q(q), self.norm_ctx(context), bias)
        return q + self.mlp(self.norm2(q))
