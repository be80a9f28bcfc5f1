"""Evaluate a surrogate on whole trajectories with plain PyTorch (no Trainer).

All numbers are computed on decoded fields in physical units, with PDEBench's definitions
(``eval.metrics``): teacher-forced one-step nRMSE, autoregressive rollout nRMSE over the full
trajectory and over the first ``h`` steps, RMSE, max error, cRMSE, bRMSE and fRMSE, each nRMSE
beside the persistence baseline ``u(t+dt) = u(t)``; then correlation times and mass drift.
Every trajectory metric scores the steps after the ``initial_step`` given snapshots.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from lightstack.physics.eval import metrics as M
from lightstack.physics.models.history import history_windows, stack_history
from lightstack.physics.models.surrogate import LatentSurrogate

# Error sets scored per batch: the model's rollout and one-step predictions and persistence.
ERROR_SETS = ("rollout", "persistence", "onestep", "persistence_onestep")


@dataclass
class RolloutSample:
    """What the report plots: one trajectory's truth and prediction, both ``(T, *S, C)`` with
    the ``initial_step`` given snapshots first (equal in both)."""

    task: str
    truth: torch.Tensor
    prediction: torch.Tensor
    grid: torch.Tensor
    initial_step: int = 1


def predict_trajectory(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's rollout of ``batch["fields"]`` ``(B, T, *S, C)``: the given snapshots (the
    model's ``initial_step``), then the predicted ones, so it lines up with the truth step by
    step."""
    fields, initial_step = batch["fields"], model.initial_step
    steps = fields.shape[1] - initial_step
    rollout = model.rollout(
        stack_history(fields[:, :initial_step]), batch["grid"], batch["dt"], batch["params"], steps
    )
    return torch.cat([fields[:, :initial_step], rollout.to(fields.dtype)], dim=1)


@dataclass
class BatchResult:
    """One batch: PDEBench errors per sample of each error set, per-sample diagnostics and the
    full predicted trajectories."""

    errors: dict[str, dict[str, torch.Tensor]]
    per_sample: dict[str, torch.Tensor]
    prediction: torch.Tensor
    task: torch.Tensor


def evaluate_batch(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    thresholds: Iterable[float],
) -> BatchResult:
    """Errors of one batch of whole trajectories, given the model's ``initial_step`` snapshots
    (stacked into its input history, ``models.history``)."""
    fields, grid, dt, params = batch["fields"], batch["grid"], batch["dt"], batch["params"]
    t, initial_step = fields.shape[1], model.initial_step
    truth = fields[:, initial_step:]
    inputs = fields[:, initial_step - 1 : -1]
    onestep = model(
        history_windows(fields[:, :-1], initial_step).flatten(0, 1),
        grid.repeat_interleave(t - initial_step, dim=0),
        dt.repeat_interleave(t - initial_step),
        params.repeat_interleave(t - initial_step, dim=0),
    ).view_as(truth)
    prediction = predict_trajectory(model, batch)
    rollout = prediction[:, initial_step:]
    persistence = fields[:, initial_step - 1 : initial_step].expand_as(truth)
    errors = {
        "rollout": M.sample_errors(rollout, truth),
        "persistence": M.sample_errors(persistence, truth),
        "onestep": M.sample_errors(onestep, truth),
        "persistence_onestep": M.sample_errors(inputs, truth),
    }
    finite = rollout.flatten(1).isfinite().all(dim=1)
    per_sample = {
        "scaled_l2": M.scaled_l2_per_sample(rollout, truth),
        "mass_drift": M.mass_drift(rollout, fields[:, initial_step - 1]),
        "truth_mass_drift": M.mass_drift(truth, fields[:, initial_step - 1]),
        "nonfinite_predictions": (~finite).double(),
    }
    corr = M.correlation_per_step(rollout, truth)
    for threshold in thresholds:
        per_sample[f"correlation_time@{threshold}"] = M.correlation_time(corr, threshold)
    return BatchResult(errors, per_sample, prediction, batch["task"])


