"""Stage ``steady_prior``: learn coefficient field -> steady solution (PDEBench 2D Darcy).

The loss is the mean squared error of the solution in normalised units at all grid points (or
``steady.query_points`` random ones); validation reports PDEBench nRMSE in physical units as
``val/nrmse``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from lightstack.core.checkpoints import (
    CheckpointError,
)
from lightstack.physics.config import PhysicsConfig
from lightstack.physics.data.steady import SteadyDataModule
from lightstack.physics.eval import metrics as M
from lightstack.physics.models.steady import SteadyPrior
from lightstack.physics.stages.base import PhysicsStage
from lightstack.physics.stages.handoff import read_stage_checkpoint


class SteadyPriorStage(PhysicsStage):
    stage = "steady_prior"
    requires = None
    metric_names = ("loss", "nrmse")

    def __init__(self, cfg: PhysicsConfig, task_names: list[str]):
        super().__init__(cfg, task_names)
        self.model = SteadyPrior(cfg.model, cfg.steady)

    @classmethod
    def from_datamodule(
        cls, cfg: PhysicsConfig, dm: SteadyDataModule, parent: None = None
    ) -> SteadyPriorStage:
        stage = cls(cfg, dm.task_names)
        stage.model.set_normalization(dm.coefficient_stats(), dm.field_stats())
        return stage

    def _mse(self, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        return ((pred - true) / self.model.std).pow(2).mean()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        grid = batch["grid"]
        coords, truth = grid.flatten(1, -2), batch["solution"].flatten(1, -2)
        n = self.cfg.steady.query_points
        if n is not None and n < coords.shape[1]:
            index = torch.randperm(coords.shape[1], device=coords.device)[:n]
            coords, truth = coords[:, index], truth[:, index]
        z = self.model.map(self.model.encode(batch["coefficient"], grid), batch["params"])
        loss = self._mse(self.model.decode(z, coords, self.model.token_centres(grid)), truth)
        self.log("train/loss", loss, on_step=True, on_epoch=True)
        return loss

    def evaluate_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pred = self.model(batch["coefficient"], batch["grid"], batch["params"])
        true = batch["solution"]
        per_sample_mse = ((pred - true) / self.model.std).pow(2).flatten(1).mean(dim=1)
        return {"loss": per_sample_mse, "nrmse": M.nrmse_per_sample(pred, true)}


def load_steady_prior(
    path: str | Path, ckpt: dict[str, Any] | None = None
) -> tuple[SteadyPrior, PhysicsConfig, list[str]]:
    """The plain ``SteadyPrior`` of a ``steady_prior`` checkpoint (or of ``ckpt``, its content
    when already read), its config and task names."""
    found = read_stage_checkpoint(path, ckpt)
    if found.stage != "steady_prior":
        raise CheckpointError(f"{path} is a {found.stage!r} checkpoint, not 'steady_prior'")
    cfg = found.config
    model = found.load_into(SteadyPrior(cfg.model, cfg.steady))
    return model.eval(), cfg, found.tasks


@torch.no_grad()
def evaluate_steady(
    model: SteadyPrior,
    loader: DataLoader,
    task_names: list[str],
    device: torch.device | str = "cpu",
) -> dict[str, dict[str, float]]:
    """PDEBench's nRMSE, RMSE, max error, cRMSE, bRMSE and fRMSE of the solution per task (and
    ``"all"``), physical units: ``eval.metrics`` with one time step per sample."""
    model = model.to(device).eval()
    sums: dict[str, M.ErrorSums] = {}
    nonfinite: dict[str, int] = defaultdict(int)
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        pred = model(batch["coefficient"], batch["grid"], batch["params"])
        true = batch["solution"]
        errors = M.sample_errors(pred.unsqueeze(1), true.unsqueeze(1))
        bad = ~pred.flatten(1).isfinite().all(dim=1)
        groups = {"all": torch.ones_like(batch["task"], dtype=torch.bool)}
        groups |= {name: batch["task"] == i for i, name in enumerate(task_names)}
        for group, mask in groups.items():
            if mask.any():
                sums.setdefault(group, M.ErrorSums(tuple(true.shape[1:-1]))).add(errors, mask)
                nonfinite[group] += int(bad[mask].sum())
    if not sums:
        raise ValueError("evaluation data set is empty: no steady samples to evaluate")
    return {
        group: acc.metrics() | {"nonfinite_predictions": nonfinite[group], "samples": acc.count}
        for group, acc in sums.items()
    }
