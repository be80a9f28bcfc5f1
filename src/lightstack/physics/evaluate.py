"""``physics eval``: rebuild a surrogate from its checkpoint alone, evaluate it and judge it.

Metrics come from the plain PyTorch loop (``eval.rollout.evaluate_model``) or from Lightning's
``Trainer.predict`` over the same per-trajectory metrics; both give the same numbers. Publishing
a result applies the gates, records the run on the leaderboard (promoting it when it beats the
champion of its task set) and writes ``report.html`` and ``summary.json`` next to
``metrics.json``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from lightstack.core.checkpoints import checkpoint_metadata, load_checkpoint
from lightstack.core.config import merge_overrides, to_dict, validate
from lightstack.core.io import atomic_write_json
from lightstack.core.trainer import quiet_lightning
from lightstack.physics.config import PhysicsConfig
from lightstack.physics.data.steady import SteadyDataModule
from lightstack.physics.data.windows import PDEDataModule
from lightstack.physics.eval.gates import failed_gates, gate_metrics, judge
from lightstack.physics.eval.leaderboard import Leaderboard, task_set
from lightstack.physics.eval.plots import plot_predictions
from lightstack.physics.eval.predictions import open_predictions
from lightstack.physics.eval.report import read_step_log, write_report
from lightstack.physics.eval.rollout import (
    BatchResult,
    EvaluationTotals,
    PredictionSink,
    RolloutSample,
    evaluate_batch,
    evaluate_model,
    predict_trajectory,
)
from lightstack.physics.models.surrogate import LatentSurrogate
from lightstack.physics.stages.correctors import compare_correctors, load_correctors
from lightstack.physics.stages.handoff import read_stage_checkpoint
from lightstack.physics.stages.steady_prior import evaluate_steady, load_steady_prior

Engine = Literal["torch", "lightning"]
ROLLOUT_STAGES = ("operator", "diff_residual", "consistency_distill", "fno")


def load_surrogate(
    path: str | Path, ckpt: dict[str, Any] | None = None
) -> tuple[LatentSurrogate, PhysicsConfig, list[str]]:
    """The plain ``nn.Module`` of a physics checkpoint, its resolved config and task names.

    ``ckpt`` is the file's content when the caller has read it already (every loader here
    takes it, so one evaluation reads the file once).
    """
    found = read_stage_checkpoint(path, ckpt)
    model = found.load_into(LatentSurrogate(found.config.model))
    return model.eval(), found.config, found.tasks


def load_predictor(
    path: str | Path, ckpt: dict[str, Any] | None = None
) -> tuple[nn.Module, PhysicsConfig, list[str]]:
    """The model a checkpoint of any time-dependent stage rolls out, in physical units.

    ``operator``: the surrogate; ``diff_residual``: the surrogate corrected by its diffusion
    model; ``consistency_distill``: corrected by the distilled student; ``fno``: the FNO
    baseline. Each has the surrogate's ``forward`` (one step) and ``rollout``.
    """
    ckpt = load_checkpoint(path) if ckpt is None else ckpt
    stage = checkpoint_metadata(ckpt, path, "physics").get("stage")
    if stage not in ROLLOUT_STAGES:
        raise ValueError(
            f"{path} is a {stage!r} checkpoint: evaluation rolls out trajectories, which needs a "
            f"checkpoint of {', '.join(ROLLOUT_STAGES)}"
        )
    if stage == "operator":
        return load_surrogate(path, ckpt)
    if stage == "fno":
        from lightstack.physics.stages.fno_baseline import load_fno

        return load_fno(path, ckpt)
    from lightstack.physics.stages.correctors import load_correctors

    teacher, student, cfg, tasks = load_correctors(path, ckpt)
    return student or teacher, cfg, tasks


def time_coordinate(dataset: Dataset) -> np.ndarray | None:
    """The (reduced) time coordinate of the first file behind ``dataset``, if it has one."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    first = dataset.datasets[0] if isinstance(dataset, ConcatDataset) else dataset
    reader = getattr(first, "reader", None)
    return None if reader is None else reader.info.coords.get("t")


def evaluation_data(cfg: PhysicsConfig, data_files: list[str] | None) -> PDEDataModule:
    """The checkpoint's own test split, or every sample of ``data_files`` when given."""
    data = cfg.data
    if data_files:
        data = data.model_copy(update={"test_files": list(data_files)})
    return PDEDataModule(data, horizon=1)


