"""``physics eval``: rebuild a surrogate from its checkpoint alone and evaluate it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lightstack.core.checkpoints import checkpoint_metadata, load_checkpoint, load_into
from lightstack.core.io import atomic_write_json
from lightstack.physics.config import PhysicsConfig
from lightstack.physics.data.windows import PDEDataModule
from lightstack.physics.eval.plots import plot_predictions
from lightstack.physics.eval.rollout import evaluate_model
from lightstack.physics.models.surrogate import LatentSurrogate


def load_surrogate(path: str | Path) -> tuple[LatentSurrogate, PhysicsConfig, list[str]]:
    """The plain ``nn.Module`` of a physics checkpoint, its resolved config and task names."""
    ckpt = load_checkpoint(path)
    meta = checkpoint_metadata(ckpt, path, "physics")
    cfg = PhysicsConfig.model_validate(meta["config"])
    model = load_into(LatentSurrogate(cfg.model), ckpt, path)
    return model.eval(), cfg, list(meta.get("tasks", []))


def evaluation_data(cfg: PhysicsConfig, data_files: list[str] | None) -> PDEDataModule:
    """The checkpoint's own test split, or every sample of ``data_files`` when given."""
    data = cfg.data
    if data_files:
        data = data.model_copy(update={"test_files": list(data_files)})
    return PDEDataModule(data, horizon=1)


def evaluate_checkpoint(
    ckpt: str | Path,
    out_dir: str | Path,
    data_files: list[str] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Write ``metrics.json`` and ``predictions.png`` into ``out_dir``; return the metrics."""
    out_dir = Path(out_dir)
    model, cfg, tasks = load_surrogate(ckpt)
    dm = evaluation_data(cfg, data_files)
    if list(dm.spatial_shape) != list(cfg.model.spatial_shape or []):
        raise ValueError(
            f"evaluation data has grid {dm.spatial_shape} after reduction but the checkpoint "
            f"{ckpt} was trained on {cfg.model.spatial_shape}"
        )
    loader = torch.utils.data.DataLoader(
        dm.windows("test", None), batch_size=cfg.eval.batch_size, shuffle=False
    )
    results, samples = evaluate_model(
        model,
        loader,
        tasks or dm.task_names,
        cfg.eval.horizons,
        cfg.eval.correlation_thresholds,
        cfg.eval.plot_samples,
        device,
    )
    overall = results["all"]
    summary = {
        "checkpoint": str(ckpt),
        "stage": cfg.stage,
        "data": list(data_files or cfg.data.test_files or cfg.data.train_files),
        "metrics": results,
        "improvement_over_persistence": overall["persistence_onestep_nrmse"]
        / max(overall["onestep_nrmse"], 1e-12),
    }
    atomic_write_json(out_dir / "metrics.json", summary)
    if samples:
        plot_predictions(samples, out_dir / "predictions.png")
    return summary
