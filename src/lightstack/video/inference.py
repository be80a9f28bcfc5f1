"""Rebuild a video model from its checkpoint alone, predict a split folder, score predictions.

``predict_split`` writes ``predictions.json`` in the challenge format; ``score_predictions``
scores such a file with the official rules (``lightstack.video.predict.evaluate``) and writes
``metrics.json`` plus one confusion-matrix PNG per task. The confusion matrices count the scored
actions that have a prediction, by class index; the official offence accuracy can be lower than
their diagonal, because it also compares raw label strings (see ``lightstack.video.predict``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader

from lightstack.core.checkpoints import (
    CheckpointError,
    checkpoint_metadata,
    load_checkpoint,
    load_into,
)
from lightstack.core.io import atomic_write_json
from lightstack.video.config import VideoConfig
from lightstack.video.data.collate import collate_views
from lightstack.video.data.dataset import MVFoulDataset
from lightstack.video.labels import (
    ACTION_CLASSES,
    NO_OFFENCE_VALUES,
    OFFENCE_CLASSES,
    SEVERITY_TO_CLASS,
    SkipReason,
    label_or_skip_reason,
    read_json,
)
from lightstack.video.metrics import plot_confusion
from lightstack.video.models.multiview import MultiViewModel
from lightstack.video.predict import evaluate, write_predictions

Weights = Literal["ema", "raw"]
Progress = Callable[[int, int], None]


def load_video_model(
    path: str | Path, weights: Weights = "ema"
) -> tuple[MultiViewModel, VideoConfig, dict[str, Any]]:
    """The ``MultiViewModel`` of a video checkpoint (eval mode, CPU), its config and metadata.

    A checkpoint trained with ``model.ema`` holds the EMA weights (the ones validated and
    checkpointed on) in ``state_dict`` and the raw weights in ``current_model_state``;
    ``weights="raw"`` picks the latter. Without EMA both names give the trained weights.
    """
    if weights not in ("ema", "raw"):
        raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
    ckpt = load_checkpoint(path)
    meta = checkpoint_metadata(ckpt, path, "video")
    cfg = VideoConfig.model_validate(meta["config"])
    # The backbone's pretrained file was only the starting point; the checkpoint has it all.
    model = MultiViewModel(cfg.model.model_copy(update={"pretrained_path": None}))
    if weights == "raw" and "current_model_state" in ckpt:
        ckpt = {**ckpt, "state_dict": ckpt["current_model_state"]}
    elif weights == "raw" and meta.get("ema"):
        raise CheckpointError(
            f"{path} holds only the EMA weights (the raw ones are dropped by conversion); "
            "use weights 'ema'"
        )
    load_into(model, ckpt, path)
    return model.eval(), cfg, meta


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but no CUDA device is visible")
    return torch.device(device)


def split_dataset(cfg: VideoConfig, split_dir: str | Path) -> MVFoulDataset:
    """Every action of ``split_dir`` with all its views, read as the model was trained."""
    data = cfg.data
    return MVFoulDataset(
        split_dir,
        frames=data.frames,
        start=data.start,
        end=data.end,
        fps=data.fps,
        size=data.size,
        views_per_sample=None,
        max_views=data.max_views,
        max_skip_fraction=data.max_skip_fraction,
        probe=data.probe_clips,
        decode_threads=data.decode_threads,
    )


@torch.inference_mode()
def predict_dataset(
    model: MultiViewModel,
    dataset: MVFoulDataset,
    device: torch.device,
    batch_size: int,
    num_workers: int = 0,
    bf16: bool = False,
    progress: Progress | None = None,
) -> dict[str, tuple[int, int]]:
    """``{action id: (action class, offence class)}`` by arg-max of each head."""
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_views,
        pin_memory=device.type == "cuda",
    )
    model = model.to(device).eval()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    preds: dict[str, tuple[int, int]] = {}
    for done, batch in enumerate(loader, start=1):
        video = batch["video"].to(device, non_blocking=True)
        mask = batch["view_mask"].to(device, non_blocking=True)
        view_ids = batch["view_ids"].to(device, non_blocking=True)
        with autocast:
            out = model(video, mask, view_ids)
        actions = out["action"].argmax(dim=-1).tolist()
        offences = out["offence"].argmax(dim=-1).tolist()
        for action_id, a, o in zip(batch["id"], actions, offences, strict=True):
            preds[action_id] = (a, o)
        if progress is not None:
            progress(done, len(loader))
    return preds


def predict_split(
    ckpt: str | Path,
    split_dir: str | Path,
    out: str | Path,
    *,
    weights: Weights = "ema",
    device: str | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Predict every action of ``split_dir`` with checkpoint ``ckpt``; write ``out`` in the
    challenge format. Unset options come from the checkpoint's ``eval`` and ``data`` sections.

    Actions whose clips are all unreadable get no prediction (the evaluator counts them wrong);
    they are listed under ``dropped_actions`` in the returned summary.
    """
    model, cfg, _ = load_video_model(ckpt, weights)
    dataset = split_dataset(cfg, split_dir)
    target = resolve_device(device or cfg.eval.device)
    options = (num_workers, cfg.eval.num_workers, cfg.data.num_workers)
    workers = next(value for value in options if value is not None)
    preds = predict_dataset(
        model,
        dataset,
        target,
        batch_size or cfg.eval.batch_size or cfg.data.batch_size,
        workers,
        bf16=target.type == "cuda" and cfg.trainer.precision.startswith("bf16"),
        progress=progress,
    )
    if dataset.dropped_actions:
        warnings.warn(
            f"{split_dir}: no readable clip for actions {dataset.dropped_actions}; they get no "
            "prediction",
            stacklevel=2,
        )
    annotations = dataset.root / "annotations.json"
    set_name = read_json(annotations).get("Set") if annotations.is_file() else None
    write_predictions(out, preds, set_name)
    return {
        "checkpoint": str(ckpt),
        "weights": weights,
        "data": str(split_dir),
        "predictions": str(out),
        "n_predicted": len(preds),
        "skipped_clips": [str(p) for p in dataset.skipped_clip_paths],
        "dropped_actions": list(dataset.dropped_actions),
        "device": str(target),
    }


