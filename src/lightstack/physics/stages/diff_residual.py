"""Stage ``diff_residual``: a latent diffusion model of the frozen operator's one-step error.

Training pairs are consecutive snapshots, teacher-forced: the frozen surrogate gives the
operator's latent prediction ``step(encode(u_t))`` and the target ``encode(u_{t+1})``; their
difference, divided by its per-channel RMS, is the clean sample of a conditional DDPM whose
network sees the latent before the step and the operator's prediction. With ``cache.enabled``
the encoded latents come from the latent cache (``LatentCacheDataModule``) and training never
runs the encoder; the residual scale is measured on the same batches. Validation samples the
residual with the configured sampler and reports nRMSE in physical space of the corrected
one-step prediction (``val/nrmse``) and rollout (``val/rollout_nrmse``), beside the operator
alone (``val/operator_nrmse``, ``val/operator_rollout_nrmse``).

The correction moves a latent towards ``encode(u_{t+1})``, so one-step accuracy is bounded by
the autoencoder's reconstruction error; its gain is in rollouts, which it keeps on the
encoder's manifold.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from lightstack.physics.config import PhysicsConfig
from lightstack.physics.data.windows import PDEDataModule
from lightstack.physics.eval.metrics import nrmse_per_sample, trajectory_nrmse_per_sample
from lightstack.physics.models.diffusion import DiffusionResidual, LatentCorrector
from lightstack.physics.stages.base import PhysicsStage
from lightstack.physics.stages.handoff import StageCheckpoint

Pairs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def batch_pairs(model: LatentCorrector, batch: dict[str, torch.Tensor]) -> Pairs:
    """Teacher-forced pairs of a training batch (``LatentCorrector.pairs_from_latents``): from
    cached latents ``batch["latents"]`` without the encoder, else encoded from ``fields``."""
    if "latents" in batch:
        return model.pairs_from_latents(batch["latents"], batch["dt"], batch["params"])
    return model.latent_pairs(batch["fields"], batch["grid"], batch["dt"], batch["params"])


class CorrectorStage(PhysicsStage):
    """What ``diff_residual`` and ``consistency_distill`` share: a frozen surrogate inside a
    corrector, the trainable ``model.denoiser``, and corrected-vs-operator validation."""

    requires: str
    metric_names = ("nrmse", "rollout_nrmse", "operator_nrmse", "operator_rollout_nrmse")

    def __init__(self, cfg: PhysicsConfig, task_names: list[str]):
        super().__init__(cfg, task_names)
        self.model = self.build_model(cfg)
        self.model.surrogate.requires_grad_(False).eval()
        self._generator: torch.Generator | None = None

    def build_model(self, cfg: PhysicsConfig) -> LatentCorrector:
        raise NotImplementedError

    @property
    def sample_steps(self) -> int:
        """Network evaluations per latent step used in validation."""
        raise NotImplementedError

    def train(self, mode: bool = True) -> CorrectorStage:
        """Frozen parts stay in eval mode (no dropout) even when the whole module is set to
        train mode; Lightning keeps each submodule's mode otherwise."""
        super().train(mode)
        self.model.surrogate.eval()
        return self

    def clean_residuals(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Scaled residuals (the clean diffusion samples), denoiser context, conditioning."""
        with torch.no_grad():
            tokens, z_pred, z_true, cond = batch_pairs(self.model, batch)
            return self.model.scale(z_true - z_pred), tokens, cond

    # --- validation / test -------------------------------------------------------------------
    def evaluate_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-sample nRMSE of whole trajectories, corrected and operator alone."""
        fields, grid, dt, params = batch["fields"], batch["grid"], batch["dt"], batch["params"]
        b, t = fields.shape[:2]
        surrogate = self.model.surrogate
        inputs = fields[:, :-1].flatten(0, 1)
        grids = grid.repeat_interleave(t - 1, dim=0)
        dts = dt.repeat_interleave(t - 1)
        ps = params.repeat_interleave(t - 1, dim=0)
        target = fields[:, 1:]
        z_in = surrogate.encode(inputs, grids)
        z_pred = surrogate.step(z_in, dts, ps)
        z_corr = self.model.correct(
            z_in, z_pred, self.model.conditioning(dts, ps), self.sample_steps, self._generator
        )
        rollout = self.model.rollout(
            fields[:, 0], grid, dt, params, t - 1, self.sample_steps, self._generator
        )

        def onestep(z: torch.Tensor) -> torch.Tensor:
            pred = surrogate.decode_grid(z, grids).view_as(target)
            return nrmse_per_sample(pred.flatten(0, 1), target.flatten(0, 1)).view(b, -1).mean(1)

        return {
            "nrmse": onestep(z_corr),
            "rollout_nrmse": trajectory_nrmse_per_sample(rollout, target),
            "operator_nrmse": onestep(z_pred),
            "operator_rollout_nrmse": trajectory_nrmse_per_sample(
                surrogate.rollout(fields[:, 0], grid, dt, params, t - 1), target
            ),
        }

    def _new_generator(self) -> None:
        """Fixed sampling noise, so validation epochs are compared on the same draws."""
        self._generator = torch.Generator(device=self.device).manual_seed(self.cfg.seed)

    def on_validation_epoch_start(self) -> None:
        self._new_generator()

    def on_test_epoch_start(self) -> None:
        self._new_generator()

    def trainable_module(self) -> torch.nn.Module:
        return self.model.denoiser


@torch.no_grad()
def residual_rms(
    model: LatentCorrector, pairs: Dataset, batch_size: int, batches: int
) -> torch.Tensor:
    """Per-channel RMS (W,) of the operator's latent residual over ``batches`` random batches
    of ``pairs`` (training windows of two snapshots, fields or cached latents)."""
    loader = DataLoader(
        pairs, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    total, count = 0.0, 0
    for i, batch in enumerate(loader):
        if i == batches:
            break
        _, z_pred, z_true, _ = batch_pairs(model, batch)
        residual = (z_true - z_pred).flatten(0, 1)
        total = total + residual.double().pow(2).sum(dim=0)
        count += residual.shape[0]
    if not count:
        raise ValueError("no training pairs to estimate the residual scale from")
    return (total / count).sqrt().float().clamp_min(1e-8)


class DiffResidualStage(CorrectorStage):
    stage = "diff_residual"
    requires = "operator"

    def __init__(self, cfg: PhysicsConfig, task_names: list[str]):
        super().__init__(cfg, task_names)
        self._scale_measured = False

    def build_model(self, cfg: PhysicsConfig) -> DiffusionResidual:
        return DiffusionResidual(cfg.model, cfg.diffusion)

    @property
    def sample_steps(self) -> int:
        return self.cfg.diffusion.steps

    @classmethod
    def from_datamodule(
        cls, cfg: PhysicsConfig, dm: PDEDataModule, parent: StageCheckpoint
    ) -> DiffResidualStage:
        """Load the operator into the frozen surrogate (the residual scale is measured when
        fitting starts, on the batches training will see)."""
        stage = cls(cfg, dm.task_names)
        parent.load_into(stage.model.surrogate)
        return stage

    def setup(self, stage: str) -> None:
        """Measure the residual scale once, from the fit's data module. Lightning calls this
        after the data module's ``setup`` (the latent cache is open) and before it restores a
        checkpoint, so a resumed run keeps the scale it was trained with."""
        if stage != "fit" or self._scale_measured:
            return
        dm = self.trainer.datamodule
        if not isinstance(dm, PDEDataModule):
            raise TypeError(
                f"stage {self.stage!r} measures its residual scale from the training data: fit "
                f"it with datamodule=<PDEDataModule>, not {type(dm).__name__}"
            )
        pairs = dm.training_windows(1)
        batch_size = dm.cfg.loader.batch_size
        scale = residual_rms(self.model, pairs, batch_size, self.cfg.diffusion.stats_batches)
        self.model.residual_std.copy_(scale)
        self._scale_measured = True

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x0, tokens, cond = self.clean_residuals(batch)
        loss = self.model.denoising_loss(x0, tokens, cond)
        self.log("train/loss", loss, on_step=True, on_epoch=True)
        return loss
