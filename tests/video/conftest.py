"""A tiny synthetic MVFoul tree, generated once per test session."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from lightstack.video.data.synthetic import synthesize


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def mvfoul_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """``(root, summary)`` of 30 actions, 2-3 views, 8 frames of 32x32, splits train/valid/test.

    ``summary`` is ``synthesize``'s return value (frames, size, window, per-split class counts).
    """
    root = tmp_path_factory.mktemp("mvfoul")
    summary = synthesize(root, actions=30, views=(2, 3), frames=8, size=(32, 32), seed=0)
    return root, summary


@pytest.fixture
def tree_copy(mvfoul_tree: tuple[Path, dict[str, Any]], tmp_path: Path) -> Path:
    """A private copy of the session tree that a test may damage."""
    return Path(shutil.copytree(mvfoul_tree[0], tmp_path / "mvfoul"))
