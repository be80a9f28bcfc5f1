"""Latent diffusion residual: a denoiser over latent tokens and the corrector built on it.

The frozen latent surrogate predicts ``z_pred = step(z_t)``; a corrector adds a residual
``r ~ encode(u_{t+1}) - z_pred`` sampled from a conditional diffusion model. The network is
ours; the noise schedule and the sampler are ``diffusers``' (imported inside functions, so
``import lightstack`` stays fast). Residuals are tiny next to the latents, so they are divided
by their per-channel RMS (buffer ``residual_std``) before diffusion: the schedules assume data
of unit scale.

At a level with no signal left (the refiner schedule's top level, beta 1) the network sees
zeros instead of the noisy sample (``LatentCorrector.denoise``), in training and in sampling:
the noise there says nothing about the residual, and without it that level is a deterministic
regression of the residual's conditional mean, as PDE-Refiner's first step is. The sample
itself is still the noise, so samplers and the probability-flow ODE step from it to the next
level as usual, and the lower levels refine the estimate.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from lightstack.physics.config import DiffusionConfig, SurrogateConfig
from lightstack.physics.models.layers import Block
from lightstack.physics.models.rollout import latent_rollout
from lightstack.physics.models.surrogate import LatentSurrogate


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding (B, dim) of (possibly fractional) timesteps ``t`` (B,)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class ResidualDenoiser(nn.Module):
    """Transformer over latent tokens that denoises a residual.

    Each token sees its noisy residual beside its context: the latent state before the step
    and the operator's prediction after it (concatenated, as PDE-Refiner concatenates input
    and noisy target). Every block is adaLN-conditioned on the noise level, the time step and
    the PDE parameters. The output layer starts at zero.
    """

    def __init__(
        self,
        latent_width: int,
        n_cond: int,
        width: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
        timestep_scale: float,
    ):
        super().__init__()
        self.timestep_scale = timestep_scale
        self.token_norm = nn.LayerNorm(latent_width)
        self.embed = nn.Linear(3 * latent_width, width)
        self.noise_embed = nn.Sequential(
            nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width)
        )
        self.cond_embed = nn.Sequential(
            nn.Linear(n_cond, width), nn.SiLU(), nn.Linear(width, width)
        )
        self.blocks = nn.ModuleList(
            Block(width, heads, mlp_ratio, 0.0, cond_dim=width) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, latent_width)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor, cond: torch.Tensor
    ) -> torch.Tensor:
        """``x`` noisy residual (B, N, W), ``t`` timesteps (B,), ``tokens`` context (B, N, 2W)
        from ``LatentCorrector.context``, ``cond`` time step and PDE parameters (B, n_cond)."""
        context = self.token_norm(tokens.unflatten(-1, (2, -1))).flatten(-2)
        h = self.embed(torch.cat([x, context], dim=-1))
        noise = timestep_embedding(t * self.timestep_scale, self.noise_embed[0].in_features)
        c = self.noise_embed(noise.to(h.dtype)) + self.cond_embed(cond)
        for block in self.blocks:
            h = block(h, c)
        return self.out(self.norm(h))


def make_scheduler(cfg: DiffusionConfig) -> Any:
    """The training noise schedule: a ``diffusers.DDPMScheduler``.

    ``refiner`` (PDE-Refiner): betas ``v^(k/K)`` for k = K..0 with ``v = min_noise_std**2``, so
    the lowest level has noise variance ``v`` and the highest is pure noise (beta 1).
    """
    from diffusers import DDPMScheduler

    common = dict(
        num_train_timesteps=cfg.train_timesteps,
        prediction_type=cfg.prediction,
        clip_sample=False,
        timestep_spacing="trailing",
    )
    if cfg.schedule == "refiner":
        k = cfg.train_timesteps - 1
        variance = cfg.min_noise_std**2
        betas = [variance ** (i / k) for i in reversed(range(k + 1))]
        return DDPMScheduler(trained_betas=betas, **common)
    return DDPMScheduler(beta_schedule="squaredcos_cap_v2", **common)


def _per_sample(values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``values[t]`` shaped (B, 1, 1) to broadcast over tokens and channels."""
    return values[t].view(-1, 1, 1)