@dataclass
class GroupTotals:
    """Everything one group of trajectories (a task, or all) needs for its metrics."""

    spatial_shape: tuple[int, ...]
    errors: dict[str, M.ErrorSums] = field(default_factory=dict)
    sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    count: int = 0

    def __post_init__(self) -> None:
        self.errors = self.errors or {k: M.ErrorSums(self.spatial_shape) for k in ERROR_SETS}

    def add(self, result: BatchResult, mask: torch.Tensor) -> None:
        for name, errors in result.errors.items():
            self.errors[name].add(errors, mask)
        for name, values in result.per_sample.items():
            self.sums[name] += float(values[mask.to(values.device)].double().sum())
        self.count += int(mask.sum())

    def metrics(self, horizons: Iterable[int]) -> dict[str, float]:
        rollout = self.errors["rollout"].metrics()
        out = {
            "onestep_nrmse": self.errors["onestep"].metrics()["nrmse"],
            "persistence_onestep_nrmse": self.errors["persistence_onestep"].metrics()["nrmse"],
            "rollout_nrmse": rollout.pop("nrmse"),
            "persistence_rollout_nrmse": self.errors["persistence"].metrics()["nrmse"],
            **rollout,
        }
        steps = self.errors["rollout"].sums["nrmse"].shape[-1]
        for h in horizons:
            if h <= steps:
                out[f"rollout_nrmse@{h}"] = self.errors["rollout"].metrics(h)["nrmse"]
                out[f"persistence_rollout_nrmse@{h}"] = self.errors["persistence"].metrics(h)[
                    "nrmse"
                ]
        out |= {name: total / self.count for name, total in self.sums.items()}
        out["nonfinite_predictions"] = self.sums["nonfinite_predictions"]  # a count, not a mean
        return out | {"trajectories": self.count}


class EvaluationTotals:
    """``GroupTotals`` of every task and of ``"all"``, filled batch by batch."""

    def __init__(self, task_names: list[str]):
        self.task_names = task_names
        self.groups: dict[str, GroupTotals] = {}
        self.spatial_shape: tuple[int, ...] = ()

    def _group(self, name: str) -> GroupTotals:
        return self.groups.setdefault(name, GroupTotals(self.spatial_shape))

    def add(self, result: BatchResult) -> None:
        self.spatial_shape = tuple(result.prediction.shape[2:-1])
        task = result.task.cpu()
        self._group("all").add(result, torch.ones_like(task, dtype=torch.bool))
        for index, name in enumerate(self.task_names):
            mask = task == index
            if mask.any():
                self._group(name).add(result, mask)

    def results(self, horizons: Iterable[int]) -> dict[str, dict[str, float]]:
        if not self.groups:
            raise ValueError("evaluation data set is empty: no trajectories to evaluate")
        horizons = list(horizons)
        return {name: group.metrics(horizons) for name, group in self.groups.items()}


PredictionSink = Callable[[BatchResult, dict[str, torch.Tensor]], None]


@torch.no_grad()
def evaluate_model(
    model: LatentSurrogate,
    loader: DataLoader,
    task_names: list[str],
    horizons: Iterable[int] = (1, 4, 16),
    thresholds: Iterable[float] = (0.8, 0.9, 0.95),
    plot_samples: int = 3,
    device: torch.device | str = "cpu",
    sink: PredictionSink | None = None,
) -> tuple[dict[str, dict[str, float]], list[RolloutSample]]:
    """Metrics per task (and ``"all"``) over every trajectory of ``loader``; ``sink`` receives
    each batch's result and the batch itself (``predictions.hdf5`` is written that way)."""
    model = model.to(device).eval()
    thresholds = list(thresholds)
    totals = EvaluationTotals(task_names)
    samples: list[RolloutSample] = []
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        result = evaluate_batch(model, batch, thresholds)
        totals.add(result)
        if sink is not None:
            sink(result, batch)
        for i in range(min(plot_samples - len(samples), len(result.prediction))):
            task = task_names[int(batch["task"][i])] if task_names else "all"
            samples.append(
                RolloutSample(
                    task,
                    batch["fields"][i].cpu(),
                    result.prediction[i].cpu(),
                    batch["grid"][i].cpu(),
                    model.initial_step,
                )
            )
    return totals.results(horizons), samples
