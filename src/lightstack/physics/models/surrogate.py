"""The latent surrogate: encoder -> latent operator -> any-point decoder, in physical units.

Fields go in and come out in physical units: per-channel normalisation statistics are buffers
of the module, so a plain ``state_dict`` reproduces the trained model with no Lightning and no
data set at hand. The encoder takes the last ``initial_step`` snapshots stacked on channels
(``models.history``); the latent state then stands for that whole history, and the operator
advances it in latent space as it does a single snapshot's.
"""

from __future__ import annotations

import torch

from lightstack.physics.config import SurrogateConfig
from lightstack.physics.models.encoder import patch_centres
from lightstack.physics.models.operator import LatentOperator
from lightstack.physics.models.parts import (
    HistoryModel,
    block_settings,
    patch_encoder,
    point_decoder,
)
from lightstack.physics.models.rollout import latent_rollout


class LatentSurrogate(HistoryModel):
    def __init__(self, cfg: SurrogateConfig):
        cfg.check_data_shapes()
        super().__init__(cfg.channels, cfg.initial_step)
        self.cfg = cfg
        self.encoder = patch_encoder(cfg, cfg.channels * cfg.initial_step)
        self.operator = LatentOperator(
            depth=cfg.operator_depth, n_cond=1 + cfg.n_params, **block_settings(cfg)
        )
        self.decoder = point_decoder(cfg)

    # --- the three parts, in physical units at the edges -----------------------------------
    def encode(self, u: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """``u`` (B, *S, initial_step * C) history, ``grid`` (B, *S, d) -> tokens (B, N, width)."""
        return self.encoder(self.normalise_history(u), grid)

    def step(self, z: torch.Tensor, dt: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """One latent time step; ``dt`` (B,), ``params`` (B, n_params)."""
        return self.operator(z, torch.cat([dt[:, None], params], dim=-1))

    def token_centres(self, grid: torch.Tensor) -> torch.Tensor:
        """Where each latent token sits: the centre of its patch of ``grid`` (B, *S, d)."""
        return patch_centres(grid, self.cfg.patch_size)

    def decode(self, z: torch.Tensor, coords: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """Field values (B, Q, C) at any coordinates ``coords`` (B, Q, d).

        ``centres`` (B, N, d) are the token positions, from ``token_centres`` of the grid the
        field was encoded on.
        """
        return self.decoder(z, coords, centres) * self.std + self.mean

    def decode_grid(self, z: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """Decode on the grid the field was encoded on (B, *S, d) -> (B, *S, C)."""
        values = self.decode(z, grid.flatten(1, -2), self.token_centres(grid))
        return values.view(*grid.shape[:-1], -1)

    # --- whole-field conveniences -------------------------------------------------------------
    def anchor(self, u: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
        """What ``model.predict_increment`` adds to every decoded prediction: the last snapshot
        of the history ``u`` (B, *S, K * C) minus its decoding ``decoded`` (B, *S, C), so a
        prediction is ``u_t + D(z_t+k) - D(z_t)``."""
        return u[..., -decoded.shape[-1] :] - decoded

    def forward(
        self, u: torch.Tensor, grid: torch.Tensor, dt: torch.Tensor, params: torch.Tensor
    ) -> torch.Tensor:
        """One-step prediction on the grid: history ``u`` up to ``t`` -> ``u(t + dt)``."""
        z = self.encode(u, grid)
        pred = self.decode_grid(self.step(z, dt, params), grid)
        if self.cfg.predict_increment:
            pred = pred + self.anchor(u, self.decode_grid(z, grid))
        return pred

    def rollout(
        self,
        u0: torch.Tensor,
        grid: torch.Tensor,
        dt: torch.Tensor,
        params: torch.Tensor,
        steps: int,
    ) -> torch.Tensor:
        """Autoregressive rollout in latent space from the history ``u0`` (B, *S, K * C),
        decoded every step: (B, steps, *S, C)."""
        return latent_rollout(self, u0, grid, lambda z: self.step(z, dt, params), steps)
