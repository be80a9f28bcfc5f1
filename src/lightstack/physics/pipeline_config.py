"""What each stage of ``physics pipeline`` trains with, and the folder a pipeline runs in.

A stage's config is the pipeline's config plus its ``pipeline.stage_overrides``; its
fingerprint hashes the fields that change what it learns, so a resumed pipeline can tell a
finished stage it may reuse from one whose config has changed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path

from omegaconf import OmegaConf

from lightstack.core.config import to_dict, validate
from lightstack.physics.config import PhysicsConfig
from lightstack.physics.data.generate import default_filename
from lightstack.physics.generation import generate_with_progress
from lightstack.physics.stages import REQUIRES
from lightstack.physics.stages.predictors import ROLLOUT_STAGES

# top-level fields that do not change what a stage learns: editing them never forces retraining
UNTRAINED_FIELDS = ("name", "init_from", "gates", "champion", "pipeline", "eval", "logging")


class PipelineError(ValueError):
    """The pipeline cannot start or resume in this run directory."""


def stage_config(cfg: PhysicsConfig, stage: str) -> PhysicsConfig:
    """``cfg`` of one stage: its name and its ``stage_overrides``; ``init_from`` is set when it
    trains (the pipeline decides which checkpoint each stage starts from)."""
    data = to_dict(cfg) | {"stage": stage, "init_from": None}
    overrides = cfg.pipeline.stage_overrides.get(stage, {})
    generate = overrides.get("generate") or {}
    if (
        data["generate"]
        and generate.get("equation", data["generate"]["equation"]) != (data["generate"]["equation"])
    ):
        data["generate"] = None  # solver parameters belong to one equation: don't inherit them
    merged = OmegaConf.merge(OmegaConf.create(data), OmegaConf.create(overrides))
    return validate(
        PhysicsConfig,
        OmegaConf.to_container(merged),  # type: ignore[arg-type]
        f"pipeline stage {stage} (pipeline.stage_overrides.{stage})",
    )


def check_order(cfg: PhysicsConfig) -> None:
    """Every stage that starts from another one finds its checkpoint: an earlier stage of the
    pipeline, or ``init_from`` when that stage is not part of it."""
    stages = cfg.pipeline.stages
    for index, stage in enumerate(stages):
        required = REQUIRES.get(stage)
        if required is None or (required not in stages and cfg.init_from):
            continue
        if required not in stages[:index]:
            raise PipelineError(
                f"pipeline.stages {stages}: stage {stage} starts from a {required} checkpoint; "
                f"list {required} before it, or leave it out and set init_from"
            )
    if not any(s in ROLLOUT_STAGES for s in stages):
        raise PipelineError(
            f"pipeline.stages {stages}: nothing to evaluate; include one of {ROLLOUT_STAGES}"
        )
    if cfg.pipeline.eval_stage not in (None, *ROLLOUT_STAGES):
        raise PipelineError(
            f"pipeline.eval_stage {cfg.pipeline.eval_stage!r} has no rollout to evaluate; "
            f"choose one of {ROLLOUT_STAGES}"
        )


def fingerprint(cfg: PhysicsConfig) -> str:
    """Hash of the fields that change what a stage learns (see ``UNTRAINED_FIELDS``)."""
    data = {k: v for k, v in to_dict(cfg).items() if k not in UNTRAINED_FIELDS}
    data["cache"] = {"dtype": cfg.cache.dtype}  # where and whether latents are cached: no change
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def default_run_dir(cfg: PhysicsConfig, root: str | Path = "runs") -> Path:
    """``runs/<name>-<hash>``: the same training config always finds the same folder.

    That is what lets a re-run of the same command resume; a config that trains differently
    gets a folder of its own.
    """
    stages = [fingerprint(stage_config(cfg, s)) for s in cfg.pipeline.stages]
    digest = hashlib.sha256(json.dumps(stages).encode()).hexdigest()[:8]
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", cfg.name).strip("-") or "run"
    return Path(root) / f"{safe}-{digest}"


def with_generated_data(
    cfg: PhysicsConfig, run_dir: Path, log: Callable[[str], None]
) -> PhysicsConfig:
    """A stage with a ``generate`` section and no ``data.train_files`` trains on generated data.

    The file goes to ``run_dir/data/<hash of the section>/<equation>.hdf5`` (``.h5`` for
    seed groups, see ``default_filename``) once (atomically),
    so a resumed run reuses it, two stages with different data sets do not collide and the
    task keeps the equation's name.
    """
    gen = cfg.generate
    if gen is None or cfg.data.train_files:
        return cfg
    digest = hashlib.sha256(json.dumps(to_dict(gen), sort_keys=True).encode()).hexdigest()[:8]
    path = run_dir / "data" / digest / default_filename(gen.equation)
    if not path.is_file():
        log(f"generating {gen.samples} {gen.equation} samples into {path}")
        generate_with_progress(gen.equation, path, gen.samples, gen.seed, dict(gen.params))
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"train_files": [str(path)]})})
