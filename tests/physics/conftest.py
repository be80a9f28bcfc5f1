from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightstack.core.config import load_config
from lightstack.physics.config import PhysicsConfig

TINY = """
family: physics
name: tiny
seed: 0
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
def tiny_config(tmp_path_factory: pytest.TempPathFactory, burgers_file: Path):
    """A factory: the tiny physics config on the session's Burgers file, with overrides."""
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(TINY)

    def make(*overrides: str, files: list[Path] | None = None) -> PhysicsConfig:
        data = json.dumps([str(f) for f in (files or [burgers_file])])
        return load_config(path, [f"data.train_files={data}", *overrides], PhysicsConfig)

    return make
