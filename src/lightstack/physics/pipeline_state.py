"""The files that let ``physics pipeline`` resume: ``pipeline_state.json`` (finished and
started stages) and ``wandb_context.json`` (the one W&B run every stage logs into)."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lightstack.core.io import atomic_write_json
from lightstack.physics.config import PhysicsConfig
from lightstack.physics.pipeline_config import PipelineError

STATE_FILE = "pipeline_state.json"
WANDB_CONTEXT = "wandb_context.json"
STATE_VERSION = 1


def load_state(run_dir: Path) -> dict[str, Any]:
    path = run_dir / STATE_FILE
    if not path.is_file():
        return {"version": STATE_VERSION, "stages": {}}
    try:
        state = json.loads(path.read_text())
    except ValueError as exc:
        raise PipelineError(f"{path} is not valid JSON ({exc}); remove it to start over") from exc
    if state.get("version") != STATE_VERSION or not isinstance(state.get("stages"), dict):
        raise PipelineError(
            f"{path}: expected version {STATE_VERSION} with a 'stages' mapping; remove it to "
            "start over"
        )
    return state


def save_state(run_dir: Path, state: dict[str, Any]) -> None:
    atomic_write_json(run_dir / STATE_FILE, state)


def wandb_environment(cfg: PhysicsConfig, run_dir: Path) -> dict[str, str]:
    """Environment that makes every stage log into one W&B run (``wandb_context.json``).

    Created once per run directory and reused on resume, so a resumed pipeline keeps logging
    into the same run; empty when W&B is not among the loggers.
    """
    if "wandb" not in cfg.logging.loggers:
        return {}
    path = run_dir / WANDB_CONTEXT
    if path.is_file():
        return {str(k): str(v) for k, v in json.loads(path.read_text()).items()}
    env = {
        "WANDB_RUN_ID": uuid.uuid4().hex[:16],
        "WANDB_RESUME": "allow",
        "WANDB_PROJECT": cfg.logging.wandb_project,
        "WANDB_NAME": cfg.name,
    }
    if cfg.logging.wandb_offline:
        env["WANDB_MODE"] = "offline"
    atomic_write_json(path, env)
    return env


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """Set ``env`` for the duration of the block, then restore what was there."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