# --- the Lightning path ------------------------------------------------------------------------
class RolloutPredictor(L.LightningModule):
    """``Trainer.predict`` wrapper: one ``BatchResult`` per batch of whole trajectories."""

    def __init__(self, model: nn.Module, thresholds: list[float]):
        super().__init__()
        self.model = model
        self.thresholds = thresholds

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> BatchResult:
        return evaluate_batch(self.model, batch, self.thresholds)


class CollectResults(BasePredictionWriter):
    """Adds each batch's result to the totals and hands it to the sink, as the torch loop does,
    so no prediction is kept in memory."""

    def __init__(self, totals: EvaluationTotals, sink: PredictionSink | None):
        super().__init__(write_interval="batch")
        self.totals = totals
        self.sink = sink

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self.totals.add(prediction)
        if self.sink is not None:
            self.sink(prediction, batch)


def lightning_metrics(
    model: nn.Module,
    loader: DataLoader,
    task_names: list[str],
    horizons: list[int],
    thresholds: list[float],
    device: str = "cpu",
    sink: PredictionSink | None = None,
) -> dict[str, Any]:
    target = torch.device(device)
    totals = EvaluationTotals(task_names)
    quiet_lightning()
    trainer = L.Trainer(
        accelerator="cpu" if target.type == "cpu" else "gpu",
        devices=[target.index or 0] if target.type == "cuda" else 1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[CollectResults(totals, sink)],
    )
    trainer.predict(
        RolloutPredictor(model, thresholds), dataloaders=loader, return_predictions=False
    )
    return totals.results(horizons)


