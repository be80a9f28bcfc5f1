"""Rollouts of corrected surrogates and the operator / teacher / student comparison.

``compare_correctors`` is what the evaluation reports for the diffusion and consistency
stages: rollout and one-step nRMSE (physical units) and wall time per rollout step of the
operator alone, the diffusion teacher with N sampler steps and the consistency student with 1
and 2 steps, all on the same trajectories and the same sampling seed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from lightstack.core.checkpoints import (
    CheckpointError,
    architecture_fingerprint,
    module_state_dict,
)
from lightstack.physics.config import PhysicsConfig
from lightstack.physics.eval.metrics import nrmse_per_step, trajectory_nrmse_per_sample
from lightstack.physics.models.consistency import ConsistencyResidual
from lightstack.physics.models.diffusion import DiffusionResidual, LatentCorrector
from lightstack.physics.models.surrogate import LatentSurrogate
from lightstack.physics.stages.handoff import read_stage_checkpoint

Model = LatentSurrogate | LatentCorrector


def load_correctors(
    path: str | Path, ckpt: dict[str, Any] | None = None
) -> tuple[DiffusionResidual, ConsistencyResidual | None, PhysicsConfig, list[str]]:
    """Teacher (and student, for a ``consistency_distill`` checkpoint) rebuilt from the file
    (or from ``ckpt``, its content when already read)."""
    found = read_stage_checkpoint(path, ckpt)
    cfg, tasks = found.config, found.tasks
    if found.stage == "diff_residual":
        teacher = found.load_into(DiffusionResidual(cfg.model, cfg.diffusion))
        return teacher.eval(), None, cfg, tasks
    if found.stage != "consistency_distill":
        raise CheckpointError(
            f"{path} is a {found.stage!r} checkpoint; expected 'diff_residual' or "
            "'consistency_distill'"
        )
    student = found.load_into(
        ConsistencyResidual(
            cfg.model, cfg.diffusion, cfg.consistency.levels, cfg.consistency.sample_steps
        )
    )
    teacher = DiffusionResidual(cfg.model, cfg.diffusion)
    if architecture_fingerprint(teacher) != found.meta.get("teacher_fingerprint"):
        raise CheckpointError(f"{path}: the stored teacher does not match its config")
    teacher.load_state_dict(module_state_dict(found.checkpoint, "teacher."), strict=True)
    return teacher.eval(), student.eval(), cfg, tasks


@torch.no_grad()
def corrected_rollout(
    model: Model,
    batch: dict[str, torch.Tensor],
    sample_steps: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Rollout (B, T - 1, *S, C) of whole trajectories ``batch["fields"]`` from their first
    snapshot: the operator alone for a ``LatentSurrogate``, corrected every step otherwise."""
    fields = batch["fields"]
    args = (fields[:, 0], batch["grid"], batch["dt"], batch["params"], fields.shape[1] - 1)
    if isinstance(model, LatentCorrector):
        return model.rollout(*args, steps=sample_steps, generator=generator)
    return model.rollout(*args)


@torch.no_grad()
def _onestep(
    model: Model,
    batch: dict[str, torch.Tensor],
    sample_steps: int | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    fields = batch["fields"]
    t = fields.shape[1]
    args = (
        fields[:, :-1].flatten(0, 1),
        batch["grid"].repeat_interleave(t - 1, dim=0),
        batch["dt"].repeat_interleave(t - 1),
        batch["params"].repeat_interleave(t - 1, dim=0),
    )
    if isinstance(model, LatentCorrector):
        pred = model(*args, steps=sample_steps, generator=generator)
    else:
        pred = model(*args)
    return pred.view_as(fields[:, 1:])


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def _measure(
    model: Model,
    loader: DataLoader,
    sample_steps: int | None,
    device: torch.device,
    seed: int,
) -> dict[str, float]:
    generator = torch.Generator(device=device).manual_seed(seed)
    rollout_sum = onestep_sum = elapsed = 0.0
    trajectories = steps = 0
    for index, batch in enumerate(loader):
        batch = {k: v.to(device) for k, v in batch.items()}
        if index == 0:  # warm-up (kernels, allocator, sampler set-up), not timed
            corrected_rollout(model, batch, sample_steps, generator)
        _synchronize(device)
        start = time.perf_counter()
        rollout = corrected_rollout(model, batch, sample_steps, generator)
        _synchronize(device)
        elapsed += time.perf_counter() - start
        truth = batch["fields"][:, 1:]
        rollout_sum += float(trajectory_nrmse_per_sample(rollout, truth).double().sum())
        onestep = _onestep(model, batch, sample_steps, generator)
        onestep_sum += float(nrmse_per_step(onestep, truth).mean(dim=1).double().sum())
        trajectories += truth.shape[0]
        steps += truth.shape[1]
    if not trajectories:
        raise ValueError("no trajectories to compare the correctors on")
    return {
        "rollout_nrmse": rollout_sum / trajectories,
        "onestep_nrmse": onestep_sum / trajectories,
        "ms_per_step": 1000 * elapsed / steps,
        "trajectories": trajectories,
    }


def compare_correctors(
    teacher: DiffusionResidual,
    loader: DataLoader,
    student: ConsistencyResidual | None = None,
    teacher_steps: int | None = None,
    student_steps: Iterable[int] = (1, 2),
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """``{"operator": ..., "teacher_N": ..., "student_1": ..., "student_2": ...}``, each with
    ``rollout_nrmse``, ``onestep_nrmse``, ``ms_per_step`` (one latent step of a batch of
    ``loader``'s trajectories, decoding included) and ``trajectories``.

    ``loader`` yields whole trajectories (``PDEDataModule.windows(split, None)``).
    """
    device = torch.device(device)
    teacher = teacher.to(device).eval()
    n = teacher_steps or teacher.diffusion_cfg.steps
    candidates: dict[str, tuple[Model, int | None]] = {
        "operator": (teacher.surrogate, None),
        f"teacher_{n}": (teacher, n),
    }
    if student is not None:
        student = student.to(device).eval()
        candidates |= {f"student_{k}": (student, k) for k in student_steps}
    return {
        name: _measure(model, loader, steps, device, seed) | {"sample_steps": steps or 0}
        for name, (model, steps) in candidates.items()
    }
