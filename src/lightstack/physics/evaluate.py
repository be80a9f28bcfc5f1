"""``physics eval``: rebuild a surrogate from its checkpoint alone, evaluate it and judge it.

The model comes from ``stages.predictors``. Metrics come from the plain PyTorch loop
(``eval.rollout.evaluate_model``) or from Lightning's ``Trainer.predict``
(``eval.lightning_engine``) over the same per-trajectory metrics; both give the same numbers.
Publishing a result (``eval.publish``) applies the gates, records the run on the leaderboard
(promoting it when it beats the champion of its task set) and writes ``report.html`` and
``summary.json`` next to ``metrics.json``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from lightstack.core.checkpoints import checkpoint_metadata, load_checkpoint
from lightstack.core.config import merge_overrides, to_dict, validate
from lightstack.core.io import atomic_write_json
from lightstack.physics.config import PhysicsConfig
from lightstack.physics.data.steady import SteadyDataModule
from lightstack.physics.data.windows import PDEDataModule
from lightstack.physics.eval.lightning_engine import lightning_metrics
from lightstack.physics.eval.plots import plot_predictions
from lightstack.physics.eval.predictions import open_predictions
from lightstack.physics.eval.publish import RunContext, publish_evaluation, samples_per_task
from lightstack.physics.eval.rollout import evaluate_model
from lightstack.physics.stages.correctors import compare_correctors, load_correctors
from lightstack.physics.stages.predictors import load_predictor
from lightstack.physics.stages.steady_prior import evaluate_steady, load_steady_prior

Engine = Literal["torch", "lightning"]


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
