"""A tiny operator-stage configuration on the session's Burgers file, for the overhead tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from lightstack.core.config import load_config
from lightstack.physics.config import PhysicsConfig

TINY = """
family: physics
name: tiny
data:
  reduced_resolution: 4
  reduced_resolution_t: 10
  loader: {batch_size: 16}
model: {width: 32, heads: 2, patch_size: 4, operator_depth: 2}
loss: {rollout_horizon: 2}
trainer: {accelerator: cpu, devices: 1, max_epochs: 1}
logging: {progress_bar: none, loggers: [csv]}
"""


@pytest.fixture(scope="session")
def tiny_config(
    tmp_path_factory: pytest.TempPathFactory, burgers_file: Path
) -> Callable[..., PhysicsConfig]:
    """``make(*overrides, files=None)``: the tiny config on ``files`` (default: Burgers)."""
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(TINY)

    def make(*overrides: str, files: list[Path] | None = None) -> PhysicsConfig:
        data = json.dumps([str(f) for f in (files or [burgers_file])])
        return load_config(path, [f"data.train_files={data}", *overrides], PhysicsConfig)

    return make