# --- what a report shows -----------------------------------------------------------------------
@torch.no_grad()
def samples_per_task(
    model: nn.Module, dataset: Dataset, task_names: list[str], count: int, device: str
) -> list[RolloutSample]:
    """Up to ``count`` rolled-out trajectories, spread over the tasks (at least one each)."""
    parts = dataset.datasets if isinstance(dataset, ConcatDataset) else [dataset]
    per_task = max(1, count // max(1, len(parts)))
    samples = []
    model = model.to(device).eval()
    for part in parts:
        for index in range(min(per_task, len(part))):
            item = {k: v.unsqueeze(0).to(device) for k, v in part[index].items()}
            prediction = predict_trajectory(model, item)
            task = int(item["task"])
            name = task_names[task] if task < len(task_names) else str(task)
            samples.append(
                RolloutSample(
                    name,
                    item["fields"][0].cpu(),
                    prediction[0].cpu(),
                    item["grid"][0].cpu(),
                    model.initial_step,
                )
            )
    return samples


@dataclass
class RunContext:
    """What evaluation knows of the run behind a checkpoint: its metrics, histories, cost."""

    name: str
    stages: list[str]
    run_dir: Path | None = None
    train_metrics: dict[str, float] = field(default_factory=dict)
    histories: dict[str, Path] = field(default_factory=dict)
    train_wall_s: float | None = None

    @classmethod
    def of_checkpoint(cls, ckpt: str | Path, cfg: PhysicsConfig) -> RunContext:
        """Read ``train_metrics.json`` and ``history.json`` of the run that wrote ``ckpt``."""
        ckpt = Path(ckpt).resolve()
        run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
        metrics_file = run_dir / "train_metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        history = run_dir / "history.json"
        return cls(
            cfg.name,
            [cfg.stage],
            run_dir,
            {k: float(v) for k, v in metrics.items()},
            {cfg.stage: history} if history.is_file() else {},
        )


def judged_metrics(summary: dict[str, Any], context: RunContext) -> dict[str, float]:
    """What gates and the champion rule read: ``gate_metrics``, wall-clock costs and the
    one-step improvement over persistence."""
    metrics = gate_metrics(summary["metrics"], context.train_metrics)
    metrics["eval_wall_s"] = summary["eval_wall_s"]
    if "improvement_over_persistence" in summary:
        metrics["improvement_over_persistence"] = summary["improvement_over_persistence"]
    if context.train_wall_s is not None:
        metrics["train_wall_s"] = context.train_wall_s
    return metrics


def headline(summary: dict[str, Any]) -> str:
    """The one line ``physics eval`` prints first: the main numbers of any stage."""
    overall = summary["metrics"]["all"]
    if "onestep_nrmse" not in overall:  # steady_prior: one solution per sample
        return (
            f"nRMSE {overall['nrmse']:.4f}, RMSE {overall['rmse']:.4g}, "
            f"max error {overall['max_error']:.4g} ({overall['samples']} samples)"
        )
    return (
        f"one-step nRMSE {overall['onestep_nrmse']:.4f} "
        f"(persistence {overall['persistence_onestep_nrmse']:.4f}); "
        f"rollout nRMSE {overall['rollout_nrmse']:.4f} "
        f"(persistence {overall['persistence_rollout_nrmse']:.4f}); "
        f"{overall['trajectories']} trajectories"
    )


def nonfinite_problem(summary: dict[str, Any]) -> str | None:
    """One line naming the checkpoint when its predictions held NaN or Inf, else ``None``."""
    overall = summary["metrics"]["all"]
    bad = int(overall.get("nonfinite_predictions", 0))
    if not bad:
        return None
    total = overall.get("trajectories", overall.get("samples"))
    return (
        f"checkpoint {summary['checkpoint']}: its predictions hold NaN or Inf in {bad} of "
        f"{total} test samples, so its metrics are NaN and it failed the gates"
    )


# --- evaluate ----------------------------------------------------------------------------------
def evaluate_checkpoint(
    ckpt: str | Path,
    out_dir: str | Path,
    data_files: list[str] | None = None,
    device: str = "cpu",
    *,
    settings: PhysicsConfig | None = None,
    overrides: list[str] | None = None,
    engine: Engine = "torch",
    max_trajectories: int | None = None,
    context: RunContext | None = None,
    publish: bool = True,
) -> dict[str, Any]:
    """Evaluate ``ckpt`` into ``out_dir``; return the metrics (and, published, the verdict).

    Always writes ``metrics.json``. With ``publish`` it also writes ``predictions.png``, applies
    the gates, records the run on the leaderboard and writes ``report.html`` and
    ``summary.json``. The ``eval``, ``gates`` and ``champion`` sections come from ``settings``
    (default: the checkpoint's own config); dotted ``overrides`` apply on top of that, e.g.
    ``gates.val/nrmse.max=0.01`` or ``data.max_samples=8``. ``max_trajectories`` evaluates an
    evenly spread subset of the test trajectories (the pipeline's quick check).
    """
    if engine not in ("torch", "lightning"):
        raise ValueError(f"evaluation engine {engine!r}: expected 'torch' or 'lightning'")
    out_dir = Path(out_dir)
    state = load_checkpoint(ckpt)
    if checkpoint_metadata(state, ckpt, "physics")["stage"] == "steady_prior":
        return evaluate_steady_checkpoint(
            ckpt, out_dir, data_files, device, overrides=overrides, publish=publish, state=state
        )
    model, cfg, tasks = load_predictor(ckpt, state)
    if settings is not None:
        cfg = cfg.model_copy(
            update={"eval": settings.eval, "gates": settings.gates, "champion": settings.champion}
        )
    if overrides:
        cfg = validate(
            PhysicsConfig, merge_overrides(to_dict(cfg), overrides, str(ckpt)), str(ckpt)
        )
    dm = evaluation_data(cfg, data_files)
    if list(dm.spatial_shape) != list(cfg.model.spatial_shape or []):
        raise ValueError(
            f"evaluation data has grid {dm.spatial_shape} after reduction but the checkpoint "
            f"{ckpt} was trained on {cfg.model.spatial_shape}"
        )
    task_names = tasks or dm.task_names
    dataset = dm.windows("test", None)
    if max_trajectories is not None and max_trajectories < len(dataset):
        picks = np.unique(np.linspace(0, len(dataset) - 1, max_trajectories).round().astype(int))
        dataset = Subset(dataset, picks.tolist())
    loader = DataLoader(dataset, batch_size=cfg.eval.batch_size, shuffle=False)
    horizons, thresholds = list(cfg.eval.horizons), list(cfg.eval.correlation_thresholds)
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)  # the corrected stages sample their residuals
    with open_predictions(
        out_dir / "predictions.hdf5", task_names, model.initial_step, time_coordinate(dataset)
    ) as predictions:
        if engine == "lightning":
            results = lightning_metrics(
                model, loader, task_names, horizons, thresholds, device, predictions.append
            )
        else:
            results, _ = evaluate_model(
                model, loader, task_names, horizons, thresholds, 0, device, predictions.append
            )
    overall = results["all"]
    summary: dict[str, Any] = {
        "checkpoint": str(ckpt),
        "stage": cfg.stage,
        "data": list(data_files or cfg.data.test_files or cfg.data.train_files),
        "engine": engine,
        "eval_wall_s": time.perf_counter() - started,
        "metrics": results,
        "predictions": str(out_dir / "predictions.hdf5"),
        "improvement_over_persistence": overall["persistence_onestep_nrmse"]
        / max(overall["onestep_nrmse"], 1e-12),
    }
    if cfg.stage in ("diff_residual", "consistency_distill"):
        teacher, student, _, _ = load_correctors(ckpt, state)
        summary["correctors"] = compare_correctors(
            teacher, loader, student, device=device, seed=cfg.seed
        )
    atomic_write_json(out_dir / "metrics.json", summary)
    if not publish:
        return summary
    samples = (
        samples_per_task(model, dm.windows("test", None), task_names, cfg.eval.plot_samples, device)
        if cfg.eval.plot_samples
        else []
    )
    png = plot_predictions(samples, out_dir / "predictions.png") if samples else None
    context = context or RunContext.of_checkpoint(ckpt, cfg)
    return summary | publish_evaluation(summary, cfg, out_dir, context, task_names, png)


