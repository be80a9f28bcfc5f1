"""Any-point decoder: query coordinates cross-attend to latent tokens -> field values there."""

from __future__ import annotations

import torch
from torch import nn

from lightstack.physics.models.layers import CrossBlock, FourierFeatures


class PointDecoder(nn.Module):
    """Decode latent tokens at arbitrary coordinates (on or off the training grid).

    Every latent token stands for one patch of the domain. A learned, per-head locality bias
    ``-exp(s_h) * |x_q - c_n|^2 / h^2`` (``c_n`` the patch centre, ``h`` the token spacing) is
    added to the attention logits, so a query starts by looking at the tokens around it and
    each head learns how far to look. Without it the decoder has to discover locality from
    content alone, which costs most of a short CPU training run.
    """

    def __init__(
        self,
        channels: int,
        dims: int,
        width: int,
        heads: int,
        depth: int,
        mlp_ratio: float,
        dropout: float,
        octaves: int,
    ):
        super().__init__()
        self.position = FourierFeatures(dims, octaves)
        self.query = nn.Sequential(
            nn.Linear(self.position.out_dim, width), nn.GELU(), nn.Linear(width, width)
        )
        self.blocks = nn.ModuleList(
            CrossBlock(width, heads, mlp_ratio, dropout) for _ in range(depth)
        )
        self.log_locality = nn.Parameter(torch.linspace(-3.0, 0.0, heads))
        self.head = nn.Sequential(
            nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(), nn.Linear(width, channels)
        )

    def locality_bias(self, coords: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """Attention logit bias (B, heads, Q, N) from squared query-to-token distances."""
        spacing = (centres.amax(dim=1) - centres.amin(dim=1)).amax(dim=-1) / max(
            centres.shape[1] ** (1 / centres.shape[-1]) - 1, 1
        )
        # float32: cdist has no bf16 kernel on the CPU, and squared distances want the precision
        dist2 = torch.cdist(coords.float(), centres.float()).pow(2)
        dist2 = dist2 / spacing.float().clamp_min(1e-6).pow(2)[:, None, None]
        return -self.log_locality.exp()[None, :, None, None] * dist2[:, None]

    def forward(self, z: torch.Tensor, coords: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """``z`` (B, N, width) tokens centred at ``centres`` (B, N, d); ``coords`` (B, Q, d)."""
        bias = self.locality_bias(coords, centres).to(z.dtype)
        q = self.query(self.position(coords))
        for block in self.blocks:
            q = block(q, z, bias)
        return self.head(q)
