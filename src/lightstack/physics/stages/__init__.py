"""The physics training stages, one LightningModule each, and how a run builds its stage.

``operator`` trains the latent surrogate; ``diff_residual`` a diffusion model of its one-step
error; ``consistency_distill`` a few-step student of that model; ``steady_prior`` a map from a
coefficient field to a steady solution (Darcy); ``fno`` a neuraloperator FNO baseline (extra
``[baselines]``). ``REQUIRES`` names the stage whose checkpoint each stage starts from
(``init_from``); it is loaded and checked before any training starts.
"""

from __future__ import annotations

import lightning as L

from lightstack.physics.config import PhysicsConfig
from lightstack.physics.data.latent_datamodule import LatentCacheDataModule
from lightstack.physics.data.steady import SteadyDataModule
from lightstack.physics.data.windows import PDEDataModule
from lightstack.physics.stages.consistency_distill import ConsistencyStage
from lightstack.physics.stages.diff_residual import DiffResidualStage
from lightstack.physics.stages.fno_baseline import FNOStage, SteadyFNOStage
from lightstack.physics.stages.handoff import load_stage_checkpoint
from lightstack.physics.stages.operator import OperatorStage
from lightstack.physics.stages.steady_prior import SteadyPriorStage

STAGES: dict[str, type[L.LightningModule]] = {
    "operator": OperatorStage,
    "diff_residual": DiffResidualStage,
    "consistency_distill": ConsistencyStage,
    "steady_prior": SteadyPriorStage,
    "fno": FNOStage,
}
REQUIRES: dict[str, str | None] = {
    "operator": None,
    "diff_residual": "operator",
    "consistency_distill": "diff_residual",
    "steady_prior": None,
    "fno": None,
}

# Stages that train on the latents of a frozen encoder: with cache.enabled they train from the
# latent cache (LatentCacheDataModule); other stages ignore the cache settings.
LATENT_CACHE_STAGES = {"diff_residual", "consistency_distill"}


def build_datamodule(cfg: PhysicsConfig) -> PDEDataModule:
    """Trajectory windows for the time-dependent stages, (coefficient, solution) pairs for
    ``steady_prior``."""
    if cfg.stage == "steady_prior" or (cfg.stage == "fno" and cfg.fno.steady):
        return SteadyDataModule(cfg.data)
    if cfg.cache.enabled and cfg.stage in LATENT_CACHE_STAGES:
        progress = cfg.logging.progress_bar != "none"
        return LatentCacheDataModule(cfg.data, cfg.loss.rollout_horizon, cfg.cache, progress)
    return PDEDataModule(cfg.data, horizon=cfg.loss.rollout_horizon)


def build_stage(cfg: PhysicsConfig, dm: PDEDataModule) -> L.LightningModule:
    """The LightningModule of ``cfg.stage``, its normalisation set from ``dm`` and the
    checkpoint it starts from (``cfg.init_from``) loaded and verified."""
    if cfg.stage not in STAGES:
        raise ValueError(f"unknown stage {cfg.stage!r}; choose one of {sorted(STAGES)}")
    requires = REQUIRES[cfg.stage]
    if requires is None:
        if cfg.init_from is not None:
            raise ValueError(
                f"stage {cfg.stage!r} does not start from another stage's checkpoint, but "
                f"init_from is set ({cfg.init_from}); remove it"
            )
        steady = cfg.stage == "steady_prior" or (cfg.stage == "fno" and cfg.fno.steady)
        if not steady:
            stage = STAGES[cfg.stage](cfg, dm.task_names)
            stage.model.set_normalization(*dm.field_stats())
            return stage
        if not isinstance(dm, SteadyDataModule):
            raise TypeError(
                f"stage {cfg.stage!r} trains on steady (Darcy) samples: build its data module "
                "with build_datamodule(cfg), not a trajectory PDEDataModule"
            )
        stage_class = SteadyFNOStage if cfg.stage == "fno" else STAGES[cfg.stage]
        return stage_class.from_datamodule(cfg, dm)
    parent = load_stage_checkpoint(cfg.init_from, requires, cfg)
    stage = STAGES[cfg.stage].from_datamodule(cfg, dm, parent)
    if isinstance(dm, LatentCacheDataModule):
        dm.attach_encoder(stage.model.surrogate)
    return stage


__all__ = ["REQUIRES", "STAGES", "build_datamodule", "build_stage", "load_stage_checkpoint"]
