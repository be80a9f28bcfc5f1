"""Stage ``fno``: neuraloperator's Fourier neural operator as a one-step baseline.

The FNO maps ``u(t)`` to ``u(t + dt)`` on the grid, in normalised units, with the grid
coordinates as extra input channels (as PDEBench's FNO takes them). ``FNOSurrogate`` has the
calling convention of ``LatentSurrogate`` (``forward`` one step and ``rollout``, physical units
at the edges, normalisation statistics as buffers), so validation, ``physics eval`` and the
benchmarks treat both models alike. neuraloperator is an optional dependency (extra
``[baselines]``): it is imported only when an FNO is built.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightstack.core.optim import build_optimization
from lightstack.physics.config import FNOConfig, PhysicsConfig, SurrogateConfig
from lightstack.physics.data.steady import SteadyDataModule
from lightstack.physics.models.history import teacher_forced
from lightstack.physics.models.parts import HistoryModel
from lightstack.physics.models.rollout import history_rollout
from lightstack.physics.models.steady import COEFFICIENT_CHANNELS, SteadyPrior
from lightstack.physics.stages.base import PhysicsStage
from lightstack.physics.stages.handoff import read_stage_checkpoint
from lightstack.physics.stages.operator import OperatorStage
from lightstack.physics.stages.steady_prior import SteadyPriorStage


@cache
def fno_class() -> type[nn.Module]:
    """neuraloperator's ``FNO`` with PyTorch's own ``state_dict``.

    neuraloperator's models add their constructor arguments (functions and classes among them)
    to the state dict under ``_metadata``; checkpoints holding those cannot be loaded with
    ``weights_only=True``, which lightstack requires, so this subclass leaves them out.
    """
    try:
        from neuralop.models import FNO
    except ImportError as exc:
        raise ImportError(
            "stage 'fno' needs neuraloperator: pip install 'lightstack[baselines]'"
        ) from exc

    class PlainStateFNO(FNO, name="lightstack_fno"):
        state_dict = nn.Module.state_dict
        load_state_dict = nn.Module.load_state_dict

    return PlainStateFNO


def build_fno(cfg: FNOConfig, shapes: SurrogateConfig, field_channels: int) -> nn.Module:
    """neuraloperator's FNO taking ``field_channels`` field channels, the grid coordinates and
    the PDE parameters (constant over the grid), and giving ``shapes.channels``."""
    shapes.check_data_shapes()
    smallest = min(shapes.spatial_shape)
    if cfg.modes > smallest:
        raise ValueError(
            f"fno.modes ({cfg.modes}) exceeds the grid: at most {smallest} modes fit an axis "
            f"of {smallest} points (model.spatial_shape {shapes.spatial_shape})"
        )
    dims = len(shapes.spatial_shape)
    return fno_class()(
        n_modes=(cfg.modes,) * dims,
        in_channels=field_channels + dims + shapes.n_params,
        out_channels=shapes.channels,
        hidden_channels=cfg.width,
        n_layers=cfg.layers,
        positional_embedding=None,  # the data's own coordinates are input channels
    )


def fno_inputs(x: torch.Tensor, grid: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Channels-first FNO input: field ``x`` (B, *S, F), grid (B, *S, d), parameters (B, P)."""
    spatial = x.shape[1:-1]
    constants = params.view(params.shape[0], *(1,) * len(spatial), -1)
    inputs = torch.cat(
        [x, grid.to(x.dtype), constants.expand(-1, *spatial, -1).to(x.dtype)], dim=-1
    )
    return inputs.movedim(-1, 1)


