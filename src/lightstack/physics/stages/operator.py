"""Operator stage: train encoder, latent operator and decoder jointly.

Losses (each logged as ``train/L_<name>``): reconstruction ``decode(encode(u)) = u``, one-step
prediction, multi-step latent rollout over ``loss.rollout_horizon`` steps, the latent
prediction loss (unrolled latents against the encoded true snapshots) and an optional
spectral-amplitude loss. The field losses are mean squared errors in normalised units, so
channels of different magnitude count alike. Validation reports PDEBench nRMSE in physical units.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torchmetrics import Metric

from lightstack.physics.config import PhysicsConfig
from lightstack.physics.eval.metrics import nrmse_per_sample, trajectory_nrmse_per_sample
from lightstack.physics.models.history import history_windows, stack_history, teacher_forced
from lightstack.physics.models.layers import Block, CrossBlock
from lightstack.physics.models.surrogate import LatentSurrogate
from lightstack.physics.stages.base import PhysicsStage


def spectral_loss(pred: torch.Tensor, true: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """Mean absolute difference of Fourier amplitudes over the spatial axes."""
    dims = tuple(range(-1 - spatial_dims, -1))
    return (
        (torch.fft.rfftn(pred, dim=dims).abs() - torch.fft.rfftn(true, dim=dims).abs()).abs().mean()
    )


class MaskedMean(Metric):
    """Mean of the values (where ``mask`` is true), accumulated on the device with no host sync.

    ``torchmetrics.MeanMetric`` checks its input for NaN on every update (a device-to-host
    copy) and ignores weights when that check is off; this needs neither. The sum stays in
    float32 even when the module is cast to bf16 (``bf16-true``); the count is an integer.
    """

    full_state_update = False
    higher_is_better = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, values: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        values = values.detach().float()
        if mask is None:
            self.total = self.total.float() + values.sum()
            self.count = self.count + values.numel()
        else:
            self.total = self.total.float() + (values * mask).sum()
            self.count = self.count + mask.sum()

    def compute(self) -> torch.Tensor:
        return self.total.float() / self.count


class OperatorLosses(NamedTuple):
    """``terms``: unweighted losses by name; ``total``: their weighted sum; ``onestep``:
    (prediction, truth) of the first latent step, detached (None during autoencoder warm-up)."""

    terms: dict[str, torch.Tensor]
    total: torch.Tensor
    onestep: tuple[torch.Tensor, torch.Tensor] | None


class OperatorStage(PhysicsStage):
    stage = "operator"
    metric_names = ("loss", "nrmse", "rollout_nrmse")

    def __init__(self, cfg: PhysicsConfig, task_names: list[str]):
        super().__init__(cfg, task_names)
        self.model = LatentSurrogate(cfg.model)
        self.train_losses = nn.ModuleDict()  # one MaskedMean per logged loss, made on first use
        self.train_task_nrmse = nn.ModuleList(MaskedMean() for _ in self.task_names)
        self._epoch_started = True

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

    def _latent_loss(
        self, latents: torch.Tensor, fields: torch.Tensor, grid: torch.Tensor
    ) -> torch.Tensor:
        """MSE of unrolled latents (B, H, N, W) against the encoded true histories that end at
        snapshots K..K+H-1 (K = ``initial_step``; with K = 1 the snapshots 1..H).

        It teaches the operator to land on the encoder's own representation of the next state,
        which keeps long latent rollouts where the decoder has been trained. The targets carry
        no gradient, so the encoder cannot lower this loss by moving them; the encoder's final
        layer norm keeps the latent scale from collapsing.
        """
        b, horizon = latents.shape[:2]
        k = self.model.initial_step
        with torch.no_grad():
            histories = history_windows(fields[:, 1 : horizon + k], k).flatten(0, 1)
            target = self.model.encode(histories, grid.repeat_interleave(horizon, dim=0))
        return (latents - target.unflatten(0, (b, horizon))).pow(2).mean()

    def losses(self, batch: dict[str, torch.Tensor]) -> OperatorLosses:
        """The loss terms of one batch and their weighted sum (what ``training_step`` trains).

        Code that trains the stage without Lightning calls it too, so both run exactly the same
        forward and loss.
        """
        fields, grid = batch["fields"], batch["grid"]
        weights = self.cfg.loss
        k = self.model.initial_step
        coords, truth = self._training_points(fields, grid)
        centres = self.model.token_centres(grid)
        z = self.model.encode(stack_history(fields[:, :k]), grid)
        recon = self.model.decode(z, coords, centres)
        terms = {"recon": self._mse(recon, truth[:, k - 1])}
        onestep = None
        if self.current_epoch >= weights.autoencoder_warmup_epochs:
            horizon = min(weights.rollout_horizon, fields.shape[1] - k)
            latents, preds = [], []
            for _ in range(horizon):
                z = self.model.step(z, batch["dt"], batch["params"])
                latents.append(z)
                preds.append(self.model.decode(z, coords, centres))
            pred = torch.stack(preds, dim=1)
            if self.cfg.model.predict_increment:
                pred = pred + self.model.anchor(truth[:, k - 1], recon)[:, None]
            target = truth[:, k : k + horizon]
            terms["onestep"] = self._mse(pred[:, 0], target[:, 0])
            if horizon > 1:
                terms["rollout"] = self._mse(pred, target)
            if weights.latent > 0:
                terms["latent"] = self._latent_loss(torch.stack(latents, dim=1), fields, grid)
            if weights.spectral > 0:
                spatial = fields.shape[2:-1]
                terms["spectral"] = spectral_loss(
                    ((pred - self.model.mean) / self.model.std).unflatten(2, spatial),
                    ((target - self.model.mean) / self.model.std).unflatten(2, spatial),
                    len(spatial),
                )
            onestep = (pred[:, 0].detach(), target[:, 0])
        total = sum(getattr(weights, name) * value for name, value in terms.items())
        return OperatorLosses(terms, total, onestep)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.losses(batch)
        first, log_step = self._hand_over()
        values = {"loss": out.total, **{f"L_{k}": v for k, v in out.terms.items()}}
        self._log_losses(values, first or log_step)
        if out.onestep is not None:
            with torch.no_grad():
                per_sample = nrmse_per_sample(*out.onestep)
            self._log_task_nrmse(per_sample, batch["task"], first)
        return out.total

    # Every ``self.log`` call costs the host a fraction of a millisecond, and when the device
    # runs steps faster than the host can queue them that is step time. So the losses and the
    # per-task nRMSE are accumulated in metrics on the device at every step and handed to
    # Lightning only when it needs them: once an epoch (Lightning keeps the metric and computes
    # its epoch value at the end) and, for step values, at the steps where it writes to the
    # loggers (``trainer.log_every_n_steps``). Between those steps ``callback_metrics`` (and
    # the progress bar) show the step value of the last logging step.
    def on_train_epoch_start(self) -> None:
        self._epoch_started = True
        for metric in (*self.train_losses.values(), *self.train_task_nrmse):
            metric.reset()  # Lightning resets them at epoch end; not after an interrupted fit

    def _hand_over(self) -> tuple[bool, bool]:
        """(first training step of this epoch, a step whose values reach the loggers)."""
        first, self._epoch_started = self._epoch_started, False
        every = self.trainer.log_every_n_steps if self._trainer is not None else 1
        return first, every > 0 and (self.global_step + 1) % every == 0

    def _log_losses(self, values: dict[str, torch.Tensor], hand_over: bool) -> None:
        """``train/loss`` and ``train/L_<term>``: step and epoch values, as
        ``self.log(..., on_step=True, on_epoch=True)`` of every step gives."""
        for name, value in values.items():
            if name not in self.train_losses:
                self.train_losses[name] = MaskedMean().to(value.device)
            metric = self.train_losses[name]
            if hand_over:
                metric(value)  # updates and keeps this step's value for the loggers
                self.log(
                    f"train/{name}",
                    metric,
                    on_step=True,
                    on_epoch=True,
                    metric_attribute=f"train_losses.{name}",
                )
            else:
                metric.update(value)

    def _log_task_nrmse(
        self, per_sample: torch.Tensor, task: torch.Tensor, hand_over: bool
    ) -> None:
        """``train/<task>/nrmse``: epoch means per task.

        Masks weight the samples of each task, so no step waits for the device to say which
        tasks a batch holds (a task with no window in an epoch logs NaN for it).
        """
        for index, name in enumerate(self.task_names):
            metric = self.train_task_nrmse[index]
            metric.update(per_sample, task == index)
            if hand_over:
                self.log(f"train/{name}/nrmse", metric, on_step=False, on_epoch=True)

    # --- validation / test -------------------------------------------------------------------
    def evaluate_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-sample one-step (teacher-forced) and full-rollout nRMSE of whole trajectories,
        over the steps after the ``initial_step`` input snapshots."""
        fields, grid = batch["fields"], batch["grid"]
        k = self.model.initial_step
        inputs, truth = teacher_forced(fields, k)
        b, steps = truth.shape[:2]
        grids = grid.repeat_interleave(steps, dim=0)
        dt = batch["dt"].repeat_interleave(steps)
        params = batch["params"].repeat_interleave(steps, dim=0)
        onestep = self.model(inputs.flatten(0, 1), grids, dt, params)
        target = truth.flatten(0, 1)
        rollout = self.model.rollout(
            stack_history(fields[:, :k]), grid, batch["dt"], batch["params"], steps
        )
        return {
            "loss": self._mse(onestep, target).expand(b),
            "nrmse": nrmse_per_sample(onestep, target).view(b, steps).mean(dim=1),
            "rollout_nrmse": trajectory_nrmse_per_sample(rollout, truth),
        }

    def freezable_blocks(self) -> list[torch.nn.Module]:
        """Encoder blocks from input to output, for the freezing callbacks."""
        enc = self.model.encoder
        return [torch.nn.ModuleList([enc.embed, enc.pos_proj]), *enc.blocks]
