"""Shared fixtures: tiny generated data sets, built once per test session."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from lightstack.core.config import load_config
from lightstack.physics.config import PhysicsConfig

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def restore_environment():
    """Undo what a test's in-process distributed run leaves in ``os.environ``.

    Lightning's spawn launcher sets ``MASTER_PORT``, ``WORLD_SIZE`` and friends in the test
    process; a later test's subprocess that inherits them would wait for peers that never come.
    """
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def burgers_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Burgers 1D, nu = 0.01: 64 samples on 256 cells, 201 snapshots over t in [0, 2]."""
    from lightstack.physics.data.generate import generate

    out = tmp_path_factory.mktemp("physics") / "burgers.hdf5"
    return generate("burgers1d", out, samples=64, seed=0, nx=256)


@pytest.fixture(scope="session")
def advection_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lightstack.physics.data.generate import generate

    out = tmp_path_factory.mktemp("physics") / "advection.hdf5"
    return generate("advection1d", out, samples=16, seed=1, nx=64)


TINY_PHYSICS = """
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
def tiny_config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny operator-stage config file (no data files: pass them as overrides)."""
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(TINY_PHYSICS)
    return path


@pytest.fixture(scope="session")
def tiny_config(tiny_config_file: Path, burgers_file: Path) -> Callable[..., PhysicsConfig]:
    """``make(*overrides, files=None)``: the tiny config on ``files`` (default: Burgers)."""

    def make(*overrides: str, files: list[Path] | None = None) -> PhysicsConfig:
        data = json.dumps([str(f) for f in (files or [burgers_file])])
        return load_config(
            tiny_config_file, [f"data.train_files={data}", *overrides], PhysicsConfig
        )

    return make