class LatentCorrector(nn.Module):
    """A latent surrogate whose every latent step is corrected by a sampled residual.

    Subclasses say how the (scaled) residual is sampled: ``DiffusionResidual`` with a
    ``diffusers`` sampler, ``ConsistencyResidual`` in one or a few consistency steps.
    """

    def __init__(self, model_cfg: SurrogateConfig, diffusion_cfg: DiffusionConfig):
        super().__init__()
        self.diffusion_cfg = diffusion_cfg
        self.surrogate = LatentSurrogate(model_cfg)
        self.denoiser = ResidualDenoiser(
            model_cfg.width,
            1 + model_cfg.n_params,
            diffusion_cfg.width,
            diffusion_cfg.depth,
            diffusion_cfg.heads,
            diffusion_cfg.mlp_ratio,
            timestep_scale=1000.0 / diffusion_cfg.train_timesteps,
        )
        self.register_buffer("residual_std", torch.ones(model_cfg.width))
        self.scheduler = make_scheduler(diffusion_cfg)
        self.register_buffer(
            "alphas_cumprod", self.scheduler.alphas_cumprod.clone().float(), persistent=False
        )

    @property
    def initial_step(self) -> int:
        """Input snapshots per prediction, the surrogate's (1: the correctors' stages refuse a
        longer history, ``config.HISTORY_STAGES``)."""
        return self.surrogate.initial_step

    # --- residuals ---------------------------------------------------------------------------
    @staticmethod
    def context(z_in: torch.Tensor, z_pred: torch.Tensor) -> torch.Tensor:
        """What the denoiser sees of a step (B, N, 2W): the latent before it and the operator's
        prediction after it."""
        return torch.cat([z_in, z_pred], dim=-1)

    @staticmethod
    def conditioning(dt: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """The operator's own conditioning: time step and PDE parameters (B, 1 + n_params)."""
        return torch.cat([dt[:, None], params], dim=-1)

    def latent_pairs(
        self, fields: torch.Tensor, grid: torch.Tensor, dt: torch.Tensor, params: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every consecutive pair of snapshots of ``fields`` (B, T, *S, C), teacher-forced:
        see ``pairs_from_latents``."""
        b, t = fields.shape[:2]
        z = self.surrogate.encode(fields.flatten(0, 1), grid.repeat_interleave(t, dim=0))
        return self.pairs_from_latents(z.unflatten(0, (b, t)), dt, params)

    def pairs_from_latents(
        self, z: torch.Tensor, dt: torch.Tensor, params: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every consecutive pair of latent states ``z`` (B, T, N, W): denoiser context,
        operator prediction ``step(z_t)``, target ``z_{t+1}`` and conditioning, each with
        B * (T - 1) rows."""
        steps = z.shape[1] - 1
        dt = dt.repeat_interleave(steps)
        params = params.repeat_interleave(steps, dim=0)
        z_in = z[:, :-1].flatten(0, 1)
        z_pred = self.surrogate.step(z_in, dt, params)
        return (
            self.context(z_in, z_pred),
            z_pred,
            z[:, 1:].flatten(0, 1),
            self.conditioning(dt, params),
        )

    def scale(self, residual: torch.Tensor) -> torch.Tensor:
        return residual / self.residual_std

    def denoise(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        tokens: torch.Tensor,
        cond: torch.Tensor,
        net: nn.Module | None = None,
    ) -> torch.Tensor:
        """The network's output (v or epsilon) for samples ``x_t`` at levels ``t`` (B,); where a
        level has no signal left the network sees zeros instead of ``x_t``. ``net`` defaults to
        ``self.denoiser`` (the consistency student passes its EMA copy)."""
        has_signal = _per_sample(self.alphas_cumprod, t) > 0
        seen = torch.where(has_signal, x_t, torch.zeros_like(x_t))
        return (net or self.denoiser)(seen, t, tokens, cond).to(x_t.dtype)

    def predict_clean(
        self, x_t: torch.Tensor, t: torch.Tensor, output: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The clean sample and the noise implied by the network ``output`` at levels ``t``."""
        a = _per_sample(self.alphas_cumprod, t).sqrt()
        s = (1 - _per_sample(self.alphas_cumprod, t)).sqrt()
        if self.diffusion_cfg.prediction == "v_prediction":
            return a * x_t - s * output, a * output + s * x_t
        return (x_t - s * output) / a, output

    # --- correction --------------------------------------------------------------------------
    def residual_noise(
        self, tokens: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Standard normal noise shaped like the residual of the context ``tokens`` (B, N, 2W):
        (B, N, W). Every sampler starts from it; the consistency student also re-noises with it."""
        shape = (*tokens.shape[:-1], tokens.shape[-1] // 2)
        return torch.randn(shape, generator=generator, device=tokens.device, dtype=tokens.dtype)

    def sample_residual(
        self,
        tokens: torch.Tensor,
        cond: torch.Tensor,
        steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """A scaled residual (B, N, W) for the context ``tokens`` of a step."""
        raise NotImplementedError

    def correct(
        self,
        z_in: torch.Tensor,
        z_pred: torch.Tensor,
        cond: torch.Tensor,
        steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The operator's prediction ``z_pred = step(z_in)`` plus a sampled residual."""
        residual = self.sample_residual(self.context(z_in, z_pred), cond, steps, generator)
        return z_pred + residual * self.residual_std

    def forward(
        self,
        u: torch.Tensor,
        grid: torch.Tensor,
        dt: torch.Tensor,
        params: torch.Tensor,
        steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Corrected one-step prediction ``u(t) -> u(t + dt)`` on the grid."""
        z_in = self.surrogate.encode(u, grid)
        z_pred = self.surrogate.step(z_in, dt, params)
        z = self.correct(z_in, z_pred, self.conditioning(dt, params), steps, generator)
        return self.surrogate.decode_grid(z, grid)

    def rollout(
        self,
        u0: torch.Tensor,
        grid: torch.Tensor,
        dt: torch.Tensor,
        params: torch.Tensor,
        n_steps: int,
        steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Corrected autoregressive latent rollout, decoded every step: (B, n_steps, *S, C)."""
        cond = self.conditioning(dt, params)

        def step(z: torch.Tensor) -> torch.Tensor:
            return self.correct(z, self.surrogate.step(z, dt, params), cond, steps, generator)

        return latent_rollout(self.surrogate, u0, grid, step, n_steps)


class DiffusionResidual(LatentCorrector):
    """The diffusion residual (teacher): DDPM training loss, ``diffusers`` DDIM/DDPM sampling."""

    def __init__(self, model_cfg: SurrogateConfig, diffusion_cfg: DiffusionConfig):
        super().__init__(model_cfg, diffusion_cfg)
        self._samplers: dict[int, Any] = {}

    def denoising_loss(
        self, x0: torch.Tensor, tokens: torch.Tensor, cond: torch.Tensor
    ) -> torch.Tensor:
        """MSE of the network's v (or epsilon) prediction at drawn noise levels (see
        ``training_levels``)."""
        t = self.training_levels(x0.shape[0], x0.device)
        noise = torch.randn_like(x0)
        x_t = self.scheduler.add_noise(x0, noise, t)
        if self.diffusion_cfg.prediction == "v_prediction":
            target = self.scheduler.get_velocity(x0, noise, t)
        else:
            target = noise
        return (self.denoise(x_t, t, tokens, cond) - target).pow(2).mean()

    def training_levels(self, n: int, device: torch.device) -> torch.Tensor:
        """``n`` noise levels: the top one with probability ``top_level_fraction``, else one of
        the others uniformly. The top level's estimate is the correction itself; the others only
        refine it, so it gets the larger share of a short training budget."""
        top = self.diffusion_cfg.train_timesteps - 1
        lower = torch.randint(0, top, (n,), device=device)
        at_top = torch.rand(n, device=device) < self.diffusion_cfg.top_level_fraction
        return torch.where(at_top, top, lower)

    def ode_step(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        t_prev: torch.Tensor,
        tokens: torch.Tensor,
        cond: torch.Tensor,
    ) -> torch.Tensor:
        """One deterministic DDIM step (the probability-flow ODE solver) from levels ``t`` to
        ``t_prev`` (per sample; -1 is the clean end), as ``diffusers.DDIMScheduler.step`` with
        ``eta=0`` computes it for a single level."""
        x0, eps = self.predict_clean(x_t, t, self.denoise(x_t, t, tokens, cond))
        alpha_prev = torch.where(
            t_prev >= 0, self.alphas_cumprod[t_prev.clamp_min(0)], torch.ones_like(t_prev).float()
        ).view(-1, 1, 1)
        return alpha_prev.sqrt() * x0 + (1 - alpha_prev).sqrt() * eps

    def sampler(self, steps: int) -> Any:
        """The ``diffusers`` sampler (DDIM or DDPM) set to ``steps`` steps, built once."""
        if steps not in self._samplers:
            from diffusers import DDIMScheduler, DDPMScheduler

            kind = DDIMScheduler if self.diffusion_cfg.sampler == "ddim" else DDPMScheduler
            sampler = kind.from_config(self.scheduler.config)
            sampler.set_timesteps(steps)
            self._samplers[steps] = sampler
        return self._samplers[steps]

    def sample_residual(
        self,
        tokens: torch.Tensor,
        cond: torch.Tensor,
        steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        steps = steps or self.diffusion_cfg.steps
        if self.diffusion_cfg.train_timesteps % steps:
            raise ValueError(
                f"sampler steps ({steps}) must divide train_timesteps "
                f"({self.diffusion_cfg.train_timesteps})"
            )
        sampler = self.sampler(steps)
        x = self.residual_noise(tokens, generator) * sampler.init_noise_sigma
        batch = torch.empty(tokens.shape[0], dtype=torch.long, device=tokens.device)
        for t in sampler.timesteps:
            output = self.denoise(x, batch.fill_(int(t)), tokens, cond)
            if self.diffusion_cfg.sampler == "ddim":
                x = sampler.step(output, t, x, eta=0.0).prev_sample
            else:
                x = sampler.step(output, t, x, generator=generator).prev_sample
        return x
