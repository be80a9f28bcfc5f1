"""Consistency model of the latent residual (Song et al. 2023), distilled from the diffusion one.

A consistency function ``f(x_t, t)`` maps any point of a probability-flow trajectory to its
clean end, so one network evaluation (or two, re-noising in between) replaces the teacher's
sampler. It is parametrised so that ``f`` is the identity at the lowest noise level:

    f(x_t, t) = c_skip(t) x_t - c_out(t) F(x_t, t)

with, for ``a = sqrt(alpha_bar_t)``, ``s = sqrt(1 - alpha_bar_t)``, ``sigma = s / a`` and data
of unit scale (``sigma_data = 1``, which the residual scaling provides), Song et al.'s
``c_skip = 1 / ((sigma - sigma_min)^2 + 1)`` and ``c_out = (sigma - sigma_min) / sqrt(1 +
sigma^2)`` written for the unscaled ``x_t``:

    c_skip(t) = a / ((s - sigma_min a)^2 + a^2),    c_out(t) = s - sigma_min a.

With ``sigma_min = 0`` this is exactly the clean-sample estimate ``a x_t - s v`` of a
v-prediction network, so the student starts as a copy of the teacher.
"""

from __future__ import annotations

import torch

from lightstack.physics.config import DiffusionConfig, SurrogateConfig
from lightstack.physics.models.diffusion import LatentCorrector


def distillation_levels(train_timesteps: int, levels: int | None) -> torch.Tensor:
    """Ascending teacher timesteps of the distillation grid, both ends included."""
    if levels is None or levels >= train_timesteps:
        return torch.arange(train_timesteps)
    return torch.linspace(0, train_timesteps - 1, levels).round().long().unique()


class ConsistencyResidual(LatentCorrector):
    """The student: one or a few consistency steps sample the scaled residual."""

    def __init__(
        self,
        model_cfg: SurrogateConfig,
        diffusion_cfg: DiffusionConfig,
        levels: int | None,
        sample_steps: int = 1,
    ):
        super().__init__(model_cfg, diffusion_cfg)
        self.sample_steps = sample_steps
        self.register_buffer(
            "levels", distillation_levels(diffusion_cfg.train_timesteps, levels), persistent=False
        )
        lowest = self.alphas_cumprod[self.levels[0]]
        self.sigma_min = float(((1 - lowest) / lowest).sqrt())

    def coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``c_skip`` and ``c_out`` at levels ``t`` (B,), shaped (B, 1, 1)."""
        alpha_bar = self.alphas_cumprod[t].view(-1, 1, 1)
        a, s = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
        gap = s - self.sigma_min * a
        return a / (gap.pow(2) + a.pow(2)), gap

    def consistency(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        tokens: torch.Tensor,
        cond: torch.Tensor,
        net: torch.nn.Module | None = None,
    ) -> torch.Tensor:
        """``f(x_t, t)``: the clean end of the trajectory through ``x_t``; ``net`` defaults to
        the student's own network (pass the EMA copy for distillation targets)."""
        skip, out = self.coefficients(t)
        return skip * x_t - out * self.denoise(x_t, t, tokens, cond, net)

    def sample_levels(self, steps: int) -> list[int]:
        """Descending grid levels visited by ``steps``-step sampling (the highest first)."""
        top = len(self.levels) - 1
        index = torch.linspace(top, 0, steps + 1).round().long()[:-1]
        return [int(self.levels[i]) for i in index]

    def sample_residual(
        self,
        tokens: torch.Tensor,
        cond: torch.Tensor,
        steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Multistep consistency sampling (Song et al., Algorithm 1); ``steps`` defaults to the
        ``sample_steps`` the student was built with."""
        steps = steps or self.sample_steps
        if steps > len(self.levels):
            raise ValueError(
                f"{steps} consistency steps exceed the {len(self.levels)} levels of the grid"
            )
        batch = torch.empty(tokens.shape[0], dtype=torch.long, device=tokens.device)
        x0 = None
        for level in self.sample_levels(steps):
            noise = self.residual_noise(tokens, generator)
            t = batch.fill_(level)
            # The top level is (all but) pure noise, as in the teacher's sampler.
            x_t = noise if x0 is None else self.scheduler.add_noise(x0, noise, t)
            x0 = self.consistency(x_t, t, tokens, cond)
        return x0
