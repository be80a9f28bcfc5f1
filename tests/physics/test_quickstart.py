"""The quickstart's fixed-work settings and its check against the documented result."""

import os

import torch

from lightstack.cli_common import find_config
from lightstack.core.config import load_config
from lightstack.core.devices import set_cpu_threads
from lightstack.physics.config import PhysicsConfig
from lightstack.physics.quickstart import (
    DOCUMENTED_IMPROVEMENT,
    TOLERANCE,
    documented_result_warning,
)


def test_quickstart_does_fixed_work_on_one_thread():
    """No wall-clock cap: the same epochs on any machine, on one thread (no oversubscription)."""
    cfg = load_config(find_config("physics/quickstart.yaml"), [], PhysicsConfig)
    assert cfg.trainer.max_time is None
    assert cfg.trainer.max_epochs > 0 and cfg.trainer.cpu_threads == 1


def test_documented_result_warning_only_far_below_the_docs():
    assert documented_result_warning(DOCUMENTED_IMPROVEMENT, []) is None
    assert documented_result_warning((1 - TOLERANCE) * DOCUMENTED_IMPROVEMENT, []) is None
    low = documented_result_warning(0.5 * DOCUMENTED_IMPROVEMENT, [])
    assert low is not None and f"{0.5 * DOCUMENTED_IMPROVEMENT:.1f}x" in low
    assert "broken install" in low
    overridden = documented_result_warning(1.0, ["trainer.max_epochs=1"])
    assert overridden is not None and "trainer.max_epochs=1" in overridden


def test_cpu_threads_follow_the_config_and_the_allowed_cores(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert set_cpu_threads(1) == 1 and torch.get_num_threads() == 1
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
        torch.set_num_threads(2)
        assert set_cpu_threads(None) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
