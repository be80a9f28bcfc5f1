"""Fixtures of the fault tests: a tiny PDEBench file and the tiny physics config on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from reliability_support import TINY_YAML, Pending, start_cli, write_tiny_pdebench

from lightstack.core.config import load_config
from lightstack.physics.config import PhysicsConfig


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_h5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_pdebench(tmp_path_factory.mktemp("data") / "waves.h5")


@pytest.fixture(scope="session")
def tiny_yaml(tmp_path_factory: pytest.TempPathFactory, tiny_h5: Path) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(TINY_YAML.format(data=tiny_h5))
    return path


@pytest.fixture(scope="session")
def tiny_config(tiny_yaml: Path):
    """A factory: the tiny physics config with dotted overrides."""

    def make(*overrides: str) -> PhysicsConfig:
        return load_config(tiny_yaml, list(overrides), PhysicsConfig)

    return make


@pytest.fixture(scope="session")
def reference(tiny_yaml: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pending]:
    """An uninterrupted run of the tiny config, started in the background on first use."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    proc = start_cli("physics", "train", "--config", tiny_yaml, "--run-dir", run_dir)
    yield Pending(proc, run_dir)
    if proc.poll() is None:
        proc.kill()
        proc.communicate()