class FNOSurrogate(HistoryModel):
    """One-step FNO ``u(t) -> u(t + dt)`` on a regular grid, physical units in and out.

    Input channels: the normalised history of ``initial_step`` snapshots (stacked on channels,
    ``models.history``), the grid coordinates and the PDE parameters (constant over the grid),
    as PDEBench's FNO takes them. ``dt`` is not an input: a data set has one time step.
    """

    def __init__(self, cfg: FNOConfig, shapes: SurrogateConfig):
        shapes.check_data_shapes()
        super().__init__(shapes.channels, shapes.initial_step)
        self.fno = build_fno(cfg, shapes, shapes.channels * shapes.initial_step)

    def step(self, x: torch.Tensor, grid: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """One step in normalised units: history ``x`` (B, *S, K * C), ``grid`` (B, *S, d) ->
        the next snapshot (B, *S, C)."""
        return self.fno(fno_inputs(x, grid, params)).movedim(1, -1)

    def forward(
        self, u: torch.Tensor, grid: torch.Tensor, dt: torch.Tensor, params: torch.Tensor
    ) -> torch.Tensor:
        """One-step prediction, history ``u`` up to ``t`` -> ``u(t + dt)``, physical units."""
        return self.step(self.normalise_history(u), grid, params) * self.std + self.mean

    def rollout(
        self,
        u0: torch.Tensor,
        grid: torch.Tensor,
        dt: torch.Tensor,
        params: torch.Tensor,
        steps: int,
    ) -> torch.Tensor:
        """Autoregressive rollout in normalised units from the history ``u0`` (B, *S, K * C),
        each prediction replacing the oldest snapshot of the history as in PDEBench's FNO:
        (B, steps, *S, C) in physical units."""
        frames = history_rollout(
            self.normalise_history(u0), lambda x: self.step(x, grid, params), steps
        )
        return frames * self.std + self.mean


class SteadyFNO(nn.Module):
    """FNO on a steady map, coefficient ``a(x)`` -> solution ``u(x)`` (``fno.steady``), with
    ``SteadyPrior``'s calling convention and normalisation buffers, physical units in and out."""

    def __init__(self, cfg: FNOConfig, shapes: SurrogateConfig):
        super().__init__()
        self.fno = build_fno(cfg, shapes, COEFFICIENT_CHANNELS)
        self.register_buffer("in_mean", torch.zeros(COEFFICIENT_CHANNELS))
        self.register_buffer("in_std", torch.ones(COEFFICIENT_CHANNELS))
        self.register_buffer("mean", torch.zeros(shapes.channels))
        self.register_buffer("std", torch.ones(shapes.channels))

    set_normalization = SteadyPrior.set_normalization

    def forward(self, a: torch.Tensor, grid: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """The solution on ``grid``: (B, *S, C)."""
        x = (a - self.in_mean) / self.in_std
        return self.fno(fno_inputs(x, grid, params)).movedim(1, -1) * self.std + self.mean


class FNOStage(PhysicsStage):
    """Teacher-forced one-step training of ``FNOSurrogate`` on every step of a window that has
    a full history before it; mean squared error in normalised units."""

    stage = "fno"
    metric_names = ("loss", "nrmse", "rollout_nrmse")
    network: type[nn.Module] = FNOSurrogate

    # The operator stage's loss and validation metrics, unchanged: they use only the surrogate
    # interface (forward, rollout, std) that FNOSurrogate shares, so both report the same things.
    _mse = OperatorStage._mse
    evaluate_batch = OperatorStage.evaluate_batch

    def __init__(self, cfg: PhysicsConfig, task_names: list[str]):
        super().__init__(cfg, task_names)
        self.model = self.network(cfg.fno, cfg.model)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, targets = teacher_forced(batch["fields"], self.model.initial_step)
        pairs = inputs.shape[1]
        pred = self.model(
            inputs.flatten(0, 1),
            batch["grid"].repeat_interleave(pairs, dim=0),
            batch["dt"].repeat_interleave(pairs),
            batch["params"].repeat_interleave(pairs, dim=0),
        )
        loss = self._mse(pred, targets.flatten(0, 1))
        self.log("train/loss", loss, on_step=True, on_epoch=True)
        return loss

    def compile_targets(self) -> tuple[nn.Module, None]:
        """The FNO as a whole: its spectral layers are one graph (``forward`` and ``rollout``
        both call it)."""
        return self.model.fno, None

    def configure_optimizers(self) -> dict[str, Any]:
        """Unfused AdamW: the spectral weights are complex, and torch's fused kernels take
        real tensors only."""
        return build_optimization(
            self.cfg.optimizer,
            self.trainable_module(),
            int(self.trainer.estimated_stepping_batches),
            fused=False,
        )


class SteadyFNOStage(FNOStage):
    """``fno`` with ``fno.steady``: the FNO baseline of the ``steady_prior`` stage, trained on
    the same (coefficient, solution) pairs with the same loss and validation metrics."""

    metric_names = ("loss", "nrmse")
    network = SteadyFNO
    evaluate_batch = SteadyPriorStage.evaluate_batch

    @classmethod
    def from_datamodule(cls, cfg: PhysicsConfig, dm: SteadyDataModule) -> SteadyFNOStage:
        stage = cls(cfg, dm.task_names)
        stage.model.set_normalization(dm.coefficient_stats(), dm.field_stats())
        return stage

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        pred = self.model(batch["coefficient"], batch["grid"], batch["params"])
        loss = self._mse(pred, batch["solution"])
        self.log("train/loss", loss, on_step=True, on_epoch=True)
        return loss


def load_fno(
    path: str | Path, ckpt: dict[str, Any] | None = None
) -> tuple[FNOSurrogate | SteadyFNO, PhysicsConfig, list[str]]:
    """The ``FNOSurrogate`` (``SteadyFNO`` with ``fno.steady``) of an ``fno`` checkpoint (or of
    ``ckpt``, its content when already read), its resolved config and task names."""
    found = read_stage_checkpoint(path, ckpt)
    cfg = found.config
    network = SteadyFNO if cfg.fno.steady else FNOSurrogate
    model = found.load_into(network(cfg.fno, cfg.model))
    return model.eval(), cfg, found.tasks