def _predicted_offence(pred: dict[str, Any]) -> int | None:
    if pred.get("Offence") in NO_OFFENCE_VALUES:
        return 0
    if pred.get("Offence") == "Offence":
        return SEVERITY_TO_CLASS.get(pred.get("Severity"))
    return None


def confusion_matrices(pred_path: str | Path, labels_path: str | Path) -> dict[str, torch.Tensor]:
    """Confusion matrices (rows: target, columns: prediction) of the scored actions that have a
    prediction whose strings name a class."""
    labels = read_json(labels_path)["Actions"]
    predictions = read_json(pred_path)["Actions"]
    matrices = {
        "action": torch.zeros(len(ACTION_CLASSES), len(ACTION_CLASSES), dtype=torch.long),
        "offence": torch.zeros(len(OFFENCE_CLASSES), len(OFFENCE_CLASSES), dtype=torch.long),
    }
    for action_id, action in labels.items():
        label = label_or_skip_reason(action, action_id, labels_path)
        pred = predictions.get(action_id)
        if isinstance(label, SkipReason) or not isinstance(pred, dict):
            continue
        if pred.get("Action class") in ACTION_CLASSES:
            matrices["action"][label[0], ACTION_CLASSES.index(pred["Action class"])] += 1
        offence = _predicted_offence(pred)
        if offence is not None:
            matrices["offence"][label[1], offence] += 1
    return matrices


def score_predictions(
    pred_path: str | Path, labels_path: str | Path, out_dir: str | Path, plots: bool = True
) -> dict[str, Any]:
    """Score ``pred_path`` against ``labels_path`` with the official rules; write
    ``metrics.json`` (and ``confusion_action.png``/``confusion_offence.png``) into ``out_dir``."""
    out_dir = Path(out_dir)
    metrics = {
        "predictions": str(pred_path),
        "labels": str(labels_path),
        **evaluate(pred_path, labels_path),
    }
    if plots:
        names = {"action": ACTION_CLASSES, "offence": OFFENCE_CLASSES}
        for task, matrix in confusion_matrices(pred_path, labels_path).items():
            path = plot_confusion(matrix, names[task], out_dir / f"confusion_{task}.png")
            metrics[f"confusion_{task}"] = matrix.tolist()
            metrics[f"confusion_{task}_png"] = str(path)
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics
