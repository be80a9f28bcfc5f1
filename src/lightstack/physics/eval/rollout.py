"""Evaluate a surrogate on whole trajectories with plain PyTorch (no Trainer).

All numbers are computed on decoded fields in physical units: teacher-forced one-step nRMSE,
autoregressive rollout nRMSE at several horizons and over the full trajectory, RMSE, max error,
correlation times and mass drift, each beside the persistence baseline ``u(t+dt) = u(t)``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from lightstack.physics.eval import metrics as M
from lightstack.physics.models.history import stack_history, teacher_forced
from lightstack.physics.models.surrogate import LatentSurrogate


@dataclass
class RolloutSample:
    """What the report plots: one trajectory's truth and prediction."""

    task: str
    truth: torch.Tensor  # (T, *S, C) from the last input snapshot on
    prediction: torch.Tensor  # (T - 1, *S, C), the steps after truth[0]
    grid: torch.Tensor


@dataclass
class _Accumulator:
    sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    count: int = 0

    def add(self, values: dict[str, torch.Tensor]) -> None:
        for name, per_sample in values.items():
            self.sums[name] += float(per_sample.double().sum())
        self.count += len(next(iter(values.values())))

    def means(self) -> dict[str, float]:
        return {name: total / self.count for name, total in self.sums.items()}


def trajectory_metrics(
    model: LatentSurrogate,
    batch: dict[str, torch.Tensor],
    horizons: Iterable[int],
    thresholds: Iterable[float],
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-sample metrics of a batch of whole trajectories, and the rollout prediction."""
    fields, grid, dt, params = batch["fields"], batch["grid"], batch["dt"], batch["params"]
    k = model.initial_step
    inputs, truth = teacher_forced(fields, k)
    steps = truth.shape[1]
    onestep = model(
        inputs.flatten(0, 1),
        grid.repeat_interleave(steps, dim=0),
        dt.repeat_interleave(steps),
        params.repeat_interleave(steps, dim=0),
    ).view_as(truth)
    rollout = model.rollout(stack_history(fields[:, :k]), grid, dt, params, steps)
    fields = fields[:, k - 1 :]  # the last input snapshot and the predicted steps after it
    t = fields.shape[1]
    persistence = fields[:, :1].expand_as(truth)

    out: dict[str, torch.Tensor] = {
        "onestep_nrmse": M.nrmse_per_step(onestep, truth).mean(dim=1),
        "persistence_onestep_nrmse": M.nrmse_per_step(fields[:, :-1], truth).mean(dim=1),
        "rollout_nrmse": M.nrmse_per_sample(rollout, truth),
        "persistence_rollout_nrmse": M.nrmse_per_sample(persistence, truth),
        "rmse": M.rmse_per_sample(rollout, truth),
        "max_error": M.max_error_per_sample(rollout, truth),
        "mass_drift": M.mass_drift(rollout, fields[:, 0]),
        "truth_mass_drift": M.mass_drift(truth, fields[:, 0]),
    }
    for h in horizons:
        if h <= t - 1:
            out[f"rollout_nrmse@{h}"] = M.nrmse_per_sample(rollout[:, :h], truth[:, :h])
            out[f"persistence_rollout_nrmse@{h}"] = M.nrmse_per_sample(
                persistence[:, :h], truth[:, :h]
            )
    corr = M.correlation_per_step(rollout, truth)
    for threshold in thresholds:
        out[f"correlation_time@{threshold}"] = M.correlation_time(corr, threshold)
    return out, rollout


@torch.no_grad()
def evaluate_model(
    model: LatentSurrogate,
    loader: DataLoader,
    task_names: list[str],
    horizons: Iterable[int] = (1, 4, 16),
    thresholds: Iterable[float] = (0.8, 0.9, 0.95),
    plot_samples: int = 3,
    device: torch.device | str = "cpu",
) -> tuple[dict[str, dict[str, float]], list[RolloutSample]]:
    """Metrics per task (and ``"all"``) over every trajectory of ``loader``."""
    model = model.to(device).eval()
    horizons, thresholds = list(horizons), list(thresholds)
    per_task: dict[str, _Accumulator] = defaultdict(_Accumulator)
    samples: list[RolloutSample] = []
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        values, rollout = trajectory_metrics(model, batch, horizons, thresholds)
        per_task["all"].add(values)
        for index, name in enumerate(task_names):
            mask = batch["task"] == index
            if mask.any():
                per_task[name].add({k: v[mask] for k, v in values.items()})
        for i in range(min(plot_samples - len(samples), len(rollout))):
            task = task_names[int(batch["task"][i])] if task_names else "all"
            truth = batch["fields"][i, model.initial_step - 1 :]  # last input, then predicted
            grid = batch["grid"][i].cpu()
            samples.append(RolloutSample(task, truth.cpu(), rollout[i].cpu(), grid))
    if not per_task:
        raise ValueError("evaluation data set is empty: no trajectories to evaluate")
    results = {name: acc.means() | {"trajectories": acc.count} for name, acc in per_task.items()}
    return results, samples