def evaluate_steady_checkpoint(
    ckpt: str | Path,
    out_dir: Path,
    data_files: list[str] | None = None,
    device: str = "cpu",
    *,
    overrides: list[str] | None = None,
    publish: bool = True,
    state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``evaluate_checkpoint`` for a ``steady_prior``: solution nRMSE, RMSE and max error.
    ``state`` is the checkpoint's content if already read."""
    model, cfg, tasks = load_steady_prior(ckpt, state)
    if overrides:
        cfg = validate(
            PhysicsConfig, merge_overrides(to_dict(cfg), overrides, str(ckpt)), str(ckpt)
        )
    data = cfg.data.model_copy(update={"test_files": list(data_files)}) if data_files else cfg.data
    dm = SteadyDataModule(data)
    task_names = tasks or dm.task_names
    loader = DataLoader(dm.windows("test", None), batch_size=cfg.eval.batch_size, shuffle=False)
    started = time.perf_counter()
    results = evaluate_steady(model, loader, task_names, device)
    summary: dict[str, Any] = {
        "checkpoint": str(ckpt),
        "stage": cfg.stage,
        "data": list(data_files or cfg.data.test_files or cfg.data.train_files),
        "engine": "torch",
        "eval_wall_s": time.perf_counter() - started,
        "metrics": results,
    }
    atomic_write_json(out_dir / "metrics.json", summary)
    if not publish:
        return summary
    context = RunContext.of_checkpoint(ckpt, cfg)
    return summary | publish_evaluation(summary, cfg, out_dir, context, task_names, None)


def publish_evaluation(
    summary: dict[str, Any],
    cfg: PhysicsConfig,
    out_dir: Path,
    context: RunContext,
    task_names: list[str],
    predictions_png: Path | None,
) -> dict[str, Any]:
    """Gates, leaderboard and champion, ``report.html`` and ``summary.json`` of one evaluation."""
    metrics = judged_metrics(summary, context)
    gates = judge(cfg.gates, metrics)
    passed = not failed_gates(gates)
    run_dir = (context.run_dir or out_dir).resolve()
    board_path = Path(cfg.champion.leaderboard or run_dir.parent / "leaderboard.csv")
    tasks = task_set(task_names)
    decision = Leaderboard(board_path).submit(
        {
            "run": context.name,
            "run_dir": str(run_dir),
            "checkpoint": str(Path(summary["checkpoint"]).resolve()),
            "stage": "+".join(context.stages),
            "task_set": tasks,
        },
        {k: v for k, v in metrics.items() if math.isfinite(v)},
        cfg.champion,
        passed,
    )
    histories = {
        stage: json.loads(path.read_text())
        for stage, path in context.histories.items()
        if path.is_file()
    }
    report = write_report(
        out_dir / "report.html",
        title=f"{context.name}: {' -> '.join(context.stages)}",
        info={
            "checkpoint": summary["checkpoint"],
            "data": ", ".join(summary["data"]),
            "task set": tasks,
            "main metric": f"{cfg.champion.metric} ({cfg.champion.mode})",
            "evaluation": f"{summary['engine']}, {summary['eval_wall_s']:.1f} s",
        },
        results=summary["metrics"],
        predictions_png=predictions_png,
        histories=histories,
        gates=gates,
        decision=decision,
        step_logs={
            stage: read_step_log(path.parent / "logs" / "metrics.csv")
            for stage, path in context.histories.items()
        },
    )
    verdict = {
        "run": context.name,
        "stages": context.stages,
        "task_set": tasks,
        "gates": [g.to_dict() for g in gates],
        "gates_passed": passed,
        "failed_gates": [g.name for g in gates if not g.passed],
        **decision.to_dict(),
        "main_metric": cfg.champion.metric,
        "main_value": metrics.get(cfg.champion.metric),
        "leaderboard": str(board_path),
        "report": str(report),
        "metrics_file": str(out_dir / "metrics.json"),
    }
    atomic_write_json(out_dir / "summary.json", verdict)
    return verdict
