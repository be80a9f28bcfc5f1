"""The model a physics checkpoint rolls out, rebuilt from the checkpoint alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from lightstack.core.checkpoints import checkpoint_metadata, load_checkpoint
from lightstack.physics.config import PhysicsConfig
from lightstack.physics.models.surrogate import LatentSurrogate
from lightstack.physics.stages.correctors import load_correctors
from lightstack.physics.stages.handoff import read_stage_checkpoint

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
    teacher, student, cfg, tasks = load_correctors(path, ckpt)
    return student or teacher, cfg, tasks
