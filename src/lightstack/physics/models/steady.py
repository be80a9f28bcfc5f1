"""Steady-state prior: coefficient field -> latent tokens -> latent of the solution -> any point.

Built from the surrogate family's parts (patch encoder, adaLN transformer blocks, any-point
decoder) for problems with no time axis, such as Darcy flow (``-div(a grad u) = f``): encode
``a(x)``, map its tokens to the tokens of ``u`` and decode ``u`` wherever asked. Normalisation
statistics of both fields are buffers, so the ``state_dict`` alone reproduces the model.
"""

from __future__ import annotations

import torch
from torch import nn

from lightstack.physics.config import SteadyConfig, SurrogateConfig
from lightstack.physics.models.encoder import patch_centres
from lightstack.physics.models.layers import Block
from lightstack.physics.models.parts import patch_encoder, point_decoder, register_statistics

COEFFICIENT_CHANNELS = 1  # PDEBench Darcy stores one coefficient field ``nu``


class SteadyPrior(nn.Module):
    def __init__(self, cfg: SurrogateConfig, steady: SteadyConfig):
        super().__init__()
        cfg.check_data_shapes()
        self.cfg = cfg
        self.encoder = patch_encoder(cfg, COEFFICIENT_CHANNELS)
        self.params = None
        if cfg.n_params:
            self.params = nn.Sequential(
                nn.Linear(cfg.n_params, cfg.width), nn.SiLU(), nn.Linear(cfg.width, cfg.width)
            )
        cond_dim = cfg.width if cfg.n_params else 0
        self.blocks = nn.ModuleList(
            Block(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.dropout, cond_dim=cond_dim)
            for _ in range(steady.depth)
        )
        self.norm = nn.LayerNorm(cfg.width)
        self.decoder = point_decoder(cfg)
        register_statistics(self, COEFFICIENT_CHANNELS, prefix="in_")
        register_statistics(self, cfg.channels)

    def set_normalization(
        self, coefficient: tuple[torch.Tensor, torch.Tensor], solution: tuple[torch.Tensor, ...]
    ) -> None:
        """Per-channel (mean, std) of the coefficient field and of the solution."""
        self.in_mean.copy_(coefficient[0])
        self.in_std.copy_(coefficient[1])
        self.mean.copy_(solution[0])
        self.std.copy_(solution[1])

    def encode(self, a: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """Coefficient ``a`` (B, *S, 1) on ``grid`` (B, *S, d) -> tokens (B, N, width)."""
        return self.encoder((a - self.in_mean) / self.in_std, grid)

    def map(self, z: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Tokens of the coefficient -> tokens of the solution."""
        c = self.params(params) if self.params is not None else None
        for block in self.blocks:
            z = block(z, c)
        return self.norm(z)

    def token_centres(self, grid: torch.Tensor) -> torch.Tensor:
        return patch_centres(grid, self.cfg.patch_size)

    def decode(self, z: torch.Tensor, coords: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """Solution values (B, Q, C) at any coordinates ``coords`` (B, Q, d)."""
        return self.decoder(z, coords, centres) * self.std + self.mean

    def forward(self, a: torch.Tensor, grid: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """The solution on ``grid``: (B, *S, C)."""
        z = self.map(self.encode(a, grid), params)
        values = self.decode(z, grid.flatten(1, -2), self.token_centres(grid))
        return values.view(*grid.shape[:-1], -1)
