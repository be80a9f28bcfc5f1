"""Checkpoint hand-off between stages: load the stage a stage starts from, or fail clearly.

Everything is checked before any training starts: the file exists and is a physics
checkpoint, it was written by the expected stage, and the architecture and data fields it was
trained with match this run's config (a different grid, time stride or model width would load
weights that mean something else, or fail deep inside ``load_state_dict``).

``read_stage_checkpoint`` is the unchecked part, a checkpoint of any stage with its stored
config: the evaluation loaders (``load_surrogate``, ``load_correctors``, ...) start from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from torch import nn

from lightstack.core.checkpoints import (
    CheckpointError,
    checkpoint_metadata,
    load_checkpoint,
    load_into,
)
from lightstack.physics.config import PhysicsConfig

# Fields that change what a loaded network computes; compile and dropout settings do not.
_NOT_ARCHITECTURE = {"model": {"compile", "compile_mode", "dropout"}}
_COMPARED_SECTIONS = {
    "operator": ["model"],
    "diff_residual": ["model", "diffusion"],
}
_DIFFUSION_ARCHITECTURE = {
    "width",
    "depth",
    "heads",
    "mlp_ratio",
    "prediction",
    "schedule",
    "train_timesteps",
    "min_noise_std",
}
_DATA_FIELDS = ("reduced_resolution", "reduced_resolution_t", "param_keys")


@dataclass(frozen=True)
class StageCheckpoint:
    """A verified checkpoint of a previous stage."""

    path: Path
    stage: str
    config: PhysicsConfig
    checkpoint: dict[str, Any]

    @property
    def meta(self) -> dict[str, Any]:
        return checkpoint_metadata(self.checkpoint, self.path, "physics")

    @property
    def tasks(self) -> list[str]:
        return list(self.meta.get("tasks", []))

    def load_into(self, module: nn.Module, prefix: str = "model.") -> nn.Module:
        """Load the stage's ``prefix`` weights into ``module`` (fingerprint-checked)."""
        return load_into(module, self.checkpoint, self.path, prefix)


def _compared_fields(section: str, values: dict[str, Any]) -> dict[str, Any]:
    if section == "diffusion":
        return {k: v for k, v in values.items() if k in _DIFFUSION_ARCHITECTURE}
    skip = _NOT_ARCHITECTURE.get(section, set())
    return {k: v for k, v in values.items() if k not in skip}


def config_mismatches(cfg: PhysicsConfig, parent: PhysicsConfig, stage: str) -> list[str]:
    """``section.field: checkpoint X, config Y`` for every field that must agree."""
    ours, theirs = cfg.model_dump(mode="json"), parent.model_dump(mode="json")
    found = []
    for section in _COMPARED_SECTIONS.get(stage, ["model"]):
        mine, other = (
            _compared_fields(section, ours[section]),
            _compared_fields(section, theirs[section]),
        )
        for key in sorted(mine):
            if mine[key] != other.get(key):
                found.append(
                    f"{section}.{key}: checkpoint {other.get(key)!r}, config {mine[key]!r}"
                )
    for key in _DATA_FIELDS:
        if ours["data"][key] != theirs["data"][key]:
            found.append(
                f"data.{key}: checkpoint {theirs['data'][key]!r}, config {ours['data'][key]!r}"
            )
    return found


def read_stage_checkpoint(path: str | Path, ckpt: dict[str, Any] | None = None) -> StageCheckpoint:
    """A physics checkpoint of any stage with its stored config; ``ckpt`` is the file's content
    when the caller has read it already (so one evaluation reads the file once)."""
    path = Path(path)
    ckpt = load_checkpoint(path) if ckpt is None else ckpt
    meta = checkpoint_metadata(ckpt, path, "physics")
    try:
        config = PhysicsConfig.model_validate(meta["config"])
    except (KeyError, ValidationError) as exc:
        raise CheckpointError(f"{path}: its stored config is missing or invalid: {exc}") from exc
    return StageCheckpoint(path, meta.get("stage"), config, ckpt)


def load_stage_checkpoint(
    path: str | Path | None, expected_stage: str, cfg: PhysicsConfig
) -> StageCheckpoint:
    """Load and verify the ``expected_stage`` checkpoint that stage ``cfg.stage`` starts from.

    Raises ``CheckpointError`` naming the file and what is wrong: missing (or ``init_from``
    unset), not a physics checkpoint, written by another stage, or trained with a different
    architecture or data layout than ``cfg`` describes.
    """
    if path is None:
        raise CheckpointError(
            f"stage {cfg.stage!r} starts from a {expected_stage!r} checkpoint: set init_from "
            "(or run the stages through the pipeline)"
        )
    path = Path(path)
    ckpt = load_checkpoint(path)
    found = checkpoint_metadata(ckpt, path, "physics").get("stage")
    if found != expected_stage:
        raise CheckpointError(
            f"{path} is a {found!r} checkpoint, but stage {cfg.stage!r} starts from a "
            f"{expected_stage!r} checkpoint (init_from)"
        )
    parent = read_stage_checkpoint(path, ckpt)
    mismatches = config_mismatches(cfg, parent.config, expected_stage)
    if mismatches:
        raise CheckpointError(
            f"{path} does not match this run's config (stage {cfg.stage!r} needs the same "
            "architecture and data layout):\n  " + "\n  ".join(mismatches)
        )
    return parent
