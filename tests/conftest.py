"""Shared fixtures: tiny generated data sets, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

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

    out = tmp_path_factory.mktemp("physics") / "burgers.h5"
    return generate("burgers1d", out, samples=64, seed=0, nx=256)


@pytest.fixture(scope="session")
def advection_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lightstack.physics.data.generate import generate

    out = tmp_path_factory.mktemp("physics") / "advection.h5"
    return generate("advection1d", out, samples=16, seed=1, nx=64)
