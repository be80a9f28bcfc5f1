"""Operator stage: train encoder, latent operator and decoder jointly.

Losses (each logged as ``train/L_<name>``): reconstruction ``decode(encode(u)) = u``, one-step
prediction, multi-step latent rollout over ``loss.rollout_horizon`` steps and an optional
spectral-amplitude loss. They are mean squared errors in normalised units, so channels of
different magnitude count alike. Validation reports PDEBench nRMSE in physical units.
"""

from __future__ import annotations

import torch

from lightstack.core.compile import maybe_compile
from lightstack.physics.config import PhysicsConfig
from lightstack.physics.eval.metrics import nrmse_per_sample
from lightstack.physics.models.layers import Block, CrossBlock
from lightstack.physics.models.surrogate import LatentSurrogate
from lightstack.physics.stages.base import PhysicsStage


def spectral_loss(pred: torch.Tensor, true: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """Mean absolute difference of Fourier amplitudes over the spatial axes."""
    dims = tuple(range(-1 - spatial_dims, -1))
    return (
        (torch.fft.rfftn(pred, dim=dims).abs() - torch.fft.rfftn(true, dim=dims).abs()).abs().mean()
    )


class OperatorStage(PhysicsStage):
    stage = "operator"
    metric_names = ("loss", "nrmse", "rollout_nrmse")

    def __init__(self, cfg: PhysicsConfig, task_names: list[str]):
        super().__init__(cfg, task_names)
        self.model = LatentSurrogate(cfg.model)

    def configure_model(self) -> None:
        """Compile the transformer blocks once the world size is known (``model.compile``)."""
        maybe_compile(
            self.model,
            self.cfg.model.compile,
            self.cfg.model.compile_mode,
            self.trainer.world_size,
            self.cfg.training.force_compile_distributed,
            regions={Block, CrossBlock},
        )

    def fsdp_wrap_modules(self) -> set[type[torch.nn.Module]]:
        """The blocks FSDP shards (and checkpoints activations of) one by one."""
        return {Block, CrossBlock}

    # --- training ----------------------------------------------------------------------------
    def _mse(self, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        """Mean squared error in normalised units, so channels of any magnitude count alike."""
        return ((pred - true) / self.model.std).pow(2).mean()

    def _training_points(
        self, fields: torch.Tensor, grid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Query coordinates (B, Q, d) and the true values there (B, T, Q, C) for the losses."""
        coords, values = grid.flatten(1, -2), fields.flatten(2, -2)
        n = self.cfg.loss.query_points
        if n is None or n >= coords.shape[1]:
            return coords, values
        index = torch.randperm(coords.shape[1], device=coords.device)[:n]
        return coords[:, index], values[:, :, index]

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        fields, grid = batch["fields"], batch["grid"]
        weights = self.cfg.loss
        coords, truth = self._training_points(fields, grid)
        centres = self.model.token_centres(grid)
        z = self.model.encode(fields[:, 0], grid)
        losses = {"recon": self._mse(self.model.decode(z, coords, centres), truth[:, 0])}
        if self.current_epoch >= weights.autoencoder_warmup_epochs:
            horizon = min(weights.rollout_horizon, fields.shape[1] - 1)
            preds = []
            for _ in range(horizon):
                z = self.model.step(z, batch["dt"], batch["params"])
                preds.append(self.model.decode(z, coords, centres))
            pred = torch.stack(preds, dim=1)
            target = truth[:, 1 : horizon + 1]
            losses["onestep"] = self._mse(pred[:, 0], target[:, 0])
            if horizon > 1:
                losses["rollout"] = self._mse(pred, target)
            if weights.spectral > 0:
                spatial = fields.shape[2:-1]
                losses["spectral"] = spectral_loss(
                    ((pred - self.model.mean) / self.model.std).unflatten(2, spatial),
                    ((target - self.model.mean) / self.model.std).unflatten(2, spatial),
                    len(spatial),
                )
            self._log_task_nrmse("train", nrmse_per_sample(pred[:, 0], target[:, 0]), batch["task"])
        total = sum(getattr(weights, name) * value for name, value in losses.items())
        self.log_dict({f"train/L_{k}": v for k, v in losses.items()}, on_step=True, on_epoch=True)
        self.log("train/loss", total, on_step=True, on_epoch=True, prog_bar=True)
        return total

    def _log_task_nrmse(self, split: str, per_sample: torch.Tensor, task: torch.Tensor) -> None:
        for index, name in enumerate(self.task_names):
            mask = task == index
            if mask.any():
                self.log(
                    f"{split}/{name}/nrmse",
                    per_sample[mask].mean().detach(),
                    on_step=False,
                    on_epoch=True,
                    batch_size=int(mask.sum()),
                )

    # --- validation / test -------------------------------------------------------------------
    def evaluate_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-sample one-step (teacher-forced) and full-rollout nRMSE of whole trajectories."""
        fields, grid = batch["fields"], batch["grid"]
        b, t = fields.shape[:2]
        inputs = fields[:, :-1].flatten(0, 1)
        grids = grid.repeat_interleave(t - 1, dim=0)
        dt = batch["dt"].repeat_interleave(t - 1)
        params = batch["params"].repeat_interleave(t - 1, dim=0)
        onestep = self.model(inputs, grids, dt, params)
        target = fields[:, 1:].flatten(0, 1)
        rollout = self.model.rollout(fields[:, 0], grid, batch["dt"], batch["params"], t - 1)
        return {
            "loss": self._mse(onestep, target).expand(b),
            "nrmse": nrmse_per_sample(onestep, target).view(b, t - 1).mean(dim=1),
            "rollout_nrmse": nrmse_per_sample(rollout, fields[:, 1:]),
        }

    def freezable_blocks(self) -> list[torch.nn.Module]:
        """Encoder blocks from input to output, for the freezing callbacks."""
        enc = self.model.encoder
        return [torch.nn.ModuleList([enc.embed, enc.pos_proj]), *enc.blocks]
